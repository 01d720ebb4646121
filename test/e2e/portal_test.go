package e2e

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/cdproto/input"
	"github.com/chromedp/cdproto/page"
	"github.com/chromedp/cdproto/runtime"
	"github.com/chromedp/chromedp"
	"github.com/chromedp/chromedp/kb"

	"github.com/corralhq/corral/api"
	"github.com/corralhq/corral/internal/testutil"
)

// browser starts a headless Chromium (Debian's) for the test, trusting
// the lab's self-signed API certificates; each tab it opens has its own
// sessionStorage, so its own login. JavaScript dialogs (confirmations)
// are accepted.
func browser(t *testing.T) (newTab func() context.Context) {
	t.Helper()
	bin, err := exec.LookPath("chromium")
	if err != nil {
		t.Fatal("no chromium (Debian package chromium; scripts/deps.sh test installs it)")
	}
	opts := append(chromedp.DefaultExecAllocatorOptions[:], chromedp.ExecPath(bin), chromedp.NoSandbox,
		chromedp.Flag("ignore-certificate-errors", true), chromedp.WindowSize(1280, 900))
	alloc, cancel := chromedp.NewExecAllocator(context.Background(), opts...)
	t.Cleanup(cancel)
	root, cancelRoot := chromedp.NewContext(alloc)
	t.Cleanup(cancelRoot)
	if err := chromedp.Run(root); err != nil {
		t.Fatalf("start chromium: %v", err)
	}
	return func() context.Context {
		tab, cancelTab := chromedp.NewContext(root)
		t.Cleanup(cancelTab)
		// The first Run opens the tab for the life of the context it gets:
		// this one, not a short one of a single step.
		if err := chromedp.Run(tab); err != nil {
			t.Fatalf("open a tab: %v", err)
		}
		chromedp.ListenTarget(tab, func(ev any) {
			if _, ok := ev.(*page.EventJavascriptDialogOpening); ok {
				go chromedp.Run(tab, page.HandleJavaScriptDialog(true))
			}
		})
		return tab
	}
}

// run runs browser actions with a deadline.
func run(t *testing.T, tab context.Context, timeout time.Duration, what string, actions ...chromedp.Action) {
	t.Helper()
	ctx, cancel := context.WithTimeout(tab, timeout)
	defer cancel()
	if err := chromedp.Run(ctx, actions...); err != nil {
		var body string
		bctx, bcancel := context.WithTimeout(tab, 5*time.Second)
		chromedp.Run(bctx, chromedp.Text("body", &body, chromedp.ByQuery))
		bcancel()
		t.Fatalf("%s: %v; the page shows: %q", what, err, tail(body, 800))
	}
}

// waitJS polls a JavaScript expression until it is true.
func waitJS(t *testing.T, tab context.Context, timeout time.Duration, what, expr string) {
	t.Helper()
	testutil.Eventually(t, timeout, func() error {
		ctx, cancel := context.WithTimeout(tab, 10*time.Second)
		defer cancel()
		var ok bool
		if err := chromedp.Run(ctx, chromedp.Evaluate(expr, &ok)); err != nil {
			return err
		}
		if !ok {
			var body string
			chromedp.Run(ctx, chromedp.Text("body", &body, chromedp.ByQuery))
			return fmt.Errorf("%s: not yet; the page shows %q", what, tail(body, 500))
		}
		return nil
	})
}

// screenshot saves the page to $CORRAL_SCREENSHOTS/name.png when that is
// set (make screenshots: docs/screenshots).
func screenshot(t *testing.T, tab context.Context, name string) {
	t.Helper()
	dir := os.Getenv("CORRAL_SCREENSHOTS")
	if dir == "" {
		return
	}
	var png []byte
	run(t, tab, 20*time.Second, "screenshot "+name, chromedp.FullScreenshot(&png, 100))
	if err := os.WriteFile(filepath.Join(dir, name+".png"), png, 0o644); err != nil {
		t.Fatal(err)
	}
}

// setField sets a form field as typing or choosing would, so that the
// page's handlers see it.
func setField(sel, value string) chromedp.Action {
	return chromedp.Evaluate(fmt.Sprintf(`(() => { const el = document.querySelector(%q); el.value = %q;
		el.dispatchEvent(new Event('input', {bubbles: true})); el.dispatchEvent(new Event('change', {bubbles: true})); return true })()`, sel, value), nil)
}

func login(t *testing.T, tab context.Context, url, secret string) {
	t.Helper()
	run(t, tab, 30*time.Second, "log in",
		chromedp.Navigate(url),
		chromedp.WaitVisible("#token", chromedp.ByQuery),
		chromedp.SendKeys("#token", secret, chromedp.ByQuery),
		chromedp.Click(`button[type=submit]`, chromedp.ByQuery),
		chromedp.WaitVisible(`nav .who`, chromedp.ByQuery))
}

// TestPortalInBrowser drives the portal that h1's corrald serves with a
// real headless Chromium: an operator logs in with a token, creates a VM
// from the form (a test guest, kernel boot), sees it turn running without
// a reload (the event stream), opens its serial console and reads the
// guest's boot output in the terminal, types a line into the guest's
// shell and sees its result, then stops and deletes it with the buttons.
// A viewer's page offers no create button, and the requests the page
// would not send are refused: a viewer's create (403) and one with a
// forged token (401). A revoked token sends the page back to the login.
func TestPortalInBrowser(t *testing.T) {
	e := newEnv(t, 2, "")
	var st api.Status
	testutil.Eventually(t, time.Minute, func() error {
		var err error
		st, err = e.client(0).Status(e.ctx())
		if err != nil || st.API == "" {
			return fmt.Errorf("h1's API: %q %v", st.API, err)
		}
		return nil
	})
	secrets := map[string]string{}
	for _, tok := range []struct{ name, role string }{{"ops", "operator"}, {"watch", "viewer"}, {"boss", "admin"}} {
		file := filepath.Join(t.TempDir(), tok.name)
		if out, err := e.corralctl("h1", "token", "create", tok.name, "--role", tok.role, "--secret-file", file); err != nil {
			t.Fatalf("token create: %v\n%s", err, out)
		}
		b, err := os.ReadFile(file)
		if err != nil {
			t.Fatal(err)
		}
		secrets[tok.name] = strings.TrimSpace(string(b))
	}
	newTab := browser(t)

	ops := newTab()
	login(t, ops, st.API, secrets["ops"])
	waitJS(t, ops, 30*time.Second, "the dashboard lists both hosts", `document.querySelectorAll('main table tbody tr').length === 2`)
	screenshot(t, ops, "dashboard")

	run(t, ops, 30*time.Second, "create a VM",
		chromedp.Navigate(st.API+"/#/vms"),
		chromedp.Click("#create-vm", chromedp.ByQuery),
		chromedp.WaitVisible("#vm-name", chromedp.ByQuery),
		chromedp.SendKeys("#vm-name", "web1", chromedp.ByQuery),
		setField("#vm-memory", "128"),
		chromedp.Click(`input[name=boot][value=kernel]`, chromedp.ByQuery),
		chromedp.WaitVisible("#vm-kernel", chromedp.ByQuery),
		chromedp.WaitReady(`#vm-image option[value=base]`, chromedp.ByQuery),
		setField("#vm-image", "base"),
		setField("#vm-kernel", e.guest.Kernel),
		setField("#vm-initrd", e.guest.Initrd),
		setField("#vm-cmdline", "console=ttyS0 quiet corral.name=web1"),
		chromedp.Click("#vm-create-submit", chromedp.ByQuery),
	)
	waitJS(t, ops, 2*time.Minute, "web1 runs, shown without a reload", `location.hash === '#/vms/web1' && !!document.querySelector('.state.s-running')`)

	testutil.Eventually(t, time.Minute, func() error {
		log, err := e.any().ConsoleLog(e.ctx(), "web1", 64<<10)
		if err != nil || !strings.Contains(log.Log, "CORRAL-BOOT host=web1") {
			return fmt.Errorf("web1 not booted yet (%v)", err)
		}
		return nil
	})
	run(t, ops, 30*time.Second, "open the console", chromedp.Click("#open-console", chromedp.ByQuery), chromedp.WaitVisible("#terminal .xterm-rows", chromedp.ByQuery))
	const rows = `(document.querySelector('#terminal .xterm-rows')?.innerText || '')`
	waitJS(t, ops, 60*time.Second, "the guest's boot output in the terminal", rows+`.includes('CORRAL-BOOT host=web1')`)
	waitJS(t, ops, 10*time.Second, "the console says we type", `document.querySelector('.console-state').innerText.includes('you type here')`)
	// Text goes in as the browser's text input (printable keys sent as
	// DevTools key events reach xterm.js twice, as keydown and input),
	// then the Enter key.
	run(t, ops, 10*time.Second, "type into the guest's shell",
		chromedp.Click("#terminal .xterm-screen", chromedp.ByQuery),
		input.InsertText("echo $((6*7))-XY"),
		chromedp.KeyEvent(kb.Enter))
	defer func() {
		if t.Failed() {
			var all string
			chromedp.Run(ops, chromedp.Evaluate(rows, &all))
			t.Logf("the terminal shows: %q", all)
		}
	}()
	waitJS(t, ops, 30*time.Second, "the shell's answer in the terminal", rows+`.includes('42-XY')`)
	screenshot(t, ops, "vm-console")

	// The graphical console: noVNC draws the guest's VGA screen, and what
	// is typed on it runs in the shell there (vgaping answers on the
	// serial console).
	run(t, ops, 30*time.Second, "open the graphical console", chromedp.Click("#open-display", chromedp.ByQuery), chromedp.WaitVisible("#screen canvas", chromedp.ByQuery))
	waitJS(t, ops, 60*time.Second, "noVNC connected", `document.querySelector('.display-state').innerText.includes('connected')`)
	waitJS(t, ops, 30*time.Second, "the guest's screen drawn", `(() => { const c = document.querySelector('#screen canvas');
		const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
		for (let i = 0; i < d.length; i += 4) if (d[i] || d[i+1] || d[i+2]) return true;
		return false })()`)
	run(t, ops, 10*time.Second, "type on the guest's screen",
		chromedp.Click("#screen canvas", chromedp.ByQuery),
		chromedp.KeyEvent("vgaping from the browser"),
		chromedp.KeyEvent(kb.Enter))
	testutil.Eventually(t, 30*time.Second, func() error {
		if log, _ := e.any().ConsoleLog(e.ctx(), "web1", 64<<10); !strings.Contains(log.Log, "CORRAL-VGA-INPUT from the browser") {
			return errors.New("what was typed on the graphical console did not run")
		}
		return nil
	})
	screenshot(t, ops, "vm-display")

	// Live-migrate it to the other host from its page, then resize it (at
	// its next start); its charts draw meanwhile.
	var from string
	if v, err := e.any().VM(e.ctx(), "web1"); err == nil {
		from = v.Host
	}
	to := map[string]string{"h1": "h2", "h2": "h1"}[from]
	run(t, ops, 10*time.Second, "migrate", setField("#migrate-target", to), chromedp.Click(`form[aria-label="Migrate"] button[type=submit]`, chromedp.ByQuery))
	e.waitVM("web1", 2*time.Minute, func(v api.VM) error {
		if v.Host != to || v.State != "running" {
			return fmt.Errorf("web1 on %s, %s; want running on %s", v.Host, v.State, to)
		}
		return nil
	})
	// The page must have caught up with the move before we click: its
	// facts and hints change height when it does, and a click aimed
	// before that lands beside the button.
	waitJS(t, ops, 30*time.Second, "the page shows web1 running on "+to, `(() => {
		const dt = [...document.querySelectorAll('.facts dt')].find((d) => d.innerText === 'Host');
		return !!dt && dt.nextElementSibling.innerText.trim() === '`+to+`' &&
			!!document.querySelector('.state.s-running') && !document.querySelector('.change .hint') })()`)
	// The form is submitted as a form, not by a click at where its button
	// was: the charts and events below still load and move it (CI at
	// 51044d1 clicked beside it, and web1 kept 1 vCPU). The button that
	// opens it is pressed the same way, for the same reason (CI at 5bb6c79
	// clicked beside it and the form never opened).
	run(t, ops, 10*time.Second, "resize",
		chromedp.WaitVisible("#open-resize", chromedp.ByQuery),
		chromedp.Evaluate(`document.querySelector('#open-resize').click()`, nil),
		chromedp.WaitVisible("#resize-form", chromedp.ByQuery),
		setField("#resize-vcpus", "2"),
		chromedp.Evaluate(`document.querySelector('#resize-form').requestSubmit()`, nil))
	e.waitVM("web1", 30*time.Second, func(v api.VM) error {
		if v.Spec.VCPUs != 2 {
			return fmt.Errorf("web1 has %d vCPUs", v.Spec.VCPUs)
		}
		return nil
	})
	waitJS(t, ops, 30*time.Second, "the charts", `[...document.querySelectorAll('.chart h3 small')].length === 3`)

	run(t, ops, 10*time.Second, "stop", chromedp.Click(`//button[text()="Stop"]`, chromedp.BySearch))
	waitJS(t, ops, 90*time.Second, "web1 stopped", `!!document.querySelector('.state.s-stopped')`)
	screenshot(t, ops, "vm-detail")
	run(t, ops, 10*time.Second, "delete", chromedp.Click(`//button[text()="Delete"]`, chromedp.BySearch))
	waitJS(t, ops, 30*time.Second, "back on the list", `location.hash === '#/vms'`)
	testutil.Eventually(t, time.Minute, func() error {
		if _, err := e.any().VM(e.ctx(), "web1"); err == nil {
			return fmt.Errorf("web1 still exists")
		}
		return nil
	})

	// A group's page shows its members and how many are ready.
	if out, err := e.corralctl("h1", "group", "create", "app", "--count", "2", "--memory", "128M", "--image", "base",
		"--kernel", e.guest.Kernel, "--initrd", e.guest.Initrd, "--cmdline", "console=ttyS0 quiet"); err != nil {
		t.Fatalf("group create: %v\n%s", err, out)
	}
	run(t, ops, 10*time.Second, "the group page", chromedp.Navigate(st.API+"/#/groups/app"), chromedp.WaitVisible("#group-count", chromedp.ByQuery))
	waitJS(t, ops, 2*time.Minute, "both members ready", `document.querySelector('#group-count').innerText.includes('2 members of 2, 2 running, 2 ready')`)
	screenshot(t, ops, "group")
	// A new template from the group's page rolls out member by member.
	run(t, ops, 10*time.Second, "change the template",
		chromedp.Click("#edit-template", chromedp.ByQuery),
		chromedp.WaitVisible("#template-form", chromedp.ByQuery),
		setField("#tpl-cmdline", "console=ttyS0 quiet corral.v=2"),
		chromedp.Click(`#template-form button[type=submit]`, chromedp.ByQuery))
	waitJS(t, ops, 3*time.Minute, "the new template rolled out", `document.body.innerText.includes('2: ') &&
		document.body.innerText.includes('2 of 2 members on it') && document.querySelector('#group-count').innerText.includes('2 ready')`)
	if g, err := e.any().Group(e.ctx(), "app"); err != nil || g.Version != 2 || !strings.Contains(g.Template.Kernel.Cmdline, "corral.v=2") {
		t.Fatalf("group after the portal's roll-out: %+v %v", g, err)
	}
	if out, err := e.corralctl("h1", "group", "rm", "app"); err != nil {
		t.Fatalf("group rm: %v\n%s", err, out)
	}

	watch := newTab()
	login(t, watch, st.API, secrets["watch"])
	run(t, watch, 10*time.Second, "the VM list", chromedp.Navigate(st.API+"/#/vms"), chromedp.WaitVisible(`input[type=search]`, chromedp.ByQuery))
	var hasCreate bool
	run(t, watch, 5*time.Second, "look for create", chromedp.Evaluate(`!!document.querySelector('#create-vm')`, &hasCreate))
	if hasCreate {
		t.Fatal("a viewer is offered the create button")
	}
	var statuses []int
	run(t, watch, 10*time.Second, "forged requests", chromedp.Evaluate(`Promise.all([
		fetch('/v1/vms', {method: 'POST', headers: {Authorization: 'Bearer ' + sessionStorage.getItem('corral.token'), 'Content-Type': 'application/json'},
			body: JSON.stringify({name: 'sneaky', spec: {vcpus: 1, memory_mib: 64, disks: [{size_mib: 8}]}})}).then(r => r.status),
		fetch('/v1/vms', {headers: {Authorization: 'Bearer corral_' + '0'.repeat(64)}}).then(r => r.status),
	])`, &statuses, func(p *runtime.EvaluateParams) *runtime.EvaluateParams { return p.WithAwaitPromise(true) }))
	if len(statuses) != 2 || statuses[0] != 403 || statuses[1] != 401 {
		t.Fatalf("forged requests answered %v, want [403 401]", statuses)
	}
	if _, err := e.any().VM(e.ctx(), "sneaky"); err == nil {
		t.Fatal("the viewer's forged create made a VM")
	}

	// An admin labels a host from its page; the hosts page lists both.
	admin := newTab()
	login(t, admin, st.API, secrets["boss"])
	run(t, admin, 20*time.Second, "label h2",
		chromedp.Navigate(st.API+"/#/hosts/h2"),
		chromedp.WaitVisible("#host-labels", chromedp.ByQuery),
		chromedp.SendKeys("#host-labels", "rack=r7", chromedp.ByQuery),
		chromedp.Click(`form[aria-label="Edit labels"] button`, chromedp.ByQuery))
	testutil.Eventually(t, 10*time.Second, func() error {
		h, err := e.any().Host(e.ctx(), "h2")
		if err != nil || h.Labels["rack"] != "r7" {
			return fmt.Errorf("h2's labels %v (%v)", h.Labels, err)
		}
		return nil
	})
	// An admin drains h2 from its page and sees each VM's progress, then
	// restores it with failback.
	req := e.vmRequest("mover")
	req.Host = "h2"
	if _, err := e.any().CreateVM(e.ctx(), req); err != nil {
		t.Fatal(err)
	}
	e.waitVM("mover", 2*time.Minute, func(v api.VM) error {
		if v.State != "running" {
			return fmt.Errorf("mover is %s", v.State)
		}
		return nil
	})
	run(t, admin, 10*time.Second, "drain h2", chromedp.Click(`//button[text()="Drain"]`, chromedp.BySearch))
	waitJS(t, admin, 2*time.Minute, "h2 drained", `(document.querySelector('#drain-progress')?.innerText || '') === '1 of 1 VMs moved and running elsewhere'`)
	screenshot(t, admin, "host-drained")
	if v, err := e.any().VM(e.ctx(), "mover"); err != nil || v.Host != "h1" || v.State != "running" {
		t.Fatalf("mover after the drain: %+v %v", v, err)
	}
	run(t, admin, 10*time.Second, "restore h2", chromedp.Click(`//button[text()="Restore with failback"]`, chromedp.BySearch))
	e.waitVM("mover", 2*time.Minute, func(v api.VM) error {
		if v.Host != "h2" || v.State != "running" {
			return fmt.Errorf("mover on %s, %s", v.Host, v.State)
		}
		return nil
	})
	run(t, admin, 10*time.Second, "the hosts page", chromedp.Navigate(st.API+"/#/hosts"))
	waitJS(t, admin, 10*time.Second, "both hosts listed", `document.querySelectorAll('main table tbody tr').length === 2`)
	var viewerHasLabels bool
	run(t, watch, 10*time.Second, "the viewer on h2's page", chromedp.Navigate(st.API+"/#/hosts/h2"), chromedp.WaitVisible("main .facts", chromedp.ByQuery),
		chromedp.Evaluate(`!!document.querySelector('#host-labels')`, &viewerHasLabels))
	if viewerHasLabels {
		t.Fatal("a viewer is offered label editing")
	}

	// The viewer's token is revoked: the page returns to the login.
	if out, err := e.corralctl("h1", "token", "revoke", "watch"); err != nil {
		t.Fatalf("revoke: %v\n%s", err, out)
	}
	waitJS(t, watch, 40*time.Second, "back at the login", `!!document.querySelector('#token') && document.body.innerText.includes('session ended')`)
}

package web

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/coder/websocket"
)

// TestPortalInFirefox drives the built portal in a real headless Firefox
// (over WebDriver BiDi, which Firefox speaks itself: no geckodriver)
// against a fake cluster of 3 hosts and 20 VMs: it logs in through the
// login form, sees the dashboard and its live event stream, walks the nav
// by keyboard, searches and filters the VM list, opens a VM and sees its
// CPU chart, and fails on any JavaScript error (none is excused).
func TestPortalInFirefox(t *testing.T) {
	srv := httptest.NewServer(fakeCluster(3, 20))
	t.Cleanup(srv.Close) // after Firefox is gone: its event stream holds a request open
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	t.Cleanup(cancel)
	ff := startFirefox(ctx, t)
	ff.call(t, "session.subscribe", map[string]any{"events": []string{"log.entryAdded"}}, nil)
	var tree struct {
		Contexts []struct{ Context string } `json:"contexts"`
	}
	ff.call(t, "browsingContext.getTree", map[string]any{"maxDepth": 0}, &tree)
	if len(tree.Contexts) == 0 {
		t.Fatal("Firefox has no browsing context")
	}
	ff.tab = tree.Contexts[0].Context
	rows := func(n int) string {
		return fmt.Sprintf(`document.querySelectorAll('main table tbody tr').length === %d`, n)
	}

	// Logged out, the portal asks for a token; the form takes one.
	ff.call(t, "browsingContext.navigate", map[string]any{"context": ff.tab, "url": srv.URL + "/", "wait": "complete"}, nil)
	ff.poll(t, "the login form", `document.querySelector('main.login input#token') !== null && document.activeElement?.id === 'token'`)
	token := "corral_" + strings.Repeat("0", 64)
	ff.eval(t, `(() => {
		const i = document.querySelector('#token');
		i.value = `+jsString(token)+`;
		i.dispatchEvent(new Event('input', { bubbles: true }));
	})()`, nil)
	ff.eval(t, `document.querySelector('main.login button[type=submit]').click()`, nil)

	// The dashboard: a row per host, the VM count, who is logged in.
	ff.poll(t, "the dashboard with 3 hosts and 20 VMs", rows(3)+` && [...document.querySelectorAll('.card')].some((c) =>
		c.querySelector('b')?.textContent === 'VMs' && c.querySelector('span')?.textContent === '20')`)
	ff.poll(t, "the dashboard's state counts", `[...document.querySelectorAll('.card')].map((c) => c.innerText.replace(/\s+/g, ' ')).join('|')
		.includes('running 12|starting 4|stopped 4')`)
	ff.poll(t, "the event stream live", `[...document.querySelectorAll('main h2 small')].some((s) => s.textContent === 'live')`)
	ff.poll(t, "the token kept in the tab and the role shown", `sessionStorage.getItem('corral.token') === `+jsString(token)+
		` && document.querySelector('nav .who')?.textContent.includes('token bench · operator')`)

	// Keyboard: every nav link takes focus, Tab moves along them, Enter follows one.
	var links []string
	ff.eval(t, `[...document.querySelectorAll('nav a')].filter((a) => { a.focus(); return document.activeElement === a; }).map((a) => a.textContent)`, &links)
	if want := []string{"Dashboard", "Hosts", "VMs", "Groups", "Networks", "Images", "Projects", "Events"}; strings.Join(links, ",") != strings.Join(want, ",") {
		t.Fatalf("focusable nav links %q, want %q", links, want)
	}
	ff.eval(t, `document.querySelector('nav a[href="#/hosts"]').focus()`, nil)
	ff.keys(t, "\uE004") // Tab
	ff.poll(t, "Tab from Hosts to the VMs link", `document.activeElement?.getAttribute('href') === '#/vms'`)
	ff.keys(t, "\uE007") // Enter

	// The VM list, searched by typing and filtered by state.
	ff.poll(t, "the VM list with 20 rows", `location.hash === '#/vms' && `+rows(20)+
		` && document.querySelector('nav a[href="#/vms"]').getAttribute('aria-current') === 'page'`)
	ff.eval(t, `document.querySelector('input[type=search]').focus()`, nil)
	ff.keys(t, "vm-001")
	ff.poll(t, "the 10 VMs named vm-001*", rows(10)+` && [...document.querySelectorAll('main tbody tr td:first-child')].every((td) => td.textContent.startsWith('vm-001'))`)
	ff.keys(t, "\uE003\uE003\uE003\uE003\uE003\uE003h2") // Backspace ×6, then search by host
	ff.poll(t, "the 7 VMs on h2", rows(7)+` && [...document.querySelectorAll('main tbody tr td:nth-child(3)')].every((td) => td.textContent === 'h2')`)
	ff.eval(t, `(() => {
		const q = document.querySelector('input[type=search]');
		q.value = '';
		q.dispatchEvent(new Event('input', { bubbles: true }));
		const s = document.querySelector('select[aria-label="Filter by state"]');
		s.value = 'stopped';
		s.dispatchEvent(new Event('change', { bubbles: true }));
	})()`, nil)
	ff.poll(t, "the 4 stopped VMs", rows(4)+` && [...document.querySelectorAll('main tbody .state')].every((s) => s.textContent === 'stopped')`)
	ff.eval(t, `(() => {
		const s = document.querySelector('select[aria-label="Filter by state"]');
		s.value = '';
		s.dispatchEvent(new Event('change', { bubbles: true }));
	})()`, nil)
	ff.poll(t, "all 20 VMs again", rows(20))

	// A running VM's page: its facts, the actions an operator may take, its CPU chart.
	ff.eval(t, `document.querySelector('main a[href="#/vms/vm-0000"]').click()`, nil)
	ff.poll(t, "vm-0000's page", `location.hash === '#/vms/vm-0000' && document.querySelector('main h2')?.textContent === 'vm-0000'
		&& document.querySelector('dl.facts')?.innerText.replace(/\s+/g, ' ').includes('Host h1 Project default Size 2 vCPU, 4 GiB')
		&& [...document.querySelectorAll('.actions button')].map((b) => b.textContent + (b.disabled ? '-' : '+')).join() === 'Start-,Stop+,Restart+,Delete+'
		&& document.querySelector('#open-console') !== null`)
	ff.poll(t, "vm-0000's CPU chart", `/^CPU \d+% of 2 vCPU on h1$/.test(document.querySelector('.chart h3')?.textContent.trim())`)

	if errs := ff.errors(); len(errs) > 0 {
		t.Fatalf("JavaScript errors in Firefox:\n%s", strings.Join(errs, "\n"))
	}
}

// firefox is a headless Firefox and a WebDriver BiDi session in it.
type firefox struct {
	ctx    context.Context
	conn   *websocket.Conn
	tab    string        // the browsing context the test drives
	closed chan struct{} // closed when reading the socket fails
	stderr *watch

	mu      sync.Mutex
	id      int
	waiting map[int]chan bidiMessage
	readErr error
	logs    []logEntry
}

// bidiMessage is any message from Firefox: a command's success or error,
// or an event.
type bidiMessage struct {
	Type    string          `json:"type"` // success, error or event
	ID      int             `json:"id"`
	Result  json.RawMessage `json:"result"`
	Error   string          `json:"error"`
	Message string          `json:"message"`
	Method  string          `json:"method"` // an event's
	Params  json.RawMessage `json:"params"`
}

// logEntry is a log.entryAdded event: a console call or an uncaught error.
type logEntry struct {
	Type       string `json:"type"`  // console or javascript
	Level      string `json:"level"` // debug, info, warn or error
	Text       string `json:"text"`
	StackTrace *struct {
		CallFrames []struct {
			URL        string `json:"url"`
			LineNumber int    `json:"lineNumber"`
		} `json:"callFrames"`
	} `json:"stackTrace"`
}

// startFirefox starts firefox-esr headless with a fresh profile, connects
// to its BiDi endpoint and starts a session; the test's end kills it.
func startFirefox(ctx context.Context, t *testing.T) *firefox {
	t.Helper()
	bin, err := exec.LookPath("firefox-esr")
	if err != nil {
		if testing.Short() {
			t.Skip("no firefox-esr (Debian package firefox-esr)")
		}
		t.Fatal("no firefox-esr (Debian package firefox-esr; scripts/deps.sh test installs it)")
	}
	profile := t.TempDir() // removed after the cleanup below has killed Firefox
	// Only BiDi (no CDP), and nothing on the first run that opens pages or
	// reaches the network (Firefox also applies its own recommended prefs
	// for remote control, remote.prefs.recommended).
	prefs := map[string]any{
		"remote.active-protocols":                     1,
		"browser.shell.checkDefaultBrowser":           false,
		"browser.startup.page":                        0,
		"browser.startup.homepage_override.mstone":    "ignore",
		"browser.aboutwelcome.enabled":                false,
		"datareporting.policy.dataSubmissionEnabled":  false,
		"toolkit.telemetry.reportingpolicy.firstRun":  false,
		"app.update.disabledForTesting":               true,
		"app.normandy.enabled":                        false,
		"messaging-system.rsexperimentloader.enabled": false,
		"network.captive-portal-service.enabled":      false,
		"network.connectivity-service.enabled":        false,
	}
	var userJS strings.Builder
	for k, v := range prefs {
		j, _ := json.Marshal(v)
		fmt.Fprintf(&userJS, "user_pref(%q, %s);\n", k, j)
	}
	if err := os.WriteFile(filepath.Join(profile, "user.js"), []byte(userJS.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "--headless", "--no-remote", "--profile", profile, "--remote-debugging-port=0", "about:blank")
	cmd.Env = append(os.Environ(), "MOZ_CRASHREPORTER_DISABLE=1")
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true} // its content processes too, to end them together
	stderr := &watch{re: regexp.MustCompile(`WebDriver BiDi listening on (ws://\S+)`), found: make(chan string, 1)}
	cmd.Stderr = stderr
	cmd.WaitDelay = 5 * time.Second
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	t.Cleanup(func() {
		syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) // the group Setpgid made: Firefox's pid is its id
		<-exited
	})
	var url string
	select {
	case url = <-stderr.found:
	case err := <-exited:
		t.Fatalf("firefox-esr exited before listening (%v):\n%s", err, stderr)
	case <-ctx.Done():
		t.Fatalf("firefox-esr did not start listening:\n%s", stderr)
	}
	conn, _, err := websocket.Dial(ctx, url+"/session", nil)
	if err != nil {
		t.Fatalf("connecting to %s/session: %v", url, err)
	}
	conn.SetReadLimit(16 << 20)
	ff := &firefox{ctx: ctx, conn: conn, closed: make(chan struct{}), stderr: stderr, waiting: map[int]chan bidiMessage{}}
	go ff.read()
	t.Cleanup(func() { conn.CloseNow() })
	var session struct {
		Capabilities struct {
			BrowserName    string `json:"browserName"`
			BrowserVersion string `json:"browserVersion"`
		} `json:"capabilities"`
	}
	ff.call(t, "session.new", map[string]any{"capabilities": map[string]any{}}, &session)
	t.Logf("%s %s", session.Capabilities.BrowserName, session.Capabilities.BrowserVersion)
	return ff
}

// read hands each command's answer to its caller and keeps log entries.
func (ff *firefox) read() {
	defer close(ff.closed)
	for {
		_, data, err := ff.conn.Read(ff.ctx)
		if err != nil {
			ff.mu.Lock()
			ff.readErr = err
			ff.mu.Unlock()
			return
		}
		var m bidiMessage
		if err := json.Unmarshal(data, &m); err != nil {
			continue // not for us: BiDi messages are JSON objects
		}
		ff.mu.Lock()
		if m.Type == "event" {
			if m.Method == "log.entryAdded" {
				var e logEntry
				if json.Unmarshal(m.Params, &e) == nil {
					ff.logs = append(ff.logs, e)
				}
			}
		} else if ch := ff.waiting[m.ID]; ch != nil {
			delete(ff.waiting, m.ID)
			ch <- m
		}
		ff.mu.Unlock()
	}
}

// call sends a command and decodes its result into result (if not nil).
func (ff *firefox) call(t *testing.T, method string, params, result any) {
	t.Helper()
	if err := ff.send(method, params, result); err != nil {
		t.Fatal(err)
	}
}

func (ff *firefox) send(method string, params, result any) error {
	ff.mu.Lock()
	ff.id++
	id := ff.id
	ch := make(chan bidiMessage, 1)
	ff.waiting[id] = ch
	ff.mu.Unlock()
	msg, _ := json.Marshal(map[string]any{"id": id, "method": method, "params": params})
	if err := ff.conn.Write(ff.ctx, websocket.MessageText, msg); err != nil {
		return fmt.Errorf("%s: %w", method, err)
	}
	select {
	case m := <-ch:
		if m.Type != "success" {
			return fmt.Errorf("%s: %s: %s", method, m.Error, m.Message)
		}
		if result != nil {
			return json.Unmarshal(m.Result, result)
		}
		return nil
	case <-ff.closed:
		ff.mu.Lock()
		defer ff.mu.Unlock()
		return fmt.Errorf("%s: the BiDi connection failed: %v\nfirefox-esr said:\n%s", method, ff.readErr, ff.stderr)
	}
}

// eval runs a JavaScript expression in the page (awaiting a promise) and
// decodes its value, as JSON, into out (if not nil).
func (ff *firefox) eval(t *testing.T, js string, out any) {
	t.Helper()
	ok, err := ff.evaluate(js, out)
	if err != nil {
		t.Fatal(err)
	}
	if !ok {
		t.Fatalf("%s threw (see above)", js)
	}
}

// evaluate is eval's work: ok is false if the script threw (err says why).
func (ff *firefox) evaluate(js string, out any) (ok bool, err error) {
	var r struct {
		Type   string `json:"type"` // success or exception
		Result struct {
			Type  string `json:"type"`
			Value any    `json:"value"`
		} `json:"result"`
		ExceptionDetails struct {
			Text string `json:"text"`
		} `json:"exceptionDetails"`
	}
	expr := `(async () => JSON.stringify(await (` + js + `)) ?? 'null')()`
	if err := ff.send("script.evaluate", map[string]any{"expression": expr, "target": map[string]any{"context": ff.tab}, "awaitPromise": true}, &r); err != nil {
		return false, err
	}
	if r.Type != "success" {
		return false, fmt.Errorf("%s\nthrew %s", js, r.ExceptionDetails.Text)
	}
	s, _ := r.Result.Value.(string)
	if out != nil {
		if err := json.Unmarshal([]byte(s), out); err != nil {
			return false, fmt.Errorf("%s\nreturned %v: %v", js, r.Result.Value, err)
		}
	}
	return true, nil
}

// poll waits until the JavaScript condition cond holds in the page, for
// up to 10 s, and fails the test saying what the page shows if it never does.
func (ff *firefox) poll(t *testing.T, what, cond string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		var holds bool
		_, err := ff.evaluate(`!!(`+cond+`)`, &holds)
		if holds {
			return
		}
		if time.Now().After(deadline) {
			var page string
			ff.evaluate(`location.hash + '\n' + document.body.innerText.slice(0, 2000)`, &page)
			t.Fatalf("no %s after 10 s (last error: %v); the page shows %s\nJavaScript errors: %q", what, err, page, ff.errors())
		}
		select {
		case <-tick.C:
		case <-ff.closed:
			_, err := ff.evaluate(`true`, nil) // says why
			t.Fatalf("waiting for %s: %v", what, err)
		}
	}
}

// keys types text into the page's focused element as real key presses
// (WebDriver key values: "\uE004" is Tab, "\uE007" Enter, "\uE003" Backspace).
func (ff *firefox) keys(t *testing.T, text string) {
	t.Helper()
	var actions []map[string]any
	for _, r := range text {
		actions = append(actions, map[string]any{"type": "keyDown", "value": string(r)}, map[string]any{"type": "keyUp", "value": string(r)})
	}
	ff.call(t, "input.performActions", map[string]any{"context": ff.tab,
		"actions": []any{map[string]any{"type": "key", "id": "keyboard", "actions": actions}}}, nil)
}

// errors are the uncaught JavaScript errors and console errors so far.
func (ff *firefox) errors() []string {
	ff.mu.Lock()
	defer ff.mu.Unlock()
	var errs []string
	for _, e := range ff.logs {
		if e.Type != "javascript" && e.Level != "error" {
			continue
		}
		at := ""
		if e.StackTrace != nil && len(e.StackTrace.CallFrames) > 0 {
			f := e.StackTrace.CallFrames[0]
			at = fmt.Sprintf(" at %s:%d", f.URL, f.LineNumber)
		}
		errs = append(errs, fmt.Sprintf("%s %s: %s%s", e.Type, e.Level, e.Text, at))
	}
	return errs
}

// jsString quotes s as a JavaScript string literal.
func jsString(s string) string {
	j, _ := json.Marshal(s)
	return string(j)
}

// watch keeps what Firefox writes to stderr (for failure messages) and
// sends the first submatch of re once it appears.
type watch struct {
	re    *regexp.Regexp
	found chan string

	mu   sync.Mutex
	buf  bytes.Buffer
	sent bool
}

func (w *watch) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.buf.Len() < 1<<20 {
		w.buf.Write(p)
	}
	if !w.sent {
		if m := w.re.FindSubmatch(w.buf.Bytes()); m != nil {
			w.found <- string(m[1])
			w.sent = true
		}
	}
	return len(p), nil
}

func (w *watch) String() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.buf.String()
}

package e2e

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/corralhq/corral/api"
	"github.com/corralhq/corral/internal/testutil"
)

// TestRemoteCorralctl: an operator's API token of project team, made on h1
// into a file,
// lets corralctl on h2 add h3's HTTPS API as a remote (its certificate
// pinned by the fingerprint h3's status shows) and create a VM through it,
// which runs in project team; the VM's created event names the token and
// h3's API as the source. The operator may not list tokens, and once the token is revoked
// the remote refuses it.
func TestRemoteCorralctl(t *testing.T) {
	e := newEnv(t, 3, "")
	var st api.Status
	testutil.Eventually(t, time.Minute, func() error {
		var err error
		st, err = e.client(2).Status(e.ctx())
		if err != nil || st.Protocol != st.ThisProtocol || st.API == "" {
			return fmt.Errorf("h3: protocol %d of %d, API %q: %v", st.Protocol, st.ThisProtocol, st.API, err)
		}
		return nil
	})
	if want := "https://" + e.host("h3").IP + ":8443"; st.API != want {
		t.Fatalf("h3's API is %q, want %q", st.API, want)
	}
	secret := filepath.Join(t.TempDir(), "ci.token")
	if _, err := e.corralctl("h1", "project", "create", "team", "--vcpus", "4"); err != nil {
		t.Fatal(err)
	}
	if _, err := e.corralctl("h1", "token", "create", "ci", "--role", "operator", "--project", "team", "--expires", "1h", "--secret-file", secret); err != nil {
		t.Fatal(err)
	}
	config := t.TempDir()
	// remotectl runs corralctl on h2 with its own remotes file, as a
	// laptop would.
	remotectl := func(args ...string) (string, error) {
		cmd := e.host("h2").Command(e.ctx(), e.ctlBin, args...)
		cmd.Env = append(os.Environ(), "XDG_CONFIG_HOME="+config, "CORRAL_SOCKET=", "CORRAL_REMOTE=", "CORRAL_TOKEN=")
		var stderr strings.Builder
		cmd.Stderr = &stderr
		out, err := cmd.Output()
		if err != nil {
			return string(out), fmt.Errorf("corralctl %s on h2: %v: %s", strings.Join(args, " "), err, stderr.String())
		}
		return string(out), nil
	}
	// h3 takes the token once it has applied it (made through h1).
	testutil.Eventually(t, 10*time.Second, func() error {
		out, err := remotectl("remote", "add", "lab", st.API, "--token-file", secret, "--fingerprint", st.APIFingerprint)
		if err != nil || !strings.Contains(out, "token ci (operator)") {
			return fmt.Errorf("remote add: %v %s", err, out)
		}
		return nil
	})
	if _, err := remotectl("remote", "switch", "lab"); err != nil {
		t.Fatal(err)
	}
	out, err := remotectl("vm", "create", "remote1", "--vcpus", "1", "--memory", "128M", "--image", "base",
		"--kernel", e.guest.Kernel, "--initrd", e.guest.Initrd, "--cmdline", "console=ttyS0 quiet corral.name=remote1", "--wait")
	if err != nil {
		t.Fatalf("vm create through the remote: %v %s", err, out)
	}
	if v := e.waitVM("remote1", 2*time.Minute, running); v.Project != "team" {
		t.Fatalf("remote1 is in project %q, want the token's, team", v.Project)
	}
	out, err = remotectl("events", "--actor", "token ci", "-o", "json")
	if err != nil {
		t.Fatal(err)
	}
	var evs []api.Event // -o json prints one object an event
	for dec := json.NewDecoder(strings.NewReader(out)); dec.More(); {
		var ev api.Event
		if err := dec.Decode(&ev); err != nil {
			t.Fatalf("events: %v: %s", err, out)
		}
		evs = append(evs, ev)
	}
	found := false
	for _, ev := range evs {
		if ev.Kind == "created" && ev.VM == "remote1" {
			found = true
			if ev.Actor != "token ci" || !strings.HasPrefix(ev.Source, "api@h3 from "+e.host("h2").IP+":") {
				t.Fatalf("created event: actor %q source %q", ev.Actor, ev.Source)
			}
		}
	}
	if !found {
		t.Fatalf("no created event for remote1 by token ci in %s", out)
	}
	if _, err := remotectl("token", "ls"); err == nil || !strings.Contains(err.Error(), "forbidden") {
		t.Fatalf("an operator lists tokens: %v", err)
	}
	if _, err := e.corralctl("h1", "token", "revoke", "ci"); err != nil {
		t.Fatal(err)
	}
	if _, err := remotectl("vm", "ls"); err == nil || !strings.Contains(err.Error(), "revoked") {
		t.Fatalf("a revoked token: %v", err)
	}
}

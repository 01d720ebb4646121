package main

import (
	"bytes"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/corralhq/corral/api"
	"github.com/corralhq/corral/api/client"
)

const testToken = "corral_" + "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"

// fakeAPI is an HTTPS server that knows one token: enough to drive the
// remote commands (the real API is tested in package daemon).
func fakeAPI(t *testing.T) (*httptest.Server, string) {
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") != "Bearer "+testToken {
			w.WriteHeader(http.StatusUnauthorized)
			json.NewEncoder(w).Encode(api.Error{Code: api.CodeUnauthenticated, Message: "unknown or revoked API token"})
			return
		}
		switch r.URL.Path {
		case "/v1/whoami":
			json.NewEncoder(w).Encode(api.Whoami{Actor: "token ci", Role: "operator", Source: "api@h1 from " + r.RemoteAddr})
		case "/v1/status":
			json.NewEncoder(w).Encode(api.Status{Host: "remote-h1", Leader: "remote-h1"})
		default:
			w.WriteHeader(http.StatusNotFound)
		}
	}))
	t.Cleanup(srv.Close)
	return srv, client.Fingerprint(srv.Certificate())
}

// run runs corralctl with args and returns what it printed.
func run(t *testing.T, args ...string) (string, error) {
	t.Helper()
	var out bytes.Buffer
	root := newRootTo(&out)
	root.SetArgs(args)
	root.SetOut(&out)
	root.SetErr(&out)
	err := root.Execute()
	return out.String(), err
}

func TestRemoteAddSwitchRm(t *testing.T) {
	srv, fp := fakeAPI(t)
	dir := t.TempDir()
	t.Setenv("XDG_CONFIG_HOME", dir)
	t.Setenv("CORRAL_SOCKET", "")
	t.Setenv("CORRAL_REMOTE", "")
	t.Setenv("CORRAL_TOKEN", "")
	tokFile := filepath.Join(dir, "tok")
	os.WriteFile(tokFile, []byte(testToken+"\n"), 0o600)
	sock := filepath.Join(dir, "none.sock") // no local corrald

	// Without a matching fingerprint nothing is added.
	if out, err := run(t, "remote", "add", "prod", srv.URL, "--token-file", tokFile, "--fingerprint", strings.Repeat("ab", 32)); err == nil || !strings.Contains(err.Error(), fp) {
		t.Fatalf("wrong fingerprint: %v %s", err, out)
	}
	bad := filepath.Join(dir, "bad")
	os.WriteFile(bad, []byte("corral_"+strings.Repeat("f", 64)), 0o600)
	if _, err := run(t, "remote", "add", "prod", srv.URL, "--token-file", bad, "--yes"); err == nil || !strings.Contains(err.Error(), "refuses the credential") {
		t.Fatalf("bad token: %v", err)
	}
	if _, err := os.Stat(filepath.Join(dir, "corral", "remotes.json")); err == nil {
		t.Fatal("a refused remote was saved")
	}
	out, err := run(t, "remote", "add", "prod", srv.URL, "--token-file", tokFile, "--fingerprint", strings.ToUpper(fp))
	if err != nil || !strings.Contains(out, "token ci (operator)") {
		t.Fatalf("add: %v %s", err, out)
	}
	fi, err := os.Stat(filepath.Join(dir, "corral", "remotes.json"))
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("remotes.json: %v %v", fi, err)
	}
	if out, err := run(t, "status", "--socket", sock, "--remote", "prod"); err != nil || !strings.Contains(out, "remote-h1") {
		t.Fatalf("status --remote: %v %s", err, out)
	}
	// The socket stays the default until a switch.
	if _, err := run(t, "status", "--socket", sock); err == nil {
		t.Fatal("status reached something other than the missing socket")
	}
	t.Setenv("CORRAL_REMOTE", "prod")
	if out, err := run(t, "status"); err != nil || !strings.Contains(out, "remote-h1") {
		t.Fatalf("CORRAL_REMOTE: %v %s", err, out)
	}
	t.Setenv("CORRAL_TOKEN", "corral_"+strings.Repeat("e", 64))
	if _, err := run(t, "status"); err == nil || !strings.Contains(err.Error(), "revoked") {
		t.Fatalf("CORRAL_TOKEN replaces the remote's token: %v", err)
	}
	t.Setenv("CORRAL_TOKEN", "")
	t.Setenv("CORRAL_REMOTE", "")
	if _, err := run(t, "remote", "switch", "prod"); err != nil {
		t.Fatal(err)
	}
	if out, err := run(t, "status"); err != nil || !strings.Contains(out, "remote-h1") {
		t.Fatalf("after switch: %v %s", err, out)
	}
	out, err = run(t, "remote", "ls")
	if err != nil || !strings.Contains(out, "prod") || strings.Contains(out, testToken) {
		t.Fatalf("ls: %v %s", err, out)
	}
	if _, err := run(t, "remote", "rm", "prod"); err != nil {
		t.Fatal(err)
	}
	if _, err := run(t, "status", "--socket", sock); err == nil {
		t.Fatal("status after rm reached something")
	}
	if _, err := run(t, "status", "--remote", "prod"); err == nil || !strings.Contains(err.Error(), `no remote "prod"`) {
		t.Fatalf("removed remote: %v", err)
	}
}

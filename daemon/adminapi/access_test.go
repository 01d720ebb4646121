package adminapi

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/corralhq/corral/api"
	"github.com/corralhq/corral/internal/testutil"
)

func TestRouteRoles(t *testing.T) {
	for pattern, want := range map[string]Role{
		"GET /v1/vms":                        RoleViewer,
		"GET /v1/cluster/tokens":             RoleViewer,
		"POST /v1/vms":                       RoleOperator,
		"GET /v1/vms/{name}/console":         RoleOperator,
		"DELETE /v1/images/{name}":           RoleOperator,
		"POST /v1/hosts/{name}/drain":        RoleAdmin,
		"PUT /v1/cluster/ha":                 RoleAdmin,
		"GET /v1/cluster/backup":             RoleAdmin,
		"GET /v1/cluster/recovery":           RoleViewer,
		"POST /v1/cluster/recovery/end":      RoleAdmin,
		"POST /v1/cluster/gossip-key/rotate": RoleAdmin,
		"GET /v1/tokens":                     RoleAdmin,
		"POST /v1/tokens":                    RoleAdmin,
		"DELETE /v1/tokens/{name}":           RoleAdmin,
		"POST /v1/certificates":              RoleAdmin,
		"GET /v1/projects":                   RoleViewer,
		"PUT /v1/projects/{name}/quota":      RoleAdmin,
		"DELETE /v1/projects/{name}":         RoleAdmin,

		"PUT /v1/projects/{name}/backup-schedule": RoleOperator,

		"GET /v1/vms/{name}/snapshots":                    RoleViewer,
		"POST /v1/vms/{name}/snapshots":                   RoleOperator,
		"POST /v1/vms/{name}/snapshots/{snapshot}/revert": RoleOperator,
		"DELETE /v1/vms/{name}/snapshots/{snapshot}":      RoleOperator,

		"GET /v1/backup-targets":                    RoleViewer,
		"POST /v1/backup-targets":                   RoleAdmin,
		"DELETE /v1/backup-targets/{name}":          RoleAdmin,
		"GET /v1/backup-targets/{name}/credentials": RoleAdmin,
		"POST /v1/vms/{name}/backup":                RoleOperator,
		"GET /v1/backups":                           RoleViewer,
		"GET /v1/backups/{id}":                      RoleViewer,
		"DELETE /v1/backups/{id}":                   RoleOperator,
		"POST /v1/backups/{id}/restore":             RoleOperator,

		"PUT /v1/vms/{name}/snapshot-schedule": RoleOperator,
		"PUT /v1/vms/{name}/backup-schedule":   RoleOperator,
	} {
		if got := routeRole(pattern); got != want {
			t.Errorf("%s needs %s, want %s", pattern, got, want)
		}
	}
}

// peerHelperEnv makes the test binary a client: it sends the requests in
// the variable (METHOD PATH [BODY], one per line) to the socket in
// CORRAL_PEER_SOCKET and prints "CODE BODY" for each.
const peerHelperEnv = "CORRAL_PEER_REQUESTS"

func TestPeerHelper(t *testing.T) {
	reqs := os.Getenv(peerHelperEnv)
	if reqs == "" {
		return // not a helper run
	}
	sock := os.Getenv("CORRAL_PEER_SOCKET")
	hc := &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		return (&net.Dialer{}).DialContext(ctx, "unix", sock)
	}}}
	for _, line := range strings.Split(reqs, "\n") {
		f := strings.SplitN(line, " ", 3)
		var body io.Reader
		if len(f) == 3 {
			body = strings.NewReader(f[2])
		}
		req, _ := http.NewRequest(f[0], "http://corrald"+f[1], body)
		resp, err := hc.Do(req)
		if err != nil {
			fmt.Printf("ERR %v\n", err)
			continue
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		fmt.Printf("%d %s\n", resp.StatusCode, strings.TrimSpace(string(b)))
	}
	os.Exit(0)
}

// Clients other than root, with the credentials the kernel gives them
// (the test runs its own binary as uid 65534 with chosen groups): outside
// both groups nothing, the read group reads and is refused writes (the
// backend never called), the admin group changes hosts.
func TestSocketRolesFollowPeerCredentials(t *testing.T) {
	// As the project's root tests do: skipped only with -short, a failure
	// for a run without root otherwise (switching credentials needs it).
	if testing.Short() {
		t.Skip("switches credentials (needs root); skipped with -short")
	}
	if os.Geteuid() != 0 {
		t.Fatal("this test switches credentials and needs root (run make test as root, or go test -short)")
	}
	dir, err := os.MkdirTemp("", "corral-peer-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	os.Chmod(dir, 0o755)
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(dir, "client")
	data, err := os.ReadFile(self)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(bin, data, 0o755); err != nil {
		t.Fatal(err)
	}
	sock := filepath.Join(dir, "api.sock")
	ln, err := Listen(sock, "", true)
	if err != nil {
		t.Fatal(err)
	}
	fb := &fakeBackend{hosts: map[string]api.Host{"h1": {Name: "h1"}}}
	s := New(fb, testutil.Logger(t))
	s.Access = Access{AdminGID: 4242, ReadGID: 4343}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Serve(ctx, ln) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
	})
	as := func(groups []uint32, reqs ...string) []string {
		t.Helper()
		cmd := exec.Command(bin, "-test.run=^TestPeerHelper$")
		cmd.Env = append(os.Environ(), peerHelperEnv+"="+strings.Join(reqs, "\n"), "CORRAL_PEER_SOCKET="+sock)
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534, Groups: groups}}
		out, err := cmd.Output()
		if err != nil {
			t.Fatalf("client as uid 65534 %v: %v\n%s", groups, err, out)
		}
		var lines []string
		sc := bufio.NewScanner(strings.NewReader(string(out)))
		for sc.Scan() {
			lines = append(lines, sc.Text())
		}
		if len(lines) != len(reqs) {
			t.Fatalf("client printed %q", out)
		}
		return lines
	}
	expect := func(got string, code int, text string) {
		t.Helper()
		if !strings.HasPrefix(got, fmt.Sprint(code)+" ") || !strings.Contains(got, text) {
			t.Errorf("got %q, want %d with %q", got, code, text)
		}
	}

	out := as(nil, "GET /v1/status")
	expect(out[0], 403, "uid 65534 (none: in neither group) may not use this socket")

	out = as([]uint32{4343}, "GET /v1/status", `POST /v1/vms {"name":"v1"}`, `PUT /v1/hosts/h1/labels {"set":{"a":"b"}}`,
		`POST /v1/vms/v1/snapshots {"name":"s1"}`, "DELETE /v1/vms/v1/snapshots/s1", `POST /v1/backup-targets {"name":"t1","dir":"/srv/b"}`,
		`PUT /v1/vms/v1/snapshot-schedule {"schedule":"hourly keep 24"}`, `PUT /v1/vms/v1/backup-schedule {"target":"t1","schedule":"daily keep 7"}`)
	expect(out[0], 200, `"host":"h1"`)
	expect(out[1], 403, "uid 65534 (viewer: group 4343) may not POST /v1/vms: it needs the operator role")
	expect(out[2], 403, "needs the admin role")
	expect(out[3], 403, "may not POST /v1/vms/v1/snapshots: it needs the operator role")
	expect(out[4], 403, "may not DELETE /v1/vms/v1/snapshots/s1: it needs the operator role")
	expect(out[5], 403, "may not POST /v1/backup-targets: it needs the admin role")
	expect(out[6], 403, "may not PUT /v1/vms/v1/snapshot-schedule: it needs the operator role")
	expect(out[7], 403, "may not PUT /v1/vms/v1/backup-schedule: it needs the operator role")
	if fb.calls != 0 {
		t.Fatalf("refused requests reached the backend %d times", fb.calls)
	}

	out = as([]uint32{4343, 4242}, `PUT /v1/hosts/h1/labels {"set":{"a":"b"}}`)
	expect(out[0], 200, `"a":"b"`)
	if fb.calls != 1 {
		t.Fatalf("admin's change: %d backend calls", fb.calls)
	}
}

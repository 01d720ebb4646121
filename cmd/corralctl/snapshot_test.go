package main

import (
	"encoding/json"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/corralhq/corral/api"
)

// fakeSnapshots is a corrald on a Unix socket that knows VM web1 and
// takes its snapshots as a host would: the last one "creating" for the
// first two reads of the VM, then ready, frozen (never, when stuck); a
// snapshot called "bad" fails instead (gone, with a snapshot-failed
// event).
type fakeSnapshots struct {
	mu     sync.Mutex
	vm     api.VM
	reads  int
	stuck  bool
	events []api.Event
}

func (f *fakeSnapshots) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	defer f.mu.Unlock()
	answer := func(v any) { json.NewEncoder(w).Encode(v) }
	if !strings.HasPrefix(r.URL.Path, "/v1/vms/web1") && r.URL.Path != "/v1/events" {
		w.WriteHeader(http.StatusNotFound)
		answer(api.Error{Code: api.CodeNotFound, Message: "no such thing"})
		return
	}
	switch r.Method + " " + r.URL.Path {
	case "GET /v1/vms/web1":
		f.reads++
		if i := len(f.vm.Snapshots) - 1; f.reads > 2 && !f.stuck && i >= 0 && f.vm.Snapshots[i].State == "creating" {
			s := f.vm.Snapshots[i]
			if s.Name == "bad" {
				f.vm.Snapshots = f.vm.Snapshots[:i]
				f.events = append(f.events, api.Event{Seq: uint64(len(f.events) + 1), Time: s.CreatedAt.Add(time.Millisecond), Kind: "snapshot-failed", VM: "web1",
					Message: `snapshot "bad": disk on fire`})
			} else {
				f.vm.Snapshots[i].State, f.vm.Snapshots[i].Consistency = "ready", "frozen"
			}
		}
		answer(f.vm)
	case "GET /v1/vms/web1/snapshots":
		answer(f.vm.Snapshots)
	case "POST /v1/vms/web1/snapshots":
		var req api.SnapshotCreateRequest
		json.NewDecoder(r.Body).Decode(&req)
		s := api.Snapshot{Name: req.Name, CreatedAt: time.Now().UTC(), State: "creating"}
		if f.vm.State == "stopped" {
			s.State, s.Consistency = "ready", "stopped"
		}
		f.vm.Snapshots = append(f.vm.Snapshots, s)
		f.reads = 0
		answer(s)
	case "POST /v1/vms/web1/snapshots/s1/revert":
		answer(f.vm)
	case "DELETE /v1/vms/web1/snapshots/s1":
		f.vm.Snapshots = f.vm.Snapshots[1:]
		answer(f.vm)
	case "GET /v1/events":
		answer(f.events)
	default:
		w.WriteHeader(http.StatusNotFound)
		answer(api.Error{Code: api.CodeNotFound, Message: "no route for " + r.Method + " " + r.URL.Path})
	}
}

func serveFake(t *testing.T, h http.Handler) string {
	t.Helper()
	sock := filepath.Join(t.TempDir(), "corral.sock")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: h}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return sock
}

func TestSnapshotCommands(t *testing.T) {
	t.Setenv("CORRAL_REMOTE", "")
	f := &fakeSnapshots{vm: api.VM{Name: "web1", Desired: "running", State: "running", Host: "h1", CreatedAt: time.Now()}}
	sock := serveFake(t, f)
	ctl := func(args ...string) (string, error) {
		t.Helper()
		return run(t, append(args, "--socket", sock)...)
	}

	out, err := ctl("vm", "snapshot", "create", "web1", "s1")
	if err != nil || !strings.HasPrefix(out, "snapshot s1 of web1 taken in ") || !strings.HasSuffix(out, "s (frozen: the guest agent froze its file systems)\n") {
		t.Fatalf("create: %v %q", err, out)
	}
	out, err = ctl("vm", "snapshot", "create", "web1", "s2", "--no-wait")
	if err != nil || out != "snapshot s2 of web1 is being taken by the VM's host (see corralctl vm snapshot ls web1)\n" {
		t.Fatalf("create --no-wait: %v %q", err, out)
	}
	_, err = ctl("vm", "snapshot", "create", "web1", "bad")
	if err == nil || err.Error() != "snapshot bad of web1 failed: disk on fire (see corralctl events --vm web1)" {
		t.Fatalf("failed snapshot: %v", err)
	}
	// --timeout bounds the wait.
	f.mu.Lock()
	f.stuck = true // the host never finishes
	f.mu.Unlock()
	if _, err = ctl("vm", "snapshot", "create", "web1", "slow", "--timeout", "500ms"); err == nil || !strings.Contains(err.Error(), "still being taken after 500ms") {
		t.Fatalf("slow snapshot: %v", err)
	}

	out, err = ctl("vm", "snapshot", "ls", "web1")
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != 4 || !strings.HasPrefix(lines[0], "NAME") || !strings.Contains(lines[0], "CONSISTENCY") ||
		!strings.Contains(lines[1], "ready") || !strings.Contains(lines[1], "frozen") || !strings.Contains(lines[3], "creating") {
		t.Fatalf("ls:\n%s", out)
	}
	out, err = ctl("vm", "snapshot", "ls", "web1", "-o", "json")
	var list []api.Snapshot
	if err != nil || json.Unmarshal([]byte(out), &list) != nil || len(list) != 3 || list[0].Name != "s1" {
		t.Fatalf("ls -o json: %v %s", err, out)
	}
	out, err = ctl("vm", "show", "web1")
	if err != nil || !strings.Contains(out, "Snapshots:") || !strings.Contains(out, "3: s1, s2 (creating), slow (creating)") {
		t.Fatalf("show: %v\n%s", err, out)
	}
	out, err = ctl("vm", "snapshot", "revert", "web1", "s1")
	if err != nil || !strings.Contains(out, "vm web1 reverted to snapshot s1: the guest is powered off and started again on the snapshot's disks") {
		t.Fatalf("revert: %v %q", err, out)
	}
	out, err = ctl("vm", "snapshot", "rm", "web1", "s1")
	if err != nil || out != "snapshot s1 of web1 removed (2 snapshots left)\n" {
		t.Fatalf("rm: %v %q", err, out)
	}
	if _, err := ctl("vm", "snapshot", "create", "web1"); err == nil || !strings.Contains(err.Error(), "accepts 2 arg(s)") {
		t.Fatalf("create without a name: %v", err)
	}

	// A stopped VM's is ready at once.
	f.mu.Lock()
	f.vm.State, f.vm.Desired, f.stuck = "stopped", "stopped", false
	f.mu.Unlock()
	out, err = ctl("vm", "snapshot", "create", "web1", "cold")
	if err != nil || !strings.HasSuffix(out, "s (the VM was stopped)\n") {
		t.Fatalf("create of the stopped VM: %v %q", err, out)
	}
}

package main

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/corralhq/corral/api"
)

// fakeBackups is a corrald on a Unix socket that knows VM web1 and runs
// its backup jobs as a host would, one step each time the VM is read:
// starting, half done, a failed attempt, done on the second attempt, then
// complete (in the catalog). A job to target "bad" fails for good at its
// second read instead (gone, with a backup-failed event); with stuck set,
// a job never moves. A restored VM new1 reports its restore's progress,
// then runs.
type fakeBackups struct {
	mu       sync.Mutex
	targets  []api.BackupTarget
	vm       api.VM
	reads    int
	stuck    bool
	last     api.VMBackupRequest
	backups  []api.Backup
	events   []api.Event
	restored api.VM
	rreads   int
	seq      int
}

func (f *fakeBackups) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	defer f.mu.Unlock()
	answer := func(v any) { json.NewEncoder(w).Encode(v) }
	notFound := func(what string) {
		w.WriteHeader(http.StatusNotFound)
		answer(api.Error{Code: api.CodeNotFound, Message: what + ": not found"})
	}
	route := r.Method + " " + r.URL.Path
	switch {
	case route == "GET /v1/backup-targets":
		answer(f.targets)
	case route == "POST /v1/backup-targets":
		var req api.BackupTargetCreateRequest
		json.NewDecoder(r.Body).Decode(&req)
		t := api.BackupTarget{Name: req.Name, Dir: req.Dir, Where: req.Dir, CreatedAt: time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC)}
		f.targets = append(f.targets, t)
		answer(t)
	case route == "DELETE /v1/backup-targets/t1":
		if r.URL.Query().Get("force") != "true" {
			w.WriteHeader(http.StatusConflict)
			answer(api.Error{Code: api.CodeConflict, Message: `backup target "t1" holds 1 backups: remove them, or the target with force (its files stay)`})
			return
		}
		answer(f.targets[0])
		f.targets = f.targets[1:]
	case route == "POST /v1/vms/web1/backup":
		var req api.VMBackupRequest
		json.NewDecoder(r.Body).Decode(&req)
		f.last = req
		f.seq++
		j := api.BackupJob{ID: fmt.Sprintf("20250102-030405-00000%d", f.seq), Target: req.Target, Kind: "full", Host: "h1",
			StartedAt: time.Now().UTC(), BytesPerSec: req.BytesPerSec}
		if len(f.backups) > 0 && !req.Full {
			j.Kind, j.Parent = "incremental", f.backups[0].ID
		}
		f.vm.Backup, f.reads = &j, 0
		answer(j)
	case route == "GET /v1/vms/web1":
		f.reads++
		if j := f.vm.Backup; j != nil && !f.stuck {
			f.step(j)
		}
		answer(f.vm)
	case route == "GET /v1/backups":
		out := []api.Backup{}
		for _, b := range f.backups {
			if q := r.URL.Query().Get("vm"); q == "" || q == b.VM {
				out = append(out, b)
			}
		}
		answer(out)
	case strings.HasPrefix(route, "GET /v1/backups/"):
		for _, b := range f.backups {
			if b.ID == strings.TrimPrefix(r.URL.Path, "/v1/backups/") {
				answer(b)
				return
			}
		}
		notFound("backup")
	case strings.HasPrefix(route, "DELETE /v1/backups/"):
		id := strings.TrimPrefix(r.URL.Path, "/v1/backups/")
		for i, b := range f.backups {
			if b.ID == id {
				f.backups = append(f.backups[:i], f.backups[i+1:]...)
				answer(b)
				return
			}
		}
		notFound("backup")
	case strings.HasPrefix(route, "POST /v1/backups/") && strings.HasSuffix(route, "/restore"):
		var req api.RestoreRequest
		json.NewDecoder(r.Body).Decode(&req)
		id := strings.TrimSuffix(strings.TrimPrefix(r.URL.Path, "/v1/backups/"), "/restore")
		desired := "running"
		if req.Stopped {
			desired = "stopped"
		}
		f.restored = api.VM{Name: req.As, Host: "h2", Desired: desired, State: "pending", RestoringFrom: id}
		f.rreads = 0
		answer(f.restored)
	case route == "GET /v1/vms/new1":
		f.rreads++
		v := &f.restored
		switch f.rreads {
		case 1:
		case 2:
			v.State, v.Message = "starting", "restoring disk 1 of 1 from backup "+v.RestoringFrom+": 40%"
		default:
			v.State, v.Message, v.RestoringFrom = "running", "", ""
		}
		answer(*v)
	case route == "GET /v1/events":
		answer(f.events)
	default:
		notFound("no route for " + route)
	}
}

// step moves web1's job on by one read.
func (f *fakeBackups) step(j *api.BackupJob) {
	if j.Target == "bad" {
		if f.reads >= 2 {
			f.vm.Backup = nil
			f.events = append(f.events, api.Event{Seq: uint64(len(f.events) + 1), Time: time.Now(), Kind: "backup-failed", VM: "web1",
				Message: "backup " + j.ID + " to bad failed 3 times, given up: disk on fire"},
				api.Event{Seq: uint64(len(f.events) + 2), Time: time.Now(), Kind: "backup-failed", VM: "web1",
					Message: "backup 20250101-000000-000000 to bad failed 3 times, given up: an older one"})
		}
		return
	}
	switch f.reads {
	case 1:
	case 2:
		j.Done, j.Total = 8<<20, 16<<20
	case 3:
		j.Host, j.Attempts, j.Message, j.RetryAt = "", 1, "read disk 0: I/O error", time.Now().Add(10*time.Second)
	case 4:
		j.Host, j.Done, j.Total = "h1", 16<<20, 16<<20
	default:
		f.vm.Backup = nil
		b := api.Backup{ID: j.ID, VM: "web1", VMID: "id1", Target: j.Target, Kind: j.Kind, Parent: j.Parent, Project: "default",
			StartedAt: j.StartedAt, Finished: j.StartedAt.Add(12300 * time.Millisecond), Size: 16 << 20, Read: 4 << 20, Stored: 1 << 20, DiskSizes: []int64{16 << 20}}
		f.backups = append([]api.Backup{b}, f.backups...)
	}
}

func TestBackupCommands(t *testing.T) {
	t.Setenv("CORRAL_REMOTE", "")
	t.Setenv("CORRAL_PROJECT", "")
	poll := backupPoll
	backupPoll = 20 * time.Millisecond
	t.Cleanup(func() { backupPoll = poll })
	f := &fakeBackups{vm: api.VM{Name: "web1", Desired: "running", State: "running", Host: "h1", CreatedAt: time.Now()}}
	sock := serveFake(t, f)
	ctl := func(args ...string) (string, error) {
		t.Helper()
		return run(t, append(args, "--socket", sock)...)
	}

	// Targets.
	if _, err := ctl("backup", "target", "add", "t1"); err == nil || !strings.Contains(err.Error(), "give --dir DIR, or --s3-endpoint") {
		t.Fatalf("add without --dir: %v", err)
	}
	out, err := ctl("backup", "target", "add", "t1", "--dir", "/srv/backups")
	if err != nil || out != "backup target t1 added (/srv/backups)\n" {
		t.Fatalf("target add: %v %q", err, out)
	}
	out, err = ctl("backup", "target", "ls")
	if lines := strings.Split(strings.TrimSpace(out), "\n"); err != nil || len(lines) != 2 || !strings.HasPrefix(lines[0], "NAME") ||
		!strings.HasPrefix(lines[1], "t1 ") || !strings.Contains(lines[1], "/srv/backups") {
		t.Fatalf("target ls: %v\n%s", err, out)
	}

	// A backup, not waited for.
	out, err = ctl("vm", "backup", "web1", "--target", "t1")
	if err != nil || out != "backup 20250102-030405-000001 of web1 to t1 started (full)\n" {
		t.Fatalf("backup: %v %q", err, out)
	}
	out, err = ctl("vm", "show", "web1")
	if err != nil || !strings.Contains(out, "Backup:") || !strings.Contains(out, "20250102-030405-000001 (full) to t1 on h1") {
		t.Fatalf("show with a job: %v\n%s", err, out)
	}
	out, err = ctl("vm", "show", "web1")
	if err != nil || !strings.Contains(out, "20250102-030405-000001 (full) to t1 on h1: 50% of 16.0 MiB") {
		t.Fatalf("show with a job half done: %v\n%s", err, out)
	}
	out, err = ctl("vm", "show", "web1")
	if err != nil || !strings.Contains(out, "to t1, waiting for a host; 1 of 3 attempts failed, last: read disk 0: I/O error; retried at ") {
		t.Fatalf("show with a failed attempt: %v\n%s", err, out)
	}
	ctl("vm", "show", "web1")
	ctl("vm", "show", "web1") // complete
	if out, _ := ctl("vm", "show", "web1"); strings.Contains(out, "Backup:") {
		t.Fatalf("show after the job:\n%s", out)
	}

	// A backup waited for: its progress on stderr, its result on stdout.
	out, err = ctl("vm", "backup", "web1", "--target", "t1", "--limit", "50MiB", "--wait")
	if err != nil {
		t.Fatalf("backup --wait: %v\n%s", err, out)
	}
	if f.last.BytesPerSec != 50<<20 || f.last.Full {
		t.Fatalf("request %+v", f.last)
	}
	lines := strings.Split(strings.TrimSpace(out), "\n")
	want := []string{
		"backup 20250102-030405-000002: starting on h1",
		"backup 20250102-030405-000002: 50% of 16.0 MiB",
		"backup 20250102-030405-000002: attempt 1 of 3 failed: read disk 0: I/O error; retried at ",
		"backup 20250102-030405-000002: 100% of 16.0 MiB (attempt 2 of 3)",
		"backup 20250102-030405-000002 of web1 to t1 complete: incremental on 20250102-030405-000001, read 4.0 MiB, stored 1.0 MiB new, in 12.3s",
	}
	if len(lines) != len(want) {
		t.Fatalf("backup --wait printed:\n%s", out)
	}
	for i := range want {
		if !strings.HasPrefix(lines[i], want[i]) {
			t.Fatalf("backup --wait line %d: %q, want %q", i, lines[i], want[i])
		}
	}

	// One that fails for good says why, from its event.
	_, err = ctl("vm", "backup", "web1", "--target", "bad", "--full", "--wait")
	if err == nil || err.Error() != "backup 20250102-030405-000003 to bad failed 3 times, given up: disk on fire (see corralctl events --vm web1)" {
		t.Fatalf("failed backup: %v", err)
	}
	// --timeout bounds the wait.
	f.mu.Lock()
	f.stuck = true
	f.mu.Unlock()
	if _, err = ctl("vm", "backup", "web1", "--target", "t1", "--wait", "--timeout", "300ms"); err == nil ||
		!strings.Contains(err.Error(), "backup 20250102-030405-000004 of web1 is still under way; it goes on") {
		t.Fatalf("slow backup: %v", err)
	}
	f.mu.Lock()
	f.stuck, f.vm.Backup = false, nil
	f.mu.Unlock()
	for _, bad := range []string{"fast", "50MB", "-1", "1.2.3MiB", "MiB", "5 TiB", "0.1"} {
		if _, err := ctl("vm", "backup", "web1", "--target", "t1", "--limit", bad); err == nil || !strings.HasPrefix(err.Error(), "--limit: rate ") {
			t.Errorf("--limit %s: %v", bad, err)
		}
	}
	if _, err := ctl("vm", "backup", "web1"); err == nil || !strings.Contains(err.Error(), "--target is required") {
		t.Fatalf("backup without a target: %v", err)
	}

	// The catalog.
	out, err = ctl("backup", "ls")
	lines = strings.Split(strings.TrimSpace(out), "\n")
	if err != nil || len(lines) != 3 || !strings.HasPrefix(lines[0], "ID ") || !strings.Contains(lines[0], "STORED") ||
		!strings.HasPrefix(lines[1], "20250102-030405-000002 ") || !strings.Contains(lines[1], "incremental") || !strings.Contains(lines[1], "20250102-030405-000001") ||
		!strings.Contains(lines[2], "full") || !strings.Contains(lines[2], "16.0 MiB") {
		t.Fatalf("ls: %v\n%s", err, out)
	}
	out, err = ctl("backup", "ls", "--vm", "web1", "-o", "json")
	var list []api.Backup
	if err != nil || json.Unmarshal([]byte(out), &list) != nil || len(list) != 2 || list[0].ID != "20250102-030405-000002" {
		t.Fatalf("ls -o json: %v %s", err, out)
	}
	out, err = ctl("backup", "show", "20250102-030405-000002")
	if err != nil || !strings.Contains(out, "Kind:") || !strings.Contains(out, "incremental on 20250102-030405-000001") ||
		!strings.Contains(out, "(took 12.3s)") || !strings.Contains(out, "Stored:") || !strings.Contains(out, "1.0 MiB new") {
		t.Fatalf("show: %v\n%s", err, out)
	}
	if _, err := ctl("backup", "show", "20250102-030405-00000f"); err == nil || !strings.Contains(err.Error(), "not found") {
		t.Fatalf("show of none: %v", err)
	}

	// Restores.
	out, err = ctl("vm", "restore", "--backup", "20250102-030405-000002", "--as", "new1", "--wait")
	if err != nil {
		t.Fatalf("restore --wait: %v\n%s", err, out)
	}
	lines = strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != 2 || lines[0] != "vm new1: restoring disk 1 of 1 from backup 20250102-030405-000002: 40%" ||
		!strings.HasPrefix(lines[1], "vm new1 restored from backup 20250102-030405-000002 on h2 in ") {
		t.Fatalf("restore --wait printed:\n%s", out)
	}
	out, err = ctl("vm", "restore", "--backup", "20250102-030405-000002", "--as", "new1", "--stopped")
	if err != nil || out != "vm new1 created on h2 from backup 20250102-030405-000002; its host restores the disks (see corralctl vm show new1)\n" {
		t.Fatalf("restore: %v %q", err, out)
	}
	if _, err := ctl("vm", "restore", "--backup", "20250102-030405-000002"); err == nil || !strings.Contains(err.Error(), "with --as NEW or --in-place") {
		t.Fatalf("restore without --as: %v", err)
	}

	// Removal.
	out, err = ctl("backup", "rm", "20250102-030405-000001")
	if err != nil || out != "backup 20250102-030405-000001 of web1 removed from t1\n" {
		t.Fatalf("rm: %v %q", err, out)
	}
	if _, err := ctl("backup", "target", "rm", "t1"); err == nil || !strings.Contains(err.Error(), "holds 1 backups") {
		t.Fatalf("target rm without --force: %v", err)
	}
	out, err = ctl("backup", "target", "rm", "t1", "--force")
	if err != nil || out != "backup target t1 removed (its files stay)\n" {
		t.Fatalf("target rm: %v %q", err, out)
	}
}

func TestParseRate(t *testing.T) {
	for in, want := range map[string]int64{
		"0": 0, "200000": 200000, "512B": 512, "1K": 1 << 10, "64KiB": 64 << 10, "50MiB": 50 << 20, "50mib": 50 << 20,
		"50M": 50 << 20, "1GiB": 1 << 30, "1.5GiB": 3 << 29, "50MiB/s": 50 << 20, " 2G ": 2 << 30,
	} {
		if got, err := parseRate(in); err != nil || got != want {
			t.Errorf("parseRate(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	for _, in := range []string{"", "fast", "-1", "50MB", "5TiB", "1e6", "0x10", "1.2.3", ".", "MiB", "50 MiB", "inf", "NaN", "0.4", "99999999999GiB"} {
		if got, err := parseRate(in); err == nil {
			t.Errorf("parseRate(%q) = %d, want an error", in, got)
		}
	}
}

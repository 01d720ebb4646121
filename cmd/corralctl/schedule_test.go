package main

import (
	"encoding/json"
	"errors"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/corralhq/corral/api"
	"github.com/corralhq/corral/model"
)

// fakeSchedules is a corrald on a Unix socket that knows VM web1, target
// t1 and two backups (one made by a schedule), and records web1's
// schedules in their canonical form as the daemon does.
type fakeSchedules struct {
	mu   sync.Mutex
	vm   api.VM
	puts []string
}

func (f *fakeSchedules) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	defer f.mu.Unlock()
	answer := func(v any) { json.NewEncoder(w).Encode(v) }
	fail := func(code api.ErrorCode, msg string) {
		w.WriteHeader(code.Status())
		answer(api.Error{Code: code, Message: msg})
	}
	canonical := func(text string) (string, bool) {
		if text == "" {
			return "", true
		}
		s, err := model.ParseSchedule(text)
		if err != nil {
			fail(api.CodeInvalid, err.Error())
			return "", false
		}
		return s.String(), true
	}
	route := r.Method + " " + r.URL.Path
	switch route {
	case "GET /v1/vms/web1":
		answer(f.vm)
	case "GET /v1/vms/web1/snapshots":
		answer(f.vm.Snapshots)
	case "PUT /v1/vms/web1/snapshot-schedule":
		var req api.SnapshotScheduleRequest
		json.NewDecoder(r.Body).Decode(&req)
		f.puts = append(f.puts, "snapshot "+req.Schedule)
		if s, ok := canonical(req.Schedule); ok {
			f.vm.SnapshotSchedule, f.vm.SnapshotScheduleLast = s, time.Time{}
			answer(f.vm)
		}
	case "PUT /v1/vms/web1/backup-schedule":
		var req api.BackupScheduleRequest
		json.NewDecoder(r.Body).Decode(&req)
		f.puts = append(f.puts, "backup "+req.Schedule+" to "+req.Target)
		if req.Schedule != "" && req.Target != "t1" {
			fail(api.CodeNotFound, `backup target "`+req.Target+`": not found`)
			return
		}
		if s, ok := canonical(req.Schedule); ok {
			f.vm.BackupSchedule, f.vm.BackupTarget, f.vm.BackupScheduleLast = s, req.Target, time.Time{}
			answer(f.vm)
		}
	case "GET /v1/backups":
		t0 := time.Date(2025, 1, 2, 2, 0, 0, 0, time.UTC)
		answer([]api.Backup{
			{ID: "20250102-020000-000002", VM: "web1", Target: "t1", Kind: "incremental", Parent: "20250101-020000-000001", Project: "default",
				StartedAt: t0, Finished: t0.Add(time.Minute), Size: 16 << 20, Read: 1 << 20, Stored: 1 << 20, Scheduled: true},
			{ID: "20250101-020000-000001", VM: "web1", Target: "t1", Kind: "full", Project: "default",
				StartedAt: t0.Add(-24 * time.Hour), Finished: t0.Add(-24*time.Hour + time.Minute), Size: 16 << 20, Read: 16 << 20, Stored: 8 << 20},
		})
	default:
		fail(api.CodeNotFound, "no route for "+route)
	}
}

func TestScheduleCommands(t *testing.T) {
	t.Setenv("CORRAL_REMOTE", "")
	t.Setenv("CORRAL_PROJECT", "")
	created := time.Date(2025, 1, 2, 3, 0, 0, 0, time.UTC)
	f := &fakeSchedules{vm: api.VM{Name: "web1", Desired: "running", State: "running", Host: "h1", CreatedAt: time.Now(),
		Snapshots: []api.Snapshot{{Name: "auto-20250102-030000", CreatedAt: created, State: "ready", Consistency: "frozen"}}}}
	sock := serveFake(t, f)
	ctl := func(args ...string) (string, error) {
		t.Helper()
		return run(t, append(args, "--socket", sock)...)
	}

	// Snapshot schedules: set (printed in the cluster's form), shown, removed.
	out, err := ctl("vm", "snapshot", "schedule", "web1", "hourly keep 24")
	if err != nil || out != "snapshot schedule of web1: hourly keep 24\n" {
		t.Fatalf("snapshot schedule: %v %q", err, out)
	}
	out, err = ctl("vm", "snapshot", "schedule", "web1", "Daily", "02:00", "keep", "7", "daily", "4", "weekly") // unquoted
	if err != nil || out != "snapshot schedule of web1: daily 02:00 keep 7 daily 4 weekly\n" {
		t.Fatalf("snapshot schedule, unquoted: %v %q", err, out)
	}
	if _, err := ctl("vm", "snapshot", "schedule", "web1", "weekly keep 4"); err == nil ||
		!strings.Contains(err.Error(), `starts with "weekly", not hourly, daily or every`) {
		t.Fatalf("bad snapshot schedule: %v", err)
	}
	f.mu.Lock()
	f.vm.SnapshotScheduleLast = created
	f.mu.Unlock()
	out, err = ctl("vm", "snapshot", "ls", "web1")
	lines := strings.Split(strings.TrimSpace(out), "\n")
	last := created.Local().Format(time.RFC3339)
	if err != nil || len(lines) != 3 || lines[0] != "Schedule: daily 02:00 keep 7 daily 4 weekly (last: "+last+")" ||
		!strings.HasPrefix(lines[1], "NAME") || !strings.HasPrefix(lines[2], "auto-20250102-030000 ") {
		t.Fatalf("snapshot ls:\n%s", out)
	}
	out, err = ctl("vm", "snapshot", "ls", "web1", "-o", "json")
	var list []api.Snapshot
	if err != nil || json.Unmarshal([]byte(out), &list) != nil || len(list) != 1 {
		t.Fatalf("snapshot ls -o json: %v %s", err, out)
	}
	out, err = ctl("vm", "show", "web1")
	if err != nil || !strings.Contains(out, "Snapshot schedule:") || !strings.Contains(out, "daily 02:00 keep 7 daily 4 weekly (last: "+last+")") ||
		strings.Contains(out, "Backup schedule:") {
		t.Fatalf("show with a snapshot schedule: %v\n%s", err, out)
	}
	out, err = ctl("vm", "snapshot", "schedule", "web1", "--off")
	if err != nil || out != "snapshot schedule of web1 removed\n" {
		t.Fatalf("snapshot schedule --off: %v %q", err, out)
	}
	if out, err = ctl("vm", "snapshot", "ls", "web1"); err != nil || strings.Contains(out, "Schedule:") {
		t.Fatalf("snapshot ls without a schedule: %v\n%s", err, out)
	}
	if out, err = ctl("vm", "show", "web1"); err != nil || strings.Contains(out, "Snapshot schedule:") {
		t.Fatalf("show without a schedule: %v\n%s", err, out)
	}
	for args, want := range map[string]string{
		"web1":                     "give a schedule",
		"web1 --off hourly keep 1": "give a schedule or --off, not both",
		"":                         "requires at least 1 arg",
	} {
		if _, err := ctl(append([]string{"vm", "snapshot", "schedule"}, strings.Fields(args)...)...); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("snapshot schedule %s: %v, want %q", args, err, want)
		}
	}

	// Backup schedules.
	out, err = ctl("vm", "backup-schedule", "web1", "--target", "t1", "daily 02:00 keep 7 daily 4 weekly")
	if err != nil || out != "backup schedule of web1: daily 02:00 keep 7 daily 4 weekly, to t1\n" {
		t.Fatalf("backup schedule: %v %q", err, out)
	}
	out, err = ctl("vm", "show", "web1")
	if err != nil || !strings.Contains(out, "Backup schedule:") || !strings.Contains(out, "daily 02:00 keep 7 daily 4 weekly, to t1\n") {
		t.Fatalf("show with a backup schedule: %v\n%s", err, out)
	}
	if _, err := ctl("vm", "backup-schedule", "web1", "--target", "nope", "daily keep 7"); !errors.Is(err, api.ErrNotFound) ||
		!strings.Contains(err.Error(), `backup target "nope"`) {
		t.Fatalf("backup schedule to no target: %v", err)
	}
	out, err = ctl("vm", "backup-schedule", "web1", "--off")
	if err != nil || out != "backup schedule of web1 removed\n" {
		t.Fatalf("backup schedule --off: %v %q", err, out)
	}
	if out, err = ctl("vm", "show", "web1"); err != nil || strings.Contains(out, "Backup schedule:") {
		t.Fatalf("show without a backup schedule: %v\n%s", err, out)
	}
	for args, want := range map[string]string{
		"web1 daily keep 7":                   "--target is required",
		"web1 --target t1":                    "give a schedule",
		"web1 --off --target t1":              "give no --target",
		"web1 --off --target t1 daily keep 7": "not both",
	} {
		if _, err := ctl(append([]string{"vm", "backup-schedule"}, strings.Fields(args)...)...); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("backup-schedule %s: %v, want %q", args, err, want)
		}
	}
	f.mu.Lock()
	puts := strings.Join(f.puts, "\n")
	f.mu.Unlock()
	want := strings.Join([]string{
		"snapshot hourly keep 24", "snapshot Daily 02:00 keep 7 daily 4 weekly", "snapshot weekly keep 4", "snapshot ",
		"backup daily 02:00 keep 7 daily 4 weekly to t1", "backup daily keep 7 to nope", "backup  to ",
	}, "\n")
	if puts != want {
		t.Fatalf("requests\n%s\nwant\n%s", puts, want)
	}

	// The catalog marks the scheduled backups.
	out, err = ctl("backup", "ls")
	lines = strings.Split(strings.TrimSpace(out), "\n")
	if err != nil || len(lines) != 3 || !strings.HasSuffix(lines[0], "SCHEDULED") || !strings.HasSuffix(lines[1], " yes") || !strings.HasSuffix(lines[2], " -") {
		t.Fatalf("backup ls:\n%s", out)
	}
}

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

// fakeProjectBackups is a corrald on a Unix socket that knows project p1,
// its VM web1 and target t1, and keeps their backup schedules as the
// cluster does: web1 follows p1's unless it has its own.
type fakeProjectBackups struct {
	mu             sync.Mutex
	project, owned [2]string // schedule, target
	puts           []string
}

func (f *fakeProjectBackups) vm() api.VM {
	v := api.VM{Name: "web1", Project: "p1", Desired: "stopped", State: "stopped", CreatedAt: time.Now()}
	switch {
	case f.owned[0] != "":
		v.BackupSchedule, v.BackupTarget = f.owned[0], f.owned[1]
	case f.project[0] != "":
		v.BackupSchedule, v.BackupTarget, v.BackupScheduleFrom = f.project[0], f.project[1], "p1"
	}
	return v
}

func (f *fakeProjectBackups) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	defer f.mu.Unlock()
	answer := func(v any) { json.NewEncoder(w).Encode(v) }
	fail := func(code api.ErrorCode, msg string) {
		w.WriteHeader(code.Status())
		answer(api.Error{Code: code, Message: msg})
	}
	set := func(into *[2]string, what string) bool {
		var req api.BackupScheduleRequest
		json.NewDecoder(r.Body).Decode(&req)
		f.puts = append(f.puts, what+" "+req.Schedule+" to "+req.Target)
		if req.Schedule == "" {
			*into = [2]string{}
			return true
		}
		if req.Target != "t1" {
			fail(api.CodeNotFound, `backup target "`+req.Target+`": not found`)
			return false
		}
		s, err := model.ParseSchedule(req.Schedule)
		if err != nil {
			fail(api.CodeInvalid, err.Error())
			return false
		}
		*into = [2]string{s.String(), req.Target}
		return true
	}
	project := func() api.Project {
		return api.Project{Name: "p1", Usage: api.Usage{VMs: 1}, BackupSchedule: f.project[0], BackupTarget: f.project[1]}
	}
	switch route := r.Method + " " + r.URL.Path; route {
	case "GET /v1/projects/p1":
		answer(project())
	case "PUT /v1/projects/p1/backup-schedule":
		if set(&f.project, "project") {
			answer(project())
		}
	case "GET /v1/vms/web1":
		answer(f.vm())
	case "PUT /v1/vms/web1/backup-schedule":
		if set(&f.owned, "vm") {
			answer(f.vm())
		}
	default:
		fail(api.CodeNotFound, "no route for "+route)
	}
}

func TestProjectBackupScheduleCommands(t *testing.T) {
	t.Setenv("CORRAL_REMOTE", "")
	t.Setenv("CORRAL_PROJECT", "")
	f := &fakeProjectBackups{}
	sock := serveFake(t, f)
	ctl := func(args ...string) (string, error) {
		t.Helper()
		return run(t, append(args, "--socket", sock)...)
	}

	out, err := ctl("project", "backup-schedule", "p1", "--target", "t1", "Daily", "02:00", "keep", "7") // unquoted
	if err != nil || out != "backup schedule of project p1: daily 02:00 keep 7, to t1\n" {
		t.Fatalf("project backup-schedule: %v %q", err, out)
	}
	out, err = ctl("project", "show", "p1")
	if err != nil || !strings.Contains(out, "Backup schedule:") || !strings.Contains(out, "daily 02:00 keep 7, to t1\n") {
		t.Fatalf("project show with a backup schedule: %v\n%s", err, out)
	}
	var p api.Project
	if out, err = ctl("-o", "json", "project", "show", "p1"); err != nil || json.Unmarshal([]byte(out), &p) != nil ||
		p.BackupSchedule != "daily 02:00 keep 7" || p.BackupTarget != "t1" {
		t.Fatalf("project show -o json: %v %s", err, out)
	}
	// The VM follows it, and says so.
	out, err = ctl("vm", "show", "web1")
	if err != nil || !strings.Contains(out, "daily 02:00 keep 7, to t1 (from project p1)\n") {
		t.Fatalf("vm show with the project's schedule: %v\n%s", err, out)
	}
	// Its own replaces it; --off gives the project's back.
	out, err = ctl("vm", "backup-schedule", "web1", "--target", "t1", "hourly keep 24")
	if err != nil || out != "backup schedule of web1: hourly keep 24, to t1\n" {
		t.Fatalf("vm backup-schedule: %v %q", err, out)
	}
	if out, err = ctl("vm", "show", "web1"); err != nil || !strings.Contains(out, "hourly keep 24, to t1\n") || strings.Contains(out, "from project") {
		t.Fatalf("vm show with its own schedule: %v\n%s", err, out)
	}
	out, err = ctl("vm", "backup-schedule", "web1", "--off")
	if err != nil || out != "backup schedule of web1: daily 02:00 keep 7, to t1 (from project p1)\n" {
		t.Fatalf("vm backup-schedule --off: %v %q", err, out)
	}
	if _, err := ctl("project", "backup-schedule", "p1", "--target", "nope", "daily keep 7"); !errors.Is(err, api.ErrNotFound) ||
		!strings.Contains(err.Error(), `backup target "nope"`) {
		t.Fatalf("project backup-schedule to no target: %v", err)
	}
	out, err = ctl("project", "backup-schedule", "p1", "--off")
	if err != nil || out != "backup schedule of project p1 removed\n" {
		t.Fatalf("project backup-schedule --off: %v %q", err, out)
	}
	if out, err = ctl("project", "show", "p1"); err != nil || strings.Contains(out, "Backup schedule:") {
		t.Fatalf("project show without a schedule: %v\n%s", err, out)
	}
	if out, err = ctl("vm", "show", "web1"); err != nil || strings.Contains(out, "Backup schedule:") {
		t.Fatalf("vm show without a schedule: %v\n%s", err, out)
	}
	for args, want := range map[string]string{
		"p1 daily keep 7":                   "--target is required",
		"p1 --target t1":                    "give a schedule",
		"p1 --off --target t1":              "give no --target",
		"p1 --off --target t1 daily keep 7": "not both",
		"":                                  "requires at least 1 arg",
	} {
		if _, err := ctl(append([]string{"project", "backup-schedule"}, strings.Fields(args)...)...); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("project backup-schedule %s: %v, want %q", args, err, want)
		}
	}
	f.mu.Lock()
	puts := strings.Join(f.puts, "\n")
	f.mu.Unlock()
	want := strings.Join([]string{
		"project Daily 02:00 keep 7 to t1", "vm hourly keep 24 to t1", "vm  to ", "project daily keep 7 to nope", "project  to ",
	}, "\n")
	if puts != want {
		t.Fatalf("requests\n%s\nwant\n%s", puts, want)
	}
}

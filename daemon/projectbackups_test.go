package daemon

import (
	"bytes"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/corralhq/corral/api"
	"github.com/corralhq/corral/api/client"
	"github.com/corralhq/corral/internal/testutil"
)

// TestProjectBackupScheduleAcrossInProcessCluster sets a project's backup
// schedule through a follower of a 3-host cluster: each VM of the project
// without its own follows it (a VM created later too), a VM's own replaces
// it and removed gives it back, the target it names is not removed, and
// removing the project's removes the VMs' inherited ones; what a write
// answered the same host shows at once. The schedule is daily, so no
// backup is waited for (the leader's scheduling is tested in controller).
func TestProjectBackupScheduleAcrossInProcessCluster(t *testing.T) {
	tc := newTestCluster(t, 3, []int{0, 1, 2}, nil)
	tc.startAll()
	tc.waitConverged(3, 0)
	f := tc.followers()[0]
	c := f.client
	ctx := ctxT(t)
	if _, err := c.ImportImage(ctx, "base", bytes.NewReader(qcow2(1<<20)), 1024); err != nil {
		t.Fatal(err)
	}
	if _, err := c.CreateProject(ctx, api.ProjectCreateRequest{Name: "team"}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.CreateBackupTarget(ctx, api.BackupTargetCreateRequest{Name: "t1", Dir: t.TempDir()}); err != nil {
		t.Fatal(err)
	}
	create := func(name, project string) api.VM {
		t.Helper()
		req := vmReq(name)
		req.Stopped, req.Project = true, project
		v, err := c.CreateVM(ctx, req)
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
	create("a1", "team")
	create("d1", "")
	waitVM(t, c, "a1", "stopped")
	follows := func(v api.VM, err error, schedule, from string) {
		t.Helper()
		if err != nil || v.BackupSchedule != schedule || v.BackupScheduleFrom != from || schedule != "" && v.BackupTarget != "t1" {
			t.Fatalf("vm %s: schedule %q to %q from %q, %v; want %q from %q", v.Name, v.BackupSchedule, v.BackupTarget, v.BackupScheduleFrom, err, schedule, from)
		}
	}

	// Refused by the leader: what the edge cannot tell.
	if _, err := c.SetProjectBackupSchedule(ctx, "nope", "t1", "daily keep 7"); !errors.Is(err, api.ErrNotFound) {
		t.Fatalf("schedule of no project: %v", err)
	}
	if _, err := c.SetProjectBackupSchedule(ctx, "team", "nope", "daily keep 7"); !errors.Is(err, api.ErrNotFound) || !strings.Contains(err.Error(), `backup target "nope"`) {
		t.Fatalf("schedule to no target: %v", err)
	}
	if _, err := c.SetProjectBackupSchedule(ctx, "team", "t1", "hourly keep 500"); !errors.Is(err, api.ErrInvalid) || !strings.Contains(err.Error(), "at most 400") {
		t.Fatalf("schedule keeping 500: %v", err)
	}

	// Set: in its canonical form, shown by the project and its VM.
	p, err := c.SetProjectBackupSchedule(ctx, "team", "t1", "DAILY 03:00 keep 7  daily")
	const daily = "daily 03:00 keep 7 daily"
	if err != nil || p.Name != "team" || p.BackupSchedule != daily || p.BackupTarget != "t1" {
		t.Fatalf("set: %+v %v", p, err)
	}
	if p, err := c.Project(ctx, "team"); err != nil || p.BackupSchedule != daily || p.BackupTarget != "t1" {
		t.Fatalf("project after set: %+v %v", p, err)
	}
	v, err := c.VM(ctx, "a1")
	follows(v, err, daily, "team")
	v, err = c.VM(ctx, "d1")
	follows(v, err, "", "")
	if cur, err := f.d.store.VM("a1"); err != nil || cur.BackupPolicy == nil || !cur.BackupPolicy.FromProject || cur.BackupPolicy.Since.IsZero() {
		t.Fatalf("state of a1: %+v %v", cur.BackupPolicy, err)
	}
	// A VM created later follows it: the answer to its creation says so.
	v = create("a2", "team")
	follows(v, nil, daily, "team")

	// A VM's own replaces it; removed, the project's is back.
	v, err = c.SetBackupSchedule(ctx, "a1", "t1", "daily 04:00 keep 3")
	follows(v, err, "daily 04:00 keep 3", "")
	v, err = c.SetBackupSchedule(ctx, "a1", "", "")
	follows(v, err, daily, "team")

	// Its target stays while the project's schedule names it.
	if _, err := c.DeleteBackupTarget(ctx, "t1", false); !errors.Is(err, api.ErrConflict) || !strings.Contains(err.Error(), "project team") {
		t.Fatalf("rm of the project's target: %v", err)
	}

	// Removed: so are the VMs' inherited ones.
	if p, err = c.SetProjectBackupSchedule(ctx, "team", "", ""); err != nil || p.BackupSchedule != "" || p.BackupTarget != "" {
		t.Fatalf("remove: %+v %v", p, err)
	}
	for _, name := range []string{"a1", "a2"} {
		v, err := c.VM(ctx, name)
		follows(v, err, "", "")
	}
	ps, err := c.Projects(ctx)
	if err != nil || len(ps) != 2 || ps[1].Name != "team" || ps[1].BackupSchedule != "" {
		t.Fatalf("projects after remove: %+v %v", ps, err)
	}

	// The leader said what it did, in the project's events.
	want := "backup schedule of project team set to " + daily + ", to t1 (1 VM without its own follows it)|" +
		"a1: backup schedule set to daily 04:00 keep 3, to t1|a1: backup schedule removed: it follows project team's, " + daily + ", to t1|" +
		"backup schedule of project team removed"
	testutil.Eventually(t, 10*time.Second, func() error {
		evs, err := c.Events(ctx, 0, 0, 0)
		if err != nil {
			return err
		}
		var said []string
		for _, e := range evs {
			if e.Kind == "backup-schedule" && e.Project == "team" {
				if e.VM != "" {
					e.Message = e.VM + ": " + e.Message
				}
				said = append(said, e.Message)
			}
		}
		if got := strings.Join(said, "|"); got != want {
			return fmt.Errorf("events\n%s\nwant\n%s", got, want)
		}
		return nil
	})
}

// A project's operator token sets its project's backup schedule over the
// HTTPS API; another project's is not found to it, and unchanged.
func TestHTTPSProjectBackupSchedule(t *testing.T) {
	tc, urls, fps := apiCluster(t, &lockedBuffer{})
	ctx := ctxT(t)
	root := tc.hosts[0].client
	for _, name := range []string{"a", "b"} {
		if _, err := root.CreateProject(ctx, api.ProjectCreateRequest{Name: name}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := root.CreateBackupTarget(ctx, api.BackupTargetCreateRequest{Name: "t1", Dir: t.TempDir()}); err != nil {
		t.Fatal(err)
	}
	created, err := root.CreateAPIToken(ctx, api.APITokenCreateRequest{Name: "op-a", Role: "operator", Project: "a"})
	if err != nil {
		t.Fatal(err)
	}
	a := client.NewRemote(urls[1], created.Token, fps[1])
	testutil.Eventually(t, time.Second, func() error { _, err := a.Whoami(ctx); return err })

	if p, err := a.SetProjectBackupSchedule(ctx, "a", "t1", "daily keep 7"); err != nil || p.Name != "a" || p.BackupSchedule != "daily 00:00 keep 7" {
		t.Fatalf("a's token sets a's schedule: %+v %v", p, err)
	}
	if _, err := a.SetProjectBackupSchedule(ctx, "b", "t1", "daily keep 7"); !errors.Is(err, api.ErrNotFound) {
		t.Fatalf("a's token sets b's schedule: %v", err)
	}
	if _, err := a.SetProjectQuota(ctx, "a", api.Quota{VMs: 1}); !errors.Is(err, api.ErrForbidden) {
		t.Fatalf("a's token sets a's quota: %v", err)
	}
	if p, err := root.Project(ctx, "b"); err != nil || p.BackupSchedule != "" {
		t.Fatalf("b after a's token tried: %+v %v", p, err)
	}
}

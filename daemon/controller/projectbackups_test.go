package controller

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/corralhq/corral/model"
	"github.com/corralhq/corral/raftlog"
)

// A project's backup schedule runs as each of its VMs' own: one job a
// slot per VM (a VM with its own schedule runs that one), and each VM's
// scheduled backups the schedule no longer keeps are removed.
func TestProjectBackupSchedule(t *testing.T) {
	e := newLiveEnv(t, nil)
	ctx := context.Background()
	for _, name := range []string{"db1", "db2", "own"} {
		e.vm(t, name, "", 0, true)
		e.r.store.Apply(ctx, raftlog.SetVMPower{Name: name, Desired: model.PowerStopped})
	}
	if _, err := e.l.PutBackupTarget(ctx, model.BackupTarget{Name: "t1", Dir: "/srv/backups"}); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		req  ProjectBackupScheduleRequest
		want error
	}{
		{ProjectBackupScheduleRequest{Project: "nope", Target: "t1", Schedule: "every 1m keep 2"}, model.ErrNotFound},
		{ProjectBackupScheduleRequest{Project: "default", Target: "t9", Schedule: "every 1m keep 2"}, model.ErrNotFound},
		{ProjectBackupScheduleRequest{Project: "default", Target: "T 1", Schedule: "every 1m keep 2"}, model.ErrInvalid},
		{ProjectBackupScheduleRequest{Project: "default", Target: "t1", Schedule: "weekly keep 2"}, model.ErrInvalid},
		{ProjectBackupScheduleRequest{Project: "Bad Name"}, model.ErrInvalid},
	} {
		if _, err := e.l.SetProjectBackupSchedule(ctx, c.req); !errors.Is(err, c.want) {
			t.Errorf("%+v: %v, want %v", c.req, err, c.want)
		}
	}
	e.clock.Advance(30 * time.Second)
	if _, err := e.l.SetBackupSchedule(ctx, BackupScheduleRequest{Name: "own", Target: "t1", Schedule: "every 2m keep 1"}); err != nil {
		t.Fatal(err)
	}
	p, err := e.l.SetProjectBackupSchedule(ctx, ProjectBackupScheduleRequest{Project: "", Target: "t1", Schedule: "every 1m keep 2"})
	if err != nil || p.Name != model.DefaultProject || p.BackupPolicy == nil || p.BackupPolicy.Schedule.EverySec != 60 {
		t.Fatalf("set: %+v %v", p, err)
	}
	jobs := map[string]int{}
	for range 9 {
		e.clock.Advance(time.Minute)
		e.l.driveBackups(ctx)
		ids := map[string]string{}
		for _, v := range e.r.store.VMs() {
			if v.Backup != nil {
				ids[v.Name] = v.Backup.ID
			}
		}
		e.l.driveBackups(ctx) // the same slot again: nothing more
		for _, v := range e.r.store.VMs() {
			cur := ""
			if v.Backup != nil {
				cur = v.Backup.ID
			}
			if cur != ids[v.Name] {
				t.Fatalf("vm %s at %v: job %q, want %q", v.Name, e.clock.Now(), cur, ids[v.Name])
			}
		}
		for name, id := range ids {
			jobs[name]++
			v, _ := e.r.store.VM(name)
			if _, err := e.l.BackupDone(ctx, BackupResult{Name: name, ID: id, Host: v.Backup.Host,
				Stats: model.BackupStats{DiskSizes: []int64{10 << 20}}}); err != nil {
				t.Fatal(err)
			}
		}
	}
	if jobs["db1"] != 9 || jobs["db2"] != 9 || jobs["own"] != 4 {
		t.Fatalf("jobs %v: want 9 for each VM following the project's schedule, 4 (every 2m) for the one with its own", jobs)
	}
	for range 20 { // retention: one a pass for each VM
		e.l.driveBackups(ctx)
	}
	per := map[string][]model.Backup{}
	for _, b := range e.r.store.Cluster().Backups {
		per[b.VM] = append(per[b.VM], b)
	}
	for _, name := range []string{"db1", "db2"} {
		if c := per[name]; len(c) != 2 || c[0].Kind != "full" || c[1].Parent != c[0].ID || !c[0].Scheduled {
			t.Fatalf("%s's backups %+v: want the last full and its incremental", name, c)
		}
	}
	// Removed: the VMs following it have none; the one with its own keeps it.
	if _, err := e.l.SetProjectBackupSchedule(ctx, ProjectBackupScheduleRequest{Project: "default"}); err != nil {
		t.Fatal(err)
	}
	for _, v := range e.r.store.VMs() {
		if (v.BackupPolicy != nil) != (v.Name == "own") {
			t.Fatalf("vm %s after the removal: %+v", v.Name, v.BackupPolicy)
		}
	}
	var said []string
	for _, ev := range e.events("backup-schedule") {
		said = append(said, ev.Message)
	}
	if len(said) != 3 || said[1] != "backup schedule of project default set to every 1m keep 2, to t1 (2 VMs without their own follow it)" ||
		said[2] != "backup schedule of project default removed" {
		t.Fatalf("events %q", said)
	}
}

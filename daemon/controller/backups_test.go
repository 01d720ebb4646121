package controller

import (
	"context"
	"testing"
	"time"

	"github.com/corralhq/corral/model"
	"github.com/corralhq/corral/raftlog"
)

// A backup schedule: one job a slot (full, then incrementals, a new full
// after maxIncrementals), and the backups it no longer keeps removed
// whole chains at a time, never one a kept backup builds on.
func TestBackupSchedule(t *testing.T) {
	e := newLiveEnv(t, nil)
	ctx := context.Background()
	e.vm(t, "db", "", 0, true)
	e.r.store.Apply(ctx, raftlog.SetVMPower{Name: "db", Desired: model.PowerStopped})
	if _, err := e.l.PutBackupTarget(ctx, model.BackupTarget{Name: "t1", Dir: "/srv/backups"}); err != nil {
		t.Fatal(err)
	}
	e.clock.Advance(30 * time.Second)
	if _, err := e.l.SetBackupSchedule(ctx, BackupScheduleRequest{Name: "db", Target: "t1", Schedule: "every 1m keep 2"}); err != nil {
		t.Fatal(err)
	}
	var kinds []string
	for range 9 {
		e.clock.Advance(time.Minute)
		e.l.driveBackups(ctx)
		v, _ := e.r.store.VM("db")
		if v.Backup == nil {
			t.Fatalf("no job at %v", e.clock.Now())
		}
		e.l.driveBackups(ctx) // the same slot again: nothing more
		kinds = append(kinds, v.Backup.Kind)
		if _, err := e.l.BackupDone(ctx, BackupResult{Name: "db", ID: v.Backup.ID, Host: v.Backup.Host,
			Stats: model.BackupStats{DiskSizes: []int64{10 << 20}}}); err != nil {
			t.Fatal(err)
		}
	}
	want := []string{"full", "incremental", "incremental", "incremental", "incremental", "incremental", "incremental", "full", "incremental"}
	for i := range want {
		if kinds[i] != want[i] {
			t.Fatalf("kinds %v, want %v", kinds, want)
		}
	}
	for range 10 { // retention: one a pass
		e.l.driveBackups(ctx)
	}
	c := e.r.store.Cluster().Backups
	if len(c) != 2 || c[0].Kind != "full" || c[1].Parent != c[0].ID {
		t.Fatalf("catalog %+v: want the last full and its incremental", c)
	}
	v, _ := e.r.store.VM("db")
	if n := len(v.Chain.Snapshots); n != 1 || v.Chain.Snapshots[0].Name != model.BackupSnapshotPrefix+c[1].ID {
		t.Fatalf("snapshots %+v: want only the newest backup's anchor", v.Chain.Snapshots)
	}
}

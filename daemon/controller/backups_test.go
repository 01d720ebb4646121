package controller

import (
	"log/slog"

	"context"
	"github.com/corralhq/corral/daemon/hypervisor/fake"
	"strings"
	"testing"
	"time"

	"github.com/corralhq/corral/model"
	"github.com/corralhq/corral/raftlog"
)

// stoppedVMWithTarget is a leader with a stopped VM "db" and a backup
// target "t1".
func stoppedVMWithTarget(t *testing.T) (*liveEnv, context.Context) {
	e := newLiveEnv(t, nil)
	ctx := context.Background()
	e.vm(t, "db", "", 0, true)
	e.r.store.Apply(ctx, raftlog.SetVMPower{Name: "db", Desired: model.PowerStopped})
	if _, err := e.l.PutBackupTarget(ctx, model.BackupTarget{Name: "t1", Dir: "/srv/backups"}); err != nil {
		t.Fatal(err)
	}
	return e, ctx
}

// A backup schedule: one job a slot (full, then incrementals, a new full
// after maxIncrementals), and the backups it no longer keeps removed
// whole chains at a time, never one a kept backup builds on.
func TestBackupSchedule(t *testing.T) {
	e, ctx := stoppedVMWithTarget(t)
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

// A failed attempt (the target full, then unreachable) is retried after
// 10 s and 20 s on a host the leader assigns; the third failure gives the
// job up with its anchor snapshot removed. Each failure is an event with
// its reason, and nothing is ever listed in the catalog.
func TestBackupFailuresRetriedThenGivenUp(t *testing.T) {
	e, ctx := stoppedVMWithTarget(t)
	j, err := e.l.StartBackup(ctx, BackupRequest{Name: "db", Target: "t1"})
	if err != nil || j.Host == "" {
		t.Fatalf("start: %+v %v", j, err)
	}
	reasons := []string{
		"write chunks/3f/3f9a: no space left on device",
		"put chunks/3f/3f9a: dial tcp 192.0.2.9:9000: connect: connection refused",
		"write chunks/3f/3f9a: no space left on device",
	}
	for i, why := range reasons {
		v, _ := e.r.store.VM("db")
		if v.Backup == nil || v.Backup.ID != j.ID || v.Backup.Host == "" || v.Backup.Attempts != i {
			t.Fatalf("attempt %d: job %+v", i+1, v.Backup)
		}
		if _, err := e.l.BackupDone(ctx, BackupResult{Name: "db", ID: j.ID, Host: v.Backup.Host, Error: why}); err != nil {
			t.Fatal(err)
		}
		if len(e.r.store.Cluster().Backups) != 0 {
			t.Fatalf("a failed backup is listed: %+v", e.r.store.Cluster().Backups)
		}
		if i == len(reasons)-1 {
			break
		}
		// Not before its retry time; then on a host.
		e.l.driveBackups(ctx)
		if v, _ := e.r.store.VM("db"); v.Backup == nil || v.Backup.Host != "" {
			t.Fatalf("retried at once: %+v", v.Backup)
		}
		e.clock.Advance(backupRetry(i+1) + time.Second)
		e.l.driveBackups(ctx)
	}
	v, _ := e.r.store.VM("db")
	if v.Backup != nil || len(v.Chain.Snapshots) != 0 {
		t.Fatalf("after 3 failures: job %+v, snapshots %+v", v.Backup, v.Chain.Snapshots)
	}
	var msgs []string
	for _, ev := range e.r.store.Events(0, 100) {
		if ev.Kind == "backup-failed" {
			msgs = append(msgs, ev.Message)
		}
	}
	want := []string{"attempt 1 of 3 failed (retried in 10s): " + reasons[0], "attempt 2 of 3 failed (retried in 20s): " + reasons[1],
		"failed 3 times, given up: " + reasons[2]}
	if len(msgs) != 3 {
		t.Fatalf("backup-failed events %q", msgs)
	}
	for i, w := range want {
		if !strings.Contains(msgs[i], w) {
			t.Fatalf("event %q, want it to say %q", msgs[i], w)
		}
	}
}

// recordEngine remembers the backup work it was given.
type recordEngine struct {
	BackupEngine // nil: only Backup is called
	work         []BackupWork
}

func (e *recordEngine) Backup(_ context.Context, _ model.BackupTarget, w BackupWork, _ func(done, total int64)) (model.BackupStats, error) {
	e.work = append(e.work, w)
	return model.BackupStats{}, nil
}

// A backup of a VM that has never run: its disks' layers do not exist
// yet (a guest's first start creates them), so the job creates those its
// anchor snapshot freezes, as that start would, and copies them; it used
// to fail on a file that was not there.
func TestBackupOfANeverRunVMCreatesItsLayers(t *testing.T) {
	e, ctx := stoppedVMWithTarget(t)
	j, err := e.l.StartBackup(ctx, BackupRequest{Name: "db", Target: "t1"})
	if err != nil {
		t.Fatal(err)
	}
	v, _ := e.r.store.VM("db")
	anchor, ok := v.Chain.Snapshot(j.Snapshot())
	if !ok || anchor.State != model.SnapshotReady {
		t.Fatalf("anchor %+v of a stopped VM: want it ready at once", anchor)
	}
	drv, eng := fake.New(), &recordEngine{}
	r := &BackupRunner{Self: j.Host, Store: e.r.store, Volumes: drv, Engine: eng, Clock: e.clock, Log: slog.New(slog.DiscardHandler)}
	if _, err := r.backup(ctx, v, *v.Backup); err != nil {
		t.Fatal(err)
	}
	top := v.LayerVolume(0, anchor.Layer)
	if len(eng.work) != 1 || len(eng.work[0].Tops) != 1 || eng.work[0].Tops[0] != drv.VolumePath(top) {
		t.Fatalf("work %+v: want the anchor's layer %s", eng.work, top)
	}
	for id := anchor.Layer; ; {
		if _, ok := drv.Volume(v.LayerVolume(0, id)); !ok {
			t.Fatalf("layer %d of the never-run VM not created", id)
		}
		if id == 0 {
			break
		}
		id, _ = v.Chain.Parent(id)
	}
}

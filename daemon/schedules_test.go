package daemon

import (
	"bytes"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/corralhq/corral/api"
	"github.com/corralhq/corral/internal/testutil"
)

// TestSchedulesAcrossInProcessCluster sets and removes a VM's snapshot and
// backup schedules through a follower of a 3-host cluster: the leader
// records them, and what a write answered the same host shows at once.
// Schedules are daily, so no scheduled snapshot or backup is waited for
// (nor, but at 02:00 or 03:00 UTC, taken).
func TestSchedulesAcrossInProcessCluster(t *testing.T) {
	tc := newTestCluster(t, 3, []int{0, 1, 2}, nil)
	tc.startAll()
	tc.waitConverged(3, 0)
	f := tc.followers()[0]
	c := f.client
	ctx := ctxT(t)
	if _, err := c.ImportImage(ctx, "base", bytes.NewReader(qcow2(1<<20)), 1024); err != nil {
		t.Fatal(err)
	}
	req := vmReq("sch")
	req.Stopped = true
	if _, err := c.CreateVM(ctx, req); err != nil {
		t.Fatal(err)
	}
	waitVM(t, c, "sch", "stopped")

	// A snapshot schedule, in its canonical form, on this host at once.
	v, err := c.SetSnapshotSchedule(ctx, "sch", "DAILY 02:00 keep 7 daily   4 weekly")
	if err != nil || v.SnapshotSchedule != "daily 02:00 keep 7 daily 4 weekly" || !v.SnapshotScheduleLast.IsZero() {
		t.Fatalf("set snapshot schedule: %q %v", v.SnapshotSchedule, err)
	}
	cur, err := f.d.store.VM("sch")
	if err != nil || cur.SnapshotPolicy == nil || cur.SnapshotPolicy.Schedule.KeepDaily != 7 || cur.SnapshotPolicy.Schedule.KeepWeekly != 4 ||
		cur.SnapshotPolicy.Since.IsZero() {
		t.Fatalf("state after set: %+v %v", cur.SnapshotPolicy, err)
	}
	if v, err := c.VM(ctx, "sch"); err != nil || v.SnapshotSchedule != "daily 02:00 keep 7 daily 4 weekly" {
		t.Fatalf("vm after set: %q %v", v.SnapshotSchedule, err)
	}
	// The leader refuses what the edge cannot tell: too many to keep, no VM.
	if _, err := c.SetSnapshotSchedule(ctx, "sch", "hourly keep 60"); !errors.Is(err, api.ErrInvalid) || !strings.Contains(err.Error(), "keeps up to 60 snapshots") {
		t.Fatalf("schedule keeping 60: %v", err)
	}
	if _, err := c.SetSnapshotSchedule(ctx, "nope", "hourly keep 24"); !errors.Is(err, api.ErrNotFound) {
		t.Fatalf("schedule of no VM: %v", err)
	}
	if _, err := c.SetSnapshotSchedule(ctx, "sch", "hourly keep"); !errors.Is(err, api.ErrInvalid) || !strings.Contains(err.Error(), "no keep") {
		t.Fatalf("bad schedule: %v", err)
	}
	if v, err := c.VM(ctx, "sch"); err != nil || v.SnapshotSchedule != "daily 02:00 keep 7 daily 4 weekly" {
		t.Fatalf("vm after refusals: %q %v", v.SnapshotSchedule, err)
	}
	// Replaced, then removed.
	if v, err = c.SetSnapshotSchedule(ctx, "sch", "daily 02:30 keep 3"); err != nil || v.SnapshotSchedule != "daily 02:30 keep 3" {
		t.Fatalf("replace snapshot schedule: %q %v", v.SnapshotSchedule, err)
	}
	if v, err = c.SetSnapshotSchedule(ctx, "sch", ""); err != nil || v.SnapshotSchedule != "" || !v.SnapshotScheduleLast.IsZero() {
		t.Fatalf("remove snapshot schedule: %+v %v", v, err)
	}
	if cur, err := f.d.store.VM("sch"); err != nil || cur.SnapshotPolicy != nil {
		t.Fatalf("state after remove: %+v %v", cur.SnapshotPolicy, err)
	}

	// A backup schedule: to an existing target, not to a missing one.
	if _, err := c.CreateBackupTarget(ctx, api.BackupTargetCreateRequest{Name: "t1", Dir: t.TempDir()}); err != nil {
		t.Fatal(err)
	}
	v, err = c.SetBackupSchedule(ctx, "sch", "t1", "daily 03:00 keep 7 daily 4 weekly")
	if err != nil || v.BackupSchedule != "daily 03:00 keep 7 daily 4 weekly" || v.BackupTarget != "t1" || !v.BackupScheduleLast.IsZero() {
		t.Fatalf("set backup schedule: %q to %q %v", v.BackupSchedule, v.BackupTarget, err)
	}
	if cur, err := f.d.store.VM("sch"); err != nil || cur.BackupPolicy == nil || cur.BackupPolicy.Target != "t1" || cur.BackupPolicy.Schedule.AtSec != 3*3600 {
		t.Fatalf("state after set: %+v %v", cur.BackupPolicy, err)
	}
	if _, err := c.SetBackupSchedule(ctx, "sch", "nope", "daily keep 7"); !errors.Is(err, api.ErrNotFound) || !strings.Contains(err.Error(), `backup target "nope"`) {
		t.Fatalf("backup schedule to no target: %v", err)
	}
	if _, err := c.SetBackupSchedule(ctx, "sch", "", "daily keep 7"); !errors.Is(err, api.ErrInvalid) || !strings.Contains(err.Error(), "needs a target") {
		t.Fatalf("backup schedule without a target: %v", err)
	}
	if v, err := c.VM(ctx, "sch"); err != nil || v.BackupSchedule != "daily 03:00 keep 7 daily 4 weekly" || v.BackupTarget != "t1" {
		t.Fatalf("vm after refusals: %q to %q %v", v.BackupSchedule, v.BackupTarget, err)
	}
	if v, err = c.SetBackupSchedule(ctx, "sch", "", ""); err != nil || v.BackupSchedule != "" || v.BackupTarget != "" {
		t.Fatalf("remove backup schedule: %+v %v", v, err)
	}
	if cur, err := f.d.store.VM("sch"); err != nil || cur.BackupPolicy != nil {
		t.Fatalf("state after remove: %+v %v", cur.BackupPolicy, err)
	}

	// The leader said what it did.
	want := "snapshot schedule set to daily 02:00 keep 7 daily 4 weekly|snapshot schedule set to daily 02:30 keep 3|snapshot schedule removed|" +
		"backup schedule set to daily 03:00 keep 7 daily 4 weekly, to t1|backup schedule removed"
	testutil.Eventually(t, 10*time.Second, func() error {
		evs, err := c.Events(ctx, 0, 0, 0)
		if err != nil {
			return err
		}
		var said []string
		for _, e := range evs {
			if (e.Kind == "snapshot-schedule" || e.Kind == "backup-schedule") && e.VM == "sch" {
				said = append(said, e.Message)
			}
		}
		if got := strings.Join(said, "|"); got != want {
			return fmt.Errorf("events\n%s\nwant\n%s", got, want)
		}
		return nil
	})
}

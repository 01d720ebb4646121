package controller

import (
	"context"
	"slices"
	"testing"
	"time"

	"github.com/corralhq/corral/model"
	"github.com/corralhq/corral/raftlog"
)

// Scheduled snapshots: one for each slot (the state records the last, so
// another pass or another leader takes none twice), the oldest removed
// once the schedule keeps no more of them; an operator's snapshots stay.
func TestSnapshotSchedule(t *testing.T) {
	e := newLiveEnv(t, nil)
	ctx := context.Background()
	e.vm(t, "db", "", 0, true)
	e.r.store.Apply(ctx, raftlog.SetVMPower{Name: "db", Desired: model.PowerStopped})
	if _, err := e.l.TakeSnapshot(ctx, SnapshotRequest{Name: "db", Snapshot: "mine"}); err != nil {
		t.Fatal(err)
	}
	e.clock.Advance(30 * time.Second)
	if _, err := e.l.SetSnapshotSchedule(ctx, ScheduleRequest{Name: "db", Schedule: "every 1m keep 2"}); err != nil {
		t.Fatal(err)
	}
	names := func() []string {
		v, _ := e.r.store.VM("db")
		var out []string
		for _, s := range v.Chain.Snapshots {
			out = append(out, s.Name)
		}
		return out
	}
	e.l.runSnapshotSchedules(ctx) // 00:00:30: the 00:00 slot began before the schedule was set
	if got := names(); !slices.Equal(got, []string{"mine"}) {
		t.Fatalf("snapshots %v", got)
	}
	for i := range 4 {
		e.clock.Advance(time.Minute)
		e.l.runSnapshotSchedules(ctx)
		e.l.runSnapshotSchedules(ctx) // the same slot: nothing more
		e.l.runSnapshotSchedules(ctx) // retention
		t.Logf("after slot %d: %v", i+1, names())
	}
	want := []string{"mine", "auto-20260101-000300", "auto-20260101-000400"}
	if got := names(); !slices.Equal(got, want) {
		t.Fatalf("snapshots %v, want %v", got, want)
	}
	// A new leader over the same state takes no slot twice.
	l2 := NewLeader(e.l.cfg, e.r.store, e.r, e.peers, e.clock, e.l.log)
	l2.runSnapshotSchedules(ctx)
	if got := names(); !slices.Equal(got, want) {
		t.Fatalf("after a leader change: %v", got)
	}
	if _, err := e.l.SetSnapshotSchedule(ctx, ScheduleRequest{Name: "db", Schedule: "every 1m keep 100"}); err == nil {
		t.Fatal("a schedule keeping more snapshots than a VM may hold was accepted")
	}
	if _, err := e.l.SetSnapshotSchedule(ctx, ScheduleRequest{Name: "db"}); err != nil {
		t.Fatal(err)
	}
	e.clock.Advance(time.Minute)
	e.l.runSnapshotSchedules(ctx)
	if got := names(); !slices.Equal(got, want) {
		t.Fatalf("after the schedule was removed: %v", got)
	}
}

package controller

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/corralhq/corral/daemon/hypervisor"
	"github.com/corralhq/corral/internal/testutil"
	"github.com/corralhq/corral/model"
	"github.com/corralhq/corral/raftlog"
)

// waitSnapshot waits until the VM's snapshot is ready, and returns the VM.
func (e *hostEnv) waitSnapshot(t *testing.T, vm, snap string) (model.VM, model.Snapshot) {
	t.Helper()
	var v model.VM
	var s model.Snapshot
	testutil.Eventually(t, 5*time.Second, func() error {
		var err error
		if v, err = e.store.VM(vm); err != nil {
			return err
		}
		var ok bool
		if s, ok = v.Chain.Snapshot(snap); !ok || s.State != model.SnapshotReady {
			return fmt.Errorf("snapshot %s: %+v (present %v)", snap, s, ok)
		}
		return nil
	})
	return v, s
}

// waitChain waits until the VM's guest runs on its active layer with no
// dead layers left, and returns the VM.
func (e *hostEnv) waitChain(t *testing.T, vm string) model.VM {
	t.Helper()
	var v model.VM
	testutil.Eventually(t, 5*time.Second, func() error {
		var err error
		if v, err = e.store.VM(vm); err != nil {
			return err
		}
		dom, _ := e.drv.Domain(vm)
		switch {
		case v.Actual.State != model.StateRunning:
			return fmt.Errorf("%s is %s (%s)", vm, v.Actual.State, v.Actual.Message)
		case dom.Layer != v.Chain.Active:
			return fmt.Errorf("guest on layer %d, active layer %d", dom.Layer, v.Chain.Active)
		case len(v.Chain.Dead) > 0:
			return fmt.Errorf("dead layers left: %v", v.Chain.Dead)
		}
		return nil
	})
	return v
}

// diskPath is the file the fake guest's first disk uses.
func (e *hostEnv) diskPath(t *testing.T, vm string) string {
	t.Helper()
	spec, ok := e.drv.Spec(vm)
	if !ok || len(spec.Disks) == 0 {
		t.Fatalf("no domain with disks for %s", vm)
	}
	return spec.Disks[0].Path
}

func TestSnapshotOfRunningGuestMovesItsDisks(t *testing.T) {
	e := newHostEnv(t).start(t)
	e.create(t, "web", "h1", nil)
	e.waitState(t, "web", model.StateRunning)
	e.apply(t, raftlog.TakeSnapshot{Name: "web", Snapshot: "s1", Time: e.clock.Now()})
	v, s := e.waitSnapshot(t, "web", "s1")
	if s.Consistency != model.ConsistencyFrozen || s.Layer != 0 || v.Chain.Active != 1 {
		t.Fatalf("snapshot %+v, chain %+v", s, v.Chain)
	}
	v = e.waitChain(t, "web")
	if got, want := e.diskPath(t, "web"), "/pool/"+v.LayerVolume(0, 1); got != want {
		t.Fatalf("guest's disk %s, want the new layer %s", got, want)
	}
	if vol, ok := e.drv.Volume(v.LayerVolume(0, 1)); !ok || vol.Backing != v.DiskVolume(0) {
		t.Fatalf("overlay %+v (exists %v), want one on %s", vol, ok, v.DiskVolume(0))
	}
	if n := e.drv.Calls("Start"); n != 1 {
		t.Fatalf("%d starts: a snapshot must not restart the guest", n)
	}
}

func TestSnapshotWithoutAgentIsCrashConsistent(t *testing.T) {
	e := newHostEnv(t).start(t)
	e.drv.SetSnapshotErr(func(quiesce bool) error {
		if quiesce {
			return errors.New("QEMU guest agent is not connected")
		}
		return nil
	})
	e.create(t, "web", "h1", nil)
	e.waitState(t, "web", model.StateRunning)
	e.apply(t, raftlog.TakeSnapshot{Name: "web", Snapshot: "s1", Time: e.clock.Now()})
	_, s := e.waitSnapshot(t, "web", "s1")
	if s.Consistency != model.ConsistencyCrash || !strings.Contains(s.Message, "not connected") {
		t.Fatalf("snapshot %+v: want crash-consistent, saying why", s)
	}
}

func TestFailedSnapshotLeavesTheGuestWhereItWas(t *testing.T) {
	e := newHostEnv(t).start(t)
	e.drv.SetSnapshotErr(func(bool) error { return errors.New("no space left on device") })
	v := e.create(t, "web", "h1", nil)
	e.waitState(t, "web", model.StateRunning)
	e.apply(t, raftlog.TakeSnapshot{Name: "web", Snapshot: "s1", Time: e.clock.Now()})
	testutil.Eventually(t, 5*time.Second, func() error {
		v, _ = e.store.VM("web")
		if len(v.Chain.Snapshots) > 0 || v.Chain.Active != 0 || len(v.Chain.Dead) > 0 {
			return fmt.Errorf("chain %+v: want the snapshot dropped, layer 0 active, the overlay deleted", v.Chain)
		}
		return nil
	})
	if _, ok := e.drv.Volume(v.LayerVolume(0, 1)); ok {
		t.Fatal("the failed snapshot's overlay is still there")
	}
	if got := e.diskPath(t, "web"); got != "/pool/"+v.DiskVolume(0) {
		t.Fatalf("guest's disk %s", got)
	}
	// Nothing stuck: the next snapshot works.
	e.drv.SetSnapshotErr(nil)
	e.apply(t, raftlog.TakeSnapshot{Name: "web", Snapshot: "s2", Time: e.clock.Now()})
	if v, _ = e.waitSnapshot(t, "web", "s2"); v.Chain.Active != 2 {
		t.Fatalf("chain %+v: layer IDs are never reused", v.Chain)
	}
}

func TestRevertRestartsTheGuestOnTheSnapshot(t *testing.T) {
	e := newHostEnv(t).start(t)
	e.create(t, "web", "h1", nil)
	e.waitState(t, "web", model.StateRunning)
	e.apply(t, raftlog.TakeSnapshot{Name: "web", Snapshot: "s1", Time: e.clock.Now()})
	e.waitSnapshot(t, "web", "s1")
	e.waitChain(t, "web")

	e.apply(t, raftlog.RevertSnapshot{Name: "web", Snapshot: "s1"})
	v := e.waitChain(t, "web")
	if v.Chain.Active != 2 || !slices.Equal(v.Chain.Layers, []model.Layer{{ID: 2, Parent: 0}}) {
		t.Fatalf("chain %+v: want layer 2 on the snapshot's layer 0, layer 1 gone", v.Chain)
	}
	if got, want := e.diskPath(t, "web"), "/pool/"+v.LayerVolume(0, 2); got != want {
		t.Fatalf("guest's disk %s, want %s", got, want)
	}
	if _, ok := e.drv.Volume(v.LayerVolume(0, 1)); ok {
		t.Fatal("the layer the revert threw away is still there")
	}
	if n := e.drv.Calls("Start"); n != 2 {
		t.Fatalf("%d starts, want 2 (the revert restarts the guest once)", n)
	}
	if v.Actual.Restarts != 0 {
		t.Fatalf("a revert counted as a crash: %+v", v.Actual)
	}
}

func TestSnapshotOfStoppedVMIsReadyAtOnce(t *testing.T) {
	e := newHostEnv(t).start(t)
	e.create(t, "web", "h1", func(v *model.VM) { v.Desired = model.PowerStopped })
	e.waitState(t, "web", model.StateStopped)
	e.apply(t, raftlog.TakeSnapshot{Name: "web", Snapshot: "s1", Time: e.clock.Now()})
	v, _ := e.store.VM("web")
	if s, _ := v.Chain.Snapshot("s1"); s.State != model.SnapshotReady || s.Consistency != model.ConsistencyStopped {
		t.Fatalf("snapshot %+v", s)
	}
	e.apply(t, raftlog.SetVMPower{Name: "web", Desired: model.PowerRunning})
	v = e.waitChain(t, "web")
	if got, want := e.diskPath(t, "web"), "/pool/"+v.LayerVolume(0, 1); got != want {
		t.Fatalf("guest's disk %s, want %s", got, want)
	}
}

// A corrald that died after moving the guest's disks and before telling
// the leader finds them moved, and finishes the snapshot.
func TestSnapshotFinishesAfterCorraldRestart(t *testing.T) {
	e := newHostEnv(t)
	stop := e.run(t)
	e.create(t, "web", "h1", nil)
	e.waitState(t, "web", model.StateRunning)
	stop()
	e.apply(t, raftlog.TakeSnapshot{Name: "web", Snapshot: "s1", Time: e.clock.Now()})
	ctx := context.Background()
	v, _ := e.store.VM("web")
	path, err := e.drv.EnsureVolume(ctx, mustLayerVolume(t, e, v))
	if err != nil {
		t.Fatal(err)
	}
	if err := e.drv.SnapshotDisks(ctx, "web", []string{path}, hypervisor.SnapshotOptions{Quiesce: true}); err != nil {
		t.Fatal(err)
	}
	e.loop = e.newLoop()
	e.run(t)
	_, s := e.waitSnapshot(t, "web", "s1")
	if s.Consistency != model.ConsistencyCrash {
		t.Fatalf("snapshot %+v: a move this host did not see finish is not known to be frozen", s)
	}
	e.waitChain(t, "web")
	if n := e.drv.Calls("SnapshotDisks"); n != 1 {
		t.Fatalf("%d snapshot calls: the disks were moved twice", n)
	}
}

func mustLayerVolume(t *testing.T, e *hostEnv, v model.VM) hypervisor.Volume {
	t.Helper()
	vol, err := layerVolume(e.loop.store, v, 0, v.Chain.Active)
	if err != nil {
		t.Fatal(err)
	}
	return vol
}

// A VM recovered onto this host while its snapshot was being taken on the
// failed one: its disks are at rest, the snapshot is finished as taken of
// a stopped guest, and the guest starts on the new layer.
func TestSnapshotBeingTakenFinishesAfterRecovery(t *testing.T) {
	e := newHostEnv(t)
	v := e.create(t, "web", "h2", nil)
	e.apply(t, raftlog.ReportVMs{Host: "h2", Time: e.clock.Now(), Reports: []raftlog.VMReport{{Name: "web", Generation: v.Generation, State: model.StateRunning}}})
	e.apply(t, raftlog.TakeSnapshot{Name: "web", Snapshot: "s1", Time: e.clock.Now()})
	v, _ = e.store.VM("web")
	if s, _ := v.Chain.Snapshot("s1"); s.State != model.SnapshotCreating {
		t.Fatalf("snapshot %+v: want creating", s)
	}
	e.apply(t, raftlog.PlaceVM{Name: "web", Host: "h1", Generation: v.Generation})
	e.start(t)
	_, s := e.waitSnapshot(t, "web", "s1")
	if s.Consistency != model.ConsistencyStopped {
		t.Fatalf("snapshot %+v", s)
	}
	v = e.waitChain(t, "web")
	if got, want := e.diskPath(t, "web"), "/pool/"+v.LayerVolume(0, 1); got != want {
		t.Fatalf("guest's disk %s, want %s", got, want)
	}
}

func TestDeleteVMDeletesEveryLayer(t *testing.T) {
	e := newHostEnv(t).start(t)
	e.create(t, "web", "h1", func(v *model.VM) {
		v.Spec.Disks = append(v.Spec.Disks, model.DiskSpec{SizeMiB: 64})
	})
	e.waitState(t, "web", model.StateRunning)
	for _, s := range []string{"s1", "s2"} {
		e.apply(t, raftlog.TakeSnapshot{Name: "web", Snapshot: s, Time: e.clock.Now()})
		e.waitSnapshot(t, "web", s)
	}
	if n := len(e.drv.Volumes()); n != 6 {
		t.Fatalf("volumes %v: want 3 layers of 2 disks", e.drv.Volumes())
	}
	e.deleteAndWaitVolumesGone(t, "web")
}

// Removing the oldest snapshot merges the layer above it into its layer,
// so the chain stays as deep as the snapshots need.
func TestRemovedSnapshotsLayersAreMerged(t *testing.T) {
	e := newHostEnv(t).start(t)
	v := e.create(t, "web", "h1", nil)
	e.waitState(t, "web", model.StateRunning)
	for _, s := range []string{"s1", "s2", "s3"} {
		e.apply(t, raftlog.TakeSnapshot{Name: "web", Snapshot: s, Time: e.clock.Now()})
		e.waitSnapshot(t, "web", s)
	}
	// 0 (s1) <- 1 (s2) <- 2 (s3) <- 3 (active)
	e.apply(t, raftlog.DeleteSnapshot{Name: "web", Snapshot: "s1"})
	testutil.Eventually(t, 5*time.Second, func() error {
		v, _ = e.store.VM("web")
		if s2, _ := v.Chain.Snapshot("s2"); s2.Layer != 0 || len(v.Chain.Layers) != 2 || len(v.Chain.Dead) > 0 {
			return fmt.Errorf("chain %+v: want layer 1 merged into 0 and deleted", v.Chain)
		}
		return nil
	})
	if vol, ok := e.drv.Volume(v.LayerVolume(0, 2)); !ok || vol.Backing != v.DiskVolume(0) {
		t.Fatalf("layer 2 %+v (exists %v): want it on layer 0 now", vol, ok)
	}
	if _, ok := e.drv.Volume(v.LayerVolume(0, 1)); ok {
		t.Fatal("merged layer 1 still there")
	}
	// The newest snapshot's layer is right under the active one: removing
	// it merges nothing (that would move the guest's writes).
	e.apply(t, raftlog.DeleteSnapshot{Name: "web", Snapshot: "s3"})
	e.waitChain(t, "web")
	if n := e.drv.Calls("CommitLayer"); n != 1 {
		t.Fatalf("%d merges, want 1", n)
	}
	if v, _ = e.store.VM("web"); len(v.Chain.Layers) != 2 {
		t.Fatalf("chain %+v", v.Chain)
	}
}

// libvirt 9.0 keeps a lock on a layer a running guest's block commit wrote
// into: a second merge into it waits for the guest's next start.
func TestMergeIntoALockedLayerWaitsForTheNextStart(t *testing.T) {
	e := newHostEnv(t).start(t)
	e.create(t, "web", "h1", nil)
	e.waitState(t, "web", model.StateRunning)
	for _, s := range []string{"s1", "s2", "s3", "s4"} {
		e.apply(t, raftlog.TakeSnapshot{Name: "web", Snapshot: s, Time: e.clock.Now()})
		e.waitSnapshot(t, "web", s)
	}
	// 0 (s1) <- 1 (s2) <- 2 (s3) <- 3 (s4) <- 4: without s1 and s2, 1 is
	// committed into 0; then 2 into 0 is locked.
	e.apply(t, raftlog.DeleteSnapshot{Name: "web", Snapshot: "s1"})
	e.apply(t, raftlog.DeleteSnapshot{Name: "web", Snapshot: "s2"})
	testutil.Eventually(t, 5*time.Second, func() error {
		v, _ := e.store.VM("web")
		if n := len(v.Chain.Layers); n != 3 || len(v.Chain.Dead) > 0 {
			return fmt.Errorf("chain %+v: want one merge done, one waiting", v.Chain)
		}
		return nil
	})
	calls, lists := e.drv.Calls("CommitLayer"), e.drv.Calls("List")
	testutil.Eventually(t, 5*time.Second, func() error { // a few passes of the loop
		if e.drv.Calls("List") < lists+5 {
			return errors.New("waiting for the loop to pass")
		}
		return nil
	})
	if e.drv.Calls("CommitLayer") > calls {
		t.Fatal("a merge into a locked layer was tried again while the guest runs")
	}
	e.clock.Advance(time.Second) // the restarted guest's start time differs
	e.apply(t, raftlog.RestartVM{Name: "web"})
	testutil.Eventually(t, 5*time.Second, func() error {
		v, _ := e.store.VM("web")
		if s3, _ := v.Chain.Snapshot("s3"); len(v.Chain.Layers) != 2 || s3.Layer != 0 {
			return fmt.Errorf("chain %+v: want 2 merged into 0 after the restart", v.Chain)
		}
		return nil
	})
}

// deleteAndWaitVolumesGone deletes the VM and waits until no volume is
// left in the pool: its disks, layers and memory images.
func (e *hostEnv) deleteAndWaitVolumesGone(t *testing.T, name string) {
	t.Helper()
	e.apply(t, raftlog.MarkVMDelete{Name: name})
	testutil.Eventually(t, 5*time.Second, func() error {
		if vols := e.drv.Volumes(); len(vols) > 0 {
			return fmt.Errorf("volumes left: %v", vols)
		}
		return nil
	})
}

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

// takeMemorySnapshot takes memory snapshot name of the running VM vm and
// waits until it is ready.
func (e *hostEnv) takeMemorySnapshot(t *testing.T, vm, name string) (model.VM, model.Snapshot) {
	t.Helper()
	e.apply(t, raftlog.TakeSnapshot{Name: vm, Snapshot: name, Time: e.clock.Now(), Memory: true})
	return e.waitSnapshot(t, vm, name)
}

// waitResumed waits until the VM's guest runs on its active layer with no
// resume pending, and returns the VM.
func (e *hostEnv) waitResumed(t *testing.T, vm string) model.VM {
	t.Helper()
	var v model.VM
	testutil.Eventually(t, 5*time.Second, func() error {
		v = e.waitChain(t, vm)
		if v.Chain.Resume != nil {
			return fmt.Errorf("resume %+v still pending", v.Chain.Resume)
		}
		return nil
	})
	return v
}

func TestMemorySnapshotRevertResumesTheGuest(t *testing.T) {
	e := newHostEnv(t).start(t)
	e.create(t, "web", "h1", nil)
	e.waitState(t, "web", model.StateRunning)
	v, s := e.takeMemorySnapshot(t, "web", "m1")
	if s.Consistency != model.ConsistencyMemory || s.Memory != 1 || s.Layer != 0 {
		t.Fatalf("snapshot %+v", s)
	}
	if _, ok := e.drv.Volume(v.MemoryVolume(s.Memory)); !ok {
		t.Fatalf("no memory image %s: volumes %v", v.MemoryVolume(s.Memory), e.drv.Volumes())
	}
	if n := e.drv.Calls("Start"); n != 1 {
		t.Fatalf("%d starts: a memory snapshot must not restart the guest", n)
	}

	e.apply(t, raftlog.RevertSnapshot{Name: "web", Snapshot: "m1"})
	v = e.waitResumed(t, "web")
	dom, _ := e.drv.Domain("web")
	if e.drv.Calls("Restore") != 1 || e.drv.Calls("Start") != 1 || dom.Reason != "restored" {
		t.Fatalf("%d restores, %d starts, domain %+v: want the guest resumed, not booted", e.drv.Calls("Restore"), e.drv.Calls("Start"), dom)
	}
	if got, want := e.diskPath(t, "web"), "/pool/"+v.LayerVolume(0, 2); got != want || dom.Layer != 2 {
		t.Fatalf("guest's disk %s on layer %d, want %s", got, dom.Layer, want)
	}
	if !strings.Contains(v.Actual.Message, `resumed from the memory of snapshot "m1"`) {
		t.Fatalf("message %q", v.Actual.Message)
	}
	if v.Actual.Restarts != 0 {
		t.Fatalf("a revert counted as a crash: %+v", v.Actual)
	}

	// Removing the snapshot deletes its memory image; removing the VM
	// every other one.
	e.takeMemorySnapshot(t, "web", "m2")
	e.apply(t, raftlog.DeleteSnapshot{Name: "web", Snapshot: "m1"})
	testutil.Eventually(t, 5*time.Second, func() error {
		v, _ = e.store.VM("web")
		if _, ok := e.drv.Volume(v.MemoryVolume(1)); ok || len(v.Chain.DeadMemory) > 0 {
			return fmt.Errorf("memory image 1: dead %v, volumes %v", v.Chain.DeadMemory, e.drv.Volumes())
		}
		return nil
	})
	e.deleteAndWaitVolumesGone(t, "web")
}

// The safety rule: a memory image goes only onto a layer no guest wrote
// to. One that was (the resumed guest ran, then its host died before the
// state heard of it, and the VM was started again) boots cold, and says
// why.
func TestMemoryRevertOntoAWrittenLayerBootsCold(t *testing.T) {
	e := newHostEnv(t)
	stop := e.run(t)
	e.create(t, "web", "h1", nil)
	e.waitState(t, "web", model.StateRunning)
	e.takeMemorySnapshot(t, "web", "m1")
	stop()
	e.apply(t, raftlog.RevertSnapshot{Name: "web", Snapshot: "m1"})
	v, _ := e.store.VM("web")
	path, err := e.drv.EnsureVolume(context.Background(), mustLayerVolume(t, e, v))
	if err != nil {
		t.Fatal(err)
	}
	e.drv.SetWritten(path)
	e.loop = e.newLoop()
	e.run(t)
	v = e.waitResumed(t, "web")
	if e.drv.Calls("Restore") != 0 || e.drv.Calls("Start") != 2 {
		t.Fatalf("%d restores, %d starts: want a cold boot", e.drv.Calls("Restore"), e.drv.Calls("Start"))
	}
	if want := `memory of snapshot "m1" not restored: its disks changed since; booted cold`; v.Actual.Message != want {
		t.Fatalf("message %q, want %q", v.Actual.Message, want)
	}
}

// A resume that fails for another reason boots cold too, once: a cold
// start that fails is retried cold.
func TestFailedResumeBootsColdWithoutRetrying(t *testing.T) {
	e := newHostEnv(t).start(t)
	e.create(t, "web", "h1", nil)
	e.waitState(t, "web", model.StateRunning)
	e.takeMemorySnapshot(t, "web", "m1")
	e.drv.SetRestoreErr(errors.New("saved domain and new definition differ"))
	e.drv.SetStartErr("web", errors.New("no space left on device"))
	e.apply(t, raftlog.RevertSnapshot{Name: "web", Snapshot: "m1"})
	testutil.Eventually(t, 5*time.Second, func() error {
		if e.drv.Calls("Start") < 2 {
			return errors.New("no cold start yet")
		}
		return nil
	})
	e.drv.SetStartErr("web", nil)
	e.clock.Advance(2 * time.Second) // past the retry's backoff
	v := e.waitResumed(t, "web")
	if n := e.drv.Calls("Restore"); n != 1 {
		t.Fatalf("%d restores: a failed resume is not tried again", n)
	}
	if want := `memory of snapshot "m1" not restored: saved domain and new definition differ; booted cold`; v.Actual.Message != want {
		t.Fatalf("message %q, want %q", v.Actual.Message, want)
	}
}

// A guest that stopped before its memory could be saved: the memory
// snapshot fails and says so, rather than becoming one of the disks.
func TestMemorySnapshotOfAStoppedGuestFails(t *testing.T) {
	e := newHostEnv(t)
	stop := e.run(t)
	e.create(t, "web", "h1", nil)
	e.waitState(t, "web", model.StateRunning)
	stop()
	e.apply(t, raftlog.TakeSnapshot{Name: "web", Snapshot: "m1", Time: e.clock.Now(), Memory: true})
	e.drv.Crash("web")
	e.loop = e.newLoop()
	e.run(t)
	testutil.Eventually(t, 5*time.Second, func() error {
		v, _ := e.store.VM("web")
		if len(v.Chain.Snapshots) > 0 || v.Chain.Active != 0 || len(v.Chain.Dead)+len(v.Chain.DeadMemory) > 0 {
			return fmt.Errorf("chain %+v: want the snapshot dropped and its layer and image deleted", v.Chain)
		}
		return nil
	})
	e.rep.mu.Lock()
	res := slices.Clone(e.rep.snaps)
	e.rep.mu.Unlock()
	if len(res) != 1 || !strings.Contains(res[0].Error, "a memory snapshot needs a running guest") || res[0].Consistency != "" {
		t.Fatalf("snapshot results %+v", res)
	}
	if n := e.drv.Calls("SnapshotDisks"); n != 0 {
		t.Fatalf("%d disk snapshots taken in its place", n)
	}
	e.waitState(t, "web", model.StateRunning)
	if d, _ := e.drv.Domain("web"); d.State != hypervisor.Running || d.Layer != 0 {
		t.Fatalf("domain %+v: want it running on layer 0", d)
	}
}

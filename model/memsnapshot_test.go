package model

import (
	"errors"
	"slices"
	"strings"
	"testing"
	"time"
)

// A memory snapshot: of a running guest only, named by a memory image ID
// that is never reused; finished as "memory" only; a revert to it asks
// for a resume onto the new layer and for the VM to run; the resume ends
// with a report from that layer, a later revert or snapshot, or the
// snapshot's removal; a removed or failed one's image is for the host to
// delete.
func TestMemorySnapshotChain(t *testing.T) {
	at := time.Date(2026, 12, 3, 0, 0, 0, 0, time.UTC)
	stopped := runningVM()
	stopped.Desired, stopped.Actual.State = PowerStopped, StateStopped
	if err := stopped.TakeMemorySnapshot("m", at); !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), `vm "web" is stopped: a memory snapshot needs a running guest`) {
		t.Fatalf("memory snapshot of a stopped VM: %v", err)
	}

	v := runningVM()
	if err := v.TakeMemorySnapshot("m1", at); err != nil {
		t.Fatal(err)
	}
	m1, _ := v.Chain.Snapshot("m1")
	if m1.State != SnapshotCreating || m1.Layer != 0 || m1.Memory != 1 || v.Chain.Active != 1 {
		t.Fatalf("memory snapshot %+v, chain %+v", m1, v.Chain)
	}
	if got := v.MemoryVolume(m1.Memory); got != "vm-web-01234567-mem1.sav" {
		t.Fatalf("memory volume %q", got)
	}
	if err := v.FinishSnapshot("m1", ConsistencyFrozen, "", ""); !errors.Is(err, ErrInvalid) {
		t.Fatalf("a memory snapshot finished as frozen: %v", err)
	}
	if err := v.FinishSnapshot("m1", ConsistencyMemory, "", ""); err != nil {
		t.Fatal(err)
	}
	if err := v.TakeSnapshot("d1", at); err != nil { // d1 = layer 1, active 2
		t.Fatal(err)
	}
	if err := v.FinishSnapshot("d1", ConsistencyMemory, "", ""); !errors.Is(err, ErrInvalid) {
		t.Fatalf("a disk snapshot finished with memory: %v", err)
	}
	if err := v.FinishSnapshot("d1", ConsistencyCrash, "", ""); err != nil {
		t.Fatal(err)
	}

	// A revert to m1 of the stopped VM: a resume onto the new layer 3, and
	// the VM is to run.
	v.Desired, v.Actual.State = PowerStopped, StateStopped
	if err := v.RevertSnapshot("m1"); err != nil {
		t.Fatal(err)
	}
	want := ResumeFrom{Layer: 3, Snapshot: "m1", Memory: 1}
	if r := v.Chain.Resume; r == nil || *r != want || v.Chain.Active != 3 || v.Desired != PowerRunning {
		t.Fatalf("after the revert: resume %+v, chain %+v, desired %s", r, v.Chain, v.Desired)
	}
	c := v.Chain.Clone()
	c.Resume.Layer = 99
	if v.Chain.Resume.Layer != 3 {
		t.Fatal("Clone shares the resume")
	}
	v.Resumed(2) // a guest still on another layer
	if v.Chain.Resume == nil {
		t.Fatal("a report from another layer ended the resume")
	}
	v.Resumed(3)
	if v.Chain.Resume != nil {
		t.Fatal("the guest ran on the layer: the resume is over")
	}

	// A revert to a disk snapshot, or a snapshot, ends a pending resume.
	if err := v.RevertSnapshot("m1"); err != nil {
		t.Fatal(err)
	}
	if err := v.RevertSnapshot("d1"); err != nil || v.Chain.Resume != nil {
		t.Fatalf("revert to a disk snapshot: %v, resume %+v", err, v.Chain.Resume)
	}
	if err := v.RevertSnapshot("m1"); err != nil || v.Chain.Resume == nil {
		t.Fatalf("revert: %v, resume %+v", err, v.Chain.Resume)
	}
	v.Actual.State = StateRunning // the guest runs (resumed or booted)
	if err := v.TakeSnapshot("d2", at); err != nil || v.Chain.Resume != nil {
		t.Fatalf("snapshot: %v, resume %+v", err, v.Chain.Resume)
	}
	if err := v.FinishSnapshot("d2", ConsistencyCrash, "", ""); err != nil {
		t.Fatal(err)
	}

	// Removing m1 while a resume from it is pending: off, and its image
	// is the host's to delete.
	if err := v.RevertSnapshot("m1"); err != nil {
		t.Fatal(err)
	}
	if err := v.DeleteSnapshot("m1"); err != nil {
		t.Fatal(err)
	}
	if v.Chain.Resume != nil || !slices.Equal(v.Chain.DeadMemory, []uint64{1}) || len(v.Chain.MemoryImages()) != 1 {
		t.Fatalf("after rm m1: resume %+v, dead memory %v", v.Chain.Resume, v.Chain.DeadMemory)
	}
	v.ForgetMemory([]uint64{1})
	if v.Chain.DeadMemory != nil || len(v.Chain.MemoryImages()) != 0 {
		t.Fatalf("dead memory %v", v.Chain.DeadMemory)
	}

	// A failed memory snapshot leaves its image (perhaps half written)
	// to delete; the next freezes the same layer under another image.
	v.Desired, v.Actual.State = PowerRunning, StateRunning
	active := v.Chain.Active
	if err := v.TakeMemorySnapshot("m2", at); err != nil {
		t.Fatal(err)
	}
	first, _ := v.Chain.Snapshot("m2")
	if err := v.FinishSnapshot("m2", "", "", "libvirt said no"); err != nil {
		t.Fatal(err)
	}
	if v.Chain.Active != active || !slices.Equal(v.Chain.DeadMemory, []uint64{first.Memory}) {
		t.Fatalf("after the failure: chain %+v", v.Chain)
	}
	if err := v.TakeMemorySnapshot("m2", at); err != nil {
		t.Fatal(err)
	}
	if again, _ := v.Chain.Snapshot("m2"); again.Layer != first.Layer || again.Memory == first.Memory {
		t.Fatalf("second try %+v, first %+v: an image ID was reused", again, first)
	}
}

// A merge moves a memory snapshot onto the layer under its own; its
// memory image keeps its name.
func TestMergeKeepsTheMemoryImage(t *testing.T) {
	at := time.Date(2026, 12, 3, 0, 0, 0, 0, time.UTC)
	v := runningVM()
	for _, name := range []string{"d1", "m2", "d3"} {
		var err error
		if name[0] == 'm' {
			err = v.TakeMemorySnapshot(name, at)
		} else {
			err = v.TakeSnapshot(name, at)
		}
		if err != nil {
			t.Fatal(err)
		}
		how := ConsistencyCrash
		if name[0] == 'm' {
			how = ConsistencyMemory
		}
		if err := v.FinishSnapshot(name, how, "", ""); err != nil {
			t.Fatal(err)
		}
	}
	// 0 (d1) <- 1 (m2) <- 2 (d3) <- 3
	if err := v.DeleteSnapshot("d1"); err != nil {
		t.Fatal(err)
	}
	into, from, ok := v.Chain.Mergeable()
	if !ok || into != 0 || from != 1 {
		t.Fatalf("mergeable %d<-%d %v", into, from, ok)
	}
	if err := v.MergeLayers(into, from); err != nil {
		t.Fatal(err)
	}
	m2, _ := v.Chain.Snapshot("m2")
	if m2.Layer != 0 || m2.Memory != 2 || len(v.Chain.DeadMemory) != 0 {
		t.Fatalf("after the merge: %+v, dead memory %v", m2, v.Chain.DeadMemory)
	}
}

package model

import (
	"errors"
	"slices"
	"testing"
	"time"
)

func runningVM() VM {
	return VM{ID: "0123456789", Name: "web", Host: "h1", Desired: PowerRunning, Generation: 3,
		Spec:   VMSpec{VCPUs: 1, MemoryMiB: 64, Disks: []DiskSpec{{SizeMiB: 8}}},
		Actual: Actual{State: StateRunning, Host: "h1", Generation: 3}}
}

func liveIDs(c Chain) []uint64 {
	var out []uint64
	for _, l := range c.Layers {
		out = append(out, l.ID)
	}
	return out
}

func TestChainThroughSnapshotsRevertsAndRemovals(t *testing.T) {
	at := time.Date(2026, 12, 3, 0, 0, 0, 0, time.UTC)
	v := runningVM()
	take := func(name string) {
		t.Helper()
		if err := v.TakeSnapshot(name, at); err != nil {
			t.Fatal(err)
		}
		if err := v.FinishSnapshot(name, ConsistencyFrozen, "", ""); err != nil {
			t.Fatal(err)
		}
	}
	take("s1") // s1 = layer 0, active 1
	take("s2") // s2 = layer 1, active 2
	if v.Chain.Active != 2 || v.Chain.Depth(2) != 2 || !slices.Equal(liveIDs(v.Chain), []uint64{1, 2}) {
		t.Fatalf("chain %+v", v.Chain)
	}
	if err := v.RevertSnapshot("s1"); err != nil { // active 3 on 0; 2 dies, 1 kept by s2
		t.Fatal(err)
	}
	if v.Chain.Active != 3 || !slices.Equal(liveIDs(v.Chain), []uint64{1, 3}) || !slices.Equal(v.Chain.Dead, []uint64{2}) {
		t.Fatalf("after revert: %+v", v.Chain)
	}
	if err := v.DeleteSnapshot("s2"); err != nil { // nothing holds 1 now
		t.Fatal(err)
	}
	if !slices.Equal(liveIDs(v.Chain), []uint64{3}) || !slices.Equal(v.Chain.Dead, []uint64{2, 1}) {
		t.Fatalf("after rm s2: %+v", v.Chain)
	}
	if err := v.DeleteSnapshot("s1"); err != nil { // layer 0 is under the active one
		t.Fatal(err)
	}
	if !slices.Equal(liveIDs(v.Chain), []uint64{3}) || len(v.Chain.Snapshots) != 0 {
		t.Fatalf("after rm s1: %+v", v.Chain)
	}
	v.ForgetLayers([]uint64{1, 2})
	if v.Chain.Dead != nil {
		t.Fatalf("dead %v", v.Chain.Dead)
	}
	if got := v.LayerVolume(0, 3); got != "vm-web-01234567-disk0-L3.qcow2" {
		t.Fatalf("layer volume %q", got)
	}
	if got := v.LayerVolume(0, 0); got != v.DiskVolume(0) {
		t.Fatalf("layer 0 is %q, want the disk volume", got)
	}
}

func TestSnapshotRefusals(t *testing.T) {
	at := time.Now()
	v := runningVM()
	if err := v.TakeSnapshot("s1", at); err != nil {
		t.Fatal(err)
	}
	for name, fn := range map[string]func() error{
		"second while creating": func() error { return v.TakeSnapshot("s2", at) },
		"revert while creating": func() error { return v.RevertSnapshot("s1") },
		"rm while creating":     func() error { return v.DeleteSnapshot("s1") },
	} {
		if err := fn(); !errors.Is(err, ErrConflict) {
			t.Errorf("%s: %v, want a conflict", name, err)
		}
	}
	if err := v.FinishSnapshot("s1", "perfect", "", ""); !errors.Is(err, ErrInvalid) {
		t.Errorf("unknown consistency: %v", err)
	}
	if err := v.FinishSnapshot("s1", ConsistencyCrash, "", ""); err != nil {
		t.Fatal(err)
	}
	if err := v.FinishSnapshot("s1", ConsistencyCrash, "", ""); !errors.Is(err, ErrConflict) {
		t.Errorf("finishing twice: %v", err)
	}
	if err := v.TakeSnapshot("s1", at); !errors.Is(err, ErrConflict) {
		t.Errorf("a name taken: %v", err)
	}
	if err := v.TakeSnapshot("Bad/Name", at); !errors.Is(err, ErrInvalid) {
		t.Errorf("a bad name: %v", err)
	}
	starting := runningVM()
	starting.Actual.State = StateStarting
	if err := starting.TakeSnapshot("s1", at); !errors.Is(err, ErrConflict) {
		t.Errorf("a starting VM: %v", err)
	}
	moved := runningVM()
	moved.Actual.Generation = 2 // its host has not reported the new placement
	if err := moved.TakeSnapshot("s1", at); !errors.Is(err, ErrConflict) {
		t.Errorf("a VM its host has not reported: %v", err)
	}
	diskless := runningVM()
	diskless.Spec.Disks = nil
	if err := diskless.TakeSnapshot("s1", at); !errors.Is(err, ErrInvalid) {
		t.Errorf("a diskless VM: %v", err)
	}
	if err := v.RevertSnapshot("nope"); !errors.Is(err, ErrNotFound) {
		t.Errorf("revert to a missing snapshot: %v", err)
	}
}

func TestSnapshotLimits(t *testing.T) {
	v := runningVM()
	v.Desired, v.Actual.State = PowerStopped, StateStopped
	for i := range MaxSnapshots {
		if err := v.TakeSnapshot("s"+string(rune('a'+i/26))+string(rune('a'+i%26)), time.Now()); err != nil {
			t.Fatal(i, err)
		}
	}
	if err := v.TakeSnapshot("one-more", time.Now()); !errors.Is(err, ErrConflict) {
		t.Fatalf("snapshot %d: %v", MaxSnapshots+1, err)
	}
	// Removing snapshots does not make the chain shallower (their layers
	// stay under the active one).
	for len(v.Chain.Snapshots) > 0 {
		if err := v.DeleteSnapshot(v.Chain.Snapshots[0].Name); err != nil {
			t.Fatal(err)
		}
	}
	for v.Chain.Depth(v.Chain.Active) < MaxLayerDepth {
		if err := v.TakeSnapshot("x", time.Now()); err != nil {
			t.Fatal(err)
		}
		if err := v.DeleteSnapshot("x"); err != nil {
			t.Fatal(err)
		}
	}
	if err := v.TakeSnapshot("deep", time.Now()); !errors.Is(err, ErrConflict) {
		t.Fatalf("a snapshot past the depth limit: %v", err)
	}
	c := v.Clone()
	c.Chain.Layers[0].Parent = 99
	if v.Chain.Layers[0].Parent == 99 {
		t.Fatal("Clone shares the chain")
	}
}

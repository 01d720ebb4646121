package model

import (
	"errors"
	"slices"
	"testing"
)

func TestLayerOf(t *testing.T) {
	v := VM{Name: "web", ID: "0123456789abcdef", Spec: VMSpec{Disks: []DiskSpec{{SizeMiB: 64}}}}
	for file, want := range map[string]int64{
		"/pool/" + v.DiskVolume(0): 0, v.LayerVolume(0, 7): 7, "/x/" + v.LayerVolume(0, 12): 12,
		v.LayerVolume(1, 7): -1, "vm-web-01234567-disk0-L07.qcow2": -1, "vm-web-01234567-disk0-L0.qcow2": -1,
		"vm-other-01234567-disk0-L3.qcow2": -1, "/img/debian.qcow2": -1, v.LayerVolume(0, 7) + ".bak": -1,
	} {
		id, ok := v.LayerOf(file)
		if want < 0 && ok || want >= 0 && (!ok || id != uint64(want)) {
			t.Errorf("LayerOf(%q) = %d %v, want %d", file, id, ok, want)
		}
	}
}

func TestAdoptChain(t *testing.T) {
	v := VM{Name: "db", ID: "id-db"}
	v.Chain = Chain{Active: 2, Seq: 2, Layers: []Layer{{ID: 1, Parent: 0}, {ID: 2, Parent: 1}},
		Snapshots: []Snapshot{{Name: "s1", Layer: 1, State: SnapshotReady}, {Name: "s2", Layer: 2, State: SnapshotCreating}}}
	if changed, err := v.AdoptChain([]uint64{2, 1, 0}); err != nil || changed {
		t.Fatalf("the chain the state knows: %v %v", changed, err)
	}
	for _, bad := range [][]uint64{nil, {2, 1}, {2, 2, 0}, {3, 0, 1, 0}} {
		if _, err := v.AdoptChain(bad); !errors.Is(err, ErrInvalid) {
			t.Errorf("AdoptChain(%v): %v", bad, err)
		}
	}
	// Two snapshots were taken after the backup, then the layer under the
	// newest merged: the guest runs on 5, over 3, over 1.
	v.Chain.Resume = &ResumeFrom{Layer: 2}
	changed, err := v.AdoptChain([]uint64{5, 3, 1, 0})
	if err != nil || !changed {
		t.Fatalf("adopt: %v %v", changed, err)
	}
	c := v.Chain
	if c.Active != 5 || c.Seq != 5 || c.Depth(5) != 3 || len(c.Dead) != 0 || c.Resume != nil {
		t.Fatalf("chain %+v", c)
	}
	if p, _ := c.Parent(3); p != 1 {
		t.Fatalf("parent of 3: %d", p)
	}
	// Layer 2 (the old active) is kept: nothing is declared dead on a guess;
	// the snapshot being taken at backup time is gone, s1 kept.
	if _, ok := c.Parent(2); !ok || !slices.ContainsFunc(c.Snapshots, func(s Snapshot) bool { return s.Name == "s1" }) || len(c.Snapshots) != 1 {
		t.Fatalf("kept layers and snapshots: %+v", c)
	}
}

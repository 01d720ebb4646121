package daemon

import (
	"bytes"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/corralhq/corral/api"
	"github.com/corralhq/corral/daemon/hypervisor/fake"
	"github.com/corralhq/corral/internal/testutil"
	"github.com/corralhq/corral/model"
)

// TestSnapshotsAcrossInProcessCluster drives snapshots through a follower
// of a 3-host cluster, of a VM placed on the other follower: the leader
// records them, the VM's host takes a running guest's (and reports it over
// the cluster RPC), and what a write answered the same host shows at once.
func TestSnapshotsAcrossInProcessCluster(t *testing.T) {
	api1, drv := stoppedVMOnFollower(t, "snap")
	c := api1.client
	ctx := ctxT(t)
	chain := func() model.Chain {
		v, err := api1.d.store.VM("snap")
		if err != nil {
			t.Fatal(err)
		}
		return v.Chain
	}

	// A stopped VM's snapshot is ready at once, and listed at once.
	s1, err := c.CreateSnapshot(ctx, "snap", "s1")
	if err != nil || s1.Name != "s1" || s1.State != model.SnapshotReady || s1.Consistency != model.ConsistencyStopped || s1.CreatedAt.IsZero() {
		t.Fatalf("snapshot of the stopped VM: %+v %v", s1, err)
	}
	list, err := c.Snapshots(ctx, "snap")
	if err != nil || len(list) != 1 || list[0] != s1 {
		t.Fatalf("list after create: %+v %v", list, err)
	}
	if v, err := c.VM(ctx, "snap"); err != nil || len(v.Snapshots) != 1 || v.Snapshots[0] != s1 {
		t.Fatalf("vm after create: %+v %v", v.Snapshots, err)
	}
	if _, err := c.CreateSnapshot(ctx, "snap", "s1"); !errors.Is(err, api.ErrConflict) || !strings.Contains(err.Error(), "already has a snapshot") {
		t.Fatalf("second s1: %v", err)
	}
	if _, err := c.CreateSnapshot(ctx, "nope", "s1"); !errors.Is(err, api.ErrNotFound) {
		t.Fatalf("snapshot of no VM: %v", err)
	}

	// A running guest's is creating until its host has moved its disks.
	if _, err := c.StartVM(ctx, "snap"); err != nil {
		t.Fatal(err)
	}
	waitVM(t, c, "snap", "running")
	s2, err := c.CreateSnapshot(ctx, "snap", "s2")
	if err != nil || s2.State != model.SnapshotCreating || s2.Consistency != "" {
		t.Fatalf("snapshot of the running VM: %+v %v", s2, err)
	}
	testutil.Eventually(t, 20*time.Second, func() error {
		list, err := c.Snapshots(ctx, "snap")
		if err != nil {
			return err
		}
		if len(list) != 2 || list[1].Name != "s2" || list[1].State != model.SnapshotReady {
			return fmt.Errorf("snapshots %+v", list)
		}
		if list[1].Consistency != model.ConsistencyFrozen {
			t.Fatalf("s2: %+v, want frozen (the fake's guest agent answers)", list[1])
		}
		return nil
	})
	if d, _ := drv.Domain("snap"); !d.State.Active() || d.Layer != chain().Active || d.Layer == 0 {
		t.Fatalf("guest after s2: %+v, chain %+v", d, chain())
	}

	// A host that fails to take it drops it, with an event saying why; the
	// guest runs on.
	drv.SetSnapshotErr(func(bool) error { return errors.New("disk on fire") })
	s3, err := c.CreateSnapshot(ctx, "snap", "s3")
	if err != nil || s3.State != model.SnapshotCreating {
		t.Fatalf("s3: %+v %v", s3, err)
	}
	testutil.Eventually(t, 20*time.Second, func() error {
		list, err := c.Snapshots(ctx, "snap")
		if err != nil {
			return err
		}
		if len(list) != 2 {
			return fmt.Errorf("snapshots %+v", list)
		}
		evs, err := c.Events(ctx, 0, 0, 0)
		if err != nil {
			return err
		}
		for _, e := range evs {
			if e.Kind == "snapshot-failed" && e.VM == "snap" && strings.Contains(e.Message, `snapshot "s3": `) && strings.Contains(e.Message, "disk on fire") {
				return nil
			}
		}
		return errors.New("no snapshot-failed event for s3")
	})
	drv.SetSnapshotErr(nil)
	waitVM(t, c, "snap", "running")

	// Revert to s1: the guest is powered off and started on a new layer
	// on s1's; both snapshots stay.
	before, _ := c.VM(ctx, "snap")
	v, err := c.RevertSnapshot(ctx, "snap", "s1")
	if err != nil || v.Desired != "running" || len(v.Snapshots) != 2 {
		t.Fatalf("revert: %+v %v", v, err)
	}
	active := chain().Active
	if p, ok := chain().Parent(active); !ok || p != snapshotLayer(t, api1, "s1") {
		t.Fatalf("active layer %d on %d, want on s1's layer", active, p)
	}
	testutil.Eventually(t, 20*time.Second, func() error {
		v, err := c.VM(ctx, "snap")
		if err != nil {
			return err
		}
		d, _ := drv.Domain("snap")
		if v.State != "running" || !v.Since.After(before.Since) || d.Layer != active {
			return fmt.Errorf("%s since %v (before %v), guest on layer %d, want %d", v.State, v.Since, before.Since, d.Layer, active)
		}
		return nil
	})
	if _, err := c.RevertSnapshot(ctx, "snap", "nope"); !errors.Is(err, api.ErrNotFound) {
		t.Fatalf("revert to no snapshot: %v", err)
	}

	// Remove s2: listed no more at once; its host deletes the dead layers'
	// files and the state forgets them.
	v, err = c.DeleteSnapshot(ctx, "snap", "s2")
	if err != nil || len(v.Snapshots) != 1 || v.Snapshots[0].Name != "s1" {
		t.Fatalf("rm s2: %+v %v", v.Snapshots, err)
	}
	if list, err := c.Snapshots(ctx, "snap"); err != nil || len(list) != 1 || list[0].Name != "s1" {
		t.Fatalf("list after rm: %+v %v", list, err)
	}
	if _, err := c.DeleteSnapshot(ctx, "snap", "s2"); !errors.Is(err, api.ErrNotFound) {
		t.Fatalf("second rm of s2: %v", err)
	}
	testutil.Eventually(t, 20*time.Second, func() error {
		if dead := chain().Dead; len(dead) > 0 {
			return fmt.Errorf("dead layers %v not forgotten", dead)
		}
		return nil
	})
	// Of every layer there was (s3's, the one s2 held, the guest's before
	// the revert, ...), the files of the live ones are left.
	vm, _ := api1.d.store.VM("snap")
	for id := uint64(1); id <= vm.Chain.Seq; id++ {
		_, live := vm.Chain.Parent(id)
		if _, ok := drv.Volume(vm.LayerVolume(0, id)); ok != live {
			t.Errorf("layer %d (live %v): volume there %v; chain %+v", id, live, ok, vm.Chain)
		}
	}

	// vm rm deletes every layer.
	var vols []string
	for _, id := range vm.Chain.AllLayers() {
		vols = append(vols, vm.LayerVolume(0, id))
	}
	if _, err := c.DeleteVM(ctx, "snap", false); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, 20*time.Second, func() error {
		if _, err := c.VM(ctx, "snap"); !errors.Is(err, api.ErrNotFound) {
			return fmt.Errorf("snap: %v", err)
		}
		return nil
	})
	for _, vol := range vols {
		if _, ok := drv.Volume(vol); ok {
			t.Errorf("volume %s left after vm rm", vol)
		}
	}
	if _, err := c.Snapshots(ctx, "snap"); !errors.Is(err, api.ErrNotFound) {
		t.Fatalf("snapshots of a deleted VM: %v", err)
	}
}

// snapshotLayer is the layer snapshot name of VM snap holds, in h's
// state.
func snapshotLayer(t *testing.T, h *testHost, name string) uint64 {
	t.Helper()
	v, err := h.d.store.VM("snap")
	if err != nil {
		t.Fatal(err)
	}
	s, ok := v.Chain.Snapshot(name)
	if !ok {
		t.Fatalf("no snapshot %s", name)
	}
	return s.Layer
}

// stoppedVMOnFollower starts a 3-host cluster and creates the stopped VM
// name on one follower (whose fake hypervisor is drv) through the other
// (api1).
func stoppedVMOnFollower(t *testing.T, name string) (api1 *testHost, drv *fake.Driver) {
	t.Helper()
	tc := newTestCluster(t, 3, []int{0, 1, 2}, nil)
	tc.startAll()
	tc.waitConverged(3, 0)
	followers := tc.followers()
	if len(followers) != 2 {
		t.Fatalf("%d followers", len(followers))
	}
	home := followers[0]
	api1 = followers[1]
	c, ctx := api1.client, ctxT(t)
	if _, err := c.ImportImage(ctx, "base", bytes.NewReader(qcow2(1<<20)), 1024); err != nil {
		t.Fatal(err)
	}
	req := vmReq(name)
	req.Host, req.Stopped = home.cfg.Name, true
	if _, err := c.CreateVM(ctx, req); err != nil {
		t.Fatal(err)
	}
	waitVM(t, c, name, "stopped")
	return api1, home.cfg.Tuning.Driver.(*fake.Driver)
}

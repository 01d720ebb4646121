package daemon

import (
	"context"
	"fmt"

	"github.com/corralhq/corral/api"
	"github.com/corralhq/corral/daemon/adminapi"
	"github.com/corralhq/corral/daemon/controller"
	"github.com/corralhq/corral/model"
	"github.com/corralhq/corral/raftlog"
)

// Snapshots of a VM's disks (model/snapshot.go): reads from this host's
// copy of the state, changes forwarded to the leader. The leader records
// them; the VM's host does the work (daemon/controller/hostchain.go).

func snapshotView(s model.Snapshot) api.Snapshot {
	return api.Snapshot{Name: s.Name, CreatedAt: s.CreatedAt, State: s.State, Consistency: s.Consistency, Message: s.Message,
		Memory: s.Memory != 0}
}

func snapshotViews(ss []model.Snapshot) []api.Snapshot {
	if len(ss) == 0 {
		return nil
	}
	out := make([]api.Snapshot, 0, len(ss))
	for _, s := range ss {
		out = append(out, snapshotView(s))
	}
	return out
}

// snapshotGate refuses a snapshot change before it is forwarded while a
// host of an older protocol is in the cluster: its leader would not know
// the methods, its replicas would drop the chain.
func (b backend) snapshotGate() error {
	return raftlog.FeatureSnapshots.Check(b.d.store.Cluster(), b.d.store.Hosts())
}

func (b backend) Snapshots(ctx context.Context, name string) ([]api.Snapshot, error) {
	v, err := b.d.store.VM(name)
	if err != nil {
		return nil, err
	}
	if !visible(adminapi.Scope(ctx), v.Project) {
		return nil, fmt.Errorf("vm %q: %w", name, model.ErrNotFound)
	}
	out := snapshotViews(v.Chain.Snapshots)
	if out == nil {
		out = []api.Snapshot{}
	}
	return out, nil
}

// CreateSnapshot takes a snapshot: a stopped VM's comes back ready, a
// running guest's creating (its host finishes it, or fails it and it is
// gone).
func (b backend) CreateSnapshot(ctx context.Context, name string, req api.SnapshotCreateRequest) (api.Snapshot, error) {
	if err := b.scopedVM(ctx, name); err != nil {
		return api.Snapshot{}, err
	}
	if err := b.snapshotGate(); err != nil {
		return api.Snapshot{}, err
	}
	// An older leader would refuse the field it does not know.
	if req.Memory {
		if err := raftlog.FeatureMemorySnapshots.Check(b.d.store.Cluster(), b.d.store.Hosts()); err != nil {
			return api.Snapshot{}, err
		}
	}
	var seq uint64
	if v, err := b.d.store.VM(name); err == nil {
		seq = v.Chain.Seq
	}
	s, err := forward(ctx, b.d, mVMSnapshot, controller.SnapshotRequest{Name: name, Snapshot: req.Name, Memory: req.Memory})
	if err != nil {
		return api.Snapshot{}, err
	}
	// Until this host's copy shows the snapshot, or shows it taken (a new
	// layer) and failed already.
	b.d.waitState(ctx, func() bool {
		cur, err := b.d.store.VM(name)
		if err != nil {
			return true
		}
		got, ok := cur.Chain.Snapshot(req.Name)
		return ok && got.CreatedAt.Equal(s.CreatedAt) || !ok && cur.Chain.Seq > seq
	})
	return snapshotView(s), nil
}

func (b backend) RevertSnapshot(ctx context.Context, name, snapshot string) (api.VM, error) {
	if err := b.scopedVM(ctx, name); err != nil {
		return api.VM{}, err
	}
	if err := b.snapshotGate(); err != nil {
		return api.VM{}, err
	}
	v, err := forward(ctx, b.d, mVMSnapshotRevert, controller.SnapshotRequest{Name: name, Snapshot: snapshot})
	return b.afterChainWrite(ctx, v, snapshot, err)
}

func (b backend) DeleteSnapshot(ctx context.Context, name, snapshot string) (api.VM, error) {
	if err := b.scopedVM(ctx, name); err != nil {
		return api.VM{}, err
	}
	if err := b.snapshotGate(); err != nil {
		return api.VM{}, err
	}
	v, err := forward(ctx, b.d, mVMSnapshotDelete, controller.SnapshotRequest{Name: name, Snapshot: snapshot})
	return b.afterChainWrite(ctx, v, snapshot, err)
}

// afterChainWrite is afterWrite for a change of the VM's disk chain: it
// also waits until this host's copy has the chain's layers and snapshot
// snap as the leader answered.
func (b backend) afterChainWrite(ctx context.Context, v model.VM, snap string, err error) (api.VM, error) {
	if err != nil {
		return api.VM{}, err
	}
	want, wantOK := v.Chain.Snapshot(snap)
	b.d.waitState(ctx, func() bool {
		cur, err := b.d.store.VM(v.Name)
		if err != nil || !vmCaughtUp(cur, v) || cur.Chain.Seq < v.Chain.Seq {
			return false
		}
		got, ok := cur.Chain.Snapshot(snap)
		return ok == wantOK && (!ok || got.CreatedAt.Equal(want.CreatedAt))
	})
	return b.VM(ctx, v.Name)
}

// SetSnapshotSchedule sets (or, with an empty schedule, removes) a VM's
// snapshot schedule.
func (b backend) SetSnapshotSchedule(ctx context.Context, name string, req api.SnapshotScheduleRequest) (api.VM, error) {
	if err := b.scopedVM(ctx, name); err != nil {
		return api.VM{}, err
	}
	if err := b.snapshotGate(); err != nil {
		return api.VM{}, err
	}
	v, err := forward(ctx, b.d, mVMSnapSchedule, controller.ScheduleRequest{Name: name, Schedule: req.Schedule})
	if err != nil {
		return api.VM{}, err
	}
	return b.afterPolicyWrite(ctx, name, func(cur model.VM) bool {
		c, w := cur.SnapshotPolicy, v.SnapshotPolicy
		return c == nil && w == nil || c != nil && w != nil && c.Since.Equal(w.Since) && c.Schedule == w.Schedule
	})
}

// afterPolicyWrite waits until this host's copy of VM name shows the
// schedule the leader set (or none), then answers with the VM.
func (b backend) afterPolicyWrite(ctx context.Context, name string, shows func(cur model.VM) bool) (api.VM, error) {
	b.d.waitState(ctx, func() bool {
		cur, err := b.d.store.VM(name)
		return err == nil && shows(cur) // not here yet: the leader has it
	})
	return b.VM(ctx, name)
}

package controller

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/corralhq/corral/model"
	"github.com/corralhq/corral/raftlog"
)

// SnapshotRequest names a snapshot of a VM; Memory (on taking one) saves
// the guest's RAM too (raftlog.FeatureMemorySnapshots).
type SnapshotRequest struct {
	Name     string `json:"name"`
	Snapshot string `json:"snapshot"`
	Memory   bool   `json:"memory,omitempty"`
}

// SnapshotResult is how a VM's host took a running guest's snapshot
// (raftlog.FinishSnapshot).
type SnapshotResult struct {
	Name        string `json:"name"`
	Generation  uint64 `json:"generation"`
	Snapshot    string `json:"snapshot"`
	Consistency string `json:"consistency,omitempty"`
	Message     string `json:"message,omitempty"`
	Error       string `json:"error,omitempty"`
}

// ForgetLayersRequest says a VM's host deleted the files of dead layers
// and dead memory images.
type ForgetLayersRequest struct {
	Name   string   `json:"name"`
	Layers []uint64 `json:"layers"`
	Memory []uint64 `json:"memory,omitempty"`
}

// maxForgetLayers bounds one ForgetLayers request.
const maxForgetLayers = 4 * model.MaxLayerDepth

func (l *Leader) snapshotGate() error {
	if err := l.ready(); err != nil {
		return err
	}
	return raftlog.FeatureSnapshots.Check(l.store.Cluster(), l.store.Hosts())
}

// TakeSnapshot records a snapshot of a VM's disks. A stopped VM's is ready
// at once; a running guest's is "creating" until its host has frozen the
// guest's disks (SnapshotDone). A memory snapshot is of a running guest
// only.
func (l *Leader) TakeSnapshot(ctx context.Context, req SnapshotRequest) (model.Snapshot, error) {
	if err := l.snapshotGate(); err != nil {
		return model.Snapshot{}, err
	}
	if req.Memory {
		if err := raftlog.FeatureMemorySnapshots.Check(l.store.Cluster(), l.store.Hosts()); err != nil {
			return model.Snapshot{}, err
		}
	}
	if err := model.ValidateName("snapshot", req.Snapshot); err != nil {
		return model.Snapshot{}, err
	}
	if strings.HasPrefix(req.Snapshot, model.AutoSnapshotPrefix) || strings.HasPrefix(req.Snapshot, model.BackupSnapshotPrefix) {
		return model.Snapshot{}, fmt.Errorf("snapshot %q: names starting with %q (schedules) and %q (backups) are corral's: %w",
			req.Snapshot, model.AutoSnapshotPrefix, model.BackupSnapshotPrefix, model.ErrInvalid)
	}
	if _, err := l.store.Apply(ctx, raftlog.TakeSnapshot{Name: req.Name, Snapshot: req.Snapshot, Time: l.clock.Now().UTC(), Memory: req.Memory}); err != nil {
		return model.Snapshot{}, err
	}
	v, err := l.store.VM(req.Name)
	if err != nil {
		return model.Snapshot{}, err
	}
	s, _ := v.Chain.Snapshot(req.Snapshot)
	if s.State == model.SnapshotReady {
		l.event(ctx, "snapshot", v.Host, v.Name, "snapshot %q taken of the stopped VM", s.Name)
	}
	return s, nil
}

// SnapshotDone records how the VM's host took a snapshot.
func (l *Leader) SnapshotDone(ctx context.Context, r SnapshotResult) (model.VM, error) {
	if err := l.ready(); err != nil {
		return model.VM{}, err
	}
	v, err := l.store.VM(r.Name)
	if err != nil {
		return v, err
	}
	if _, err := l.store.Apply(ctx, raftlog.FinishSnapshot{Name: r.Name, Host: v.Host, Generation: r.Generation,
		Snapshot: r.Snapshot, Consistency: r.Consistency, Message: r.Message, Error: r.Error}); err != nil {
		return v, err
	}
	if r.Error != "" {
		l.event(ctx, "snapshot-failed", v.Host, v.Name, "snapshot %q: %s", r.Snapshot, model.Clip(r.Error, model.MaxSnapshotMessage))
	} else {
		msg := ""
		if r.Message != "" {
			msg = ": " + model.Clip(r.Message, model.MaxSnapshotMessage)
		}
		l.event(ctx, "snapshot", v.Host, v.Name, "snapshot %q taken (%s)%s", r.Snapshot, r.Consistency, msg)
	}
	return l.store.VM(r.Name)
}

// RevertSnapshot puts a VM's disks back to a snapshot; a running guest is
// powered off and started again on them.
func (l *Leader) RevertSnapshot(ctx context.Context, req SnapshotRequest) (model.VM, error) {
	if err := l.snapshotGate(); err != nil {
		return model.VM{}, err
	}
	if _, err := l.store.Apply(ctx, raftlog.RevertSnapshot{Name: req.Name, Snapshot: req.Snapshot}); err != nil {
		return model.VM{}, err
	}
	v, err := l.store.VM(req.Name)
	if err != nil {
		return v, err
	}
	how := "the VM starts on its disks next time"
	switch {
	case v.Chain.Resume != nil:
		how = "the guest resumes from the snapshot's memory"
	case v.Desired == model.PowerRunning:
		how = "the guest is powered off and started on its disks"
	}
	l.event(ctx, "snapshot-revert", v.Host, v.Name, "reverted to snapshot %q: %s", req.Snapshot, how)
	return v, nil
}

// DeleteSnapshot forgets a snapshot; the VM's host deletes the layers that
// nothing uses any more.
func (l *Leader) DeleteSnapshot(ctx context.Context, req SnapshotRequest) (model.VM, error) {
	if err := l.snapshotGate(); err != nil {
		return model.VM{}, err
	}
	if _, err := l.store.Apply(ctx, raftlog.DeleteSnapshot{Name: req.Name, Snapshot: req.Snapshot}); err != nil {
		return model.VM{}, err
	}
	l.event(ctx, "snapshot-removed", "", req.Name, "snapshot %q removed", req.Snapshot)
	return l.store.VM(req.Name)
}

// ForgetLayers records that a VM's host deleted dead layers' files.
func (l *Leader) ForgetLayers(ctx context.Context, req ForgetLayersRequest) (model.VM, error) {
	if err := l.ready(); err != nil {
		return model.VM{}, err
	}
	if len(req.Layers)+len(req.Memory) == 0 || len(req.Layers) > maxForgetLayers || len(req.Memory) > maxForgetLayers {
		return model.VM{}, fmt.Errorf("vm %q: %d layers and %d memory images to forget, want 1 to %d: %w",
			req.Name, len(req.Layers), len(req.Memory), maxForgetLayers, model.ErrInvalid)
	}
	if _, err := l.store.Apply(ctx, raftlog.ForgetLayers{Name: req.Name, Layers: req.Layers, Memory: req.Memory}); err != nil {
		return model.VM{}, err
	}
	return l.store.VM(req.Name)
}

// MergeRequest says a VM's host committed a layer of its disks into the
// layer under it (model.Chain.Mergeable).
type MergeRequest struct {
	Name string `json:"name"`
	Into uint64 `json:"into"`
	From uint64 `json:"from"`
}

// LayersMerged records a merge the VM's host did.
func (l *Leader) LayersMerged(ctx context.Context, req MergeRequest) (model.VM, error) {
	if err := l.ready(); err != nil {
		return model.VM{}, err
	}
	if _, err := l.store.Apply(ctx, raftlog.MergeLayers{Name: req.Name, Into: req.Into, From: req.From}); err != nil {
		return model.VM{}, err
	}
	return l.store.VM(req.Name)
}

// ScheduleRequest sets a VM's snapshot schedule (model.ParseSchedule);
// empty removes it.
type ScheduleRequest struct {
	Name     string `json:"name"`
	Schedule string `json:"schedule,omitempty"`
}

// SetSnapshotSchedule sets or removes a VM's snapshot schedule.
func (l *Leader) SetSnapshotSchedule(ctx context.Context, req ScheduleRequest) (model.VM, error) {
	if err := l.snapshotGate(); err != nil {
		return model.VM{}, err
	}
	c := raftlog.SetSnapshotPolicy{Name: req.Name, Time: l.clock.Now().UTC()}
	what := "removed"
	if req.Schedule != "" {
		s, err := model.ParseSchedule(req.Schedule)
		if err != nil {
			return model.VM{}, err
		}
		c.Schedule, what = &s, "set to "+s.String()
	}
	if _, err := l.store.Apply(ctx, c); err != nil {
		return model.VM{}, err
	}
	l.event(ctx, "snapshot-schedule", "", req.Name, "snapshot schedule %s", what)
	return l.store.VM(req.Name)
}

// snapWaitAfterRefusal is how long a VM whose scheduled snapshot was
// refused waits before the next try.
const snapWaitAfterRefusal = 10 * time.Second

// runSnapshotSchedules takes the scheduled snapshots that are due (each
// slot's once: the state records the last slot taken) and removes, one a
// pass for each VM, those their schedule no longer keeps.
func (l *Leader) runSnapshotSchedules(ctx context.Context) {
	if !raftlog.FeatureSnapshots.Enabled(l.store.Cluster()) {
		return
	}
	now := l.clock.Now()
	scheduled := vmsWhere(l.store, func(v *model.VM) bool { return v.SnapshotPolicy != nil && !v.Deleting })
	keep := map[string]bool{}
	for _, v := range scheduled {
		keep[v.Name] = true
	}
	for name := range l.snapWait { // a VM whose schedule ended waits no more
		if !strings.HasPrefix(name, backupWaitPrefix) && !keep[name] {
			delete(l.snapWait, name)
		}
	}
	for _, v := range scheduled {
		p := v.SnapshotPolicy
		if now.Before(l.snapWait[v.Name]) {
			continue
		}
		if slot := p.Schedule.Slot(now); slot.After(p.Last) && !slot.Before(p.Since.Truncate(time.Second)) {
			_, err := l.store.Apply(ctx, raftlog.TakeSnapshot{Name: v.Name, Slot: slot, Time: now.UTC()})
			if err != nil {
				if l.snapWait == nil {
					l.snapWait = map[string]time.Time{}
				}
				l.snapWait[v.Name] = now.Add(snapWaitAfterRefusal)
				if !errors.Is(err, model.ErrConflict) {
					l.log.Warn("scheduled snapshot", "vm", v.Name, "err", err)
				}
				continue
			}
			if cur, err := l.store.VM(v.Name); err == nil {
				if s, _ := cur.Chain.Snapshot(model.AutoSnapshotName(slot)); s.State == model.SnapshotReady {
					l.event(ctx, "snapshot", v.Host, v.Name, "scheduled snapshot %q taken of the stopped VM", s.Name)
				}
			}
			continue
		}
		if victim := expiredSnapshot(v); victim != "" {
			if _, err := l.store.Apply(ctx, raftlog.DeleteSnapshot{Name: v.Name, Snapshot: victim}); err == nil {
				l.event(ctx, "snapshot-removed", v.Host, v.Name, "scheduled snapshot %q expired (%s)", victim, p.Schedule)
			}
		}
	}
}

// expiredSnapshot names the oldest scheduled snapshot of v its schedule
// no longer keeps, if any (none while a snapshot is being taken).
func expiredSnapshot(v model.VM) string {
	if _, busy := v.Chain.Creating(); busy {
		return ""
	}
	var autos []model.Snapshot
	for _, s := range v.Chain.Snapshots {
		if strings.HasPrefix(s.Name, model.AutoSnapshotPrefix) && s.State == model.SnapshotReady {
			autos = append(autos, s)
		}
	}
	slices.SortStableFunc(autos, func(a, b model.Snapshot) int { return a.CreatedAt.Compare(b.CreatedAt) })
	times := make([]time.Time, len(autos))
	for i, s := range autos {
		times[i] = s.CreatedAt
	}
	for i, keep := range v.SnapshotPolicy.Schedule.Retain(times) {
		if !keep {
			return autos[i].Name
		}
	}
	return ""
}

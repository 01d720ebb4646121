package controller

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/corralhq/corral/daemon/hypervisor"
	"github.com/corralhq/corral/model"
)

// The host loop's part of snapshots (model/snapshot.go): it takes a
// running guest's snapshot by moving the guest's disks onto the new
// layer's overlays, restarts a guest whose disks were reverted, and
// deletes the files of dead layers.
//
// Why no guest can lose writes: the state records the new active layer
// before any guest writes to it, and a guest is only ever started on the
// recorded active layer. A snapshot being taken finishes the same way
// whether the guest's disks moved or not: the overlay on the frozen layer
// is either where the guest writes (it moved) or empty (it did not, and
// the guest, now stopped, wrote to the layer under it), so starting on it
// reads the guest's last writes either way.

// Volumes makes and finds the pool's volumes (the hypervisor driver's).
type Volumes interface {
	EnsureVolume(ctx context.Context, v hypervisor.Volume) (string, error)
	VolumePath(name string) string
}

// layerVolume returns the volume of layer id of v's disk i: an overlay on
// its parent layer, or for layer 0 the VM's own volume (on its image, or
// blank).
func layerVolume(images interface {
	Image(name string) (model.Image, error)
}, v model.VM, i int, id uint64) (hypervisor.Volume, error) {
	if id != 0 {
		parent, ok := v.Chain.Parent(id)
		if !ok {
			return hypervisor.Volume{}, fmt.Errorf("layer %d is not in the chain", id)
		}
		return hypervisor.Volume{Name: v.LayerVolume(i, id), Backing: v.LayerVolume(i, parent), BackingFormat: "qcow2"}, nil
	}
	d := v.Spec.Disks[i]
	vol := hypervisor.Volume{Name: v.DiskVolume(i), SizeMiB: d.SizeMiB}
	if d.Image != "" {
		im, err := images.Image(d.Image)
		if err != nil {
			return vol, err
		}
		// Derived from the name here too, never the stored volume.
		vol.Backing, vol.BackingFormat = model.ImageVolume(im.Name), im.Format
	}
	return vol, nil
}

// ensureLayers makes sure every layer of v's disk i from 0 up to top
// exists, and returns top's path. Layers are created as the guest first
// runs on them (or a backup first reads them): a VM whose snapshots were
// all taken while it was stopped, or before it ever ran, has none yet.
func ensureLayers(ctx context.Context, vols Volumes, store HostStore, v model.VM, i int, top uint64) (string, error) {
	ids := []uint64{top}
	for id := top; id != 0; {
		p, ok := v.Chain.Parent(id)
		if !ok {
			return "", fmt.Errorf("layer %d is not in the chain", id)
		}
		ids, id = append(ids, p), p
	}
	var path string
	for k := len(ids) - 1; k >= 0; k-- {
		vol, err := layerVolume(store, v, i, ids[k])
		if err != nil {
			return "", err
		}
		if path, err = vols.EnsureVolume(ctx, vol); err != nil {
			return "", err
		}
	}
	return path, nil
}

// ensureChain makes sure every layer of v's disk i from 0 up to the
// active one exists, and returns the active layer's path.
func (h *HostLoop) ensureChain(ctx context.Context, v model.VM, i int) (string, error) {
	return ensureLayers(ctx, h.drv, h.store, v, i, v.Chain.Active)
}

// snapshotOp finishes snapshot s of v, which is being taken: a guest
// running here has its disks moved onto the new active layer (its file
// systems frozen by its agent if one answers, or its RAM saved first for
// a memory snapshot); a guest not running here has its disks at rest
// already, and no RAM to save: a memory snapshot of it fails.
func (h *HostLoop) snapshotOp(v model.VM, s model.Snapshot, active bool, t *vmTrack) op {
	return func(ctx context.Context) error {
		res := SnapshotResult{Name: v.Name, Generation: v.Generation, Snapshot: s.Name}
		if !active {
			if s.Memory != 0 {
				return h.snapshotFailed(ctx, res, s, t, errMemoryStopped)
			}
			res.Consistency = model.ConsistencyStopped
			return h.snapshotDone(ctx, res, s, t)
		}
		var from, to []string
		for i := range v.Spec.Disks {
			path, err := h.ensureChain(ctx, v, i)
			if err != nil {
				return h.snapshotFailed(ctx, res, s, t, err)
			}
			to = append(to, path)
			from = append(from, h.drv.VolumePath(v.LayerVolume(i, s.Layer)))
		}
		files, err := h.drv.DiskFiles(ctx, v.Name)
		if errors.Is(err, hypervisor.ErrNoDomain) || errors.Is(err, hypervisor.ErrNotRunning) {
			if s.Memory != 0 {
				return h.snapshotFailed(ctx, res, s, t, errMemoryStopped)
			}
			res.Consistency = model.ConsistencyStopped // stopped meanwhile: at rest
			return h.snapshotDone(ctx, res, s, t)
		}
		if err != nil {
			return err
		}
		// Disks that moved tell nothing of a freeze, but all of the RAM:
		// libvirt saves it before it moves them.
		moved := model.ConsistencyCrash
		if s.Memory != 0 {
			moved = model.ConsistencyMemory
		}
		switch {
		case slices.Equal(files, to):
			// Moved already (a corrald restarted after the switch).
			res.Consistency, res.Message = moved, "the guest's disks had moved before this host recorded how"
		case slices.Equal(files, from):
			res.Consistency, res.Message, err = h.moveDisks(ctx, v, s, to)
			if err != nil {
				now, lerr := h.drv.DiskFiles(ctx, v.Name)
				switch {
				case lerr == nil && slices.Equal(now, to):
					res.Consistency, res.Message = moved, "moved, though libvirt said: "+err.Error()
				case s.Memory != 0 && (errors.Is(lerr, hypervisor.ErrNotRunning) || errors.Is(lerr, hypervisor.ErrNoDomain)):
					return h.snapshotFailed(ctx, res, s, t, fmt.Errorf("%w (%v)", errMemoryStopped, err))
				default:
					return h.snapshotFailed(ctx, res, s, t, err)
				}
			}
		default:
			return h.snapshotFailed(ctx, res, s, t, fmt.Errorf("the guest's disks are %v, not on the snapshot's layer %v", files, from))
		}
		if err := h.drv.SetLayer(ctx, v.Name, v.Chain.Active); err != nil {
			return err // the snapshot is retried, and finds the disks moved
		}
		h.log.Info("snapshot taken", "vm", v.Name, "snapshot", s.Name, "consistency", res.Consistency, "layer", v.Chain.Active)
		return h.snapshotDone(ctx, res, s, t)
	}
}

// snapKey names a snapshot being taken (a name may be taken again after
// a failure).
func snapKey(s model.Snapshot) string { return s.Name + "@" + s.CreatedAt.String() }

// snapshotDone tells the leader how snapshot s went. A refusal means the
// state has moved on (another attempt reported first): nothing to do.
func (h *HostLoop) snapshotDone(ctx context.Context, res SnapshotResult, s model.Snapshot, t *vmTrack) error {
	err := h.rep.SnapshotDone(ctx, res)
	if err != nil && !errors.Is(err, model.ErrConflict) {
		return err
	}
	h.mu.Lock()
	t.snapDone = snapKey(s)
	h.mu.Unlock()
	return nil
}

// moveDisks moves a running guest's disks onto the overlays, frozen by its
// agent if one answers, else as they are (crash-consistent); for a memory
// snapshot, with its RAM saved first, or not at all.
func (h *HostLoop) moveDisks(ctx context.Context, v model.VM, s model.Snapshot, overlays []string) (consistency, message string, err error) {
	if s.Memory != 0 {
		return h.saveMemory(ctx, v, s, overlays)
	}
	err = h.drv.SnapshotDisks(ctx, v.Name, overlays, hypervisor.SnapshotOptions{Quiesce: true})
	if err == nil {
		return model.ConsistencyFrozen, "", nil
	}
	h.log.Info("snapshot with the guest frozen failed; taking it without", "vm", v.Name, "err", err)
	if err2 := h.drv.SnapshotDisks(ctx, v.Name, overlays, hypervisor.SnapshotOptions{}); err2 != nil {
		return "", "", err2
	}
	return model.ConsistencyCrash, "the guest agent did not freeze the guest: " + err.Error(), nil
}

func (h *HostLoop) snapshotFailed(ctx context.Context, res SnapshotResult, s model.Snapshot, t *vmTrack, err error) error {
	h.log.Warn("snapshot failed", "vm", res.Name, "snapshot", res.Snapshot, "err", err)
	res.Error = err.Error()
	return h.snapshotDone(ctx, res, s, t)
}

// relayerOp restarts a running guest whose disks were reverted to a
// snapshot: powered off (its writes since the snapshot are being thrown
// away), then started on the new active layer.
func (h *HostLoop) relayerOp(v model.VM, t *vmTrack) op {
	start := h.startOp(v, t)
	return func(ctx context.Context) error {
		if err := h.drv.PowerOff(ctx, v.Name); err != nil && !errors.Is(err, hypervisor.ErrNoDomain) {
			return err
		}
		h.log.Info("guest powered off: its disks were reverted to a snapshot", "vm", v.Name, "layer", v.Chain.Active)
		h.mu.Lock()
		t.seenRunning = false
		h.mu.Unlock()
		return start(ctx)
	}
}

// gcOp deletes the files of v's dead layers and memory images and tells
// the leader; it runs once for each set of them the state shows.
func (h *HostLoop) gcOp(v model.VM, t *vmTrack) op {
	dead, mem := slices.Clone(v.Chain.Dead), slices.Clone(v.Chain.DeadMemory)
	t.forgotten, t.forgotMem = dead, mem
	return h.upkeep(v, t, func(ctx context.Context) error {
		for _, id := range dead {
			for i := range v.Spec.Disks {
				if err := h.drv.DeleteVolume(ctx, v.LayerVolume(i, id)); err != nil {
					return fmt.Errorf("delete dead disk layer %d: %w", id, err)
				}
			}
		}
		for _, id := range mem {
			if err := h.drv.DeleteVolume(ctx, v.MemoryVolume(id)); err != nil {
				return fmt.Errorf("delete memory image %d: %w", id, err)
			}
		}
		h.log.Info("dead disk layers and memory images deleted", "vm", v.Name, "layers", dead, "memory_images", mem)
		return h.rep.ForgetLayers(ctx, ForgetLayersRequest{Name: v.Name, Layers: dead, Memory: mem})
	})
}

// upkeepRetry is how long housekeeping of a VM's chain waits after a
// failure; upkeepConflictRetry after the leader refused a merge's report.
const (
	upkeepRetry         = time.Minute
	upkeepConflictRetry = 5 * time.Second
)

// upkeep runs housekeeping fn: its failure is logged and tried again
// after upkeepRetry, and never shows as the VM's state (the guest is
// fine; its chain is only longer meanwhile).
func (h *HostLoop) upkeep(v model.VM, t *vmTrack, fn op) op {
	return func(ctx context.Context) error {
		err := fn(ctx)
		if err != nil && ctx.Err() == nil {
			h.log.Warn("disk chain housekeeping failed", "vm", v.Name, "err", err, "retry_in", upkeepRetry)
			h.mu.Lock()
			t.forgotten, t.forgotMem, t.upkeepAt = nil, nil, h.clock.Now().Add(upkeepRetry)
			h.mu.Unlock()
		}
		return nil
	}
}

// chainUpkeep returns the housekeeping v's chain needs when nothing else
// is to be done: deleting dead layers' files, then merging layers. Both
// wait while a guest here runs on a layer other than the active one (dead
// layers are never under the active one, and merges are of layers the
// state and the guest agree on).
func (h *HostLoop) chainUpkeep(v model.VM, dom hypervisor.Domain, active bool, t *vmTrack) op {
	if v.Deleting || active && dom.Layer != v.Chain.Active || h.clock.Now().Before(t.upkeepAt) {
		return nil
	}
	if c := v.Chain; (len(c.Dead) > 0 || len(c.DeadMemory) > 0) && !(slices.Equal(t.forgotten, c.Dead) && slices.Equal(t.forgotMem, c.DeadMemory)) {
		return h.gcOp(v, t)
	}
	if v.Backup != nil {
		return nil // a backup reads the layers: they stay as they are
	}
	if t.merged != [2]uint64{} {
		if _, live := v.Chain.Parent(t.merged[1]); live {
			return nil // the last merge is not in this host's state yet
		}
		t.merged = [2]uint64{}
	}
	for _, p := range v.Chain.MergeablePairs() {
		if active && t.locked && t.lockedInto == p[0] && t.lockedRun.Equal(dom.StartedAt) {
			continue
		}
		return h.mergeOp(v, p[0], p[1], dom, t)
	}
	return nil
}

// mergeOp commits layer from of v's disks into layer into and tells the
// leader.
func (h *HostLoop) mergeOp(v model.VM, into, from uint64, dom hypervisor.Domain, t *vmTrack) op {
	return h.upkeep(v, t, func(ctx context.Context) error {
		var intos, froms []string
		var kids [][]string
		for i := range v.Spec.Disks {
			intos = append(intos, h.drv.VolumePath(v.LayerVolume(i, into)))
			froms = append(froms, h.drv.VolumePath(v.LayerVolume(i, from)))
			var on []string
			for _, l := range v.Chain.Layers {
				if l.Parent == from {
					on = append(on, h.drv.VolumePath(v.LayerVolume(i, l.ID)))
				}
			}
			kids = append(kids, on)
		}
		start := h.clock.Now()
		if err := h.drv.CommitLayer(ctx, v.Name, intos, froms, kids); errors.Is(err, hypervisor.ErrDiskLocked) {
			// It waits for the guest's next QEMU (a restart, a live
			// migration) or a stop; other merges go on.
			h.log.Info("merge waits for the guest's next start or migration: libvirt still holds the lock it took on the layer for an earlier merge",
				"vm", v.Name, "from", from, "into", into)
			h.mu.Lock()
			t.locked, t.lockedInto, t.lockedRun = true, into, dom.StartedAt
			h.mu.Unlock()
			return nil
		} else if err != nil {
			return fmt.Errorf("merge disk layer %d into %d: %w", from, into, err)
		}
		h.log.Info("disk layers merged", "vm", v.Name, "from", from, "into", into, "took", h.clock.Now().Sub(start).Round(time.Millisecond))
		err := h.rep.LayersMerged(ctx, MergeRequest{Name: v.Name, Into: into, From: from})
		if errors.Is(err, model.ErrConflict) {
			// The chain changed meanwhile (a snapshot is being taken):
			// the files are merged and read the same; tell it again soon.
			h.mu.Lock()
			t.upkeepAt = h.clock.Now().Add(upkeepConflictRetry)
			h.mu.Unlock()
			return nil
		}
		if err != nil {
			return err
		}
		// Nothing more until this host's copy of the state shows it.
		h.mu.Lock()
		t.merged = [2]uint64{into, from}
		h.mu.Unlock()
		return nil
	})
}

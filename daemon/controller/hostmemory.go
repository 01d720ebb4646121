package controller

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/corralhq/corral/daemon/hypervisor"
	"github.com/corralhq/corral/model"
)

// The host loop's part of memory snapshots (model.Snapshot.Memory): it
// saves a running guest's RAM with its disks, and resumes a guest from
// that RAM after a revert (model.Chain.Resume).
//
// Why a resume never pairs RAM with other disks: the RAM holds what the
// guest had read and cached of its disks at the snapshot, so it may only
// run on disks as they were then. A revert makes a new, empty layer on the
// snapshot's; the host restores the RAM onto it only while its files hold
// nothing of their own (no guest has written to it), and boots the guest
// cold otherwise (a resume ran and the guest then crashed, or the host
// died and the VM was recovered elsewhere).

// errMemoryStopped fails a memory snapshot whose guest does not run here.
var errMemoryStopped = errors.New("the guest stopped before its memory could be saved: a memory snapshot needs a running guest")

// saveMemory takes memory snapshot s of a running guest: its RAM into
// the snapshot's memory volume, then its disks onto the overlays, the
// guest paused in between.
func (h *HostLoop) saveMemory(ctx context.Context, v model.VM, s model.Snapshot, overlays []string) (consistency, message string, err error) {
	vol := v.MemoryVolume(s.Memory)
	// A file there is an earlier attempt's at this snapshot (memory
	// image IDs are never reused).
	if err := h.drv.DeleteVolume(ctx, vol); err != nil {
		return "", "", fmt.Errorf("memory image %s: %w", vol, err)
	}
	start := h.clock.Now()
	if err := h.drv.SnapshotDisks(ctx, v.Name, overlays, hypervisor.SnapshotOptions{Memory: h.drv.VolumePath(vol)}); err != nil {
		return "", "", fmt.Errorf("save the guest's memory with its disks: %w", err)
	}
	h.log.Info("guest's memory saved with its disks", "vm", v.Name, "snapshot", s.Name, "volume", vol,
		"took", h.clock.Now().Sub(start).Round(time.Millisecond))
	return model.ConsistencyMemory, "", nil
}

// resume starts v's guest from the memory image its chain asks for when
// it may (see above), on spec, which Define has just set, recording info.
// It reports whether the guest runs, and the note its reports carry while
// it runs: how the resume went, or why the guest is to boot cold. An error
// is one to retry the start for (libvirtd away).
func (h *HostLoop) resume(ctx context.Context, v model.VM, spec hypervisor.DomainSpec, info hypervisor.RunInfo, t *vmTrack) (bool, string, error) {
	r := v.Chain.Resume
	if r == nil || r.Layer != v.Chain.Active {
		return false, "", nil
	}
	h.mu.Lock()
	cold, note := t.coldLayer == r.Layer, t.coldNote
	h.mu.Unlock()
	if cold {
		return false, note, nil // given up already; a start failed since
	}
	giveUp := func(why string) (bool, string, error) {
		note := fmt.Sprintf("memory of snapshot %q not restored: %s; booted cold", r.Snapshot, why)
		h.log.Warn("guest not resumed from memory; booting it", "vm", v.Name, "snapshot", r.Snapshot, "why", why)
		h.mu.Lock()
		t.coldLayer, t.coldNote = r.Layer, note
		h.mu.Unlock()
		return false, note, nil
	}
	for _, d := range spec.Disks {
		if d.ReadOnly {
			continue
		}
		written, err := h.drv.Written(ctx, d.Path)
		if errors.Is(err, hypervisor.ErrDisconnected) {
			return false, "", err
		}
		if err != nil {
			return giveUp("its disks could not be checked: " + model.Clip(err.Error(), model.MaxSnapshotMessage))
		}
		if written {
			return giveUp("its disks changed since")
		}
	}
	start := h.clock.Now()
	err := h.drv.Restore(ctx, v.Name, h.drv.VolumePath(v.MemoryVolume(r.Memory)), info)
	if errors.Is(err, hypervisor.ErrDisconnected) {
		return false, "", err
	}
	if err != nil {
		// No half-restored QEMU stays behind the cold boot.
		if derr := h.drv.Destroy(ctx, v.Name); derr != nil && !errors.Is(derr, hypervisor.ErrNoDomain) {
			return false, "", derr
		}
		return giveUp(model.Clip(err.Error(), model.MaxSnapshotMessage))
	}
	h.log.Info("guest resumed from a memory snapshot", "vm", v.Name, "snapshot", r.Snapshot, "layer", r.Layer,
		"took", h.clock.Now().Sub(start).Round(time.Millisecond))
	return true, fmt.Sprintf("resumed from the memory of snapshot %q", r.Snapshot), nil
}

// joinNote adds note to a report's message.
func joinNote(msg, note string) string {
	if msg == "" {
		return note
	}
	return msg + "; " + note
}

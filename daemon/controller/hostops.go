package controller

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/corralhq/corral/daemon/hypervisor"
	"github.com/corralhq/corral/model"
	"github.com/corralhq/corral/raftlog"
)

// The operations the host loop launches for a VM (decide chooses them):
// start, stop, restart, live migration, deletion, and the fencing of
// every guest here; and the domain they define.

func (h *HostLoop) relocate(v model.VM, reason string) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	err := h.rep.Relocate(ctx, RelocateRequest{Name: v.Name, Generation: v.Generation, Host: h.cfg.Self, Reason: reason})
	if err != nil {
		h.log.Warn("relocation request failed", "vm", v.Name, "err", err)
		h.mu.Lock()
		if t, ok := h.track[v.Name]; ok {
			t.relocating = false
		}
		h.mu.Unlock()
	}
}

// domainSpec turns a VM into a domain definition, creating its volumes.
func (h *HostLoop) domainSpec(ctx context.Context, v model.VM) (hypervisor.DomainSpec, error) {
	spec := hypervisor.DomainSpec{
		VMID: v.ID, Name: v.Name, Generation: v.Generation, SpecVersion: v.SpecVersion,
		VCPUs: v.Spec.VCPUs, MemoryMiB: v.Spec.MemoryMiB, Kernel: v.Spec.Kernel,
	}
	if h.cfg.KernelDir != "" {
		if err := v.Spec.Kernel.CheckKernelDir(h.cfg.KernelDir); err != nil {
			return spec, err
		}
	}
	if v.Restore != nil {
		if err := h.restoreDisks(ctx, v); err != nil {
			return spec, err
		}
	}
	for i := range v.Spec.Disks {
		path, err := h.ensureChain(ctx, v, i)
		if err != nil {
			return spec, fmt.Errorf("disk %d: %w", i, err)
		}
		spec.Disks = append(spec.Disks, hypervisor.Disk{Path: path, Format: "qcow2"})
	}
	if v.Spec.UserData != "" {
		meta := fmt.Sprintf("instance-id: %s\nlocal-hostname: %s\n", v.ID, v.Name)
		path, err := h.drv.EnsureSeed(ctx, v.SeedVolume(), v.Spec.UserData, meta)
		if err != nil {
			return spec, fmt.Errorf("cloud-init seed: %w", err)
		}
		spec.Disks = append(spec.Disks, hypervisor.Disk{Path: path, Format: "raw", ReadOnly: true})
	}
	for _, n := range v.Spec.NICs {
		spec.NICs = append(spec.NICs, hypervisor.NIC{Bridge: h.cfg.Bridge(n.Network), MAC: n.MAC})
	}
	return spec, nil
}

func (h *HostLoop) startOp(v model.VM, t *vmTrack) op {
	return func(ctx context.Context) error {
		spec, err := h.domainSpec(ctx, v)
		if err != nil {
			return err
		}
		if err := h.drv.Define(ctx, spec); err != nil {
			return err
		}
		info := hypervisor.RunInfo{StartedAt: h.clock.Now(), RestartSeq: v.RestartSeq, Layer: v.Chain.Active}
		resumed, note, err := h.resume(ctx, v, spec, info, t)
		if err != nil {
			return err
		}
		if !resumed {
			if err := h.drv.Start(ctx, v.Name, info); err != nil {
				return err
			}
			h.log.Info("guest started", "vm", v.Name, "generation", v.Generation)
		}
		h.mu.Lock()
		t.seenRunning = true
		t.note, t.noteRun = note, info.StartedAt
		h.mu.Unlock()
		return nil
	}
}

func (h *HostLoop) stopOp(v model.VM, t *vmTrack) op {
	return func(ctx context.Context) error {
		if err := h.drv.Shutdown(ctx, v.Name, h.cfg.ShutdownTimeout); err != nil {
			return err
		}
		h.log.Info("guest stopped", "vm", v.Name)
		return nil
	}
}

func (h *HostLoop) restartOp(v model.VM, t *vmTrack) op {
	stop, start := h.stopOp(v, t), h.startOp(v, t)
	return func(ctx context.Context) error {
		if err := stop(ctx); err != nil {
			return err
		}
		h.mu.Lock()
		t.seenRunning = false
		h.mu.Unlock()
		return start(ctx)
	}
}

// migrateOp live-migrates the guest to the migration's target, reporting
// progress, and tells the leader how it ended.
func (h *HostLoop) migrateOp(v model.VM) op {
	target := v.Migration.Target
	return func(ctx context.Context) error {
		th, err := h.store.Host(target)
		if err != nil {
			return h.rep.MigrationDone(ctx, MigrationResult{Name: v.Name, Generation: v.Generation, Target: target, Error: err.Error()})
		}
		dest, data := h.cfg.MigrationURIs(th.Addr)
		h.log.Info("live migration starting", "vm", v.Name, "to", target, "uri", dest)
		var last time.Time
		start := h.clock.Now()
		err = h.drv.Migrate(ctx, v.Name, dest, data, func(done, total uint64) {
			if h.clock.Now().Sub(last) < time.Second {
				return
			}
			last = h.clock.Now()
			msg := fmt.Sprintf("to %s: %d%% of %d MiB", target, done*100/max(total, 1), total>>20)
			h.rep.Report(ctx, raftlog.ReportVMs{Host: h.cfg.Self, Time: last.UTC(), Reports: []raftlog.VMReport{
				{Name: v.Name, Generation: v.Generation, State: model.StateMigrating, Since: v.Actual.Since, Message: msg}}})
		})
		res := MigrationResult{Name: v.Name, Generation: v.Generation, Target: target}
		if err != nil {
			res.Error = err.Error()
			h.log.Warn("live migration failed", "vm", v.Name, "to", target, "err", err)
		} else {
			h.log.Info("live migration done", "vm", v.Name, "to", target, "took", h.clock.Now().Sub(start).Round(time.Millisecond))
		}
		// Tell the leader, retrying: until it knows, the VM looks like it
		// still migrates, and nothing else happens to it.
		for {
			rerr := h.rep.MigrationDone(ctx, res)
			if rerr == nil || errors.Is(rerr, model.ErrConflict) || ctx.Err() != nil {
				return nil
			}
			h.log.Warn("report migration result", "vm", v.Name, "err", rerr)
			select {
			case <-ctx.Done():
				return nil
			case <-h.clock.After(time.Second):
			}
		}
	}
}

// Fence powers off every corral guest now, from the caller's goroutine (the
// lease's expiry check), without waiting for the loop, which may be busy;
// the loop keeps enforcing it while the host is fencing.
func (h *HostLoop) Fence() {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if doms, err := h.drv.List(ctx); err == nil {
		h.fence(ctx, doms)
	} else {
		h.log.Error("fence: cannot list guests", "err", err)
	}
	h.wake()
}

// fence destroys every active corral domain at once, in parallel and
// outside the operation cap, and forgets which guests were seen running:
// this is not a crash. Definitions stay; once the host holds a lease again
// and has caught up, the normal pass removes those it no longer owns and
// restarts those still placed here.
func (h *HostLoop) fence(ctx context.Context, doms []hypervisor.Domain) {
	h.mu.Lock()
	for _, t := range h.track {
		t.seenRunning, t.restarts = false, nil
	}
	h.mu.Unlock()
	var wg sync.WaitGroup
	for _, d := range doms {
		if !d.State.Active() {
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := h.drv.PowerOff(ctx, d.Name); err != nil {
				h.log.Error("fence: power off guest", "vm", d.Name, "err", err)
				return
			}
			h.log.Warn("fence: guest destroyed", "vm", d.Name)
		}()
	}
	wg.Wait()
}

// deleteOp destroys the domain, removes its definition and the VM's
// volumes, and reports "deleted", upon which the leader forgets the VM.
func (h *HostLoop) deleteOp(v model.VM) op {
	return func(ctx context.Context) error {
		if err := h.drv.Destroy(ctx, v.Name); err != nil && !errors.Is(err, hypervisor.ErrNoDomain) {
			return err
		}
		if err := h.drv.Undefine(ctx, v.Name); err != nil {
			return err
		}
		vols := []string{v.SeedVolume()}
		for i := range v.Spec.Disks {
			for _, id := range v.Chain.AllLayers() {
				vols = append(vols, v.LayerVolume(i, id))
			}
		}
		for _, id := range v.Chain.MemoryImages() {
			vols = append(vols, v.MemoryVolume(id))
		}
		for _, vol := range vols {
			if err := h.drv.DeleteVolume(ctx, vol); err != nil {
				return err
			}
		}
		h.log.Info("vm deleted", "vm", v.Name)
		return h.rep.Report(ctx, raftlog.ReportVMs{Host: h.cfg.Self, Time: h.clock.Now().UTC(),
			Reports: []raftlog.VMReport{{Name: v.Name, Generation: v.Generation, State: model.StateDeleted}}})
	}
}

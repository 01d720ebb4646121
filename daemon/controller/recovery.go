package controller

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/corralhq/corral/daemon/hypervisor"
	"github.com/corralhq/corral/model"
	"github.com/corralhq/corral/raftlog"
)

// A cluster recovered from a backup of its state (model.Recovery) first
// learns what its hosts run. Each host, while the state waits for it,
// sends its inventory and does nothing else; every host does nothing
// until no host is waited for. See DESIGN.md, "Recovery of the control
// plane".

// AdoptGuests records a host's inventory, and ends the recovery when it
// was the last one waited for and no guest is left unknown.
func (l *Leader) AdoptGuests(ctx context.Context, req raftlog.AdoptGuests) (model.Recovery, error) {
	if err := l.ready(); err != nil {
		return model.Recovery{}, err
	}
	if _, err := l.store.Host(req.Host); err != nil {
		return model.Recovery{}, err
	}
	if len(req.Guests) > raftlog.MaxAdoptedGuests {
		return model.Recovery{}, fmt.Errorf("inventory of %d guests, at most %d: %w", len(req.Guests), raftlog.MaxAdoptedGuests, model.ErrInvalid)
	}
	for _, g := range req.Guests {
		if err := model.ValidateName("vm", g.Name); err != nil {
			return model.Recovery{}, err
		}
		if len(g.VMID) > 64 || len(g.Layers) > model.MaxLayerDepth+1 {
			return model.Recovery{}, fmt.Errorf("inventory entry of vm %q too long: %w", g.Name, model.ErrInvalid)
		}
	}
	before := l.store.Cluster().Recovery
	if !before.Waits(req.Host) {
		if before == nil {
			return model.Recovery{}, fmt.Errorf("the cluster is not recovering: %w", model.ErrConflict)
		}
		return *before, nil
	}
	req.Time = l.clock.Now().UTC()
	if _, err := l.store.Apply(ctx, req); err != nil {
		return model.Recovery{}, err
	}
	after := l.store.Cluster().Recovery
	if after == nil {
		return model.Recovery{}, nil
	}
	running := 0
	for _, g := range req.Guests {
		if g.Running {
			running++
		}
	}
	l.event(ctx, "recovery-inventory", req.Host, "", "%d guests running: %d adopted (%d found elsewhere than the backup said), %d unknown; %d disk chains newer than the backup's; still waiting for %s",
		running, after.Adopted-before.Adopted, after.Moved-before.Moved, len(after.Unknown)-len(before.Unknown), after.Rechained-before.Rechained, orNone(after.Waiting))
	if len(after.Waiting) == 0 && len(after.Unknown) == 0 {
		return l.EndRecovery(ctx, RecoveryEnd{})
	}
	return *after, nil
}

// RecoveryEnd ends a recovery. Force ends it while hosts are waited for:
// the operator vouches that they run no guest.
type RecoveryEnd struct {
	Force bool `json:"force,omitempty"`
}

// EndRecovery ends the recovery: guests the state does not know are then
// removed like any domain a host does not own, and HA is armed again if
// the backup had it armed.
func (l *Leader) EndRecovery(ctx context.Context, req RecoveryEnd) (model.Recovery, error) {
	if err := l.ready(); err != nil {
		return model.Recovery{}, err
	}
	rec := l.store.Cluster().Recovery
	if rec == nil {
		return model.Recovery{}, fmt.Errorf("the cluster is not recovering: %w", model.ErrConflict)
	}
	if _, err := l.store.Apply(ctx, raftlog.EndRecovery{Force: req.Force, Time: l.clock.Now().UTC()}); err != nil {
		return *rec, err
	}
	msg := fmt.Sprintf("recovery from the backup of %s ended: %d guests adopted, %d moved, %d disk chains updated",
		rec.BackupAt.UTC().Format(time.RFC3339), rec.Adopted, rec.Moved, rec.Rechained)
	if len(rec.Waiting) > 0 {
		msg += "; never heard from " + strings.Join(rec.Waiting, ", ") + " (ended by force)"
	}
	if len(rec.Unknown) > 0 {
		msg += fmt.Sprintf("; %d unknown guests are removed by their hosts (their disks stay in the pool)", len(rec.Unknown))
	}
	if rec.HAWasArmed {
		msg += "; HA armed again"
	}
	l.event(ctx, "recovery-ended", "", "", "%s", msg)
	return model.Recovery{}, nil
}

func orNone(hosts []string) string {
	if len(hosts) == 0 {
		return "no host"
	}
	return strings.Join(hosts, ", ")
}

// inventory sends, once at a time, what this host runs to a recovering
// cluster's leader: every corral guest with its disk chain, and the newer
// chains the pool holds for the stopped VMs placed here.
func (h *HostLoop) inventory(ctx context.Context, doms []hypervisor.Domain) {
	if !h.inventoryBusy.CompareAndSwap(false, true) {
		return
	}
	vms := h.store.VMs()
	go func() {
		defer h.inventoryBusy.Store(false)
		req := raftlog.AdoptGuests{Host: h.cfg.Self}
		byName := map[string]model.VM{}
		for _, v := range vms {
			byName[v.Name] = v
		}
		seen := map[string]bool{}
		for _, d := range doms {
			seen[d.Name] = true
			g := raftlog.AdoptedGuest{Name: d.Name, VMID: d.VMID, Running: d.State.Active()}
			if v, ok := byName[d.Name]; ok && v.ID == d.VMID && g.Running && len(v.Spec.Disks) > 0 {
				files, err := h.drv.DiskChain(ctx, d.Name)
				if err != nil {
					h.log.Warn("recovery: disk chain of a running guest", "vm", d.Name, "err", err)
					return // sent again on the next pass
				}
				layers, err := layersOf(v, files)
				if err != nil {
					h.log.Warn("recovery: disk chain of a running guest", "vm", d.Name, "err", err)
				}
				g.Layers = layers
			}
			if !g.Running {
				if v, ok := byName[d.Name]; !ok || v.ID != d.VMID || v.Host != h.cfg.Self {
					continue // a stopped domain of nobody's: nothing to adopt
				}
				g.Layers = h.newerChain(ctx, byName[d.Name])
			}
			req.Guests = append(req.Guests, g)
		}
		for _, v := range vms {
			if v.Host != h.cfg.Self || seen[v.Name] || len(v.Spec.Disks) == 0 {
				continue
			}
			if layers := h.newerChain(ctx, v); layers != nil {
				req.Guests = append(req.Guests, raftlog.AdoptedGuest{Name: v.Name, VMID: v.ID, Layers: layers})
			}
		}
		rctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		defer cancel()
		if err := h.rep.Adopt(rctx, req); err != nil && ctx.Err() == nil {
			h.log.Warn("recovery: inventory to the leader", "guests", len(req.Guests), "err", err)
			return
		}
		h.log.Info("recovery: inventory sent", "guests", len(req.Guests))
	}()
}

// layersOf turns the files of a chain of disk 0, top first, into layer
// IDs, down to the VM's own volume (under which its image may lie).
func layersOf(v model.VM, files []string) ([]uint64, error) {
	var out []uint64
	for _, f := range files {
		id, ok := v.LayerOf(f)
		if !ok {
			return nil, fmt.Errorf("vm %q: %s in its disk chain is none of its layers", v.Name, f)
		}
		out = append(out, id)
		if id == 0 {
			return out, nil
		}
	}
	return nil, fmt.Errorf("vm %q: its disk chain %v does not reach its own volume", v.Name, files)
}

// newerChain returns the chain of the newest layer file of v's disk 0 in
// the pool when it is newer than any layer the state knows (the state is
// from before a snapshot was taken): the active layer is always the
// newest live one. Nil when there is none or it cannot be read.
func (h *HostLoop) newerChain(ctx context.Context, v model.VM) []uint64 {
	for id := v.Chain.Seq + model.MaxLayerDepth; id > v.Chain.Seq; id-- {
		files, err := h.drv.BackingChain(ctx, h.drv.VolumePath(v.LayerVolume(0, id)))
		if errors.Is(err, hypervisor.ErrNoVolume) {
			continue
		}
		if err != nil {
			h.log.Warn("recovery: disk chain in the pool", "vm", v.Name, "layer", id, "err", err)
			return nil
		}
		layers, err := layersOf(v, files)
		if err != nil {
			h.log.Warn("recovery: disk chain in the pool", "vm", v.Name, "err", err)
			return nil
		}
		return layers
	}
	return nil
}

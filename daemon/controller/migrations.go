package controller

import (
	"context"
	"errors"
	"fmt"
	"sync"

	"github.com/corralhq/corral/daemon/placement"
	"github.com/corralhq/corral/model"
	"github.com/corralhq/corral/raftlog"
)

// HostRestoreRequest returns a host to service.
type HostRestoreRequest struct {
	Name string `json:"name"`
	// Failback live-migrates back the VMs a drain moved away from it.
	Failback bool `json:"failback,omitempty"`
}

// MigrateVMRequest live-migrates one VM; an empty Target lets placement
// choose.
type MigrateVMRequest struct {
	Name   string `json:"name"`
	Target string `json:"target,omitempty"`
}

// MigrationResult is a source host's report that a migration ended.
type MigrationResult struct {
	Name       string `json:"name"`
	Generation uint64 `json:"generation"`
	Target     string `json:"target"`
	Error      string `json:"error,omitempty"`
}

// maxMigrationAttempts is how many targets a drain tries for one VM before
// leaving it where it is and saying so.
const maxMigrationAttempts = 3

// migrations is the leader's memory of failbacks in progress and of
// targets that failed a VM. It is lost with leadership; the next leader
// starts afresh (a drain itself is in state and carries on). Entries of
// hosts and VMs that leave state are dropped by forget.
type migrations struct {
	mu       sync.Mutex
	failback map[string]bool            // host -> move its former VMs back
	failed   map[string]map[string]bool // vm -> targets that failed
}

func (m *migrations) init() {
	if m.failback == nil {
		m.failback, m.failed = map[string]bool{}, map[string]map[string]bool{}
	}
}

func (m *migrations) setFailback(host string, on bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.init()
	if on {
		m.failback[host] = true
	} else {
		delete(m.failback, host)
	}
}

func (m *migrations) failingBack(host string) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.init()
	return m.failback[host]
}

func (m *migrations) markFailed(vm, target string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.init()
	if m.failed[vm] == nil {
		m.failed[vm] = map[string]bool{}
	}
	m.failed[vm][target] = true
}

func (m *migrations) clearFailed(vm string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.init()
	delete(m.failed, vm)
}

// forget drops the failbacks of hosts and the failed targets of VMs no
// longer in state.
func (m *migrations) forget(hosts map[string]model.Host, vms map[string]bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	dropMissing(m.failback, hosts)
	dropMissing(m.failed, vms)
}

// failedTargets returns a copy of the targets that failed vm.
func (m *migrations) failedTargets(vm string) map[string]bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.init()
	out := map[string]bool{}
	for t := range m.failed[vm] {
		out[t] = true
	}
	return out
}

// DrainHost puts a host in maintenance (no new placements) and live-migrates
// its VMs away, DrainParallel at a time.
func (l *Leader) DrainHost(ctx context.Context, req NameRequest) (model.Host, error) {
	if err := l.ready(); err != nil {
		return model.Host{}, err
	}
	h, err := l.store.Host(req.Name)
	if err != nil {
		return h, err
	}
	if h.Mode == model.ModeFenced {
		return h, fmt.Errorf("host %q is fenced; its VMs were recovered: %w", h.Name, model.ErrConflict)
	}
	if _, err := l.store.Apply(ctx, batchOf([]raftlog.Command{
		raftlog.SetHostMode{Name: h.Name, Mode: model.ModeMaintenance},
		raftlog.SetHostDraining{Name: h.Name, Draining: true},
	})); err != nil {
		return h, err
	}
	l.event(ctx, "draining", h.Name, "", "maintenance: live-migrating its VMs away")
	l.poke()
	return l.store.Host(h.Name)
}

// RemoveHostRequest names a host to remove. Force moves the VMs still
// assigned to it to other hosts, stopped, and is only accepted for a host
// declared dead (fenced: its guests cannot run there any more).
type RemoveHostRequest struct {
	Name  string `json:"name"`
	Force bool   `json:"force,omitempty"`
}

// Gate refuses a request that some host could not take: Force is new in
// protocol 2 (raftlog.FeatureForceRemove), and a leader of protocol 1
// refuses the field. Checked where the request is made (a follower may
// forward it to an older leader) and again on the leader.
func (r RemoveHostRequest) Gate(c model.Cluster, hosts []model.Host) error {
	if r.Force {
		return raftlog.FeatureForceRemove.Check(c, hosts)
	}
	return nil
}

// RemoveHost forgets a host for good: it leaves cluster state and the Raft
// configuration, and the certificates issued to its name until now are
// revoked (the name may join again later with a new token). Refused for
// this host, for a host gossip sees alive (stop its corrald first) and for
// a host with VMs (drain it first) unless Force (see forceMoves).
func (l *Leader) RemoveHost(ctx context.Context, req RemoveHostRequest) (model.Host, error) {
	if err := l.ready(); err != nil {
		return model.Host{}, err
	}
	if err := req.Gate(l.store.Cluster(), l.store.Hosts()); err != nil {
		return model.Host{}, err
	}
	h, err := l.store.Host(req.Name)
	if err != nil {
		return h, err
	}
	if h.Name == l.cfg.Self {
		return h, fmt.Errorf("host %q leads the cluster; remove it from another host once leadership has moved: %w", h.Name, model.ErrConflict)
	}
	for _, p := range l.peers.Peers() {
		if p.Name == h.Name && p.State == PeerAlive {
			return h, fmt.Errorf("host %q is alive; stop corrald on it first (drain it before, if it runs VMs): %w", h.Name, model.ErrConflict)
		}
	}
	var left []model.VM
	for _, v := range l.store.VMs() {
		if v.Host == h.Name {
			left = append(left, v)
		}
	}
	if len(left) > 0 && !req.Force {
		return h, fmt.Errorf("host %q still has VM %q (and %d more); drain it or delete its VMs first, or, if the host is dead, remove it with --force to move them elsewhere, stopped: %w",
			h.Name, left[0].Name, len(left)-1, model.ErrConflict)
	}
	if len(left) > 0 {
		cmds, err := l.forceMoves(h, left)
		if err != nil {
			return h, err
		}
		res, err := l.store.Apply(ctx, batchOf(cmds))
		if err != nil {
			return h, err
		}
		if results, _ := res.(raftlog.BatchResult); errors.Join(results...) != nil {
			return h, errors.Join(results...)
		}
		project := map[string]string{}
		for _, v := range left {
			project[v.Name] = v.Project
		}
		for _, c := range cmds {
			switch c := c.(type) {
			case raftlog.PlaceVM:
				l.event(ctx, "moved", c.Host, c.Name, "from %s, removed by force; stopped: start it when ready", h.Name)
			case raftlog.DeleteVM:
				// Gone from state: the event names its project itself.
				l.eventIn(ctx, project[c.Name], "deleted", h.Name, c.Name, "removed from cluster state with its host (it was being deleted)")
			}
		}
	}
	servers, err := l.raft.Servers()
	if err != nil {
		return h, err
	}
	for _, s := range servers {
		if s.ID == h.Name {
			if err := l.raft.RemoveServer(ctx, h.Name); err != nil {
				return h, err
			}
		}
	}
	if _, err := l.store.Apply(ctx, raftlog.RemoveHost{Name: h.Name, Time: l.clock.Now().UTC()}); err != nil {
		return h, err
	}
	l.event(ctx, "removed", h.Name, "", "host removed; its certificates are revoked")
	return h, nil
}

// forceMoves says what host rm --force does to the VMs left on h: each is
// stopped and placed on another host (a VM being deleted is forgotten, as
// vm delete --force would). Only for a fenced host, whose guests surely
// no longer run, so that nothing widens the window for a second copy; and
// only with shared storage, where the disks are. A VM that fits nowhere
// refuses the whole removal.
func (l *Leader) forceMoves(h model.Host, vms []model.VM) ([]raftlog.Command, error) {
	if h.Mode != model.ModeFenced {
		return nil, fmt.Errorf("host %q is %s, not fenced: its guests may still run there, so --force moves nothing off it; "+
			"wait until the leader declares it dead (or fence_command powers it off): %w", h.Name, h.Mode, model.ErrConflict)
	}
	if !l.cfg.Liveness.SharedStorage {
		return nil, fmt.Errorf("storage is not shared (shared_storage = false): the disks of VM %q are only on %s; delete its VMs (vm delete --force) first: %w",
			vms[0].Name, h.Name, model.ErrConflict)
	}
	idx := l.index()
	var cmds []raftlog.Command
	for _, v := range vms {
		if v.Deleting {
			cmds = append(cmds, raftlog.DeleteVM{Name: v.Name})
			continue
		}
		target, err := idx.Place(placement.Request{Name: v.Name, Spec: v.Spec, Exclude: map[string]bool{h.Name: true}})
		if err != nil {
			return nil, fmt.Errorf("vm %q from %s: %w", v.Name, h.Name, err)
		}
		cmds = append(cmds, raftlog.SetVMPower{Name: v.Name, Desired: model.PowerStopped},
			raftlog.PlaceVM{Name: v.Name, Host: target, Generation: v.Generation})
	}
	return cmds, nil
}

// RestoreHost returns a host in maintenance to service.
func (l *Leader) RestoreHost(ctx context.Context, req HostRestoreRequest) (model.Host, error) {
	if err := l.ready(); err != nil {
		return model.Host{}, err
	}
	h, err := l.store.Host(req.Name)
	if err != nil {
		return h, err
	}
	if h.Mode == model.ModeFenced {
		return h, fmt.Errorf("host %q is fenced; it returns to service by itself when it renews its lease again: %w", h.Name, model.ErrConflict)
	}
	if _, err := l.store.Apply(ctx, raftlog.SetHostMode{Name: h.Name, Mode: model.ModeActive}); err != nil {
		return h, err
	}
	msg := "back in service"
	if req.Failback {
		l.mig.setFailback(h.Name, true)
		msg += "; moving its former VMs back"
	}
	l.event(ctx, "restored", h.Name, "", "%s", msg)
	l.poke()
	return l.store.Host(h.Name)
}

// MigrateVM starts a live migration of one running VM.
func (l *Leader) MigrateVM(ctx context.Context, req MigrateVMRequest) (model.VM, error) {
	if err := l.ready(); err != nil {
		return model.VM{}, err
	}
	v, err := l.store.VM(req.Name)
	if err != nil {
		return v, err
	}
	if v.Actual.State != model.StateRunning || v.Actual.Host != v.Host {
		return v, fmt.Errorf("vm %q is %s, not running: only running VMs migrate live: %w", v.Name, v.Actual.State, model.ErrConflict)
	}
	if err := l.startMigration(ctx, v, req.Target, "operator", nil); err != nil {
		return v, err
	}
	return l.store.VM(v.Name)
}

// startMigration places v (on target, or where placement says, never its
// current host or a target that failed it) and records the intent. x, if
// not nil, is the index to place with (one for a pass that starts several:
// each placement counts on it, so the next sees it); nil builds one.
func (l *Leader) startMigration(ctx context.Context, v model.VM, target, reason string, x *placement.Index) error {
	exclude := l.mig.failedTargets(v.Name)
	exclude[v.Host] = true
	req := placement.Request{Name: v.Name, Spec: v.Spec, Exclude: exclude}
	if target != "" {
		req.Host, req.Exclude = target, map[string]bool{v.Host: true}
	}
	if x == nil {
		// v itself counts on its own host, which never receives it.
		x = l.index()
	}
	t, err := x.Place(req)
	if err != nil {
		return err
	}
	if _, err := l.store.Apply(ctx, raftlog.StartMigration{Name: v.Name, Generation: v.Generation, Target: t, Reason: reason, Time: l.clock.Now().UTC()}); err != nil {
		return err
	}
	l.event(ctx, "migrating", v.Host, v.Name, "live migration to %s (%s)", t, reason)
	return nil
}

// MigrationDone records the end of a migration reported by its source
// host: the placement moves on success; on failure the VM stays and the
// target is not tried again for it.
func (l *Leader) MigrationDone(ctx context.Context, r MigrationResult) (model.VM, error) {
	if err := l.ready(); err != nil {
		return model.VM{}, err
	}
	v, err := l.store.VM(r.Name)
	if err != nil {
		return v, err
	}
	if v.Migration == nil || v.Generation != r.Generation || v.Migration.Target != r.Target {
		return v, fmt.Errorf("vm %q has no migration to %s at generation %d: %w", r.Name, r.Target, r.Generation, model.ErrConflict)
	}
	took := l.clock.Now().Sub(v.Migration.StartedAt).Round(10e6)
	l.cfg.Recorder.Migrated(v.Migration.Reason, took, r.Error == "")
	if r.Error == "" {
		if _, err := l.store.Apply(ctx, raftlog.FinishMigration{Name: v.Name, Generation: v.Generation, Target: r.Target}); err != nil {
			return v, err
		}
		l.mig.clearFailed(v.Name)
		l.event(ctx, "migrated", r.Target, v.Name, "from %s in %v", v.Host, took)
	} else {
		if _, err := l.store.Apply(ctx, raftlog.AbortMigration{Name: v.Name, Generation: v.Generation}); err != nil {
			return v, err
		}
		l.mig.markFailed(v.Name, r.Target)
		l.event(ctx, "migration-failed", v.Host, v.Name, "to %s after %v: %s; the VM keeps running on %s", r.Target, took, r.Error, v.Host)
	}
	l.pokeMigrations()
	return l.store.VM(v.Name)
}

// driveMigrations moves drains and failbacks along: it starts migrations up
// to DrainParallel per host, moves stopped VMs cold, and ends a drain when
// the host is empty or every VM left has failed on maxMigrationAttempts
// targets (those keep running where they are, never lost).
func (l *Leader) driveMigrations(ctx context.Context) {
	// Only the VMs of draining and failing-back hosts, read only when
	// there are any: sorting all of them on every reconcile took a sixth
	// of the leader's time in the simulator at 50,000 VMs.
	hosts := l.store.Hosts()
	busy := map[string]bool{}
	for _, h := range hosts {
		if h.Draining || l.mig.failingBack(h.Name) {
			busy[h.Name] = true
		}
	}
	if len(busy) == 0 {
		return
	}
	vms := vmsWhere(l.store, func(v *model.VM) bool { return busy[v.Host] || busy[v.Home] })
	byPriority(vms)
	par := max(l.cfg.Liveness.DrainParallel, 1)
	idx := &passIndex{l: l} // one placement index for every move of this pass
	for _, h := range hosts {
		if h.Draining {
			l.drainStep(ctx, h, vms, par, idx)
		}
		if l.mig.failingBack(h.Name) {
			if h.Mode != model.ModeActive {
				l.mig.setFailback(h.Name, false)
				continue
			}
			inflight, left := 0, 0
			for _, v := range vms {
				if v.Home != h.Name || v.Host == h.Name || v.Deleting {
					continue
				}
				left++
				if v.Migration != nil {
					inflight++
					continue
				}
				if inflight >= par || v.Actual.State != model.StateRunning || len(l.mig.failedTargets(v.Name)) > 0 {
					continue
				}
				if err := l.startMigration(ctx, v, h.Name, "failback", idx.get()); err != nil {
					if l.once(onceKey{what: "failback", vm: v.Name}) {
						l.event(ctx, "migration-failed", v.Host, v.Name, "failback to %s: %v", h.Name, err)
					}
					continue
				}
				inflight++
			}
			if left == 0 {
				l.mig.setFailback(h.Name, false)
				l.event(ctx, "failback-done", h.Name, "", "its former VMs are back")
			}
		}
	}
}

// handedOver reports whether v has left host by a live migration whose
// end the leader has recorded while its new host has not yet reported it
// (the last report is still the source's "migrating").
func handedOver(v model.VM, host string) bool {
	return v.Home == host && v.Host != host && v.Migration == nil && !v.Deleting &&
		v.Actual.State == model.StateMigrating
}

// passIndex builds the placement index of a pass on first use.
type passIndex struct {
	l *Leader
	x *placement.Index
}

func (p *passIndex) get() *placement.Index {
	if p.x == nil {
		p.x = p.l.index()
	}
	return p.x
}

func (l *Leader) drainStep(ctx context.Context, h model.Host, vms []model.VM, par int, idx *passIndex) {
	inflight, left, stuck := 0, 0, 0
	for _, v := range vms {
		if handedOver(v, h.Name) {
			// Its migration has ended but the target has not reported
			// it running yet: the drain is not done until it has (the
			// next migration need not wait for that).
			left++
			continue
		}
		if v.Host != h.Name || v.Deleting {
			continue
		}
		left++
		if v.Migration != nil {
			inflight++
			continue
		}
		failed := len(l.mig.failedTargets(v.Name))
		if failed >= maxMigrationAttempts {
			stuck++
			continue
		}
		if inflight >= par {
			continue
		}
		if v.Desired == model.PowerStopped && v.Actual.State == model.StateStopped {
			// Nothing runs: move the placement cold.
			target, err := idx.get().Place(placement.Request{Name: v.Name, Spec: v.Spec, Exclude: map[string]bool{h.Name: true}})
			if err == nil {
				if _, err = l.store.Apply(ctx, raftlog.PlaceVM{Name: v.Name, Host: target, Generation: v.Generation}); err == nil {
					l.event(ctx, "moved", target, v.Name, "stopped VM moved off %s", h.Name)
				}
			}
			continue
		}
		if v.Actual.State != model.StateRunning {
			continue // starting, crashed...: wait until it runs
		}
		err := l.startMigration(ctx, v, "", "drain", idx.get())
		var nf *placement.NoFitError
		if errors.As(err, &nf) {
			if l.once(onceKey{what: "drainfit", vm: v.Name, detail: fmt.Sprint(failed)}) {
				l.event(ctx, "migration-failed", h.Name, v.Name, "no target: %v", err)
			}
			stuck++
			continue
		}
		if err != nil {
			l.log.Warn("start migration", "vm", v.Name, "err", err)
			continue
		}
		inflight++
	}
	if left == 0 || left == stuck {
		if _, err := l.store.Apply(ctx, raftlog.SetHostDraining{Name: h.Name, Draining: false}); err != nil {
			return
		}
		if left == 0 {
			l.event(ctx, "drained", h.Name, "", "no VMs left; the host stays in maintenance until restored")
		} else {
			l.event(ctx, "drained", h.Name, "", "%d VMs could not be moved and keep running here; see migration-failed events", stuck)
		}
	}
}

// HARequest arms or disarms fencing and recovery.
type HARequest struct {
	Armed bool `json:"armed"`
}

// SetHA arms or disarms HA cluster-wide. Disarmed, the leader declares no
// host dead and hosts do not fence themselves when their leases expire (for
// network work that would cut every host off). Re-armed, a host counts as
// armed again once it renews (see DESIGN.md).
func (l *Leader) SetHA(ctx context.Context, req HARequest) (model.Cluster, error) {
	if err := l.ready(); err != nil {
		return model.Cluster{}, err
	}
	cur := l.store.Cluster()
	if cur.HADisarmed == !req.Armed {
		return cur, nil
	}
	if _, err := l.store.Apply(ctx, raftlog.SetHA{Disarmed: !req.Armed, Time: l.clock.Now().UTC()}); err != nil {
		return cur, err
	}
	if req.Armed {
		// Leases granted while disarmed do not self-fence: a host counts
		// as armed only once it renews again.
		l.live.unarm()
		l.event(ctx, "ha-armed", "", "", "fencing and recovery resumed")
	} else {
		l.event(ctx, "ha-disarmed", "", "", "fencing and recovery paused: no host is declared dead, no host fences itself")
	}
	return l.store.Cluster(), nil
}

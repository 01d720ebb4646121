package controller

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/corralhq/corral/daemon/hypervisor"
	"github.com/corralhq/corral/model"
	"github.com/corralhq/corral/raftlog"
)

// Driver runs guests on this host. hypervisor/libvirt implements it for
// real, hypervisor/fake for tests.
type Driver interface {
	Connected() bool
	// Problem says why no guest can start here, "" when they can (the
	// storage pool cannot be used, libvirt cannot start guests): nothing
	// starts here meanwhile.
	Problem() string
	Events() <-chan hypervisor.Event
	List(ctx context.Context) ([]hypervisor.Domain, error)
	Define(ctx context.Context, spec hypervisor.DomainSpec) error
	Start(ctx context.Context, name string, info hypervisor.RunInfo) error
	Shutdown(ctx context.Context, name string, timeout time.Duration) error
	Destroy(ctx context.Context, name string) error
	// PowerOff stops a guest as fast as the host can (fencing).
	PowerOff(ctx context.Context, name string) error
	Undefine(ctx context.Context, name string) error
	EnsureVolume(ctx context.Context, v hypervisor.Volume) (string, error)
	EnsureSeed(ctx context.Context, name, userData, metaData string) (string, error)
	DeleteVolume(ctx context.Context, name string) error
	Migrate(ctx context.Context, name, destURI, dataURI string, progress func(done, total uint64)) error
	// AgentExec runs a command in a running guest through its agent
	// (hypervisor.ErrNoAgent when none answers); GuestAddrs returns the
	// addresses the agent reports. Health checks use them.
	AgentExec(ctx context.Context, name string, argv []string, timeout time.Duration) (hypervisor.ExecResult, error)
	GuestAddrs(ctx context.Context, name string) ([]netip.Addr, error)
	// VolumePath is where a volume of the pool lives. DiskFiles returns
	// the files a running guest's writable disks use, in order
	// (hypervisor.ErrNotRunning when it does not run). SnapshotDisks moves
	// a running guest's writable disks onto overlays that exist on their
	// current files, with its file systems frozen by its agent or its RAM
	// saved as opts say. SetLayer records the disk layer a running guest
	// is on (hypervisor.Domain.Layer).
	VolumePath(name string) string
	DiskFiles(ctx context.Context, name string) ([]string, error)
	SnapshotDisks(ctx context.Context, name string, overlays []string, opts hypervisor.SnapshotOptions) error
	SetLayer(ctx context.Context, name string, layer uint64) error
	// Restore starts a defined domain from a memory image (a memory
	// snapshot's RAM) with its current definition, and records info with
	// it as Start does. Written reports whether a disk layer's file holds
	// anything of its own (a guest wrote to it).
	Restore(ctx context.Context, name, memory string, info hypervisor.RunInfo) error
	Written(ctx context.Context, path string) (bool, error)
	// CommitLayer commits each overlay from[i] (disk i) into its backing
	// file into[i] and points the overlays on it, children[i], at into[i]:
	// while the guest runs on it through libvirt's block commit, else with
	// qemu-img. Repeating it after it succeeded changes nothing.
	CommitLayer(ctx context.Context, name string, into, from []string, children [][]string) error
	// DiskChain returns the files a running guest's first writable disk
	// uses, top first; BackingChain a file's chain as its headers name it
	// (hypervisor.ErrNoVolume when it does not exist). Recovery reads
	// them (recovery.go).
	DiskChain(ctx context.Context, name string) ([]string, error)
	BackingChain(ctx context.Context, file string) ([]string, error)
}

// HostStore is the local copy of cluster state as the host loop reads it.
type HostStore interface {
	VMs() []model.VM
	Host(name string) (model.Host, error)
	Image(name string) (model.Image, error)
	// Cluster holds the cluster's protocol, which gates what reports carry.
	Cluster() model.Cluster
	Watch() (<-chan struct{}, func())
}

// Reporter sends a host's findings to the leader.
type Reporter interface {
	// Report sends actual states.
	Report(ctx context.Context, r raftlog.ReportVMs) error
	// Relocate asks the leader to move a VM that keeps crashing here.
	Relocate(ctx context.Context, r RelocateRequest) error
	// MigrationDone tells the leader how a live migration ended.
	MigrationDone(ctx context.Context, r MigrationResult) error
	// SnapshotDone tells the leader how a snapshot of a running guest
	// went; ForgetLayers that dead layers' files are gone.
	SnapshotDone(ctx context.Context, r SnapshotResult) error
	ForgetLayers(ctx context.Context, r ForgetLayersRequest) error
	// LayersMerged tells the leader that a layer was merged.
	LayersMerged(ctx context.Context, r MergeRequest) error
	// Adopt sends this host's inventory to a recovering cluster.
	Adopt(ctx context.Context, r raftlog.AdoptGuests) error
}

// RelocateRequest asks the leader to move a VM off Host.
type RelocateRequest struct {
	Name       string `json:"name"`
	Generation uint64 `json:"generation"`
	Host       string `json:"host"`
	Reason     string `json:"reason"`
}

// HostConfig tunes the host loop.
type HostConfig struct {
	Self string
	// Backups restores the disks of VMs made from backups (nil: this
	// host cannot).
	Backups BackupEngine
	// ResyncInterval is the period of a full comparison of state and
	// hypervisor, besides the one after every state change and event.
	ResyncInterval time.Duration
	// ShutdownTimeout is how long a guest gets to power off before it is
	// destroyed.
	ShutdownTimeout time.Duration
	// MaxParallel caps concurrent operations (starts, stops, deletions).
	MaxParallel int
	// Bridge names the host bridge of a corral network.
	Bridge func(network string) string
	// MayStart gates starting guests (the lease: a host that may have been
	// declared dead starts nothing). Nil means always.
	MayStart func() bool
	// StartBlocked, if set, says why MayStart is false (the VM's message).
	StartBlocked func() string
	// Fencing reports that this host fenced itself (its lease expired):
	// every corral guest here is destroyed and nothing starts. Nil means
	// never.
	Fencing func() bool
	// MigrationURIs gives the libvirt URI of a target host's libvirtd and
	// the URI QEMU streams memory to, from the target's address.
	MigrationURIs func(addr string) (dest, data string)
	// KernelDir: a VM's kernel and initrd must lie there (kernel_dir),
	// checked again before each define; empty allows any path (tests).
	KernelDir string
	// ProbeTick is how often due health checks are started (0: 1 s).
	ProbeTick time.Duration
}

// HostLoop makes this host's hypervisor match what cluster state says it
// should run. See DESIGN.md, "Host loop".
type HostLoop struct {
	cfg   HostConfig
	store HostStore
	drv   Driver
	rep   Reporter
	clock Clock
	log   *slog.Logger
	sem   chan struct{}

	mu    sync.Mutex
	track map[string]*vmTrack
	poke  chan struct{}
	// probeKick wakes the parked probe loop: a guest here has a health
	// check (healthReport).
	probeKick chan struct{}
	report    sync.Mutex // one report in flight
	// resend: a pass had reports while one was in flight; the loop runs
	// again once it has landed, rather than at the next resync.
	resend atomic.Bool
	// inventoryBusy: an inventory is on its way to a recovering leader.
	inventoryBusy atomic.Bool

	// opsDone counts finished operations (vmTrack.doneSeq; under mu).
	opsDone uint64
}

// vmTrack is what the loop remembers about one VM between passes.
type vmTrack struct {
	id          string
	gen         uint64
	busy        bool
	seenRunning bool        // observed running (so a stop we did not cause is a crash)
	restarts    []time.Time // crash restarts in the current window, reported to state
	failed      string
	relocating  bool
	lastErr     string
	retryAt     time.Time
	backoff     time.Duration
	health      healthTrack
	forgotten   []uint64  // dead layers deleted, until the state forgets them
	forgotMem   []uint64  // dead memory images deleted, likewise
	upkeepAt    time.Time // housekeeping of the chain waits until then after a failure
	// note is what the VM's report says while the guest started at
	// noteRun runs (how a resume from a memory snapshot went).
	note    string
	noteRun time.Time
	// coldLayer: the resume onto this layer was given up (coldNote says
	// why); a retried start boots cold at once.
	coldLayer uint64
	coldNote  string
	// snapDone and merged are the snapshot finished and the layers merged
	// last: until this host's copy of the state shows it (a follower
	// applies the leader's entry a moment later), they are not done again.
	snapDone string
	merged   [2]uint64
	// lockedInto: a merge into this layer found it locked while the
	// guest started at lockedRun runs (hypervisor.ErrDiskLocked).
	locked     bool
	lockedInto uint64
	lockedRun  time.Time
	// doneSeq is HostLoop.opsDone when its last operation ended.
	doneSeq uint64
}

// NewHostLoop returns a host loop; Run starts it.
func NewHostLoop(cfg HostConfig, store HostStore, drv Driver, rep Reporter, clock Clock, log *slog.Logger) *HostLoop {
	if cfg.MaxParallel < 1 {
		cfg.MaxParallel = 4
	}
	if cfg.ProbeTick <= 0 {
		cfg.ProbeTick = time.Second
	}
	if cfg.Bridge == nil {
		cfg.Bridge = func(n string) string { return "corral-" + n }
	}
	if cfg.MigrationURIs == nil {
		cfg.MigrationURIs = func(addr string) (string, string) {
			return "qemu+tcp://" + addr + "/system", "tcp://" + addr
		}
	}
	return &HostLoop{cfg: cfg, store: store, drv: drv, rep: rep, clock: clock, log: log,
		sem: make(chan struct{}, cfg.MaxParallel), track: map[string]*vmTrack{}, poke: make(chan struct{}, 1),
		probeKick: make(chan struct{}, 1)}
}

func (h *HostLoop) wake() {
	select {
	case h.poke <- struct{}{}:
	default:
	}
}

// Run reconciles on every state change, hypervisor event, finished
// operation and ResyncInterval, until ctx ends.
func (h *HostLoop) Run(ctx context.Context) error {
	changes, stop := h.store.Watch()
	defer stop()
	tick := h.clock.NewTicker(h.cfg.ResyncInterval)
	defer tick.Stop()
	var wg sync.WaitGroup
	defer wg.Wait()
	wg.Add(1)
	go func() {
		defer wg.Done()
		h.probeLoop(ctx, &wg)
	}()
	for {
		h.reconcile(ctx, &wg)
		select {
		case <-ctx.Done():
			return nil
		case <-changes:
		case ev := <-h.drv.Events():
			h.log.Debug("hypervisor event", "vm", ev.Name, "event", ev.Kind, "detail", ev.Detail)
		case <-h.poke:
		case <-tick.C():
		}
	}
}

func (h *HostLoop) trackOf(v model.VM, now time.Time) *vmTrack {
	t, ok := h.track[v.Name]
	if !ok || t.id != v.ID || t.gen != v.Generation {
		// A new VM, or a new placement: forget what we knew. But crash
		// restarts this host reported for this placement still count (a
		// corrald restart must not reset a crash loop's budget).
		t = &vmTrack{id: v.ID, gen: v.Generation}
		if v.Actual.Host == h.cfg.Self && v.Actual.Generation == v.Generation {
			t.restarts = inWindow(v, v.Actual.RestartTimes, now)
		}
		h.track[v.Name] = t
	}
	return t
}

// inWindow returns, in a new slice, the restarts within v's restart window
// at now. A time after now (a clock stepped back) is dropped.
func inWindow(v model.VM, restarts []time.Time, now time.Time) []time.Time {
	window := time.Duration(v.Spec.HA.RestartWindowSec) * time.Second
	var kept []time.Time
	for _, at := range restarts {
		if d := now.Sub(at); d >= 0 && d < window {
			kept = append(kept, at)
		}
	}
	return kept
}

// reconcile compares once and launches what must be done.
func (h *HostLoop) reconcile(ctx context.Context, wg *sync.WaitGroup) {
	if !h.drv.Connected() {
		return // libvirtd away: nothing is known, nothing is done, nothing is reported
	}
	h.mu.Lock()
	listed := h.opsDone
	h.mu.Unlock()
	doms, err := h.drv.List(ctx)
	if err != nil {
		h.log.Warn("list domains", "err", err)
		return
	}
	byName := map[string]hypervisor.Domain{}
	for _, d := range doms {
		byName[d.Name] = d
	}
	if h.cfg.Fencing != nil && h.cfg.Fencing() {
		h.fence(ctx, doms)
		return
	}
	rec := h.store.Cluster().Recovery
	if rec != nil && len(rec.Waiting) > 0 {
		// A recovered cluster: until every host has told what it runs, a
		// guest may run anywhere; touch nothing (recovery.go).
		if rec.Waits(h.cfg.Self) {
			h.inventory(ctx, doms)
		}
		return
	}
	now := h.clock.Now()
	// Restart times go to a leader that knows them (it may be of the
	// previous protocol until the cluster's is raised).
	times := raftlog.FeatureRestartTimes.Enabled(h.store.Cluster())
	health := raftlog.FeatureHealthChecks.Enabled(h.store.Cluster())
	layers := raftlog.FeatureMemorySnapshots.Enabled(h.store.Cluster())
	h.mu.Lock()
	defer h.mu.Unlock()
	var reports []raftlog.VMReport
	mine := map[string]bool{}
	vms := h.store.VMs()
	// Higher HA priority first: after a recovery, its guests start first.
	byPriority(vms)
	for _, v := range vms {
		if v.Migration != nil && v.Migration.Target == h.cfg.Self {
			mine[v.Name] = true // arriving by live migration: not a stray
		}
		if v.Host != h.cfg.Self {
			continue
		}
		mine[v.Name] = true
		if t, ok := h.track[v.Name]; ok && (t.busy || t.doneSeq > listed) {
			// One operation per name at a time, whatever it is for; one
			// that ended after the listing is judged by the next pass
			// (its wake), not by a listing from before it (a guest it
			// started, seen stopped, would pass for a crash).
			continue
		}
		t := h.trackOf(v, now)
		dom, exists := byName[v.Name]
		op, rep := h.decide(v, dom, exists, t, now)
		if op == nil {
			op = h.chainUpkeep(v, dom, exists && dom.State.Active(), t)
		}
		if op != nil {
			t.busy = true
			h.launch(ctx, wg, v, t, op)
		}
		if rep != nil {
			// Every report carries the restarts, so that state keeps them
			// across a corrald restart whatever the VM's state.
			rep.Restarts = len(t.restarts)
			if times {
				rep.RestartTimes = utcTimes(t.restarts)
			}
			if !health {
				rep.Health, rep.HealthDetail = "", ""
			}
			if !layers {
				rep.Layer = 0
			}
			if reportDiffers(v, *rep) {
				reports = append(reports, *rep)
			}
		}
	}
	// Corral domains this host no longer owns: the VM moved (recovered or
	// migrated elsewhere) or was deleted. Destroy and undefine them; their
	// disks belong to the VM wherever it is now.
	for name, d := range byName {
		if mine[name] {
			continue
		}
		if t, ok := h.track[name]; ok && t.busy {
			continue
		}
		if rec.Keeps(h.cfg.Self, d.VMID) {
			continue // unknown to a recovered state: the operator's until the recovery ends
		}
		t := &vmTrack{id: d.VMID, busy: true}
		h.track[name] = t
		name := name
		h.launch(ctx, wg, model.VM{Name: name, ID: d.VMID}, t, func(ctx context.Context) error {
			h.log.Info("removing domain this host no longer owns", "vm", name, "vm_id", d.VMID)
			if err := h.drv.Destroy(ctx, name); err != nil && !errors.Is(err, hypervisor.ErrNoDomain) {
				return err
			}
			return h.drv.Undefine(ctx, name)
		})
	}
	for name, t := range h.track {
		if !mine[name] && !t.busy {
			if _, ok := byName[name]; !ok {
				delete(h.track, name)
			}
		}
	}
	if len(reports) > 0 {
		go h.send(ctx, raftlog.ReportVMs{Host: h.cfg.Self, Time: now.UTC(), Reports: reports})
	}
}

// send delivers reports; one at a time, the next pass resends what did not
// arrive (reports are idempotent). Reports that find one in flight are
// dropped, and the loop runs again as soon as it has landed, so they wait
// for one round trip, not for the next resync.
func (h *HostLoop) send(ctx context.Context, r raftlog.ReportVMs) {
	if !h.report.TryLock() {
		h.resend.Store(true)
		return
	}
	defer func() {
		h.report.Unlock()
		if h.resend.Swap(false) {
			h.wake()
		}
	}()
	rctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := h.rep.Report(rctx, r); err != nil && ctx.Err() == nil {
		h.log.Warn("report to leader", "vms", len(r.Reports), "err", err)
	}
}

type op func(ctx context.Context) error

// opSlow is when an operation that has not finished is logged.
const opSlow = time.Minute

// launch runs op in the background under the parallelism cap and wakes the
// loop when it is done.
func (h *HostLoop) launch(ctx context.Context, wg *sync.WaitGroup, v model.VM, t *vmTrack, fn op) {
	wg.Add(1)
	go func() {
		defer wg.Done()
		select {
		case h.sem <- struct{}{}:
		case <-ctx.Done():
			return
		}
		// libvirt's calls cannot be cancelled: an operation stuck in one
		// holds its slot, so say so rather than go quiet.
		slow := h.clock.AfterFunc(opSlow, func() { h.log.Warn("vm operation still running", "vm", v.Name, "for", opSlow) })
		err := fn(ctx)
		slow.Stop()
		<-h.sem
		h.mu.Lock()
		t.busy = false
		h.opsDone++
		t.doneSeq = h.opsDone
		if err != nil && ctx.Err() == nil {
			t.lastErr = err.Error()
			t.backoff = min(max(2*t.backoff, time.Second), time.Minute)
			t.retryAt = h.clock.Now().Add(t.backoff)
			h.log.Warn("vm operation failed", "vm", v.Name, "err", err, "retry_in", t.backoff)
		} else if err == nil {
			t.lastErr, t.backoff = "", 0
		}
		h.mu.Unlock()
		h.wake()
	}()
}

func report(v model.VM, state model.VMState, since time.Time, msg string) *raftlog.VMReport {
	return &raftlog.VMReport{Name: v.Name, Generation: v.Generation, State: state, Since: since, Message: msg}
}

// reportDiffers reports whether r says something the state does not know
// (a guest running on the layer it was to be resumed onto ends the resume).
func reportDiffers(v model.VM, r raftlog.VMReport) bool {
	a := v.Actual
	return a.State != r.State || !a.Since.Equal(r.Since) || a.Message != r.Message || a.Restarts != r.Restarts ||
		!slices.EqualFunc(a.RestartTimes, r.RestartTimes, time.Time.Equal) ||
		a.SpecVersion != r.SpecVersion || a.Generation != r.Generation ||
		a.Health != r.Health || a.HealthDetail != r.HealthDetail ||
		r.State == model.StateRunning && v.Chain.Resume != nil && r.Layer == v.Chain.Resume.Layer
}

// utcTimes returns ts in UTC, in a new slice (nil when empty): a report is
// sent while the loop goes on changing its track.
func utcTimes(ts []time.Time) []time.Time {
	var out []time.Time
	for _, t := range ts {
		out = append(out, t.UTC())
	}
	return out
}

// stateSince keeps the VM's reported Since while its state does not change.
func stateSince(v model.VM, s model.VMState, now time.Time) time.Time {
	if v.Actual.State == s && !v.Actual.Since.IsZero() {
		return v.Actual.Since
	}
	return now.UTC().Truncate(time.Second)
}

// decide returns the operation to run for v, if any, and the report to
// send about it now.
func (h *HostLoop) decide(v model.VM, dom hypervisor.Domain, exists bool, t *vmTrack, now time.Time) (op, *raftlog.VMReport) {
	if exists && dom.VMID != v.ID {
		// A domain of an earlier VM of the same name: remove it first.
		return func(ctx context.Context) error {
			h.log.Info("removing domain of a former vm of this name", "vm", v.Name, "old_id", dom.VMID)
			if err := h.drv.Destroy(ctx, v.Name); err != nil {
				return err
			}
			return h.drv.Undefine(ctx, v.Name)
		}, nil
	}
	t.health.check = nil // probed only while it runs here (below)
	if v.Deleting {
		return h.deleteOp(v), nil
	}
	if t.failed != v.Failed {
		if v.Failed == "" { // an operator's start cleared the failure
			t.restarts, t.relocating = nil, false
		}
		t.failed = v.Failed
	}
	if !t.retryAt.IsZero() && now.Before(t.retryAt) {
		return nil, report(v, model.StateError, stateSince(v, model.StateError, now), t.lastErr)
	}
	active := exists && dom.State.Active()
	if s, ok := v.Chain.Creating(); ok && t.snapDone != snapKey(s) {
		return h.snapshotOp(v, s, active, t), nil
	}
	if v.Failed != "" {
		if active {
			return h.stopOp(v, t), nil
		}
		return nil, report(v, model.StateFailed, stateSince(v, model.StateFailed, now), v.Failed)
	}
	if v.Desired == model.PowerStopped {
		t.seenRunning = false
		t.restarts = nil
		if active {
			return h.stopOp(v, t), report(v, model.StateStopping, stateSince(v, model.StateStopping, now), "")
		}
		return nil, report(v, model.StateStopped, stateSince(v, model.StateStopped, now), "")
	}
	// Desired running.
	if active && v.Migration != nil && v.Migration.Target != h.cfg.Self {
		t.seenRunning = true
		return h.migrateOp(v), report(v, model.StateMigrating, stateSince(v, model.StateMigrating, now), "to "+v.Migration.Target)
	}
	if active {
		t.seenRunning = true
		if dom.Layer != v.Chain.Active {
			why := "disks reverted to a snapshot: restarting"
			if r := v.Chain.Resume; r != nil && r.Layer == v.Chain.Active {
				why = fmt.Sprintf("reverted to memory snapshot %q: resuming", r.Snapshot)
			}
			return h.relayerOp(v, t), report(v, model.StateStarting, stateSince(v, model.StateStarting, now), why)
		}
		if v.RestartSeq > dom.RestartSeq {
			return h.restartOp(v, t), nil
		}
		r := report(v, model.StateRunning, dom.StartedAt.UTC(), "")
		if dom.State == hypervisor.Paused {
			r.Message = "paused"
			if dom.Reason != "" && dom.Reason != "unknown" {
				r.Message += " (" + dom.Reason + ")"
			}
		}
		r.SpecVersion = dom.SpecVersion
		if dom.SpecVersion < v.SpecVersion {
			r.Message = "resized; takes effect at the next restart"
		}
		if t.note != "" && dom.StartedAt.Equal(t.noteRun) {
			r.Message = joinNote(r.Message, t.note)
		}
		r.Layer = dom.Layer
		r.Health, r.HealthDetail = h.healthReport(t, v, dom.StartedAt, now)
		return nil, r
	}
	if v.Migration != nil && v.Migration.Target != h.cfg.Self {
		// Not running here while its live migration is recorded: the guest
		// may run on the target by now (libvirt shuts the source off with
		// reason "migrated" before the leader records the end). Nothing
		// starts it here until the leader has decided where it lives.
		return nil, report(v, model.StateMigrating, stateSince(v, model.StateMigrating, now), "to "+v.Migration.Target+": waiting for the leader to record its end")
	}
	if h.cfg.MayStart != nil && !h.cfg.MayStart() {
		why := "waiting for this host's lease"
		if h.cfg.StartBlocked != nil {
			if w := h.cfg.StartBlocked(); w != "" {
				why = w
			}
		}
		return nil, report(v, model.StatePending, stateSince(v, model.StatePending, now), why)
	}
	if p := h.drv.Problem(); p != "" {
		return nil, report(v, model.StatePending, stateSince(v, model.StatePending, now), "on "+h.cfg.Self+": "+p)
	}
	if t.seenRunning {
		// It was running under our watch and we did not stop it: a crash.
		window := time.Duration(v.Spec.HA.RestartWindowSec) * time.Second
		t.restarts = inWindow(v, t.restarts, now)
		why := "guest stopped unexpectedly"
		if exists && dom.Reason != "" {
			why += " (" + dom.Reason + ")"
		}
		if len(t.restarts) >= v.Spec.HA.MaxRestart {
			if !t.relocating {
				t.relocating = true
				go h.relocate(v, fmt.Sprintf("%s; %d restarts within %v", why, len(t.restarts), window))
			}
			return nil, report(v, model.StateCrashed, stateSince(v, model.StateCrashed, now), why+"; restart limit reached, asking the leader to relocate")
		}
		t.restarts = append(t.restarts, now)
		t.seenRunning = false
		h.log.Warn("guest crashed; restarting", "vm", v.Name, "reason", dom.Reason, "restart", len(t.restarts), "max", v.Spec.HA.MaxRestart)
		return h.startOp(v, t), report(v, model.StateCrashed, now.UTC().Truncate(time.Second), fmt.Sprintf("%s; restart %d of %d", why, len(t.restarts), v.Spec.HA.MaxRestart))
	}
	return h.startOp(v, t), report(v, model.StateStarting, stateSince(v, model.StateStarting, now), "")
}

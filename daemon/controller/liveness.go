package controller

import (
	"context"
	"fmt"
	"maps"
	"os"
	"os/exec"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/corralhq/corral/daemon/placement"
	"github.com/corralhq/corral/model"
	"github.com/corralhq/corral/raftlog"
)

// LivenessConfig tunes the leader side of the lease protocol.
type LivenessConfig struct {
	Interval time.Duration // heartbeat_interval
	TTL      time.Duration // lease_ttl
	// Margin: a host is declared dead only when its last renewal reached
	// the leader more than TTL+Margin ago (fence_margin).
	Margin time.Duration
	// FenceCommand, if set, is run with the host's name and address once
	// the host's renewals are FenceAfter late (or gossip calls it dead);
	// exit status 0 means the host is powered off, and its guests are
	// recovered at once.
	FenceCommand []string
	FenceAfter   time.Duration
	FenceTimeout time.Duration
	// SharedStorage: VM disks are on storage every host reaches, so VMs can
	// be recovered elsewhere. Without it they are reported, not moved.
	SharedStorage bool
	// DrainParallel caps concurrent live migrations of a drain.
	DrainParallel int
	// AutoEvacuate drains a host whose health turns failing.
	AutoEvacuate bool
	// RenewalGather: how long the first renewal of a Renewals batch waits
	// for the others sent at the same instant (Lease.nextRenewal), which
	// the hosts' clocks and the network spread over about a millisecond;
	// the batch goes sooner once every host that renewed in the last two
	// intervals and a half has asked. Zero: none.
	RenewalGather time.Duration
}

// liveness is the leader's view of hosts' leases, kept in memory only: a new
// leader starts every host as heard at its own election, and its lease from
// the last renewal its Raft log holds (resetLiveness). It holds
// one record per host (hostLive: renewals, the suspected mark, the armed
// acknowledgement, fence_command's run and result, the last recovery try),
// so a host is added, reset or forgotten in one operation. Each liveness
// pass copies a host's record under mu, asks assess (pure) what to do, and
// does it outside mu. Entries of hosts and VMs that leave state are dropped
// by forget on the next reconcile pass.
type liveness struct {
	mu    sync.Mutex
	hosts map[string]*hostLive // nil until the first leadership starts
	// recovering maps a VM being recovered to when its host was declared
	// dead, for the "recovered" event.
	recovering map[string]recovery
	reported   map[onceKey]bool // events said once (see once)
	stateCh    <-chan struct{}  // state changed (store.Watch)
	stopWatch  func()
	// The pass's schedule (sleep): the last pass, the next threshold of
	// any host, whether to wait on stateCh, and the wake-up channel.
	last, next time.Time
	waitState  bool
	wake       chan struct{}
}

// host returns host's record, adding an empty one if it has none. Called
// with mu held, once a leadership has started.
func (lv *liveness) host(name string) *hostLive {
	rec, ok := lv.hosts[name]
	if !ok {
		rec = &hostLive{}
		lv.hosts[name] = rec
	}
	return rec
}

// renewedAt is when host last renewed its lease this leadership (zero if
// it has not).
func (lv *liveness) renewedAt(host string) time.Time {
	lv.mu.Lock()
	defer lv.mu.Unlock()
	if rec, ok := lv.hosts[host]; ok {
		return rec.renewedAt
	}
	return time.Time{}
}

// unarm forgets every host's acknowledgement of armed HA: on re-arming,
// leases granted while disarmed do not self-fence.
func (lv *liveness) unarm() {
	lv.mu.Lock()
	defer lv.mu.Unlock()
	for _, rec := range lv.hosts {
		rec.armedAck = false
	}
}

// suspects returns the hosts whose renewals are late, and whether the
// lease view exists at all (leasing: a leadership has started).
func (lv *liveness) suspects() (suspected map[string]bool, leasing bool) {
	lv.mu.Lock()
	defer lv.mu.Unlock()
	suspected = map[string]bool{}
	for name, rec := range lv.hosts {
		if rec.suspected {
			suspected[name] = true
		}
	}
	return suspected, lv.hosts != nil
}

// onceKey names an event said once per leadership: what, and the host and
// VM it is about (empty if none), so that forget drops it with them.
type onceKey struct {
	what, host, vm, detail string
}

// stoppedKey is the "not fenced after a clean stop" report of h's current
// stop; a later stop has another key.
func stoppedKey(h model.Host) onceKey {
	return onceKey{what: "stopped", host: h.Name, detail: h.StoppedAt.String()}
}

type recovery struct {
	from       string
	lastHeard  time.Time
	declaredAt time.Time
}

// resetLiveness starts the records of a new leadership; committed
// reports whether leases count from the committed renewals (rather than
// from now).
func (l *Leader) resetLiveness(now time.Time) (committed bool) {
	cl := l.store.Cluster()
	// A lease granted while HA was disarmed does not self-fence. Once HA has
	// been armed for longer than a lease lives, every lease out there was
	// granted armed; before that, wait for each host to renew.
	settled := cl.HAChangedAt.IsZero() || l.clock.Now().Sub(cl.HAChangedAt) > l.cfg.Liveness.TTL+l.cfg.Liveness.Margin
	lv := &l.live
	lv.mu.Lock()
	defer lv.mu.Unlock()
	lv.hosts, lv.recovering, lv.reported = map[string]*hostLive{}, map[string]recovery{}, map[onceKey]bool{}
	if lv.stopWatch != nil {
		lv.stopWatch()
	}
	lv.stateCh, lv.stopWatch = l.store.Watch()
	// Every renewal a leader granted was committed first (a Renewals
	// entry), and the Barrier before this has applied them all here, each
	// after it was sent: a lease counts from the host's last one, or from
	// when this node began to know them all. Without that knowledge (a
	// cluster below FeatureCommittedLeases, whose leaders grant without
	// committing) every lease counts from this election: a deposed leader
	// stops granting within its leader lease, before a new one is elected.
	since, renewed := l.raft.Renewals()
	for _, h := range l.store.Hosts() {
		granted := now
		if !since.IsZero() {
			granted = since
			if at, ok := renewed[h.Name]; ok {
				granted = at
			}
			if granted.After(now) {
				granted = now
			}
		}
		lv.hosts[h.Name] = &hostLive{heard: now, granted: granted, armedAck: settled && !cl.HADisarmed}
	}
	// The leader before: silent, as far as this node knows, since it last
	// heard from it. Only fence_command uses that (assess): its power-off
	// is confirmed before anything moves, so it needs no election grace.
	if id, at, ok := l.raft.PreviousLeader(); ok && id != l.cfg.Self && at.Before(now) {
		if rec, ok := lv.hosts[id]; ok {
			rec.silentSince = at
		}
	}
	return !since.IsZero()
}

// stopWatching ends the state subscription of resetLiveness when
// leadership ends.
func (lv *liveness) stopWatching() {
	lv.mu.Lock()
	defer lv.mu.Unlock()
	if lv.stopWatch != nil {
		lv.stopWatch()
	}
	lv.stateCh, lv.stopWatch = nil, nil
}

// forget drops the entries of hosts and VMs no longer in state (a host
// removed with corralctl host rm, a deleted VM), which would otherwise stay
// for the whole leadership, and reports of clean stops that have ended. A
// running fence command keeps its host's record, emptied but for the run,
// until it finishes; what it writes then for a removed host goes on the next
// call.
func (lv *liveness) forget(hosts map[string]model.Host, vms map[string]bool) {
	lv.mu.Lock()
	defer lv.mu.Unlock()
	for name, rec := range lv.hosts {
		switch _, in := hosts[name]; {
		case in:
		case rec.fencing:
			*rec = hostLive{fencing: true}
		default:
			delete(lv.hosts, name)
		}
	}
	dropMissing(lv.recovering, vms)
	for k := range lv.reported {
		h, hostIn := hosts[k.host]
		gone := k.host != "" && !hostIn || k.vm != "" && !vms[k.vm]
		if gone || k.what == "stopped" && k != stoppedKey(h) {
			delete(lv.reported, k)
		}
	}
}

// dropMissing deletes the entries of m whose key is not in in.
func dropMissing[V, W any](m map[string]V, in map[string]W) {
	for k := range m {
		if _, ok := in[k]; !ok {
			delete(m, k)
		}
	}
}

// Renew grants a lease renewal.
func (l *Leader) Renew(ctx context.Context, req LeaseRequest) (LeaseGrant, error) {
	if err := l.ready(); err != nil {
		return LeaseGrant{}, err
	}
	// Only hosts in state hold leases: a renewal for a made-up name must
	// not add a record (nor record a clean stop).
	h, err := l.store.Host(req.Host)
	if err != nil {
		return LeaseGrant{}, fmt.Errorf("lease for host %q: %w", req.Host, err)
	}
	if req.Stopping {
		return l.hostStopping(ctx, req.Host)
	}
	cl := l.store.Cluster()
	// A declaration of this host dead that is under way, or starts before
	// this grant is recorded, refuses it (see startDeclaring).
	lv := &l.live
	lv.mu.Lock()
	if lv.hosts == nil {
		lv.mu.Unlock()
		return LeaseGrant{}, fmt.Errorf("leader is starting: %w", model.ErrNotLeader)
	}
	busy, declarations := lv.host(req.Host).declaring, lv.host(req.Host).declarations
	lv.mu.Unlock()
	// The host catches up to this index before it starts guests: the
	// state this grant was decided on (not the Renewals entry below,
	// which changes no state and wakes no loop).
	index := l.raft.CommitIndex()
	// Committed before granted: every later leader has the renewal in its
	// log, and counts the lease from it rather than from its election.
	if err := l.commitRenewal(ctx, req.Host); err != nil {
		return LeaseGrant{}, fmt.Errorf("lease for host %q: %w", req.Host, err)
	}
	now := l.clock.Now()
	lv.mu.Lock()
	if lv.hosts == nil {
		lv.mu.Unlock()
		return LeaseGrant{}, fmt.Errorf("leader is starting: %w", model.ErrNotLeader)
	}
	rec := lv.host(req.Host)
	if busy || rec.declaring || rec.declarations != declarations {
		lv.mu.Unlock()
		return LeaseGrant{}, fmt.Errorf("lease for host %q: the leader is declaring it dead: %w", req.Host, model.ErrConflict)
	}
	// A late, fenced or standby host that renews changes what the next
	// pass says of it ("reachable", welcome back, back from standby): no
	// need to wait for its next threshold.
	wake := rec.suspected || h.Mode == model.ModeFenced || h.Mode == model.ModeStandby
	rec.heard, rec.renewedAt, rec.granted = now, now, now
	rec.grants++
	// An unguarded renewal (the host's fencer holds no deadline yet) does
	// not count as armed: were corrald to die right after it, nothing
	// would kill the guests. The host arms its fencer with this grant and
	// says so in its next renewal.
	if !cl.HADisarmed && !req.Unguarded {
		rec.armedAck = true
	}
	lv.mu.Unlock()
	if wake {
		lv.wakeUp()
	}
	fenced := h.Mode == model.ModeFenced
	// While HA is disarmed the mark guards nothing (no host is declared
	// dead), and re-arming waits for a guarded renewal anyway.
	if !h.StoppedAt.IsZero() && (!req.Unguarded || cl.HADisarmed) {
		if _, err := l.store.Apply(ctx, raftlog.SetHostStopped{Name: req.Host}); err != nil {
			return LeaseGrant{}, err
		}
		l.event(ctx, "daemon-back", req.Host, "", "corrald renews its lease again after a clean stop at %s", h.StoppedAt.Format(time.RFC3339))
	}
	return LeaseGrant{Leader: l.cfg.Self, CommitIndex: index, Armed: !cl.HADisarmed, Fenced: fenced}, nil
}

// renewalLog batches the Renewals entries of the leader (commitRenewal).
type renewalLog struct {
	mu      sync.Mutex
	pending map[string]bool
	waiters []chan error
	busy    bool // a flush runs
	// While a batch gathers: closed once pending holds want hosts.
	full chan struct{}
	want int
}

// commitRenewal returns once a Renewals entry naming host has committed.
// While one entry is being committed the renewals that arrive wait and go
// together in the next, so a busy leader writes one entry per commit
// round trip rather than one per renewal; an idle one waits RenewalGather
// for the renewals sent at the same instant as the first.
func (l *Leader) commitRenewal(ctx context.Context, host string) error {
	b := &l.renewLog
	done := make(chan error, 1)
	b.mu.Lock()
	if b.pending == nil {
		b.pending = map[string]bool{}
	}
	b.pending[host] = true
	b.waiters = append(b.waiters, done)
	if !b.busy {
		b.busy = true
		go l.flushRenewals()
	}
	if b.full != nil && len(b.pending) >= b.want {
		close(b.full)
		b.full = nil
	}
	b.mu.Unlock()
	select {
	case err := <-done:
		return err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// flushRenewals commits the pending renewals, a batch at a time, until
// none is left. The first batch gathers for RenewalGather, or until every
// host renewing lately has asked: on an idle cluster the last renewal of
// an instant sends the batch, and the gather's timer, which would wake the
// leader once more an interval, is stopped before it fires.
func (l *Leader) flushRenewals() {
	b := &l.renewLog
	if g := l.cfg.Liveness.RenewalGather; g > 0 {
		want := l.renewingHosts()
		full := make(chan struct{})
		b.mu.Lock()
		switch {
		case want == 0: // a new leader: nobody renewed with it yet
		case len(b.pending) >= want:
			close(full)
		default:
			b.full, b.want = full, want
		}
		b.mu.Unlock()
		t := l.clock.NewTimer(g)
		select {
		case <-t.C():
		case <-full:
		}
		t.Stop()
		b.mu.Lock()
		b.full = nil
		b.mu.Unlock()
	}
	for {
		b.mu.Lock()
		if len(b.waiters) == 0 {
			b.busy = false
			b.mu.Unlock()
			return
		}
		hosts := slices.Sorted(maps.Keys(b.pending))
		waiters := b.waiters
		b.pending, b.waiters = map[string]bool{}, nil
		b.mu.Unlock()
		// A renewal answered after lease_ttl is of no use to its host.
		ctx, cancel := context.WithTimeout(context.Background(), l.cfg.Liveness.TTL)
		_, err := l.store.Apply(ctx, raftlog.Renewals{Hosts: hosts})
		cancel()
		for _, w := range waiters {
			w <- err
		}
	}
}

// renewingHosts counts the hosts granted a renewal in the last two
// intervals and a half (those not late): those whose next renewal is due
// about now. A host that missed a round still counts: were it left out,
// its renewal, on time, would miss the batch the others sent and cost an
// entry of its own.
func (l *Leader) renewingHosts() int {
	since := l.clock.Now().Add(-l.cfg.Liveness.Interval * 5 / 2)
	lv := &l.live
	lv.mu.Lock()
	defer lv.mu.Unlock()
	n := 0
	for _, rec := range lv.hosts {
		if rec.renewedAt.After(since) {
			n++
		}
	}
	return n
}

// hostStopping records a clean stop of corrald on host. Its guests keep
// running and nothing there will destroy them when its lease runs out, so
// until it renews again the leader recovers them only after fence_command
// powers the host off, and runs fence_command only once the lease has
// expired (a quick restart, as in a package upgrade, fences nothing).
func (l *Leader) hostStopping(ctx context.Context, host string) (LeaseGrant, error) {
	if err := l.ready(); err != nil {
		return LeaseGrant{}, err
	}
	if _, err := l.store.Apply(ctx, raftlog.SetHostStopped{Name: host, At: l.clock.Now().UTC()}); err != nil {
		return LeaseGrant{}, err
	}
	l.event(ctx, "daemon-stopped", host, "", "corrald stopped cleanly; its guests keep running there, unmanaged until it returns")
	return LeaseGrant{Leader: l.cfg.Self}, nil
}

// LeaseAge is the leader's view of one host's lease.
type LeaseAge struct {
	Host      string        `json:"host"`
	Age       time.Duration `json:"age"`
	Suspected bool          `json:"suspected"`
}

// LeaseAges reports how long ago each host last renewed.
func (l *Leader) LeaseAges(ctx context.Context, _ struct{}) ([]LeaseAge, error) {
	if err := l.ready(); err != nil {
		return nil, err
	}
	now := l.clock.Now()
	lv := &l.live
	lv.mu.Lock()
	defer lv.mu.Unlock()
	var out []LeaseAge
	for h, rec := range lv.hosts {
		if !rec.heard.IsZero() {
			out = append(out, LeaseAge{Host: h, Age: now.Sub(rec.heard), Suspected: rec.suspected})
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Host < out[j].Host })
	return out, nil
}

// checkLiveness runs every heartbeat interval on the leader: it notes late
// hosts, runs the fence command, declares hosts dead whose leases have
// surely expired, recovers their guests, and welcomes fenced hosts back.
// For each host in state it copies the record under the lock (a host not
// heard yet counts as heard now), asks assess what to do, and does it.
func (l *Leader) checkLiveness(ctx context.Context, gossipDead map[string]bool) {
	cfg := l.cfg.Liveness
	cl := l.store.Cluster()
	now := l.clock.Now()
	lv := &l.live
	lv.mu.Lock()
	started := lv.hosts != nil
	select {
	case <-lv.stateCh:
		lv.retryLeft()
	default:
	}
	if !started {
		lv.last, lv.next = now, time.Time{} // the next pass is sleep's maxGap away
	}
	lv.mu.Unlock()
	if !started {
		return // not leading (resetLiveness runs when leadership starts)
	}
	vms := &vmsOn{store: l.store}
	var next time.Time
	for _, h := range l.store.Hosts() {
		lv.mu.Lock()
		rec := lv.host(h.Name)
		// The leader's own renewal is local; a host registered after this
		// leader started counts as heard when first seen.
		if h.Name == l.cfg.Self || rec.heard.IsZero() {
			rec.heard, rec.granted = now, now
		}
		seen := *rec
		lv.mu.Unlock()
		f := hostFacts{haDisarmed: cl.HADisarmed, self: h.Name == l.cfg.Self, gossipDead: gossipDead[h.Name]}
		a := assess(seen, h, now, cfg, f)
		l.act(ctx, h, seen, a, now, vms)
		if at := nextAssess(seen, h, now, cfg, f); !at.IsZero() && (next.IsZero() || at.Before(next)) {
			next = at
		}
	}
	lv.mu.Lock()
	lv.next, lv.last, lv.waitState = next, now, false
	for _, rec := range lv.hosts {
		lv.waitState = lv.waitState || rec.recoveryLeft
	}
	lv.mu.Unlock()
}

// sleep says how long the liveness pass may sleep after the last one: until
// the next threshold of any host (nextAssess), at least minGap after the
// last pass (no more often than before, when a ticker ran it five times
// an interval) and at most maxGap (a net for a wake-up missed). It also
// returns the state channel to wait on: set while a recovery left guests
// that fit nowhere, which a state change may let fit.
func (lv *liveness) sleep(now time.Time, minGap, maxGap time.Duration) (time.Duration, <-chan struct{}) {
	lv.mu.Lock()
	defer lv.mu.Unlock()
	last := lv.last
	if last.IsZero() {
		last = now // no pass yet: none is overdue
	}
	at := last.Add(maxGap)
	if !lv.next.IsZero() && lv.next.Before(at) {
		at = lv.next
	}
	if first := last.Add(minGap); at.Before(first) {
		at = first
	}
	var state <-chan struct{}
	if lv.waitState {
		state = lv.stateCh
	}
	return max(at.Sub(now), 0), state
}

// stateChanged: state changed, so recovery of a fenced host whose guests
// did not all fit may succeed now.
func (lv *liveness) stateChanged() {
	lv.mu.Lock()
	defer lv.mu.Unlock()
	lv.retryLeft()
}

// retryLeft makes the recoveries that left guests due again (recoveryDue).
// Called with mu held.
func (lv *liveness) retryLeft() {
	for _, rec := range lv.hosts {
		if rec.recoveryLeft {
			rec.recoveryTried = time.Time{}
		}
	}
}

// wakeUp asks for a liveness pass now (a renewal or fence_command's result
// changed what assess would say).
func (lv *liveness) wakeUp() {
	select {
	case lv.wake <- struct{}{}:
	default:
	}
}

// vmsOn reads the VMs on each host for one liveness pass: it looks at
// every VM once between two recoveries that placed guests (Store.EachVM),
// and copies only those of the hosts asked for, in name order. The
// simulator (test/sim) found a leader of 50,000 VMs spending its core
// copying all of them for each of 40 fenced hosts while a recovery storm
// changed state, and later looking at all of them once per fenced host
// (120, each retried every ReconcileInterval) during a drain.
type vmsOn struct {
	store Store
	names map[string][]string // host -> its VMs' names
}

func (o *vmsOn) host(name string) []model.VM {
	if o.names == nil {
		o.names = map[string][]string{}
		o.store.EachVM(func(v *model.VM) {
			if !v.Deleting {
				o.names[v.Host] = append(o.names[v.Host], v.Name)
			}
		})
	}
	names := o.names[name]
	slices.Sort(names)
	var out []model.VM
	for _, n := range names {
		if v, err := o.store.VM(n); err == nil && v.Host == name && !v.Deleting {
			out = append(out, v)
		}
	}
	return out
}

// changed: guests were placed; the next host reads them anew.
func (o *vmsOn) changed() { o.names = nil }

// act carries out what assess decided about host h, whose record was rec,
// in the order of the steps.
func (l *Leader) act(ctx context.Context, h model.Host, rec hostLive, a action, now time.Time, vms *vmsOn) {
	do := func(s step) bool { return a.steps&s != 0 }
	if do(stepWelcome) {
		l.welcomeBack(ctx, h)
	}
	if do(stepRecover) {
		l.recover(ctx, h.Name, now, vms)
	}
	if do(stepStandbyBack) {
		l.standbyBack(ctx, h, rec.renewedAt)
	}
	if do(stepMark) {
		lv := &l.live
		lv.mu.Lock()
		lv.host(h.Name).suspected = a.suspected
		lv.mu.Unlock()
	}
	if do(stepSaySuspected) {
		l.event(ctx, "suspected", h.Name, "", "no lease renewal for %v", a.age.Round(time.Millisecond))
	}
	if do(stepSayReachable) {
		l.event(ctx, "reachable", h.Name, "", "lease renewed again")
	}
	if do(stepEvacuate) {
		l.event(ctx, "evacuating", h.Name, "", "health failing (%s): draining it", strings.Join(h.Health.Reasons, "; "))
		if _, err := l.DrainHost(ctx, NameRequest{Name: h.Name}); err != nil {
			l.log.Warn("auto-evacuate", "host", h.Name, "err", err)
		}
	}
	if do(stepDeadByFence) && l.startDeclaring(h.Name, rec) {
		l.cfg.Recorder.Fenced("fence_command")
		l.declareDead(ctx, h.Name, a.reason, rec.heard, vms)
	}
	if do(stepFence) {
		l.startFence(ctx, h, a.age)
	}
	if do(stepSayStopped) && l.once(stoppedKey(h)) {
		l.event(ctx, "not-fenced", h.Name, "", "corrald stopped cleanly at %s and has not returned; its guests may still run there, so they are not recovered until it returns (or fence_command, when configured, powers the host off)", h.StoppedAt.Format(time.RFC3339))
	}
	if do(stepSayUnacked) && l.once(onceKey{what: "unacked", host: h.Name}) {
		l.event(ctx, "not-fenced", h.Name, "", "lease expired, but the host has not renewed since HA was armed; it may still run its guests, so they are not recovered until it returns or is fenced by fence_command")
	}
	if do(stepDeadByLease) && l.startDeclaring(h.Name, rec) {
		l.cfg.Recorder.Fenced("lease")
		l.declareDead(ctx, h.Name, a.reason, rec.heard, vms)
	}
}

// startDeclaring begins a declaration of host dead that its pass decided on
// the record seen, unless a lease was granted to the host since: the pass
// reads the record, then declares, and a renewal granted in between gave
// the host a lease that the declaration would ignore. The chaos schedule
// "leader-kill" found it: a follower whose lease had run out while the
// cluster had no quorum renewed with the new leader as that leader
// declared it dead, started its guest again under the fresh lease, and
// the guest ran on two hosts for 244 ms. Until declareDead has written
// the recovery's placements, Renew refuses the host (a grant's commit
// index from before them would let it start what moves away).
func (l *Leader) startDeclaring(host string, seen hostLive) bool {
	lv := &l.live
	lv.mu.Lock()
	defer lv.mu.Unlock()
	rec := lv.host(host)
	if rec.grants != seen.grants {
		return false // renewed meanwhile: the next pass decides again
	}
	rec.declaring = true
	rec.declarations++
	return true
}

// capText trims s and keeps at most n bytes of it, saying so.
func capText(s string, n int) string {
	s = strings.TrimSpace(s)
	if len(s) > n {
		return s[:n] + fmt.Sprintf("... (%d bytes more)", len(s)-n)
	}
	return s
}

// once reports whether key is new this leadership, and remembers it.
func (l *Leader) once(key onceKey) bool {
	lv := &l.live
	lv.mu.Lock()
	defer lv.mu.Unlock()
	if lv.reported == nil {
		lv.reported = map[onceKey]bool{}
	}
	if lv.reported[key] {
		return false
	}
	lv.reported[key] = true
	return true
}

// startFence runs the fence command in the background; on success the next
// liveness pass declares the host dead.
func (l *Leader) startFence(ctx context.Context, h model.Host, age time.Duration) {
	cfg := l.cfg.Liveness
	lv := &l.live
	lv.mu.Lock()
	rec := lv.host(h.Name)
	rec.fencing, rec.fenceOK, rec.fenceStarted = true, "", l.clock.Now()
	lv.mu.Unlock()
	l.event(ctx, "fencing", h.Name, "", "no lease renewal for %v; running fence_command", age.Round(time.Millisecond))
	go func() {
		fctx, cancel := context.WithTimeout(ctx, cfg.FenceTimeout)
		defer cancel()
		// The host's name and address come after "--" and in the
		// environment, so that no name can pass for an option.
		args := append(append([]string(nil), cfg.FenceCommand[1:]...), "--", h.Name, h.Addr)
		cmd := exec.CommandContext(fctx, cfg.FenceCommand[0], args...)
		cmd.Env = append(os.Environ(), "CORRAL_FENCE_HOST="+h.Name, "CORRAL_FENCE_ADDR="+h.Addr)
		start := l.clock.Now()
		out, err := cmd.CombinedOutput()
		took := l.clock.Now().Sub(start).Round(time.Millisecond)
		lv.mu.Lock()
		rec := lv.host(h.Name)
		rec.fencing = false
		if err == nil {
			rec.fenceOK = fmt.Sprintf("fence_command confirmed power-off in %v", took)
		} else {
			rec.fenceFail = l.clock.Now()
		}
		lv.mu.Unlock()
		if err != nil {
			l.event(context.Background(), "fence-failed", h.Name, "", "fence_command failed after %v: %v: %s", took, err, capText(string(out), 1024))
		}
		lv.wakeUp() // a confirmed power-off is declared by the next pass
	}()
}

// declareDead fences a host in state and recovers its guests.
func (l *Leader) declareDead(ctx context.Context, host, reason string, lastHeard time.Time, vms *vmsOn) {
	lv := &l.live
	defer func() {
		lv.mu.Lock()
		lv.host(host).declaring = false
		lv.mu.Unlock()
	}()
	now := l.clock.Now()
	if _, err := l.store.Apply(ctx, raftlog.FenceHost{Name: host, Reason: reason, Time: now.UTC()}); err != nil {
		l.log.Warn("declare host dead", "host", host, "err", err)
		return
	}
	lv.mu.Lock()
	rec := lv.host(host)
	rec.fenceOK, rec.suspected = "", false
	lv.mu.Unlock()
	l.log.Warn("host declared dead", "host", host, "reason", reason)
	l.event(ctx, "fenced", host, "", "%s", reason)
	left, _ := l.recoverAt(ctx, host, lastHeard, now, vms)
	lv.mu.Lock()
	lv.host(host).recoveryLeft = left
	lv.mu.Unlock()
}

// recover tries again to recover the guests of a fenced host, when
// recoveryDue says so.
func (l *Leader) recover(ctx context.Context, host string, now time.Time, vms *vmsOn) {
	if !l.recoveryDue(host, now) {
		return
	}
	h, err := l.store.Host(host)
	if err != nil {
		return
	}
	left, err := l.recoverAt(ctx, host, time.Time{}, h.FencedAt, vms)
	lv := &l.live
	lv.mu.Lock()
	defer lv.mu.Unlock()
	rec := lv.host(host)
	rec.recoveryLeft = left
	if err != nil {
		rec.recoveryTried = time.Time{} // a failed write is tried again on the next pass
	}
}

// recoveryDue says whether to try the guests of a fenced host again. A try
// looks at every VM, and liveness passes run up to five times an interval,
// so a guest that fit nowhere is tried again only once state has changed
// since the last try (stateChanged or checkLiveness clear the marks) or
// after ReconcileInterval, for what is not in state (lease views). The try in
// declareDead, right after the fence, does not wait for this.
func (l *Leader) recoveryDue(host string, now time.Time) bool {
	lv := &l.live
	lv.mu.Lock()
	defer lv.mu.Unlock()
	rec := lv.host(host)
	if !rec.recoveryTried.IsZero() && now.Sub(rec.recoveryTried) < l.cfg.ReconcileInterval {
		return false
	}
	rec.recoveryTried = now
	return true
}

// recoverAt re-places the HA guests of a dead host by priority onto hosts
// chosen by placement, in one Raft entry; the targets' host loops start them
// (at most 4 at a time each, higher priority first). Guests that cannot move
// are reported once: HA disabled, storage not shared, or no capacity (tried
// again, see recoveryDue). It returns whether a guest found no host, and the
// error of the Raft write.
func (l *Leader) recoverAt(ctx context.Context, host string, lastHeard, declaredAt time.Time, on *vmsOn) (left bool, err error) {
	vms := on.host(host)
	if len(vms) == 0 {
		return false, nil
	}
	byPriority(vms)
	idx := l.recoveryIndex()
	var cmds []raftlog.Command
	var placed []model.VM
	var targets []string
	var placeAt []int // the index in cmds of each placed VM's PlaceVM
	for _, v := range vms {
		key := onceKey{what: "not-recovered", host: host, vm: v.Name}
		switch {
		case !v.Spec.HA.Enabled:
			if l.once(key) {
				l.event(ctx, "not-recovered", host, v.Name, "HA disabled for this VM; it stays on %s", host)
			}
			continue
		case !l.cfg.Liveness.SharedStorage:
			if l.once(key) {
				l.event(ctx, "not-recovered", host, v.Name, "storage is not shared (shared_storage = false); the VM's disks are only on %s", host)
			}
			continue
		}
		target := migrationTarget(l.store, v)
		if target == "" {
			var err error
			target, err = idx.Place(placement.Request{Name: v.Name, Spec: v.Spec, Exclude: map[string]bool{host: true}})
			if err != nil {
				left = true
				if l.once(key) {
					l.event(ctx, "not-recovered", host, v.Name, "%v", err)
				}
				continue
			}
		}
		if v.Migration != nil { // it ends here: the placement below replaces it
			cmds = append(cmds, raftlog.AbortMigration{Name: v.Name, Generation: v.Generation})
		}
		cmds = append(cmds, raftlog.PlaceVM{Name: v.Name, Host: target, Generation: v.Generation})
		placeAt = append(placeAt, len(cmds)-1)
		placed = append(placed, v)
		targets = append(targets, target)
	}
	if len(cmds) == 0 {
		return left, nil
	}
	on.changed()
	res, err := l.store.Apply(ctx, batchOf(cmds))
	if err != nil {
		l.log.Warn("recover", "host", host, "err", err)
		return left, err
	}
	results, _ := res.(raftlog.BatchResult)
	lv := &l.live
	// One entry for all the events: written one by one, the commits of 50
	// guests' events held up the next dead host's recovery by 50 commit
	// round trips (the simulator: a rack of 40 placed over 5 s).
	var evs []model.Event
	now := l.clock.Now().UTC()
	for i, v := range placed {
		if j := placeAt[i]; j < len(results) && results[j] != nil {
			left = true // it changed meanwhile: try again on the next change
			continue
		}
		lv.mu.Lock()
		lv.recovering[v.Name] = recovery{from: host, lastHeard: lastHeard, declaredAt: declaredAt}
		lv.mu.Unlock()
		e := model.Event{Time: now, Kind: "recovering", Host: targets[i], VM: v.Name, Message: fmt.Sprintf("from %s (priority %d)", host, v.Spec.HA.Priority)}
		StampEvent(ctx, l.store.Cluster(), &e)
		evs = append(evs, e)
	}
	if len(evs) > 0 {
		if _, err := l.store.Apply(ctx, raftlog.AddEvents{Events: evs}); err != nil {
			l.log.Warn("record events", "kind", "recovering", "host", host, "err", err)
		}
	}
	return left, nil
}

// migrationTarget: for a VM whose live migration was under way when its
// host was declared dead, the migration's target, unless that host is
// fenced or in standby too (then none of its guests runs). The source's
// libvirtd may have finished the migration after corrald died, so the
// guest may run on the target already, a host that is not fenced:
// recovery places it there and nowhere else. "" for any other VM.
func migrationTarget(st Store, v model.VM) string {
	if v.Migration == nil {
		return ""
	}
	t, err := st.Host(v.Migration.Target)
	if err != nil || t.Mode == model.ModeFenced || t.Mode == model.ModeStandby {
		return ""
	}
	return t.Name
}

func batchOf(cmds []raftlog.Command) raftlog.Batch {
	b := raftlog.Batch{Entries: make([][]byte, len(cmds))}
	for i, c := range cmds {
		b.Entries[i] = raftlog.MustEncode(c)
	}
	return b
}

// welcomeBack returns a fenced host that renews again to service. Its guests
// were recovered elsewhere; its own host loop removes the stale domains
// once its state has caught up.
func (l *Leader) welcomeBack(ctx context.Context, h model.Host) {
	if _, err := l.store.Apply(ctx, raftlog.SetHostMode{Name: h.Name, Mode: model.ModeActive}); err != nil {
		return
	}
	l.event(ctx, "returned", h.Name, "", "renewing its lease again after being fenced (%s); back in service", h.FenceReason)
}

// noteRecovered: for a report of a recovered VM running, the event that
// says how long its recovery took (ok false for any other report); the
// caller writes it with the report's other events.
func (l *Leader) noteRecovered(ctx context.Context, host string, rep raftlog.VMReport) (model.Event, bool) {
	lv := &l.live
	lv.mu.Lock()
	r, ok := lv.recovering[rep.Name]
	if ok && rep.State == model.StateRunning {
		delete(lv.recovering, rep.Name)
	}
	lv.mu.Unlock()
	if !ok || rep.State != model.StateRunning {
		return model.Event{}, false
	}
	now := l.clock.Now()
	l.cfg.Recorder.Recovered(now.Sub(r.declaredAt))
	msg := fmt.Sprintf("running on %s, %v after %s was declared dead", host, now.Sub(r.declaredAt).Round(time.Millisecond), r.from)
	if !r.lastHeard.IsZero() {
		msg += fmt.Sprintf(", %v after its last lease renewal", now.Sub(r.lastHeard).Round(time.Millisecond))
	}
	e := model.Event{Time: now.UTC(), Kind: "recovered", Host: host, VM: rep.Name, Message: msg}
	StampEvent(ctx, l.store.Cluster(), &e)
	return e, true
}

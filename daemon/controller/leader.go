package controller

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/corralhq/corral/daemon/placement"
	"github.com/corralhq/corral/model"
	"github.com/corralhq/corral/raftlog"
)

// LeaderConfig tunes the leader loop.
type LeaderConfig struct {
	Self string
	// Backups cleans up backup targets after backups are removed (nil:
	// their files stay).
	Backups BackupEngine
	// RaftVoters is the number of voters to keep (3 or 5).
	RaftVoters int
	// DeadVoterTimeout is how long a host may be dead or gone from gossip
	// before the leader removes it from Raft, so that a healthy non-voter can
	// take its seat. A host that returns later is added back.
	DeadVoterTimeout time.Duration
	// ReconcileInterval is the period of the full reconcile pass; gossip
	// changes also trigger one.
	ReconcileInterval time.Duration
	// Placement tunes where VMs go.
	Placement placement.Options
	// Liveness tunes leases, fencing and recovery.
	Liveness LivenessConfig
	// Balance tunes the balancer.
	Balance BalanceConfig
	// Recorder receives counts and durations for metrics; nil for none.
	Recorder Recorder
	// KernelDir is where VM kernels and initrds must lie (kernel_dir);
	// empty allows any absolute path (tests only).
	KernelDir string
	// VerifyHost, when set, checks that a host gossip describes is that
	// host (its cluster certificate answers at its addresses) before the
	// leader registers it or changes its addresses; gossip metadata is
	// only a hint. Only registered hosts get a Raft seat.
	VerifyHost func(ctx context.Context, h model.Host) error
	// Protocol is the cluster protocol this corrald speaks; the leader
	// never raises the cluster's above it. 0: raftlog.Protocol.
	Protocol int
}

// Recorder takes the leader's counts and durations (metrics implements it).
type Recorder interface {
	Recovered(d time.Duration)
	Fenced(how string)
	Migrated(reason string, d time.Duration, ok bool)
}

type noRecorder struct{}

func (noRecorder) Recovered(time.Duration)              {}
func (noRecorder) Fenced(string)                        {}
func (noRecorder) Migrated(string, time.Duration, bool) {}

// Leader runs the leader loop and serves leader-only operations.
type Leader struct {
	cfg   LeaderConfig
	store Store
	raft  Raft
	peers Peers
	clock Clock
	log   *slog.Logger

	mu      sync.Mutex
	leading bool

	live     liveness
	renewLog renewalLog
	mig      migrations // touched only by the leader loop and leader operations, under the Raft apply order
	bal      balancer
	ver      verifications
	pokeCh   chan struct{}
	migCh    chan struct{} // pokeMigrations
	// refused: hosts not registered because their protocol is below the
	// cluster's, and what was said about it (leader loop only; names
	// gossip no longer lists are dropped).
	refused map[string]string
	// groupErr: why a group is short of its count, as last reported
	// (under mu; entries of groups gone from state are dropped).
	groupErr map[string]string
	// groupShared: groups last reported as having members share a host
	// (fewer hosts than members), so the warning is an event once.
	groupShared map[string]bool
	// snapWait: a VM whose scheduled snapshot was refused (it was
	// starting, say) is not tried again before then (leader loop only).
	snapWait map[string]time.Time
	// collect: backup targets to clean up once no job writes to them
	// (under mu).
	collect map[string]bool
}

// verifications are the identity checks (VerifyHost) of hosts gossip
// describes, run in the background so that a slow or unreachable host
// never holds up the leader loop (and with it the liveness checks). Keyed
// by member name; entries of names gone from gossip are dropped.
type verifications struct {
	mu      sync.Mutex
	passed  map[string]string    // name -> addresses that proved it
	running map[string]bool      // name -> a check is under way
	failed  map[string]time.Time // name -> when its last check failed
}

// verifyRetry is how long after a failed check a host is checked again.
const verifyRetry = 10 * time.Second

// verified reports whether h has proved its name at its current
// addresses; if not, it starts a check (unless one runs, or one failed
// less than verifyRetry ago), which pokes the leader loop when it passes.
func (l *Leader) verified(ctx context.Context, h model.Host) bool {
	if l.cfg.VerifyHost == nil {
		return true
	}
	key := h.Addr + " " + h.RaftAddr + " " + h.RPCAddr
	v := &l.ver
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.passed == nil {
		v.passed, v.running, v.failed = map[string]string{}, map[string]bool{}, map[string]time.Time{}
	}
	if v.passed[h.Name] == key {
		return true
	}
	if v.running[h.Name] || l.clock.Now().Sub(v.failed[h.Name]) < verifyRetry {
		return false
	}
	v.running[h.Name] = true
	go func() {
		vctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		err := l.cfg.VerifyHost(vctx, h)
		cancel()
		v.mu.Lock()
		delete(v.running, h.Name)
		if err == nil {
			v.passed[h.Name] = key
			delete(v.failed, h.Name)
		} else {
			v.failed[h.Name] = l.clock.Now()
		}
		v.mu.Unlock()
		if err != nil {
			l.log.Warn("host not registered: it does not prove its identity", "host", h.Name, "err", err)
			return
		}
		l.poke()
	}()
	return false
}

// forgetVerifications drops entries of names gossip no longer lists.
func (l *Leader) forgetVerifications(peers []Peer) {
	known := map[string]bool{}
	for _, p := range peers {
		known[p.Name] = true
	}
	v := &l.ver
	v.mu.Lock()
	defer v.mu.Unlock()
	for name := range v.passed {
		if !known[name] {
			delete(v.passed, name)
		}
	}
	for name := range v.failed {
		if !known[name] {
			delete(v.failed, name)
		}
	}
}

// poke wakes the leader loop for a full reconcile.
func (l *Leader) poke() {
	select {
	case l.pokeCh <- struct{}{}:
	default:
	}
}

// pokeMigrations wakes the leader loop to move drains and failbacks along
// (driveMigrations) and nothing else: a finished migration frees a slot.
// A full reconcile for each of them kept a leader of 50,000 VMs busy
// through a drain (test/sim).
func (l *Leader) pokeMigrations() {
	select {
	case l.migCh <- struct{}{}:
	default:
	}
}

// NewLeader returns a Leader; Run starts it.
func NewLeader(cfg LeaderConfig, store Store, raft Raft, peers Peers, clock Clock, log *slog.Logger) *Leader {
	if cfg.Recorder == nil {
		cfg.Recorder = noRecorder{}
	}
	if cfg.Liveness.Interval <= 0 {
		cfg.Liveness.Interval = 500 * time.Millisecond
	}
	if cfg.Protocol == 0 {
		cfg.Protocol = raftlog.Protocol
	}
	return &Leader{cfg: cfg, store: store, raft: raft, peers: peers, clock: clock, log: log, pokeCh: make(chan struct{}, 1), migCh: make(chan struct{}, 1), live: liveness{wake: make(chan struct{}, 1)}, groupErr: map[string]string{}, groupShared: map[string]bool{}}
}

// Run follows leadership until ctx ends: on becoming leader it waits for a
// Raft barrier (so the local state holds every committed entry) and then
// reconciles on gossip changes and on a timer; on losing leadership it stops.
func (l *Leader) Run(ctx context.Context) error {
	stop := func() {}
	defer func() { stop() }()
	leaderCh := l.raft.LeaderCh()
	for {
		select {
		case <-ctx.Done():
			return nil
		case isLeader := <-leaderCh:
			stop()
			stop = func() {}
			if isLeader {
				stop = l.startLeading(ctx)
			}
		}
	}
}

// startLeading runs lead in a goroutine and returns a function that stops it
// and waits for it to end.
func (l *Leader) startLeading(ctx context.Context) func() {
	lctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		l.lead(lctx)
	}()
	return func() {
		cancel()
		<-done
	}
}

func (l *Leader) setLeading(v bool) {
	l.mu.Lock()
	l.leading = v
	l.mu.Unlock()
}

// Leading reports whether the leader loop is active and past its barrier.
func (l *Leader) Leading() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.leading
}

func (l *Leader) lead(ctx context.Context) {
	l.log.Info("leadership acquired")
	defer l.log.Info("leadership lost")
	for {
		bctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		err := l.raft.Barrier(bctx)
		cancel()
		if err == nil {
			break
		}
		l.log.Warn("barrier failed", "err", err)
		select {
		case <-ctx.Done():
			return
		case <-l.clock.After(time.Second):
		}
	}
	elected := l.clock.Now()
	committed := l.resetLiveness(elected)
	defer l.live.stopWatching()
	l.setLeading(true)
	defer l.setLeading(false)
	if committed {
		l.event(ctx, "leader", l.cfg.Self, "", "elected leader; each lease counts from its last committed renewal")
	} else {
		l.event(ctx, "leader", l.cfg.Self, "", "elected leader; every host counts as heard now, so none is declared dead before %v from now",
			l.cfg.Liveness.TTL+l.cfg.Liveness.Margin)
	}

	changes, stop := l.peers.Changes()
	defer stop()
	tick := l.clock.NewTicker(l.cfg.ReconcileInterval)
	defer tick.Stop()
	// The liveness pass runs when a host's next threshold comes (a lease
	// deadline, fence_after, "late"; see nextAssess), so a host is
	// declared dead at its deadline, and an idle leader is not woken five
	// times an interval for nothing; wake-ups come from renewals that
	// change a verdict and from fence_command's result. Never more often
	// than five times an interval, nor less often than every five.
	live := l.clock.NewTimer(l.cfg.Liveness.Interval)
	defer live.Stop()
	for {
		if err := l.reconcile(ctx); err != nil && ctx.Err() == nil {
			l.log.Warn("reconcile", "err", err)
		}
		full := false
		for !full {
			wait, state := l.live.sleep(l.clock.Now(), l.cfg.Liveness.Interval/5, l.cfg.Liveness.Interval*5)
			live.Reset(wait)
			select {
			case <-ctx.Done():
				return
			case <-live.C():
				l.checkLiveness(ctx, l.gossipDead())
			case <-l.live.wake:
				l.checkLiveness(ctx, l.gossipDead())
			case <-state:
				l.live.stateChanged()
				l.checkLiveness(ctx, l.gossipDead())
			case <-changes:
				full = true
			case <-tick.C():
				full = true
			case <-l.pokeCh:
				full = true
			case <-l.migCh:
				l.driveMigrations(ctx)
			}
		}
	}
}

// reconcile brings cluster state and Raft membership in line with gossip,
// checks leases, moves drains and failbacks along, and forgets hosts and
// VMs gone from state.
func (l *Leader) reconcile(ctx context.Context) error {
	peers := l.peers.Peers()
	l.forgetVerifications(peers)
	l.forgetRefused(peers)
	err := errors.Join(l.registerHosts(ctx, peers), l.raiseProtocol(ctx, peers), l.reconcileRaft(ctx, peers))
	l.checkLiveness(ctx, l.gossipDead())
	l.driveMigrations(ctx)
	l.keepGroups(ctx)
	l.maybeBalance(ctx)
	l.managePower(ctx)
	l.runSnapshotSchedules(ctx)
	l.driveBackups(ctx)
	l.forgetRemoved()
	return err
}

// forgetRemoved drops the leader's in-memory entries (liveness,
// migrations) of hosts and VMs no longer in state: one pass over state and
// the maps, so they hold at most what state holds.
func (l *Leader) forgetRemoved() {
	hosts := map[string]model.Host{}
	for _, h := range l.store.Hosts() {
		hosts[h.Name] = h
	}
	vms := map[string]bool{}
	l.store.EachVM(func(v *model.VM) { vms[v.Name] = true })
	l.live.forget(hosts, vms)
	l.mig.forget(hosts, vms)
	for key := range l.snapWait {
		if !vms[strings.TrimPrefix(key, backupWaitPrefix)] {
			delete(l.snapWait, key)
		}
	}
}

// gossipDead says which hosts gossip has declared dead.
func (l *Leader) gossipDead() map[string]bool {
	dead := map[string]bool{}
	for _, p := range l.peers.Peers() {
		dead[p.Name] = p.State == PeerDead
	}
	return dead
}

// Bounds on what gossip may claim for a host: it is a hint, and a member
// advertising 100,000 vCPUs would otherwise receive every new VM.
const (
	maxHostVCPUs     = 4096
	maxHostMemoryMiB = 64 << 20 // 64 TiB
	maxHealthReasons = 16
	maxHintText      = 256
	maxProtocol      = 1 << 16
)

// checkHint validates a host as gossip describes it before the leader
// writes it into state: a valid name, capacity within bounds, Raft and RPC
// addresses on the advertised address, bounded free text.
func checkHint(h model.Host) error {
	if err := h.Validate(); err != nil {
		return err
	}
	if h.Capacity.VCPUs > maxHostVCPUs || h.Capacity.MemoryMiB > maxHostMemoryMiB {
		return fmt.Errorf("capacity %d vCPUs, %d MiB is beyond %d vCPUs, %d MiB: %w", h.Capacity.VCPUs, h.Capacity.MemoryMiB, maxHostVCPUs, maxHostMemoryMiB, model.ErrInvalid)
	}
	for _, a := range []string{h.RaftAddr, h.RPCAddr} {
		if host, _, err := net.SplitHostPort(a); err != nil || host != h.Addr {
			return fmt.Errorf("address %q is not on the advertised address %s: %w", a, h.Addr, model.ErrInvalid)
		}
	}
	if h.Protocol < 1 || h.Protocol > maxProtocol {
		return fmt.Errorf("protocol %d: %w", h.Protocol, model.ErrInvalid)
	}
	if len(h.Version) > maxHintText || len(h.Health.Reasons) > maxHealthReasons {
		return fmt.Errorf("version or health reasons too long: %w", model.ErrInvalid)
	}
	for _, r := range h.Health.Reasons {
		if len(r) > maxHintText {
			return fmt.Errorf("health reason of %d bytes: %w", len(r), model.ErrInvalid)
		}
	}
	return nil
}

// registerHosts records alive hosts whose addresses, version, protocol or
// capacity are new or changed. A host whose protocol is below the
// cluster's is not registered (refuseProtocol).
func (l *Leader) registerHosts(ctx context.Context, peers []Peer) error {
	var errs []error
	cluster := raftlog.ClusterProtocol(l.store.Cluster())
	for _, p := range peers {
		if p.State != PeerAlive || p.RaftAddr == "" {
			continue
		}
		proto := max(p.Protocol, 1)
		if proto < cluster {
			l.refuseProtocol(ctx, p, proto, cluster)
			continue
		}
		delete(l.refused, p.Name)
		want := model.Host{Name: p.Name, Addr: p.Addr, RaftAddr: p.RaftAddr, RPCAddr: p.RPCAddr, Version: p.Version, Capacity: p.Capacity, Health: p.Health,
			Protocol: proto}
		if want.Health.State == "" {
			want.Health.State = model.HealthOK
		}
		if err := checkHint(want); err != nil {
			// Logged, not remembered: a map keyed by names from gossip
			// would grow with every made-up member.
			l.log.Warn("gossip metadata refused; host not registered", "host", p.Name, "err", err)
			continue
		}
		have, err := l.store.Host(p.Name)
		moved := err != nil || have.Addr != want.Addr || have.RaftAddr != want.RaftAddr || have.RPCAddr != want.RPCAddr
		if (moved && err == nil || errors.Is(err, model.ErrNotFound)) && !l.verified(ctx, want) {
			continue // registered once its check passes (it pokes the loop)
		}
		switch {
		case errors.Is(err, model.ErrNotFound):
			want.RegisteredAt = l.clock.Now().UTC()
		case err != nil:
			errs = append(errs, err)
			continue
		case have.Addr == want.Addr && have.RaftAddr == want.RaftAddr && have.RPCAddr == want.RPCAddr &&
			have.Version == want.Version && raftlog.HostProtocol(have) == want.Protocol && have.Capacity == want.Capacity && sameHealth(have.Health, want.Health):
			continue
		case have.Health.State != want.Health.State:
			l.event(ctx, "health", p.Name, "", "%s -> %s: %s", orOK(have.Health.State), want.Health.State, strings.Join(want.Health.Reasons, "; "))
		}
		if _, err := l.store.Apply(ctx, raftlog.RegisterHost{Host: want}); err != nil {
			errs = append(errs, err)
			continue
		}
		l.log.Info("host registered", "host", p.Name, "addr", p.Addr, "version", p.Version, "protocol", proto)
	}
	return errors.Join(errs...)
}

func sameHealth(a, b model.Health) bool {
	return a.State == b.State && slices.Equal(a.Reasons, b.Reasons)
}

func orOK(s model.HealthState) model.HealthState {
	if s == "" {
		return model.HealthOK
	}
	return s
}

// reconcileRaft adds new hosts to Raft (voters up to RaftVoters, then
// non-voters), removes hosts that have been dead or left for
// DeadVoterTimeout, and promotes alive non-voters into empty voter seats.
func (l *Leader) reconcileRaft(ctx context.Context, peers []Peer) error {
	servers, err := l.raft.Servers()
	if err != nil {
		return err
	}
	conf := map[string]raftlog.Server{}
	voters := 0
	for _, s := range servers {
		conf[s.ID] = s
		if s.Voter {
			voters++
		}
	}
	now := l.clock.Now()
	var errs []error
	// Removals first, so that seats free up before additions.
	for _, p := range peers {
		s, ok := conf[p.Name]
		if !ok || p.Name == l.cfg.Self {
			continue
		}
		// Left or dead: a restart within the timeout keeps the seat, so
		// routine daemon restarts do not churn the Raft configuration.
		gone := (p.State == PeerLeft || p.State == PeerDead) && now.Sub(p.Since) >= l.cfg.DeadVoterTimeout
		if !gone {
			continue
		}
		if err := l.raft.RemoveServer(ctx, p.Name); err != nil {
			errs = append(errs, err)
			continue
		}
		l.log.Info("raft server removed", "host", p.Name, "gossip", p.State, "voter", s.Voter)
		delete(conf, p.Name)
		if s.Voter {
			voters--
		}
	}
	// A seat only for a registered host at the Raft address it registered
	// (registerHosts verified it); gossip alone seats no one.
	alive := make([]Peer, 0, len(peers))
	for _, p := range peers {
		if p.State != PeerAlive || p.RaftAddr == "" {
			continue
		}
		if h, err := l.store.Host(p.Name); err != nil || h.RaftAddr != p.RaftAddr {
			continue
		}
		alive = append(alive, p)
	}
	sort.Slice(alive, func(i, j int) bool { return alive[i].Name < alive[j].Name })
	for _, p := range alive {
		s, ok := conf[p.Name]
		switch {
		case !ok && voters < l.cfg.RaftVoters:
			err = l.raft.AddVoter(ctx, p.Name, p.RaftAddr)
			if err == nil {
				voters++
				l.log.Info("raft voter added", "host", p.Name)
			}
		case !ok:
			err = l.raft.AddNonvoter(ctx, p.Name, p.RaftAddr)
			if err == nil {
				l.log.Info("raft non-voter added", "host", p.Name)
			}
		case s.Address != p.RaftAddr && s.Voter:
			err = l.raft.AddVoter(ctx, p.Name, p.RaftAddr)
		case s.Address != p.RaftAddr:
			err = l.raft.AddNonvoter(ctx, p.Name, p.RaftAddr)
		}
		if err != nil {
			errs = append(errs, err)
		}
	}
	// Promote alive non-voters into free seats, in name order.
	for _, p := range alive {
		if voters >= l.cfg.RaftVoters {
			break
		}
		if s, ok := conf[p.Name]; ok && !s.Voter {
			if err := l.raft.AddVoter(ctx, p.Name, p.RaftAddr); err != nil {
				errs = append(errs, err)
				continue
			}
			voters++
			l.log.Info("raft non-voter promoted", "host", p.Name)
		}
	}
	return errors.Join(errs...)
}

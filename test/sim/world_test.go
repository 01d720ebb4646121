package sim

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"math/rand/v2"
	"os"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/corralhq/corral/daemon/controller"
	"github.com/corralhq/corral/daemon/hypervisor"
	"github.com/corralhq/corral/daemon/hypervisor/fake"
	"github.com/corralhq/corral/daemon/placement"
	"github.com/corralhq/corral/internal/notify"
	"github.com/corralhq/corral/model"
	"github.com/corralhq/corral/raftlog"
	"github.com/corralhq/corral/raftstore"
)

// corrald's defaults (daemon.DefaultConfig, raftstore.DefaultTiming,
// membership.DefaultTiming), and what the lab measured of libvirt.
const (
	heartbeat       = 200 * time.Millisecond
	leaseTTL        = 3600 * time.Millisecond
	fenceMargin     = 200 * time.Millisecond
	killBudget      = 250 * time.Millisecond
	renewalGather   = 2 * time.Millisecond   // daemon.DefaultTuning's RenewalGather
	raftHeartbeat   = 500 * time.Millisecond // HeartbeatTimeout: a follower's wait before it stands
	raftElection    = 500 * time.Millisecond // ElectionTimeout: randomised over [e, 2e)
	raftLeaderLease = 450 * time.Millisecond // a leader cut off from a majority steps down after it
	fsyncCost       = 2 * time.Millisecond
	lanHop          = 150 * time.Microsecond // one way, plus up to as much again of jitter
	startTime       = 400 * time.Millisecond // libvirt's domain start, measured on the lab
	migrateTime     = 600 * time.Millisecond
	probeInterval   = time.Second // memberlist LAN
	suspicionMult   = 4
	gossipInterval  = 200 * time.Millisecond
	gossipNodes     = 3
	lostCallTimeout = time.Second
)

var errLost = errors.New("sim: message lost")

// world is the simulated cluster.
type world struct {
	mem     *raftstore.Memory
	log     *slog.Logger
	rngMu   sync.Mutex
	rng     *rand.Rand
	loss    float64 // probability that a message is lost
	hosts   []*host
	byName  map[string]*host
	applied atomic.Uint64
	entries atomic.Int64
	bytes   atomic.Int64

	mu          sync.Mutex
	leader      *host
	prevLeader  string
	prevContact time.Time
	servers     map[string]raftlog.Server
	electing    bool
	elections   int

	peerHub notify.Hub

	runMu      sync.Mutex
	running    map[string]map[string]bool // VM -> hosts whose hypervisor runs it
	violations []string
	starts     int64
	checks     int64

	cacheMu sync.Mutex
	byHost  map[string]map[string]model.VM // host -> its VMs
	where   map[string][]string            // VM -> the hosts whose view holds it
}

// host is one simulated physical host with its corrald.
type host struct {
	w        *world
	name     string
	addr     string
	rack     int
	drv      *fake.Driver
	leader   *controller.Leader
	loop     *controller.HostLoop
	lease    *controller.Lease
	fencer   *simFencer
	leaderCh chan bool
	changes  notify.Hub // its host loop's Watch
	cancel   context.CancelFunc
	done     sync.WaitGroup

	// under w.mu
	up        bool // powered, corrald running
	cut       bool // its network is cut off
	deadSince time.Time
	gossipOut bool // gossip reports it dead
}

func newWorld(n, rackSize int, seed uint64, loss float64) *world {
	w := &world{
		mem: raftstore.NewMemory(), log: simLog(),
		rng: rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15)), loss: loss,
		byName: map[string]*host{}, servers: map[string]raftlog.Server{},
		running: map[string]map[string]bool{},
	}
	drivers := map[string]*fake.Driver{}
	for i := range n {
		h := &host{w: w, name: fmt.Sprintf("h%04d", i+1), addr: fmt.Sprintf("10.%d.%d.%d", 1+i/65536, i/256%256, i%256),
			rack: i / rackSize, drv: fake.New(), leaderCh: make(chan bool, 8), up: true}
		h.drv.SetStartDelay(startTime)
		drivers[h.addr] = h.drv
		w.hosts = append(w.hosts, h)
		w.byName[h.name] = h
		w.servers[h.name] = raftlog.Server{ID: h.name, Address: h.addr + ":7947"}
	}
	fake.Connect(drivers)
	return w
}

// simLog: the controllers' warnings go to $SIM_LOG when it is set.
func simLog() *slog.Logger {
	if p := os.Getenv("SIM_LOG"); p != "" {
		if f, err := os.Create(p); err == nil {
			return slog.New(slog.NewTextHandler(f, &slog.HandlerOptions{Level: slog.LevelWarn}))
		}
	}
	return slog.New(slog.DiscardHandler)
}

func (w *world) rand() float64 {
	w.rngMu.Lock()
	defer w.rngMu.Unlock()
	return w.rng.Float64()
}

func (w *world) hop() time.Duration { return lanHop + time.Duration(w.rand()*float64(lanHop)) }

// sleep waits d of simulated time or until ctx ends.
func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}

func (w *world) reach(a, b *host) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	return a.up && b.up && (a == b || (!a.cut && !b.cut))
}

// call carries one request from a to b and its answer back.
func (w *world) call(ctx context.Context, a, b *host, fn func(ctx context.Context) error) error {
	lost := func() error {
		sleep(ctx, lostCallTimeout)
		return errLost
	}
	if !sleep(ctx, w.hop()) {
		return ctx.Err()
	}
	if !w.reach(a, b) || w.rand() < w.loss {
		return lost()
	}
	err := fn(ctx)
	if !sleep(ctx, w.hop()) {
		return ctx.Err()
	}
	if !w.reach(a, b) || w.rand() < w.loss {
		return lost()
	}
	return err
}

func (w *world) currentLeader() *host {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.leader
}

func (w *world) voters() []string {
	var out []string
	for id, s := range w.servers {
		if s.Voter {
			out = append(out, id)
		}
	}
	sort.Strings(out)
	return out
}

// elect makes a leader of host h (bootstrap) or, with h nil, runs an
// election after Raft's timeouts among the voters that can reach a
// majority of the voters.
func (w *world) elect(ctx context.Context, h *host) {
	if h != nil {
		w.mu.Lock()
		w.leader = h
		w.elections++
		w.mu.Unlock()
		h.leaderCh <- true
		return
	}
	w.mu.Lock()
	if w.electing {
		w.mu.Unlock()
		return
	}
	w.electing = true
	w.mu.Unlock()
	go func() {
		w.mu.Lock()
		c, turn := w.promptedWinner()
		w.mu.Unlock()
		if c != nil && sleep(ctx, turn) {
			w.mu.Lock()
			if c2, _ := w.promptedWinner(); c2 == c {
				w.crown(c)
				return
			}
			w.mu.Unlock()
		}
		for { // raft's own random timers
			if !sleep(ctx, raftHeartbeat+time.Duration(w.rand()*float64(raftElection))) {
				return
			}
			w.mu.Lock()
			voters := w.voters()
			var ok []*host
			for _, id := range voters {
				if c := w.byName[id]; c.up && !c.cut {
					ok = append(ok, c)
				}
			}
			if len(ok) > len(voters)/2 {
				w.rngMu.Lock()
				c := ok[w.rng.IntN(len(ok))]
				w.rngMu.Unlock()
				w.crown(c)
				return
			}
			w.mu.Unlock()
		}
	}()
}

// crown ends an election with c the leader; w.mu is held, and released.
func (w *world) crown(c *host) {
	w.leader, w.electing = c, false
	w.elections++
	w.mu.Unlock()
	c.leaderCh <- true
}

// promptedWinner is who wins a prompted election (raftstore's
// promptElections) after the leader w.prevLeader was lost, and how long
// after the loss: the voters other than the old leader stand in turn by ID,
// an electionStep apart from raftHeartbeat on, and the one whose turn finds
// a majority of the voters (itself included) cleared of the old leader
// wins. nil when the reachable voters are no majority. w.mu is held.
func (w *world) promptedWinner() (*host, time.Duration) {
	voters := w.voters()
	cleared := 0
	rank := 0
	for _, id := range voters {
		if id == w.prevLeader {
			continue
		}
		if c := w.byName[id]; c.up && !c.cut {
			cleared++
			if cleared > len(voters)/2 {
				return c, raftHeartbeat + time.Duration(rank)*raftHeartbeat/5
			}
		}
		rank++
	}
	return nil, 0
}

// loseLeader: the leader h is gone (off, or cut off: it steps down after
// Raft's leader lease) and the voters elect another.
func (w *world) loseLeader(ctx context.Context, h *host) {
	w.mu.Lock()
	if w.leader != h {
		w.mu.Unlock()
		return
	}
	w.leader, w.prevLeader, w.prevContact = nil, h.name, time.Now()
	w.mu.Unlock()
	w.elect(ctx, nil)
}

// power turns host h off: its corrald, guests and fencer stop at once.
func (w *world) power(ctx context.Context, h *host) {
	w.mu.Lock()
	h.up, h.deadSince = false, time.Now()
	w.mu.Unlock()
	h.fencer.Release()
	h.cancel()
	w.killAll(h, "power")
	w.loseLeader(ctx, h)
	w.gossipDetect(h)
}

// cutOff cuts host h's network (its top-of-rack switch failed): it runs
// on, alone.
func (w *world) cutOff(ctx context.Context, h *host) {
	w.mu.Lock()
	h.cut, h.deadSince = true, time.Now()
	isLeader := w.leader == h
	w.mu.Unlock()
	if isLeader {
		go func() {
			if sleep(ctx, raftLeaderLease) {
				w.loseLeader(ctx, h)
				h.leaderCh <- false
			}
		}()
	}
	w.gossipDetect(h)
}

// gossipDetect: memberlist's failure detection. Some member probes the
// host within a probe interval, then it is suspected for SuspicionMult ×
// log10(n) probe intervals before it is declared dead.
func (w *world) gossipDetect(h *host) {
	after := time.Duration(w.rand()*float64(probeInterval)) + suspicionTimeout(len(w.hosts))
	time.AfterFunc(after, func() {
		w.mu.Lock()
		h.gossipOut = !h.up || h.cut
		w.mu.Unlock()
		w.peerHub.Signal()
	})
}

// suspicionTimeout is memberlist's (suspicion.go): SuspicionMult ×
// max(1, log10(n)) probe intervals.
func suspicionTimeout(n int) time.Duration {
	return time.Duration(float64(suspicionMult) * max(1, math.Log10(float64(n))) * float64(probeInterval))
}

// killAll destroys every guest on h's hypervisor (power loss or fencer).
func (w *world) killAll(h *host, why string) int {
	doms, _ := h.drv.List(context.Background())
	n := 0
	for _, d := range doms {
		if d.State.Active() {
			h.drv.Destroy(context.Background(), d.Name)
			w.stopped(d.Name, h)
			n++
		}
	}
	return n
}

// started records that h runs vm now and checks the invariant.
func (w *world) started(vm string, h *host) {
	w.runMu.Lock()
	defer w.runMu.Unlock()
	w.starts++
	on := w.running[vm]
	if on == nil {
		on = map[string]bool{}
		w.running[vm] = on
	}
	for other := range on {
		if other != h.name {
			w.violations = append(w.violations, fmt.Sprintf("%s: %s started it while %s runs it", time.Now().Format("15:04:05.000"), h.name, other))
		}
	}
	on[h.name] = true
}

func (w *world) stopped(vm string, h *host) {
	w.runMu.Lock()
	defer w.runMu.Unlock()
	delete(w.running[vm], h.name)
}

// scan checks the invariant over every hypervisor: the ground truth, not
// the record of starts.
func (w *world) scan() {
	seen := map[string]string{}
	var bad []string
	for _, h := range w.hosts {
		doms, _ := h.drv.List(context.Background())
		for _, d := range doms {
			if !d.State.Active() {
				continue
			}
			if o, dup := seen[d.Name]; dup {
				bad = append(bad, fmt.Sprintf("%s: %s runs on %s and %s", time.Now().Format("15:04:05.000"), d.Name, o, h.name))
			}
			seen[d.Name] = h.name
		}
	}
	w.runMu.Lock()
	w.checks++
	w.violations = append(w.violations, bad...)
	w.runMu.Unlock()
}

// runningOnLiveHost reports whether vm runs on a host that is up and
// reachable.
func (w *world) runningOnLiveHost(vm string) bool {
	w.runMu.Lock()
	on := w.running[vm]
	var hs []string
	for h := range on {
		hs = append(hs, h)
	}
	w.runMu.Unlock()
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, n := range hs {
		if h := w.byName[n]; h.up && !h.cut {
			return true
		}
	}
	return false
}

// vmsOf is host name's view of the VMs: those placed on it or migrating
// to it, sorted by name. A real corrald's host loop reads every VM of the
// state after every entry; at a thousand hosts in one process the
// simulation cannot afford a thousand copies of 50,000 VMs for every
// entry, so each host loop gets its own VMs, and wakes only when an entry
// touched them or its host (hostStore.Watch).
func (w *world) vmsOf(name string) []model.VM {
	w.cacheMu.Lock()
	defer w.cacheMu.Unlock()
	if w.byHost == nil {
		w.rebuild()
	}
	out := make([]model.VM, 0, len(w.byHost[name]))
	for _, v := range w.byHost[name] {
		out = append(out, v)
	}
	slices.SortFunc(out, func(a, b model.VM) int { return strings.Compare(a.Name, b.Name) })
	return out
}

// rebuild makes every host's view anew from the state. Callers hold
// cacheMu.
func (w *world) rebuild() {
	w.byHost, w.where = map[string]map[string]model.VM{}, map[string][]string{}
	for _, v := range w.mem.VMs() {
		w.place(v)
	}
}

// place adds v to the views of its host and its migration's target.
func (w *world) place(v model.VM) {
	hosts := []string{v.Host}
	if v.Migration != nil && v.Migration.Target != v.Host {
		hosts = append(hosts, v.Migration.Target)
	}
	for _, h := range hosts {
		m := w.byHost[h]
		if m == nil {
			m = map[string]model.VM{}
			w.byHost[h] = m
		}
		m[v.Name] = v
	}
	w.where[v.Name] = hosts
}

// refresh updates the views after an entry that mentioned the given
// strings (see mentions) and returns the hosts to wake: those of every
// VM it named (before and after), and every host it named (whose VMs are
// read anew, for entries about a host that change its VMs). An entry that
// names no VM and no host (a cluster setting) rebuilds every view and
// wakes every host. Callers hold cacheMu.
func (w *world) refresh(names map[string]bool) map[string]bool {
	if w.byHost == nil {
		w.rebuild()
	}
	wake := map[string]bool{}
	vms := map[string]bool{}
	for n := range names {
		if _, isHost := w.byName[n]; isHost {
			wake[n] = true
			for vm := range w.byHost[n] {
				vms[vm] = true
			}
		} else if _, known := w.where[n]; known {
			vms[n] = true
		} else if _, err := w.mem.VM(n); err == nil {
			vms[n] = true
		}
	}
	if len(wake) == 0 && len(vms) == 0 {
		w.rebuild()
		for n := range w.byName {
			wake[n] = true
		}
		return wake
	}
	for vm := range vms {
		for _, h := range w.where[vm] {
			delete(w.byHost[h], vm)
			wake[h] = true
		}
		delete(w.where, vm)
		if v, err := w.mem.VM(vm); err == nil {
			w.place(v)
			for _, h := range w.where[vm] {
				wake[h] = true
			}
		}
	}
	return wake
}

// mentions collects every string in an encoded entry (and in the entries
// of a batch): the names of the VMs and hosts it is about among them.
func mentions(data []byte, out map[string]bool) {
	if len(data) < 1 {
		return
	}
	if raftlog.Type(data[0]) == raftlog.TypeBatch {
		var b raftlog.Batch
		if json.Unmarshal(data[1:], &b) == nil {
			for _, e := range b.Entries {
				mentions(e, out)
			}
		}
		return
	}
	var v any
	if json.Unmarshal(data[1:], &v) != nil {
		return
	}
	var walk func(any)
	walk = func(x any) {
		switch x := x.(type) {
		case string:
			out[x] = true
		case []any:
			for _, e := range x {
				walk(e)
			}
		case map[string]any:
			for k, e := range x {
				out[k] = true // maps keyed by name
				walk(e)
			}
		}
	}
	walk(v)
}

// commit applies c as the leader h would: after a replication round trip
// and an fsync, if h still leads.
func (w *world) commit(ctx context.Context, h *host, c raftlog.Command) (any, error) {
	if w.currentLeader() != h {
		return nil, fmt.Errorf("sim: %s does not lead: %w", h.name, model.ErrNotLeader)
	}
	data, err := raftlog.Encode(c)
	if err != nil {
		return nil, err
	}
	if !sleep(ctx, 2*w.hop()+fsyncCost) {
		return nil, ctx.Err()
	}
	if w.currentLeader() != h {
		return nil, fmt.Errorf("sim: %s lost leadership: %w", h.name, model.ErrNotLeader)
	}
	res, err := w.apply(ctx, c)
	w.entries.Add(1)
	w.bytes.Add(int64(len(data)))
	return res, err
}

// apply applies a committed entry to the state and wakes the host loops
// whose VMs or host it touched (lease renewals touch none).
func (w *world) apply(ctx context.Context, c raftlog.Command) (any, error) {
	if _, renewals := c.(raftlog.Renewals); renewals {
		defer w.applied.Add(1)
		return w.mem.Apply(ctx, c)
	}
	names := map[string]bool{}
	mentions(raftlog.MustEncode(c), names)
	w.cacheMu.Lock()
	res, err := w.mem.Apply(ctx, c)
	wake := w.refresh(names)
	w.applied.Add(1)
	w.cacheMu.Unlock()
	for n := range wake {
		w.byName[n].changes.Signal()
	}
	return res, err
}

// peers is the gossip view every host shares.
func (w *world) peers() []controller.Peer {
	w.mu.Lock()
	defer w.mu.Unlock()
	out := make([]controller.Peer, 0, len(w.hosts))
	for _, h := range w.hosts {
		p := controller.Peer{Name: h.name, State: controller.PeerAlive, Addr: h.addr, RaftAddr: h.addr + ":7947", RPCAddr: h.addr + ":7948",
			Version: "sim", Capacity: model.Capacity{VCPUs: 64, MemoryMiB: 256 * 1024}, InCluster: true, Protocol: raftlog.Protocol}
		if h.gossipOut {
			p.State, p.Since = controller.PeerDead, h.deadSince
		}
		out = append(out, p)
	}
	return out
}

// start builds and runs host h's corrald: leader loop, host loop, lease.
func (h *host) start(ctx context.Context) {
	w := h.w
	ctx, h.cancel = context.WithCancel(ctx)
	h.fencer = &simFencer{h: h}
	h.leader = controller.NewLeader(controller.LeaderConfig{
		Self: h.name, RaftVoters: 3, DeadVoterTimeout: time.Minute, ReconcileInterval: 5 * time.Second,
		Placement: placement.Options{Strategy: placement.Spread, CPUOvercommit: 4, MemoryOvercommit: 1, ReservedMemoryMiB: 1024},
		Liveness: controller.LivenessConfig{Interval: heartbeat, TTL: leaseTTL, Margin: fenceMargin,
			FenceTimeout: 30 * time.Second, SharedStorage: true, DrainParallel: 2, RenewalGather: renewalGather},
		Protocol: raftlog.Protocol,
	}, leaderStore{w.mem, h}, raftView{h}, peerView{w}, controller.SystemClock{}, w.log)
	h.lease = controller.NewLease(controller.LeaseConfig{Self: h.name, Interval: heartbeat, TTL: leaseTTL, KillBudget: killBudget,
		AlignRenewals: true},
		renewer{h}, controller.SystemClock{}, w.log, func(string) { h.loop.Fence() }, h.fencer)
	h.loop = controller.NewHostLoop(controller.HostConfig{
		Self: h.name, ResyncInterval: 5 * time.Second, ShutdownTimeout: time.Minute,
		MayStart:      func() bool { return h.lease.MayStart(w.applied.Load()) },
		StartBlocked:  func() string { return h.lease.StartBlocked(w.applied.Load()) },
		Fencing:       h.lease.Fencing,
		Bridge:        func(string) string { return "br0" },
		MigrationURIs: func(addr string) (string, string) { return addr, addr },
	}, hostStore{w.mem, h}, simDriver{h.drv, h}, reporter{h}, controller.SystemClock{}, w.log)
	for _, run := range []func(context.Context) error{h.leader.Run, h.loop.Run, h.lease.Run} {
		h.done.Add(1)
		go func() {
			defer h.done.Done()
			run(ctx)
		}()
	}
}

// raftView is the Raft node of host h.
type raftView struct{ h *host }

func (r raftView) IsLeader() bool        { return r.h.w.currentLeader() == r.h }
func (r raftView) LeaderCh() <-chan bool { return r.h.leaderCh }
func (r raftView) Barrier(ctx context.Context) error {
	if !sleep(ctx, 2*r.h.w.hop()+fsyncCost) {
		return ctx.Err()
	}
	if !r.IsLeader() {
		return model.ErrNotLeader
	}
	return nil
}
func (r raftView) HasState() bool                     { return true }
func (r raftView) Bootstrap(s []raftlog.Server) error { return errors.New("sim: bootstrapped") }
func (r raftView) Servers() ([]raftlog.Server, error) {
	w := r.h.w
	w.mu.Lock()
	defer w.mu.Unlock()
	out := make([]raftlog.Server, 0, len(w.servers))
	for _, s := range w.servers {
		out = append(out, s)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out, nil
}
func (r raftView) setServer(ctx context.Context, id string, fn func(s *raftlog.Server, ok bool) bool) error {
	w := r.h.w
	if !sleep(ctx, 2*w.hop()+fsyncCost) {
		return ctx.Err()
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.leader != r.h {
		return model.ErrNotLeader
	}
	s, ok := w.servers[id]
	if fn(&s, ok) {
		w.servers[id] = s
	} else {
		delete(w.servers, id)
	}
	return nil
}
func (r raftView) AddVoter(ctx context.Context, id, addr string) error {
	return r.setServer(ctx, id, func(s *raftlog.Server, _ bool) bool {
		*s = raftlog.Server{ID: id, Address: addr, Voter: true}
		return true
	})
}
func (r raftView) AddNonvoter(ctx context.Context, id, addr string) error {
	return r.setServer(ctx, id, func(s *raftlog.Server, ok bool) bool {
		if !ok || !s.Voter {
			*s = raftlog.Server{ID: id, Address: addr}
		}
		return true
	})
}
func (r raftView) RemoveServer(ctx context.Context, id string) error {
	return r.setServer(ctx, id, func(*raftlog.Server, bool) bool { return false })
}
func (r raftView) CommitIndex() uint64 { return r.h.w.applied.Load() }
func (r raftView) PreviousLeader() (string, time.Time, bool) {
	w := r.h.w
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.prevLeader, w.prevContact, w.prevLeader != ""
}
func (r raftView) Renewals() (time.Time, map[string]time.Time) { return r.h.w.mem.Renewals() }

// leaderStore is the state as h's leader loop sees it: commits go through
// the simulated Raft.
type leaderStore struct {
	*raftstore.Memory
	h *host
}

func (s leaderStore) Apply(ctx context.Context, c raftlog.Command) (any, error) {
	return s.h.w.commit(ctx, s.h, c)
}

// hostStore is the state as h's host loop sees it.
type hostStore struct {
	*raftstore.Memory
	h *host
}

func (s hostStore) VMs() []model.VM                  { return s.h.w.vmsOf(s.h.name) }
func (s hostStore) Watch() (<-chan struct{}, func()) { return s.h.changes.Subscribe() }

type peerView struct{ w *world }

func (p peerView) Peers() []controller.Peer           { return p.w.peers() }
func (p peerView) Changes() (<-chan struct{}, func()) { return p.w.peerHub.Subscribe() }

// renewer sends h's lease renewals to the leader over the network.
type renewer struct{ h *host }

func (r renewer) Renew(ctx context.Context, req controller.LeaseRequest) (controller.LeaseGrant, error) {
	var g controller.LeaseGrant
	err := r.h.toLeader(ctx, func(ctx context.Context, l *controller.Leader) error {
		var err error
		g, err = l.Renew(ctx, req)
		return err
	})
	return g, err
}

// toLeader carries a request from h to the leader as h's Raft knows it.
func (h *host) toLeader(ctx context.Context, fn func(context.Context, *controller.Leader) error) error {
	l := h.w.currentLeader()
	if l == nil {
		sleep(ctx, raftHeartbeat)
		return fmt.Errorf("sim: no leader: %w", model.ErrNotLeader)
	}
	return h.w.call(ctx, h, l, func(ctx context.Context) error { return fn(ctx, l.leader) })
}

// reporter carries h's host loop reports to the leader.
type reporter struct{ h *host }

func (r reporter) Report(ctx context.Context, rep raftlog.ReportVMs) error {
	return r.h.toLeader(ctx, func(ctx context.Context, l *controller.Leader) error { _, err := l.ReportVMs(ctx, rep); return err })
}
func (r reporter) Relocate(ctx context.Context, req controller.RelocateRequest) error {
	return r.h.toLeader(ctx, func(ctx context.Context, l *controller.Leader) error { _, err := l.RelocateVM(ctx, req); return err })
}
func (r reporter) MigrationDone(ctx context.Context, res controller.MigrationResult) error {
	return r.h.toLeader(ctx, func(ctx context.Context, l *controller.Leader) error { _, err := l.MigrationDone(ctx, res); return err })
}
func (r reporter) SnapshotDone(ctx context.Context, res controller.SnapshotResult) error {
	return r.h.toLeader(ctx, func(ctx context.Context, l *controller.Leader) error { _, err := l.SnapshotDone(ctx, res); return err })
}
func (r reporter) ForgetLayers(ctx context.Context, req controller.ForgetLayersRequest) error {
	return r.h.toLeader(ctx, func(ctx context.Context, l *controller.Leader) error { _, err := l.ForgetLayers(ctx, req); return err })
}
func (r reporter) LayersMerged(ctx context.Context, req controller.MergeRequest) error {
	return r.h.toLeader(ctx, func(ctx context.Context, l *controller.Leader) error { _, err := l.LayersMerged(ctx, req); return err })
}
func (r reporter) Adopt(ctx context.Context, req raftlog.AdoptGuests) error {
	return r.h.toLeader(ctx, func(ctx context.Context, l *controller.Leader) error { _, err := l.AdoptGuests(ctx, req); return err })
}

// simDriver is h's fake hypervisor, watched for the invariant.
type simDriver struct {
	*fake.Driver
	h *host
}

func (d simDriver) Start(ctx context.Context, name string, info hypervisor.RunInfo) error {
	err := d.Driver.Start(ctx, name, info)
	if err == nil {
		d.ran(name)
	}
	return err
}

func (d simDriver) Restore(ctx context.Context, name, memory string, info hypervisor.RunInfo) error {
	err := d.Driver.Restore(ctx, name, memory, info)
	if err == nil {
		d.ran(name)
	}
	return err
}

// ran records a guest started, unless the host lost power in the same
// simulated instant (the fake's start delay and the power cut fired
// together): then the guest never ran.
func (d simDriver) ran(name string) {
	w := d.h.w
	w.mu.Lock()
	up := d.h.up
	w.mu.Unlock()
	if !up {
		d.Driver.Destroy(context.Background(), name)
		return
	}
	w.started(name, d.h)
}

func (d simDriver) Destroy(ctx context.Context, name string) error {
	err := d.Driver.Destroy(ctx, name)
	d.h.w.stopped(name, d.h)
	return err
}

func (d simDriver) PowerOff(ctx context.Context, name string) error { return d.Destroy(ctx, name) }

func (d simDriver) Shutdown(ctx context.Context, name string, timeout time.Duration) error {
	err := d.Driver.Shutdown(ctx, name, timeout)
	if dom, ok := d.Driver.Domain(name); !ok || !dom.State.Active() {
		d.h.w.stopped(name, d.h)
	}
	return err
}

// Migrate takes migrateTime, then moves the guest: the target's copy
// starts as the source's ends.
func (d simDriver) Migrate(ctx context.Context, name, destURI, dataURI string, progress func(done, total uint64)) error {
	if !sleep(ctx, migrateTime) {
		return ctx.Err()
	}
	var to *host
	for _, h := range d.h.w.hosts {
		if h.addr == destURI {
			to = h
		}
	}
	if to == nil || !d.h.w.reach(d.h, to) {
		return fmt.Errorf("sim: migrate %s to %s: unreachable", name, destURI)
	}
	if err := d.Driver.Migrate(ctx, name, destURI, dataURI, progress); err != nil {
		return err
	}
	d.h.w.stopped(name, d.h)
	d.h.w.started(name, to)
	return nil
}

// simFencer is corral-fencer: it kills the host's guests at the deadline
// of the last lease it was armed with, whatever corrald does.
type simFencer struct {
	h     *host
	mu    sync.Mutex
	armed bool
	timer *time.Timer
	kills int
}

func (f *simFencer) Arm(remaining time.Duration) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.timer != nil {
		f.timer.Stop()
	}
	f.armed = true
	f.timer = time.AfterFunc(remaining, func() {
		f.mu.Lock()
		f.kills += f.h.w.killAll(f.h, "fencer")
		f.mu.Unlock()
	})
}

func (f *simFencer) Release() {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.timer != nil {
		f.timer.Stop()
	}
	f.armed = false
}

func (f *simFencer) Sync(ctx context.Context) error { return nil }

func (f *simFencer) Armed() bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.armed
}

package controller

import (
	"container/heap"
	"context"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"slices"
	"testing"
	"time"

	"github.com/corralhq/corral/internal/clock"
	"github.com/corralhq/corral/model"
)

// The lease model: the real host side (Lease: attempt, checkExpiry, at a
// periodic check and, as Lease.Run's timer does, at the lease's end;
// renewals every interval, and every half interval while no grant came for
// two intervals and a half) and the
// real leader decision (assess, on hostLive records, at periodic passes and,
// as the leader loop does, at the next threshold nextAssess names) at the
// defaults, driven
// by one fake clock through seeded random runs of renewals, elections,
// partitions, blips, corrald deaths and voter changes, over a network that
// delays messages (a few with TCP-retransmission delays of seconds) and
// loses them while a link is down.
//
// Four hosts, three of them voters. Raft is modelled as far as the lease
// relies on it: the leader writes a Renewals entry for each renewal it
// receives and grants it only once a majority of the voters has stored the
// entry; a committed entry reaches every host in the end (those that missed
// it catch up); each host notes an entry when it first stores it; an election
// needs a majority of the voters up, moves them to a new term (after which
// they store no entry of an older one), and elects one that holds every
// committed entry (Raft's election restriction); a voter is replaced only
// by a host that holds every committed entry (caught up). A new leader
// starts each host's record from when it first stored that host's last
// renewal, as resetLiveness does with FeatureCommittedLeases: no grace
// after its election.
//
// The invariant, checked whenever a leader declares a host dead: the
// host's guests are gone. A guest dies at the latest when the lease the
// host was last granted ends (the fencer holds that deadline even when
// corrald is dead), so every lease any corrald of the host ever held must
// have ended at least fence_margin before the declaration.

type modelEvent struct {
	at    time.Time
	seq   uint64
	kind  string
	host  string // the host the event is about
	to    string // arrive: the voter a renewal reached
	sent  time.Time
	inc   int // the corrald incarnation a renewal or answer belongs to
	entry *modelEntry
}

// modelEntry is a Renewals entry for one renewal.
type modelEntry struct {
	host      string
	sent      time.Time
	inc       int
	leader    string // who wrote it
	term      int
	stored    map[string]bool // hosts whose log holds it
	applied   map[string]bool // hosts that applied it
	committed bool
}

type modelQueue []*modelEvent

func (q modelQueue) Len() int { return len(q) }
func (q modelQueue) Less(i, j int) bool {
	if !q[i].at.Equal(q[j].at) {
		return q[i].at.Before(q[j].at)
	}
	return q[i].seq < q[j].seq
}
func (q modelQueue) Swap(i, j int) { q[i], q[j] = q[j], q[i] }
func (q *modelQueue) Push(x any)   { *q = append(*q, x.(*modelEvent)) }
func (q *modelQueue) Pop() any {
	old := *q
	e := old[len(old)-1]
	*q = old[:len(old)-1]
	return e
}

// grantRenewer answers attempt with the grant the model delivers.
type grantRenewer struct{ g LeaseGrant }

func (r *grantRenewer) Renew(context.Context, LeaseRequest) (LeaseGrant, error) { return r.g, nil }

type modelHost struct {
	name      string
	state     model.Host
	lease     *Lease
	renewer   *grantRenewer
	inc       int       // corrald incarnation; answers to an earlier one are lost
	alive     bool      // corrald runs (and with it the host's Raft)
	cutUntil  time.Time // the host's link is down until then
	deadline  time.Time // the latest lease end any of its corralds held (the fencer's)
	grantedAt time.Time // when the last useful answer came
	term      int       // the Raft term it is in
	// appliedAt: when this host first saw (stored) each host's last renewal.
	appliedAt map[string]time.Time
}

type leaseModel struct {
	rng    *rand.Rand
	clk    *clock.Fake
	cfg    LivenessConfig
	lcfg   LeaseConfig
	q      modelQueue
	seq    uint64
	hosts  map[string]*modelHost
	names  []string
	voters []string
	// Raft: the leader writes entries until leads ends (zero: no leader;
	// a deposed one's leader lease); a new one is elected at electAt.
	leader  string
	leads   time.Time
	electAt time.Time
	term    int
	entries []*modelEntry
	// The leader before, which may still write entries until prevUntil
	// (its leader lease) and which hosts may still address for a while.
	prev      string
	prevUntil time.Time
	records   map[string]*hostLive
	// mutate, set by TestLeaseModelCatchesUncommittedGrants, grants a
	// renewal on receipt, before its entry commits.
	mutate    bool
	violation string // the first declaration that broke the invariant

	declares, elections, swaps, events, grants int
	// exact: declarations made by a pass at a host's own threshold
	// (nextAssess), the earliest a leader declares.
	exact int
}

func (m *leaseModel) push(e *modelEvent) {
	m.seq++
	e.seq = m.seq
	heap.Push(&m.q, e)
}

func (m *leaseModel) now() time.Time { return m.clk.Now() }

func (m *leaseModel) cut(h string) bool { return m.now().Before(m.hosts[h].cutUntil) }

// up: h's corrald runs and its link is up.
func (m *leaseModel) up(h string) bool { return m.hosts[h].alive && !m.cut(h) }

func (m *leaseModel) voter(h string) bool { return slices.Contains(m.voters, h) }

// leading: the leader writes entries now.
func (m *leaseModel) leading() bool {
	return m.leader != "" && (m.leads.IsZero() || m.now().Before(m.leads))
}

// writes: to writes entries now, as the leader or as a deposed one whose
// leader lease has not run out.
func (m *leaseModel) writes(to string) bool {
	if !m.hosts[to].alive {
		return false
	}
	return to == m.leader && m.leading() || to == m.prev && m.now().Before(m.prevUntil)
}

// delay is a message's time on the wire: mostly milliseconds, sometimes a
// TCP retransmission's seconds.
func (m *leaseModel) delay() time.Duration {
	switch p := m.rng.Float64(); {
	case p < 0.9:
		return time.Duration(1+m.rng.IntN(20)) * time.Millisecond
	case p < 0.98:
		return time.Duration(100+m.rng.IntN(900)) * time.Millisecond
	default:
		return time.Duration(1000+m.rng.IntN(3000)) * time.Millisecond
	}
}

// send delivers e from one host to another after a delay, unless either
// end is cut off now (and again at arrival: see step).
func (m *leaseModel) send(from, to string, e *modelEvent) {
	if from != to && (m.cut(from) || m.cut(to)) {
		return
	}
	e.at = m.now()
	if from != to {
		e.at = e.at.Add(m.delay())
	}
	m.push(e)
}

func (m *leaseModel) newLease(h *modelHost) {
	h.renewer = &grantRenewer{}
	h.lease = NewLease(m.lcfg, h.renewer, m.clk, slog.New(slog.DiscardHandler), func(string) {}, nil)
}

// holdsCommitted: h's log holds every committed entry.
func (m *leaseModel) holdsCommitted(h string) bool {
	for _, e := range m.entries {
		if e.committed && !e.stored[h] {
			return false
		}
	}
	return true
}

func (m *leaseModel) elect() {
	var up, cands []string
	for _, n := range m.voters {
		if m.up(n) {
			up = append(up, n)
			if m.holdsCommitted(n) {
				cands = append(cands, n)
			}
		}
	}
	if len(up) < len(m.voters)/2+1 || len(cands) == 0 {
		m.electAt = m.now().Add(500 * time.Millisecond) // no quorum yet: try again
		return
	}
	if m.leader != "" {
		m.prev, m.prevUntil = m.leader, m.leads
	}
	m.term++
	for _, n := range up {
		m.hosts[n].term = m.term
	}
	m.leader, m.leads, m.electAt = cands[m.rng.IntN(len(cands))], time.Time{}, time.Time{}
	m.elections++
	// The new leader's first entry commits every entry its log holds; its
	// Barrier applies them before it leads. Entries of older terms it does
	// not hold never commit (the voters that elected it store none).
	l := m.hosts[m.leader]
	for _, e := range m.entries {
		if e.stored[m.leader] {
			e.committed = true
			m.apply(l, e)
		}
	}
	// resetLiveness: each lease from the host's last renewal this node
	// applied (FeatureCommittedLeases has been on since the start).
	m.records = map[string]*hostLive{}
	for _, n := range m.names {
		granted := m.start()
		if at, ok := l.appliedAt[n]; ok {
			granted = at
		}
		m.records[n] = &hostLive{heard: m.now(), granted: granted, armedAck: true}
	}
}

// loseLeader: the leader can no longer reach the majority at now (killed
// or cut off). It writes entries until its leader lease runs out; a new
// leader is elected no sooner than a heartbeat timeout later, and within
// two.
func (m *leaseModel) loseLeader(killed bool) {
	if m.leader == "" || !m.leads.IsZero() {
		return
	}
	m.leads = m.now().Add(250 * time.Millisecond)
	if killed {
		m.leads = m.now()
	}
	m.electAt = m.now().Add(500*time.Millisecond + time.Duration(m.rng.IntN(500))*time.Millisecond)
}

// apply: h notes e now, unless it noted it before (when it stored it).
func (m *leaseModel) apply(h *modelHost, e *modelEntry) {
	if e.applied[h.name] {
		return
	}
	e.applied[h.name] = true
	h.appliedAt[e.host] = m.now()
}

// write: leader to received a renewal of host (sent at sent) and writes
// its entry; it grants the renewal once the entry commits.
func (m *leaseModel) write(host, to string, sent time.Time, inc int) {
	e := &modelEntry{host: host, sent: sent, inc: inc, leader: to, term: m.hosts[to].term,
		stored: map[string]bool{to: true}, applied: map[string]bool{}}
	m.entries = append(m.entries, e)
	if m.mutate {
		m.answer(e)
	}
	for _, f := range m.names {
		if f != to {
			m.send(to, f, &modelEvent{kind: "store", host: f, entry: e})
		}
	}
	m.commitIfStored(e)
}

// commitIfStored commits e, applies it on its leader and grants the
// renewal, once a majority of the voters holds it.
func (m *leaseModel) commitIfStored(e *modelEntry) {
	n := 0
	for _, v := range m.voters {
		if e.stored[v] {
			n++
		}
	}
	if e.committed || n < len(m.voters)/2+1 {
		return
	}
	e.committed = true
	l := m.hosts[e.leader]
	m.apply(l, e)
	if e.leader == m.leader { // a deposed leader's record is of no use any more
		rec := m.records[e.host]
		rec.heard, rec.renewedAt, rec.granted, rec.armedAck = m.now(), m.now(), m.now(), true
	}
	if !m.mutate {
		m.answer(e)
	}
	for _, f := range m.names { // the commit notice, and the entry to a host that missed it
		if f != e.leader {
			m.send(e.leader, f, &modelEvent{kind: "learn", host: f, entry: e})
		}
	}
}

// answer sends the grant of e's renewal back to its host.
func (m *leaseModel) answer(e *modelEntry) {
	m.grants++
	m.send(e.leader, e.host, &modelEvent{kind: "answer", host: e.host, sent: e.sent, inc: e.inc})
}

func (m *leaseModel) step(e *modelEvent) {
	m.events++
	now := m.now()
	h := m.hosts[e.host]
	switch e.kind {
	case "send":
		// Every interval; every half interval while no grant came for two
		// intervals and a half (Lease.nextRenewal).
		next := m.lcfg.Interval
		if now.Sub(h.grantedAt) > m.lcfg.Interval*5/2 {
			next = m.lcfg.Interval / 2
		}
		m.push(&modelEvent{at: now.Add(next), kind: "send", host: e.host})
		if !h.alive {
			return
		}
		if m.writes(e.host) {
			m.write(e.host, e.host, now, h.inc) // its own renewal: local
			return
		}
		// To the leader it knows; with none (cut off, or between leaders),
		// to every voter (renewer). For a second after an election it may
		// still know only the one before.
		targets := m.voters
		if m.leader != "" && !m.cut(e.host) && m.leads.IsZero() {
			targets = []string{m.leader}
			if m.prev != "" && now.Before(m.prevUntil.Add(time.Second)) {
				targets = append(targets, m.prev)
			}
		}
		for _, to := range targets {
			if to != e.host {
				m.send(e.host, to, &modelEvent{kind: "arrive", host: e.host, to: to, sent: now, inc: h.inc})
			}
		}
	case "arrive":
		if m.writes(e.to) && !m.cut(e.to) {
			m.write(e.host, e.to, e.sent, e.inc)
		}
	case "store":
		en := e.entry
		if !m.up(e.host) || h.term > en.term {
			return
		}
		en.stored[e.host] = true
		m.apply(h, en) // noted when stored (raftstore noteLog)
		m.send(e.host, en.leader, &modelEvent{kind: "ack", host: en.leader, entry: en})
	case "ack":
		if m.up(e.host) {
			m.commitIfStored(e.entry)
		}
	case "learn":
		if !m.up(e.host) { // heard again once it is back
			m.push(&modelEvent{at: now.Add(200 * time.Millisecond), kind: "learn", host: e.host, entry: e.entry})
			return
		}
		e.entry.stored[e.host] = true
		m.apply(h, e.entry)
	case "answer":
		if !h.alive || e.inc != h.inc || m.cut(e.host) {
			return
		}
		h.renewer.g = LeaseGrant{Leader: m.leader, Armed: true, Fenced: h.state.Mode == model.ModeFenced}
		h.lease.attempt(context.Background(), e.sent)
		if h.lease.Valid() {
			h.grantedAt = now
		}
		h.lease.mu.Lock()
		if h.lease.held && h.lease.validUntil.After(h.deadline) {
			h.deadline = h.lease.validUntil // the fencer is armed with it
		}
		end := h.lease.end()
		h.lease.mu.Unlock()
		// Lease.Run's expiry timer: a check at the lease's end, besides
		// the periodic ones.
		m.push(&modelEvent{at: end, kind: "expire", host: e.host, inc: h.inc})
	case "check":
		m.push(&modelEvent{at: now.Add(m.lcfg.Interval / 5), kind: "check", host: e.host})
		if h.alive {
			h.lease.checkExpiry(now)
		}
	case "expire":
		if h.alive && e.inc == h.inc {
			h.lease.checkExpiry(now)
		}
	case "pass":
		m.push(&modelEvent{at: now.Add(m.cfg.Interval / 5), kind: "pass"})
		if !m.electAt.IsZero() && !now.Before(m.electAt) {
			m.elect()
		}
		if !m.leading() || m.cut(m.leader) { // a cut-off leader commits no FenceHost
			return
		}
		// Besides these periodic passes (which also drive elections), a
		// pass at the earliest threshold of any host, as the leader loop
		// sleeps until (nextAssess): the earliest a declaration can come.
		var next time.Time
		for _, n := range m.names {
			m.assessHost(n, now, false)
			at := nextAssess(*m.records[n], m.hosts[n].state, now, m.cfg, hostFacts{self: n == m.leader})
			if !at.IsZero() && (next.IsZero() || at.Before(next)) {
				next = at
			}
		}
		if !next.IsZero() {
			m.push(&modelEvent{at: next, kind: "deadline", host: m.leader})
		}
	case "deadline":
		if !m.leading() || m.leader != e.host || m.cut(m.leader) {
			return
		}
		for _, n := range m.names {
			m.assessHost(n, now, true)
		}
	case "cut":
		d := time.Duration(200+m.rng.IntN(7800)) * time.Millisecond
		h.cutUntil = now.Add(d)
		if e.host == m.leader {
			m.loseLeader(false)
		}
	case "kill":
		h.alive = false
		if e.host == m.leader {
			m.loseLeader(true)
		}
		m.push(&modelEvent{at: now.Add(time.Duration(m.rng.IntN(10000)) * time.Millisecond), kind: "restart", host: e.host})
	case "restart":
		// A new corrald: no lease until granted; the running guests keep
		// the old deadline in the fencer meanwhile. Its Raft log stays.
		h.alive = true
		h.inc++
		h.grantedAt = time.Time{}
		m.newLease(h)
	case "swap":
		// A voter replaced by the host that is not one (the leader's
		// voter upkeep), once that one holds every committed entry.
		var out []string
		for _, v := range m.voters {
			if v != m.leader {
				out = append(out, v)
			}
		}
		in := ""
		for _, n := range m.names {
			if !m.voter(n) {
				in = n
			}
		}
		if !m.leading() || !m.up(in) || !m.holdsCommitted(in) || len(out) == 0 {
			return
		}
		gone := out[m.rng.IntN(len(out))]
		m.voters[slices.Index(m.voters, gone)] = in
		m.hosts[in].term = m.term
		m.swaps++
	}
}

func (m *leaseModel) assessHost(n string, now time.Time, exact bool) {
	h, rec := m.hosts[n], m.records[n]
	a := assess(*rec, h.state, now, m.cfg, hostFacts{self: n == m.leader})
	if a.steps&stepMark != 0 {
		rec.suspected = a.suspected
	}
	switch {
	case a.steps&stepDeadByLease != 0:
		m.declares++
		if exact {
			m.exact++
		}
		if limit := now.Add(-m.cfg.Margin); h.deadline.After(limit) && m.violation == "" {
			m.violation = fmt.Sprintf("%s declared dead at %v by leader %s, but a lease it was granted ends at %v, less than fence_margin (%v) before: its guests may still run when the new copies start",
				n, now.Sub(m.start()), m.leader, h.deadline.Sub(m.start()), m.cfg.Margin)
		}
		h.state.Mode, h.state.FencedAt = model.ModeFenced, now
	case a.steps&stepWelcome != 0:
		h.state.Mode = model.ModeActive
	}
}

func (m *leaseModel) start() time.Time { return time.Unix(1_000_000, 0) }

// modelDefaults are the lease settings of daemon.DefaultConfig (keep them equal).
var modelDefaults = struct {
	interval, ttl, margin, budget, fenceAfter time.Duration
}{200 * time.Millisecond, 3600 * time.Millisecond, 200 * time.Millisecond, 250 * time.Millisecond, 900 * time.Millisecond}

func runLeaseModel(seed uint64, faults int, horizon time.Duration, mutate bool) *leaseModel {
	d := modelDefaults
	m := &leaseModel{
		rng:    rand.New(rand.NewPCG(seed, 0x5eed)),
		hosts:  map[string]*modelHost{},
		cfg:    LivenessConfig{Interval: d.interval, TTL: d.ttl, Margin: d.margin, FenceAfter: d.fenceAfter},
		lcfg:   LeaseConfig{Interval: d.interval, TTL: d.ttl, KillBudget: d.budget},
		mutate: mutate,
	}
	m.clk = clock.NewFake(m.start())
	for i := 1; i <= 4; i++ {
		n := fmt.Sprintf("h%d", i)
		h := &modelHost{name: n, alive: true, state: model.Host{Name: n, Mode: model.ModeActive}, appliedAt: map[string]time.Time{}}
		m.lcfg.Self = n
		m.newLease(h)
		m.hosts[n], m.names = h, append(m.names, n)
		if i <= 3 {
			m.voters = append(m.voters, n)
		}
		// Renewals and checks start at random phases.
		m.push(&modelEvent{at: m.start().Add(time.Duration(m.rng.IntN(int(d.interval/time.Millisecond))) * time.Millisecond), kind: "send", host: n})
		m.push(&modelEvent{at: m.start().Add(time.Duration(m.rng.IntN(100)) * time.Millisecond), kind: "check", host: n})
	}
	m.elect()
	m.push(&modelEvent{at: m.start(), kind: "pass"})
	for range faults {
		at := m.start().Add(2*time.Second + time.Duration(m.rng.Int64N(int64(horizon-4*time.Second))))
		kind := []string{"cut", "cut", "kill", "swap"}[m.rng.IntN(4)]
		m.push(&modelEvent{at: at, kind: kind, host: m.names[m.rng.IntN(len(m.names))]})
	}
	end := m.start().Add(horizon)
	for m.q.Len() > 0 && m.violation == "" {
		e := heap.Pop(&m.q).(*modelEvent)
		if e.at.After(end) {
			break
		}
		m.clk.Set(e.at)
		// A message to a host cut off meanwhile is lost.
		if (e.kind == "arrive" && m.cut(e.to)) || (e.kind == "store" || e.kind == "ack") && m.cut(e.host) {
			continue
		}
		m.step(e)
	}
	return m
}

// TestLeaseModelNeverTwoCopies explores seeded interleavings of the lease
// protocol and checks, at every declaration of a dead host, that no lease
// of that host is still running (see the model above).
func TestLeaseModelNeverTwoCopies(t *testing.T) {
	seeds := 2000
	if testing.Short() {
		seeds = 200
	}
	var events, declares, elections, swaps, grants, exact int
	for seed := range uint64(seeds) {
		m := runLeaseModel(seed, 6, 60*time.Second, false)
		if m.violation != "" {
			t.Fatalf("seed %d: %s", seed, m.violation)
		}
		events, declares, elections, swaps, grants, exact = events+m.events, declares+m.declares, elections+m.elections, swaps+m.swaps, grants+m.grants, exact+m.exact
	}
	if declares == 0 || exact == 0 || elections <= seeds || swaps == 0 {
		t.Fatalf("the model explored nothing of interest: %d declarations (%d at a threshold), %d elections, %d voter changes", declares, exact, elections, swaps)
	}
	t.Logf("%d seeded runs of 60 s: %d events, %d renewals granted, %d elections, %d voter changes, %d hosts declared dead (%d by a pass at their threshold), every one with all its leases over",
		seeds, events, grants, elections, swaps, declares, exact)
}

// TestLeaseModelCatchesUncommittedGrants: the model finds the two copies
// a leader would allow if it granted renewals before their entries
// committed (a new leader would not know of them).
func TestLeaseModelCatchesUncommittedGrants(t *testing.T) {
	for seed := range uint64(2000) {
		if m := runLeaseModel(seed, 6, 60*time.Second, true); m.violation != "" {
			t.Logf("seed %d: %s", seed, m.violation)
			return
		}
	}
	t.Fatal("no run of the model broke the invariant with grants before commit: it would not catch that mistake")
}

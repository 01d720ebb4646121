package controller

import (
	"container/heap"
	"context"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/corralhq/corral/internal/clock"
	"github.com/corralhq/corral/model"
)

// The lease model: the real host side (Lease: attempt, checkExpiry) and the
// real leader decision (assess, on hostLive records) at the defaults, driven
// by one fake clock through seeded random runs of renewals, answers,
// elections, partitions, blips and corrald deaths, over a network that
// delays messages (a few with TCP-retransmission delays of seconds) and
// loses them while a link is down. Raft itself is modelled by its timing
// rules, which the safety argument in DESIGN.md rests on: a leader cut off
// from the majority stops granting within its leader lease (250 ms), and no
// new leader is elected before a heartbeat timeout (500 ms) has passed
// without the old one; a new leader treats every host as heard at its
// election.
//
// The invariant, checked whenever a leader declares a host dead: the
// host's guests are gone. A guest dies at the latest when the lease the
// host was last granted ends (the fencer holds that deadline even when
// corrald is dead), so every lease any corrald of the host ever held must
// have ended at least fence_margin before the declaration.

type modelEvent struct {
	at   time.Time
	seq  uint64
	kind string
	host string // the host the event is about
	to   string // arrive: the voter a renewal reached
	sent time.Time
	inc  int // the corrald incarnation a renewal or answer belongs to
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
	name     string
	state    model.Host
	lease    *Lease
	renewer  *grantRenewer
	inc      int       // corrald incarnation; answers to an earlier one are lost
	alive    bool      // corrald runs
	cutUntil time.Time // the host's link is down until then
	deadline time.Time // the latest lease end any of its corralds held (the fencer's)
}

type leaseModel struct {
	t     *testing.T
	rng   *rand.Rand
	clk   *clock.Fake
	cfg   LivenessConfig
	lcfg  LeaseConfig
	q     modelQueue
	seq   uint64
	hosts map[string]*modelHost
	names []string
	// Raft, by its timing rules: leader grants until leads ends (zero: no
	// leader); a new one is elected at electAt.
	leader  string
	leads   time.Time // the leader grants until then (zero: unbounded)
	electAt time.Time
	// The leader before, which may still grant until prevUntil (its
	// leader lease) and which hosts may still address for a while.
	prev      string
	prevUntil time.Time
	records   map[string]*hostLive
	declares  int
	elections int
	events    int
}

func (m *leaseModel) push(e *modelEvent) {
	m.seq++
	e.seq = m.seq
	heap.Push(&m.q, e)
}

func (m *leaseModel) now() time.Time { return m.clk.Now() }

func (m *leaseModel) cut(h string) bool { return m.now().Before(m.hosts[h].cutUntil) }

// leading: the leader grants now.
func (m *leaseModel) leading() bool {
	return m.leader != "" && (m.leads.IsZero() || m.now().Before(m.leads))
}

// grants: host to grants renewals now, as the leader or as a deposed one
// whose leader lease has not run out.
func (m *leaseModel) grants(to string) bool {
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

func (m *leaseModel) newLease(h *modelHost) {
	h.renewer = &grantRenewer{}
	h.lease = NewLease(m.lcfg, h.renewer, m.clk, slog.New(slog.DiscardHandler), func(string) {}, nil)
}

func (m *leaseModel) elect() {
	var cands []string
	for _, n := range m.names {
		if h := m.hosts[n]; h.alive && !m.cut(n) {
			cands = append(cands, n)
		}
	}
	if len(cands) < len(m.names)/2+1 {
		m.electAt = m.now().Add(500 * time.Millisecond) // no quorum yet: try again
		return
	}
	if m.leader != "" {
		m.prev, m.prevUntil = m.leader, m.leads
	}
	m.leader, m.leads, m.electAt = cands[m.rng.IntN(len(cands))], time.Time{}, time.Time{}
	m.elections++
	// A new leader treats every host as heard at its election
	// (resetLiveness; HA armed long ago).
	m.records = map[string]*hostLive{}
	for _, n := range m.names {
		m.records[n] = &hostLive{heard: m.now(), armedAck: true}
	}
}

// loseLeader: the leader can no longer reach the majority at now (killed
// or cut off). It grants until its leader lease runs out; a new leader is
// elected no sooner than a heartbeat timeout later, and within two.
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

func (m *leaseModel) step(e *modelEvent) {
	m.events++
	now := m.now()
	h := m.hosts[e.host]
	switch e.kind {
	case "send":
		m.push(&modelEvent{at: now.Add(m.lcfg.Interval), kind: "send", host: e.host})
		if !h.alive {
			return
		}
		if m.grants(e.host) {
			m.grant(h, now, h.inc, e.host) // its own renewal: local
			return
		}
		// To the leader it knows; with none (cut off, or between leaders),
		// to every voter (renewer). For a second after an election it may
		// still know only the one before.
		targets := m.names
		if m.leader != "" && !m.cut(e.host) && m.leads.IsZero() {
			targets = []string{m.leader}
			if m.prev != "" && now.Before(m.prevUntil.Add(time.Second)) {
				targets = append(targets, m.prev)
			}
		}
		for _, to := range targets {
			if to == e.host || m.cut(e.host) || m.cut(to) {
				continue
			}
			m.push(&modelEvent{at: now.Add(m.delay()), kind: "arrive", host: e.host, to: to, sent: now, inc: h.inc})
		}
	case "arrive":
		if m.grants(e.to) {
			m.grant(h, e.sent, e.inc, e.to)
		}
	case "answer":
		if !h.alive || e.inc != h.inc || m.cut(e.host) {
			return
		}
		h.renewer.g = LeaseGrant{Leader: m.leader, Armed: true, Fenced: h.state.Mode == model.ModeFenced}
		h.lease.attempt(context.Background(), e.sent)
		h.lease.mu.Lock()
		if h.lease.held && h.lease.validUntil.After(h.deadline) {
			h.deadline = h.lease.validUntil // the fencer is armed with it
		}
		h.lease.mu.Unlock()
	case "check":
		m.push(&modelEvent{at: now.Add(m.lcfg.Interval / 5), kind: "check", host: e.host})
		if h.alive {
			h.lease.checkExpiry(now)
		}
	case "pass":
		m.push(&modelEvent{at: now.Add(m.cfg.Interval / 5), kind: "pass"})
		if !m.electAt.IsZero() && !now.Before(m.electAt) {
			m.elect()
		}
		if !m.leading() {
			return
		}
		for _, n := range m.names {
			m.assessHost(n, now)
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
		// the old deadline in the fencer meanwhile.
		h.alive = true
		h.inc++
		m.newLease(h)
	}
}

// grant records a renewal the leader received now (sent at sent) and
// sends the answer back.
func (m *leaseModel) grant(h *modelHost, sent time.Time, inc int, leader string) {
	now := m.now()
	if leader == m.leader { // a deposed leader's record is of no use any more
		rec := m.records[h.name]
		rec.heard, rec.renewedAt, rec.armedAck = now, now, true
	}
	at := now
	if h.name != leader {
		at = now.Add(m.delay())
	}
	m.push(&modelEvent{at: at, kind: "answer", host: h.name, sent: sent, inc: inc})
}

func (m *leaseModel) assessHost(n string, now time.Time) {
	h, rec := m.hosts[n], m.records[n]
	a := assess(*rec, h.state, now, m.cfg, hostFacts{self: n == m.leader})
	if a.steps&stepMark != 0 {
		rec.suspected = a.suspected
	}
	switch {
	case a.steps&stepDeadByLease != 0:
		m.declares++
		if limit := now.Add(-m.cfg.Margin); h.deadline.After(limit) {
			m.t.Fatalf("%s declared dead at %v by leader %s, but a lease it was granted ends at %v, less than fence_margin (%v) before: its guests may still run when the new copies start",
				n, now.Sub(m.start()), m.leader, h.deadline.Sub(m.start()), m.cfg.Margin)
		}
		h.state.Mode, h.state.FencedAt = model.ModeFenced, now
	case a.steps&stepWelcome != 0:
		h.state.Mode = model.ModeActive
	}
}

func (m *leaseModel) start() time.Time { return time.Unix(1_000_000, 0) }

func runLeaseModel(t *testing.T, seed uint64, faults int, horizon time.Duration) *leaseModel {
	m := &leaseModel{
		t:     t,
		rng:   rand.New(rand.NewPCG(seed, 0x5eed)),
		hosts: map[string]*modelHost{},
		cfg:   LivenessConfig{Interval: 500 * time.Millisecond, TTL: 4500 * time.Millisecond, Margin: time.Second, FenceAfter: 1500 * time.Millisecond},
		lcfg:  LeaseConfig{Interval: 500 * time.Millisecond, TTL: 4500 * time.Millisecond, KillBudget: 250 * time.Millisecond},
	}
	m.clk = clock.NewFake(m.start())
	for i := 1; i <= 3; i++ {
		n := fmt.Sprintf("h%d", i)
		h := &modelHost{name: n, alive: true, state: model.Host{Name: n, Mode: model.ModeActive}}
		m.lcfg.Self = n
		m.newLease(h)
		m.hosts[n], m.names = h, append(m.names, n)
		// Renewals and checks start at random phases.
		m.push(&modelEvent{at: m.start().Add(time.Duration(m.rng.IntN(500)) * time.Millisecond), kind: "send", host: n})
		m.push(&modelEvent{at: m.start().Add(time.Duration(m.rng.IntN(100)) * time.Millisecond), kind: "check", host: n})
	}
	m.elect()
	m.push(&modelEvent{at: m.start(), kind: "pass"})
	for range faults {
		at := m.start().Add(2*time.Second + time.Duration(m.rng.Int64N(int64(horizon-4*time.Second))))
		kind := []string{"cut", "cut", "kill"}[m.rng.IntN(3)]
		m.push(&modelEvent{at: at, kind: kind, host: m.names[m.rng.IntN(len(m.names))]})
	}
	end := m.start().Add(horizon)
	for m.q.Len() > 0 {
		e := heap.Pop(&m.q).(*modelEvent)
		if e.at.After(end) {
			break
		}
		m.clk.Set(e.at)
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
	var events, declares, elections int
	for seed := range uint64(seeds) {
		m := runLeaseModel(t, seed, 6, 60*time.Second)
		events, declares, elections = events+m.events, declares+m.declares, elections+m.elections
	}
	if declares == 0 || elections <= seeds {
		t.Fatalf("the model explored nothing of interest: %d declarations, %d elections", declares, elections)
	}
	t.Logf("%d seeded runs of 60 s: %d events, %d elections, %d hosts declared dead, every one with all its leases over", seeds, events, elections, declares)
}

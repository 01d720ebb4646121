package controller

import (
	"context"
	"log/slog"
	"os"
	"sync"
	"time"
)

// LeaseRequest is a host's lease renewal.
type LeaseRequest struct {
	Host string `json:"host"`
	// Stopping: not a renewal but corrald's last word on a clean stop. Its
	// guests keep running and nothing will fence them when the lease
	// expires, so the leader must not read the expiry as "they are gone".
	Stopping bool `json:"stopping,omitempty"`
	// Unguarded: this host has a fencer, and it does not hold an armed
	// deadline (not yet, or HA is disarmed). While HA is armed such a
	// renewal neither ends a clean-stop mark nor acknowledges re-armed HA:
	// if corrald died now, nothing would kill its guests. The next renewal,
	// sent after the fencer was armed with this one's grant, does.
	Unguarded bool `json:"unguarded,omitempty"`
}

// LeaseGrant is the leader's answer to a renewal.
type LeaseGrant struct {
	Leader string `json:"leader"`
	// CommitIndex is the leader's commit index when it granted: after
	// (re)acquiring its lease a host starts guests only once its state has
	// applied at least this much.
	CommitIndex uint64 `json:"commit_index"`
	// Armed: HA is armed; a host holding this grant self-fences when its
	// lease expires. A grant made while HA is disarmed does not.
	Armed bool `json:"armed"`
	// Fenced: the leader had declared this host dead.
	Fenced bool `json:"fenced"`
}

// Renewer sends a renewal to the leader.
type Renewer interface {
	Renew(ctx context.Context, req LeaseRequest) (LeaseGrant, error)
}

// LeaseConfig tunes the host side of the lease protocol.
type LeaseConfig struct {
	Self string
	// Interval between renewals (heartbeat_interval); every half
	// interval while no grant came for two and a half, so that
	// the first renewal after a blip goes at most half an interval after
	// it ends (nextRenewal; DESIGN.md, blips).
	Interval time.Duration
	// TTL: a lease lasts TTL from the moment its renewal was SENT, on this
	// host's monotonic clock (lease_ttl).
	TTL time.Duration
	// Watchdog, if set, is a watchdog device fed while the lease is valid.
	Watchdog string
	// KillBudget: the host fences itself this long before the lease ends,
	// so that its guests are dead when it does (fence_kill_budget).
	KillBudget time.Duration
	// AlignRenewals: renewals go out at the multiples of Interval on the
	// wall clock, at the same instants as every other host's
	// (nextRenewal); otherwise every Interval from the start.
	AlignRenewals bool
}

// Fencer is the host's independent fencer (fencer.Client): it kills the
// guests when a deadline passes unfed, even if corrald is dead.
type Fencer interface {
	// Arm: the lease ends remaining from now. Never blocks.
	Arm(remaining time.Duration)
	// Release: guests outlive corrald (HA disarmed, or a clean stop the
	// leader knows of). Never blocks.
	Release()
	// Sync waits until the fencer acknowledged the last Arm or Release.
	Sync(ctx context.Context) error
	// Armed: the fencer holds a deadline whose kill is still ahead.
	Armed() bool
}

// Lease is this host's lease with the leader. See DESIGN.md, "Leases and
// fencing".
type Lease struct {
	cfg     LeaseConfig
	renewer Renewer
	clock   Clock
	log     *slog.Logger
	// fence destroys every guest corral runs on this host.
	fence func(reason string)
	// fencer, if any, kills them even when this process cannot.
	fencer Fencer

	mu         sync.Mutex
	held       bool
	fencing    bool // an armed lease expired; cleared by the next lease
	validUntil time.Time
	armed      bool
	target     uint64
	inflight   int
	// grantedAt is when the last useful grant arrived (nextRenewal).
	grantedAt time.Time
	// acquired wakes Run when a lease is acquired, to set its expiry timer.
	acquired chan struct{}
	attempts sync.WaitGroup // renewals in flight, for sayStopping
}

// NewLease returns a lease; Run keeps it renewed. fence is called when a
// lease granted while HA was armed expires. fencer may be nil (no
// independent fencer: guests outlive a dead corrald).
func NewLease(cfg LeaseConfig, renewer Renewer, clock Clock, log *slog.Logger, fence func(reason string), fencer Fencer) *Lease {
	return &Lease{cfg: cfg, renewer: renewer, clock: clock, log: log, fence: fence, fencer: fencer, acquired: make(chan struct{}, 1)}
}

// end is when the host fences itself: the lease's end less the kill
// budget. Called with mu held.
func (l *Lease) end() time.Time { return l.validUntil.Add(-l.cfg.KillBudget) }

// Valid reports whether this host holds an unexpired lease.
func (l *Lease) Valid() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.held && l.clock.Now().Before(l.end())
}

// MayStart reports whether guests may be started: the lease is valid, the
// local state has applied what the leader had committed when the lease was
// (re)acquired, and, for an armed lease on a host with a fencer, the
// fencer holds the deadline (a guest started now dies with the lease).
func (l *Lease) MayStart(applied uint64) bool { return l.StartBlocked(applied) == "" }

// StartBlocked says why guests may not start now ("" when they may).
func (l *Lease) StartBlocked(applied uint64) string {
	l.mu.Lock()
	defer l.mu.Unlock()
	switch {
	case !l.held || !l.clock.Now().Before(l.end()):
		return "waiting for this host's lease"
	case applied < l.target:
		return "waiting for this host's state to catch up with the leader"
	case !l.guarded():
		return "waiting for this host's fencer to hold the lease's deadline (is corral-fencer running?)"
	}
	return ""
}

// guarded: no fencer to wait for, or HA disarmed, or the fencer is armed.
// Called with mu held.
func (l *Lease) guarded() bool {
	return l.fencer == nil || !l.armed || l.fencer.Armed()
}

// Fencing reports whether this host has fenced itself: an armed lease
// expired and no new one has been granted. While fencing, no corral guest
// may run here.
func (l *Lease) Fencing() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.fencing
}

// Remaining returns how long the lease has left (0 when not held).
func (l *Lease) Remaining() time.Duration {
	l.mu.Lock()
	defer l.mu.Unlock()
	if !l.held {
		return 0
	}
	return max(l.end().Sub(l.clock.Now()), 0)
}

// Run renews every Interval (and every half interval while grants have
// stopped: nextRenewal), fences the host at the lease's end (a timer
// at that instant, not a poll), and feeds the watchdog while the lease is
// valid. It wakes once per Interval and at the lease's end: an idle host
// (issue 15's footprint) is not woken between renewals.
//
// Renewals do not wait for each other: every one that could still extend
// the lease may be in flight (each gives up TTL after it was sent, so at
// most TTL/(Interval/2)+1). After a network blip, TCP delivers the renewals
// stuck in it only at their next retransmission, seconds later with
// exponential backoff; the first one sent after the blip must not wait for
// them (a cap of 4 did: renewals stopped 2 s into a blip, and the lease ran
// out before the stuck ones gave up).
func (l *Lease) Run(ctx context.Context) error {
	var wd *os.File
	if l.cfg.Watchdog != "" {
		f, err := os.OpenFile(l.cfg.Watchdog, os.O_WRONLY, 0)
		if err != nil {
			return err
		}
		wd = f
		defer wd.Close() // no magic close: a stopped corrald must not disarm the watchdog
	}
	renew := l.clock.NewTimer(l.nextRenewal(l.clock.Now()))
	defer renew.Stop()
	// expiry fires at the lease's end (end()); a renewal granted since it
	// was set moved the end later, so a firing only re-checks and re-arms.
	expiry := l.clock.NewTimer(l.cfg.TTL)
	defer expiry.Stop()
	maxInflight := int(l.cfg.TTL/(l.cfg.Interval/2)) + 1
	due := true // a renewal is due: at start, on every tick, and on retries
	for {
		now := l.clock.Now()
		if due {
			due = false
			l.mu.Lock()
			send := l.inflight < maxInflight
			if send {
				l.inflight++
			}
			l.mu.Unlock()
			if send {
				l.attempts.Add(1)
				go func(sent time.Time) {
					defer l.attempts.Done()
					l.attempt(ctx, sent)
				}(now)
			}
		}
		l.checkExpiry(now)
		if wd != nil && l.feedWatchdog() {
			if _, err := wd.Write([]byte{0}); err != nil {
				l.log.Warn("feed watchdog", "device", l.cfg.Watchdog, "err", err)
			}
		}
		l.mu.Lock()
		held, left := l.held, l.end().Sub(now)
		l.mu.Unlock()
		if held {
			expiry.Reset(max(left, 0))
		} else {
			expiry.Stop() // nothing to expire; an acquisition wakes the loop
		}
		select {
		case <-ctx.Done():
			l.sayStopping()
			return nil
		case <-renew.C():
			due = true
			renew.Reset(l.nextRenewal(l.clock.Now()))
		case <-expiry.C():
		case <-l.acquired:
		}
	}
}

// nextRenewal is how long after now this host's next renewal is due: with
// AlignRenewals, the next multiple of Interval on the wall clock. Every
// host sends at the same instants, and the leader commits the renewals
// that arrive together in one Renewals entry (commitRenewal): an idle
// 3-host cluster wrote three entries per interval, each an fsync on every
// voter and an AppendEntries to every follower, and now writes one. A
// large cluster's renewals arrive in one burst per interval instead of
// spread over it; spreading them over slots was tried and wrote more
// entries, not fewer (the simulator at 200 hosts: 35 a second with 7
// slots, 10 unaligned, 5.0-5.4 aligned), because renewals spread over the
// interval already batch by the commit round trip. The grid is the wall
// clock's, so hosts line up as well as their clocks agree (NTP: to the
// millisecond); clocks that disagree only batch less. It decides only
// when a renewal goes, never how long the lease lasts (that counts from
// the send on the monotonic clock), and the wait is never longer than
// Interval, so renewals are never further apart than before.
//
// While no grant has come for two and a half intervals (a blip, a lost
// leader), the next renewal goes half an interval after this one instead,
// off the grid: the first renewal after a blip then goes at most half an
// interval after it ends. A blip may straddle the renewals twice: the
// last answered one went up to an interval before it began, and the first
// after it up to half an interval after it ended; with renewals only
// every interval, as before, the defaults rode out 3 s with lease_ttl
// 3.7 s, and now do with 3.6 s (DESIGN.md, blips). Two renewals in a row
// must go unanswered first: one delayed renewal (a retransmission) is
// answered late, and the next on the grid batches with the others, where
// a retry off the grid would cost the leader a Raft entry of its own (the
// simulator's idle 1,000 hosts, with one and a half intervals: 10.4
// entries a second instead of 5.0).
func (l *Lease) nextRenewal(now time.Time) time.Duration {
	iv := l.cfg.Interval
	l.mu.Lock()
	overdue := now.Sub(l.grantedAt) > iv*5/2
	l.mu.Unlock()
	if overdue {
		return iv / 2
	}
	if !l.cfg.AlignRenewals {
		return iv
	}
	next := now.Truncate(iv)
	if !next.After(now) {
		next = next.Add(iv)
	}
	return next.Sub(now)
}

// sayStopping tells the leader, on a clean stop, that this host's guests
// keep running without a corrald to fence them (see LeaseRequest.Stopping).
// It waits for renewals in flight to give up first, so that none of them
// reaches the leader after the notice. Best effort: if the leader cannot be
// told, it treats the silence like any other.
func (l *Lease) sayStopping() {
	l.mu.Lock()
	held, fencing := l.held, l.fencing
	l.mu.Unlock()
	if !held || fencing {
		return // no lease, or guests already destroyed: nothing to say
	}
	drained := make(chan struct{})
	go func() { l.attempts.Wait(); close(drained) }()
	select { // renewals in flight were cancelled with ctx; they return at once
	case <-drained:
	case <-l.clock.After(time.Second):
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if _, err := l.renewer.Renew(ctx, LeaseRequest{Host: l.cfg.Self, Stopping: true}); err != nil {
		l.log.Warn("could not tell the leader of this clean stop; the fencer stays armed, so the guests die when the lease ends unless corrald is back by then", "err", err)
		return
	}
	if l.fencer != nil {
		// Only now: the leader knows the guests keep running, so it will
		// not recover them on lease expiry alone.
		l.fencer.Release()
		if err := l.fencer.Sync(ctx); err != nil {
			l.log.Error("the leader knows of this clean stop, but the fencer could not be released: the guests die when the lease ends", "err", err)
			return
		}
	}
	l.log.Info("told the leader: corrald stops, guests keep running")
}

// feedWatchdog: feed while the lease is valid, or while HA is disarmed and
// the last lease did not arm self-fencing.
func (l *Lease) feedWatchdog() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.held && (l.clock.Now().Before(l.validUntil) || !l.armed)
}

func (l *Lease) attempt(ctx context.Context, sent time.Time) {
	defer func() {
		l.mu.Lock()
		l.inflight--
		l.mu.Unlock()
	}()
	rctx, cancel := context.WithTimeout(ctx, l.cfg.TTL)
	defer cancel()
	l.mu.Lock()
	unguarded := l.fencer != nil && !l.fencer.Armed()
	l.mu.Unlock()
	g, err := l.renewer.Renew(rctx, LeaseRequest{Host: l.cfg.Self, Unguarded: unguarded})
	if err != nil {
		if ctx.Err() == nil {
			l.log.Debug("lease renewal failed", "err", err)
		}
		return
	}
	until := sent.Add(l.cfg.TTL)
	l.mu.Lock()
	defer l.mu.Unlock()
	if !until.Add(-l.cfg.KillBudget).After(l.clock.Now()) {
		return // answered too late to be of use
	}
	if !l.held {
		l.held, l.target, l.fencing = true, g.CommitIndex, false
		select {
		case l.acquired <- struct{}{}:
		default:
		}
		l.log.Info("lease acquired", "leader", g.Leader, "ttl", l.cfg.TTL, "armed", g.Armed, "catch_up_to", g.CommitIndex, "was_fenced", g.Fenced)
	}
	if until.After(l.validUntil) {
		l.validUntil = until
	}
	l.grantedAt = l.clock.Now()
	l.armed = g.Armed
	if l.fencer != nil {
		if g.Armed {
			l.fencer.Arm(l.validUntil.Sub(l.clock.Now()))
		} else {
			l.fencer.Release()
		}
	}
}

func (l *Lease) checkExpiry(now time.Time) {
	l.mu.Lock()
	expired := l.held && !now.Before(l.end())
	armed := l.armed
	if expired {
		l.held = false
		l.fencing = armed
	}
	l.mu.Unlock()
	if !expired {
		return
	}
	if !armed {
		l.log.Warn("lease expired while HA is disarmed; guests keep running")
		return
	}
	l.log.Error("lease expired; fencing this host: destroying its guests and starting nothing until a new lease")
	l.fence("lease expired")
}

package controller

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/corralhq/corral/internal/clock"
	"github.com/corralhq/corral/internal/testutil"
)

type fakeRenewer struct {
	mu       sync.Mutex
	grant    LeaseGrant
	err      error
	calls    int
	stopping int // requests with Stopping set
}

func (f *fakeRenewer) Renew(ctx context.Context, req LeaseRequest) (LeaseGrant, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls++
	if req.Stopping {
		f.stopping++
	}
	return f.grant, f.err
}

func (f *fakeRenewer) count() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.calls
}

func (f *fakeRenewer) set(g LeaseGrant, err error) {
	f.mu.Lock()
	f.grant, f.err = g, err
	f.mu.Unlock()
}

func newTestLease(r Renewer, clk *clock.Fake) (*Lease, *int) {
	fences := 0
	l := NewLease(LeaseConfig{Self: "h1", Interval: 500 * time.Millisecond, TTL: 5 * time.Second}, r, clk, slog.New(slog.DiscardHandler),
		func(string) { fences++ }, nil)
	return l, &fences
}

func TestLeaseCountsFromSendTime(t *testing.T) {
	clk := clock.NewFake(time.Unix(1000, 0))
	r := &fakeRenewer{grant: LeaseGrant{Armed: true, CommitIndex: 10}}
	l, fences := newTestLease(r, clk)
	ctx := context.Background()
	sent := clk.Now()
	clk.Advance(2 * time.Second) // the answer takes 2s to come back
	l.attempt(ctx, sent)
	if !l.Valid() || l.Remaining() != 3*time.Second {
		t.Fatalf("valid %v, remaining %v: the lease must count from the send", l.Valid(), l.Remaining())
	}
	if l.MayStart(9) || !l.MayStart(10) {
		t.Fatal("starts must wait until the state has applied the leader's commit index")
	}
	clk.Advance(3 * time.Second)
	l.checkExpiry(clk.Now())
	if l.Valid() || *fences != 1 || !l.Fencing() {
		t.Fatalf("after expiry: valid %v, fences %d, fencing %v", l.Valid(), *fences, l.Fencing())
	}
	l.checkExpiry(clk.Now())
	if *fences != 1 {
		t.Fatal("fenced twice for one expiry")
	}
	// A renewal sent before the expiry and answered after it is of no use.
	l.attempt(ctx, clk.Now().Add(-6*time.Second))
	if l.Valid() || !l.Fencing() {
		t.Fatal("a stale answer revived the lease")
	}
	// A fresh grant ends the fencing; catching up is required again.
	r.set(LeaseGrant{Armed: true, CommitIndex: 20}, nil)
	l.attempt(ctx, clk.Now())
	if !l.Valid() || l.Fencing() || l.MayStart(19) || !l.MayStart(20) {
		t.Fatal("re-acquired lease")
	}
}

func TestLeaseDisarmedDoesNotFence(t *testing.T) {
	clk := clock.NewFake(time.Unix(1000, 0))
	r := &fakeRenewer{grant: LeaseGrant{Armed: false}}
	l, fences := newTestLease(r, clk)
	l.attempt(context.Background(), clk.Now())
	clk.Advance(6 * time.Second)
	l.checkExpiry(clk.Now())
	if *fences != 0 || l.Fencing() {
		t.Fatal("a lease granted while HA was disarmed fenced the host")
	}
}

func TestLeaseFailedRenewalsChangeNothing(t *testing.T) {
	clk := clock.NewFake(time.Unix(1000, 0))
	r := &fakeRenewer{err: errors.New("no leader")}
	l, fences := newTestLease(r, clk)
	l.attempt(context.Background(), clk.Now())
	clk.Advance(time.Hour)
	l.checkExpiry(clk.Now())
	// Never held a lease (a host starting up): nothing to fence, nothing may start.
	if l.Valid() || l.MayStart(1<<60) || *fences != 0 || l.Fencing() {
		t.Fatal("a host without a lease must neither start guests nor fence")
	}
}

// stepUntil moves clk on by step (one tick of the loop under test) until
// cond holds, giving the loop a moment to run its pass between steps.
func stepUntil(t *testing.T, clk *clock.Fake, step time.Duration, what string, cond func() bool) {
	t.Helper()
	err := testutil.Poll(5*time.Second, time.Millisecond, func() error {
		if cond() {
			return nil
		}
		clk.Advance(step)
		return errors.New("timed out waiting for " + what)
	})
	if err != nil {
		t.Fatal(err)
	}
}

// TestWatchdogFedOnlyWhileLeaseValid runs the lease loop against a file
// standing in for /dev/watchdog.
func TestWatchdogFedOnlyWhileLeaseValid(t *testing.T) {
	dev := t.TempDir() + "/watchdog"
	if err := os.WriteFile(dev, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	clk := clock.NewFake(time.Unix(1000, 0))
	r := &fakeRenewer{grant: LeaseGrant{Armed: true}}
	fenced := make(chan struct{}, 1)
	l := NewLease(LeaseConfig{Self: "h1", Interval: 50 * time.Millisecond, TTL: time.Second, Watchdog: dev}, r, clk,
		slog.New(slog.DiscardHandler), func(string) { fenced <- struct{}{} }, nil)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- l.Run(ctx) }()
	defer func() { cancel(); <-done }()
	size := func() int64 { fi, _ := os.Stat(dev); return fi.Size() }
	if err := clk.BlockUntil(ctx, 1); err != nil { // the loop's ticker
		t.Fatal(err)
	}
	waitFor := func(what string, cond func() bool) {
		t.Helper()
		stepUntil(t, clk, 10*time.Millisecond, what, cond)
	}
	waitFor("the watchdog to be fed", func() bool { return l.Valid() && size() > 3 })
	r.set(LeaseGrant{}, errors.New("leader unreachable"))
	clk.Advance(2 * time.Second)
	waitFor("the fence", func() bool {
		select {
		case <-fenced:
			return true
		default:
			return false
		}
	})
	stopped := size()
	base := r.count()
	waitFor("a few more loop passes", func() bool { return r.count() > base+5 })
	if size() != stopped {
		t.Fatalf("watchdog fed after the lease expired: %d -> %d bytes", stopped, size())
	}
}

// TestLeaseSaysStoppingOnCleanStop: a host holding a lease tells the leader
// when its lease loop stops cleanly; one that holds none says nothing.
func TestLeaseSaysStoppingOnCleanStop(t *testing.T) {
	for _, held := range []bool{true, false} {
		clk := clock.NewFake(time.Unix(1000, 0))
		r := &fakeRenewer{grant: LeaseGrant{Armed: true}}
		if !held {
			r.err = errors.New("no leader")
		}
		l := NewLease(LeaseConfig{Self: "h1", Interval: 20 * time.Millisecond, TTL: time.Second}, r, clk,
			slog.New(slog.DiscardHandler), func(string) {}, nil)
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- l.Run(ctx) }()
		if err := clk.BlockUntil(ctx, 1); err != nil { // the loop's ticker
			t.Fatal(err)
		}
		// A few renewals (answered or not).
		stepUntil(t, clk, 4*time.Millisecond, "renewals", func() bool { return r.count() >= 3 })
		if l.Valid() != held {
			t.Fatalf("held %v, valid %v", held, l.Valid())
		}
		cancel()
		if err := <-done; err != nil {
			t.Fatal(err)
		}
		r.mu.Lock()
		stopping := r.stopping
		r.mu.Unlock()
		if want := map[bool]int{true: 1, false: 0}[held]; stopping != want {
			t.Fatalf("held %v: %d stopping notices, want %d", held, stopping, want)
		}
	}
}

// cutRenewer is a renewer behind a link that can be cut: while it is cut,
// a renewal hangs until its context ends, as one written into a TCP
// connection during a blip does (delivered, if ever, at a retransmission
// seconds later).
type cutRenewer struct {
	fakeRenewer
	cut   atomic.Bool
	stuck atomic.Int32
}

func (c *cutRenewer) Renew(ctx context.Context, req LeaseRequest) (LeaseGrant, error) {
	if c.cut.Load() {
		c.stuck.Add(1)
		<-ctx.Done()
		return LeaseGrant{}, ctx.Err()
	}
	return c.fakeRenewer.Renew(ctx, req)
}

// TestLeaseRenewsPastStuckRenewals: renewals stuck in a blip do not hold
// back the first one after it. (With at most 4 in flight, as before, the
// fifth renewal of a blip was never sent, and the lease ran out while the
// stuck ones waited for TCP.)
func TestLeaseRenewsPastStuckRenewals(t *testing.T) {
	clk := clock.NewFake(time.Unix(1000, 0))
	r := &cutRenewer{fakeRenewer: fakeRenewer{grant: LeaseGrant{Armed: true}}}
	fences := 0
	var mu sync.Mutex
	l := NewLease(LeaseConfig{Self: "h1", Interval: 500 * time.Millisecond, TTL: 4500 * time.Millisecond, KillBudget: 250 * time.Millisecond},
		r, clk, slog.New(slog.DiscardHandler), func(string) { mu.Lock(); fences++; mu.Unlock() }, nil)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- l.Run(ctx) }()
	defer func() { cancel(); <-done }()
	if err := clk.BlockUntil(ctx, 1); err != nil { // the loop's ticker
		t.Fatal(err)
	}
	stepUntil(t, clk, 100*time.Millisecond, "the lease", l.Valid)
	r.cut.Store(true)
	stepUntil(t, clk, 100*time.Millisecond, "six renewals stuck in the blip", func() bool { return r.stuck.Load() >= 6 })
	r.cut.Store(false)
	base := r.count()
	stepUntil(t, clk, 100*time.Millisecond, "a renewal granted after the blip", func() bool { return r.count() > base })
	mu.Lock()
	defer mu.Unlock()
	if fences != 0 || !l.Valid() {
		t.Fatalf("the lease did not survive the blip: fences %d, valid %v", fences, l.Valid())
	}
}

// fakeFencer records what the lease asks of the fencer.
type fakeFencer struct {
	mu       sync.Mutex
	armed    bool // what Armed reports
	arms     []time.Duration
	releases int
	syncs    int
}

func (f *fakeFencer) Arm(remaining time.Duration) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.arms = append(f.arms, remaining)
}

func (f *fakeFencer) Release() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.releases++
}

func (f *fakeFencer) Sync(context.Context) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.syncs++
	return nil
}

func (f *fakeFencer) Armed() bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.armed
}

// guardRenewer remembers whether each renewal said it was unguarded.
type guardRenewer struct {
	fakeRenewer
	unguarded []bool
}

func (g *guardRenewer) Renew(ctx context.Context, req LeaseRequest) (LeaseGrant, error) {
	g.mu.Lock()
	if !req.Stopping {
		g.unguarded = append(g.unguarded, req.Unguarded)
	}
	g.mu.Unlock()
	return g.fakeRenewer.Renew(ctx, req)
}

// TestLeaseFeedsTheFencer: every armed grant arms the fencer with the
// lease's end; an unarmed one releases it; guests start only while the
// fencer holds the deadline; renewals say when it does not; the host
// fences itself the kill budget before the lease ends.
func TestLeaseFeedsTheFencer(t *testing.T) {
	clk := clock.NewFake(time.Unix(1000, 0))
	r := &guardRenewer{fakeRenewer: fakeRenewer{grant: LeaseGrant{Armed: true, CommitIndex: 1}}}
	f := &fakeFencer{}
	fences := 0
	l := NewLease(LeaseConfig{Self: "h1", Interval: 500 * time.Millisecond, TTL: 5 * time.Second, KillBudget: 250 * time.Millisecond},
		r, clk, slog.New(slog.DiscardHandler), func(string) { fences++ }, f)
	ctx := context.Background()
	sent := clk.Now()
	clk.Advance(time.Second)
	l.attempt(ctx, sent)
	if len(f.arms) != 1 || f.arms[0] != 4*time.Second {
		t.Fatalf("fencer armed with %v, want the lease's end 4s from now", f.arms)
	}
	if l.MayStart(1) || !strings.Contains(l.StartBlocked(1), "fencer") {
		t.Fatalf("started guests before the fencer held the deadline (%q)", l.StartBlocked(1))
	}
	f.armed = true
	if !l.MayStart(1) {
		t.Fatal("fencer armed, lease valid, caught up: guests may start")
	}
	l.attempt(ctx, clk.Now())
	if !slices.Equal(r.unguarded, []bool{true, false}) {
		t.Fatalf("renewals said unguarded %v, want [true false]", r.unguarded)
	}
	// The lease ends 5s after the last send; the host fences 250ms before.
	clk.Advance(5*time.Second - 250*time.Millisecond - time.Millisecond)
	l.checkExpiry(clk.Now())
	if fences != 0 || l.Remaining() != time.Millisecond {
		t.Fatalf("fenced %d times, remaining %v, before the budget's start", fences, l.Remaining())
	}
	clk.Advance(time.Millisecond)
	l.checkExpiry(clk.Now())
	if fences != 1 || l.MayStart(1) {
		t.Fatalf("%d fences at the lease's end less the kill budget", fences)
	}
	// HA disarmed: the grant releases the fencer, and starts need no fencer.
	f.armed = false
	r.set(LeaseGrant{Armed: false, CommitIndex: 1}, nil)
	l.attempt(ctx, clk.Now())
	if f.releases != 1 || !l.MayStart(1) {
		t.Fatalf("unarmed grant: %d releases, may start %v", f.releases, l.MayStart(1))
	}
}

// TestCleanStopReleasesTheFencerOnlyOnceTheLeaderKnows: the fencer stands
// down on a clean stop only after the leader acknowledged the notice; if
// the notice fails it stays armed, and the guests die with the lease.
func TestCleanStopReleasesTheFencerOnlyOnceTheLeaderKnows(t *testing.T) {
	for _, leaderAnswers := range []bool{true, false} {
		clk := clock.NewFake(time.Unix(1000, 0))
		r := &fakeRenewer{grant: LeaseGrant{Armed: true}}
		f := &fakeFencer{armed: true}
		l := NewLease(LeaseConfig{Self: "h1", Interval: 500 * time.Millisecond, TTL: 5 * time.Second}, r, clk,
			slog.New(slog.DiscardHandler), func(string) {}, f)
		l.attempt(context.Background(), clk.Now())
		if !leaderAnswers {
			r.set(LeaseGrant{}, errors.New("no leader"))
		}
		l.sayStopping()
		if got := f.releases == 1 && f.syncs == 1; got != leaderAnswers {
			t.Fatalf("leader answered %v: %d releases, %d syncs", leaderAnswers, f.releases, f.syncs)
		}
	}
}

// Aligned renewals go out at the multiples of the interval on the wall
// clock, never more than an interval apart (while grants come: since the
// last, at most two intervals and a half, after which half an interval).
func TestNextRenewalAligned(t *testing.T) {
	const iv = 200 * time.Millisecond
	granted := time.Now()
	if d := (&Lease{cfg: LeaseConfig{Self: "a", Interval: iv}, grantedAt: granted}).nextRenewal(granted.Add(iv)); d != iv {
		t.Fatalf("unaligned: %v, want the interval", d)
	}
	if d := (&Lease{cfg: LeaseConfig{Self: "a", Interval: iv}, grantedAt: granted}).nextRenewal(granted.Add(3 * iv)); d != iv/2 {
		t.Fatalf("three intervals since the last grant: %v, want half an interval", d)
	}
	l := &Lease{cfg: LeaseConfig{Self: "a", Interval: iv, AlignRenewals: true}}
	start := time.Date(2026, 12, 4, 20, 0, 0, 0, time.UTC)
	for i := range 1000 {
		now := start.Add(time.Duration(i) * 1237 * time.Microsecond)
		l.grantedAt = now // granted just now: on the grid
		d := l.nextRenewal(now)
		if d <= 0 || d > iv {
			t.Fatalf("at %v: wait %v, want in (0, %v]", now, d, iv)
		}
		at := now.Add(d)
		if at.Truncate(iv) != at {
			t.Fatalf("at %v: renews at %v, not on the grid", now, at)
		}
		// From the instant itself the next is a whole interval on.
		if d2 := l.nextRenewal(at); d2 != iv {
			t.Fatalf("from its own instant %v the next is %v later, want %v", at, d2, iv)
		}
	}
	// Two hosts whose clocks agree renew at the same instants.
	m := &Lease{cfg: LeaseConfig{Self: "b", Interval: iv, AlignRenewals: true}}
	now := start.Add(77 * time.Millisecond)
	l.grantedAt, m.grantedAt = now, now
	if a, b := now.Add(l.nextRenewal(now)), now.Add(5*time.Millisecond).Add(m.nextRenewal(now.Add(5*time.Millisecond))); a != b {
		t.Fatalf("hosts renew at %v and %v", a, b)
	}
}

// runDefaultLease runs a lease at the default timing (200 ms renewals, a
// 3.6 s lease, 250 ms kill budget) until the test ends.
func runDefaultLease(t *testing.T, clk *clock.Fake, r Renewer) *Lease {
	l := NewLease(LeaseConfig{Self: "h1", Interval: 200 * time.Millisecond, TTL: 3600 * time.Millisecond, KillBudget: 250 * time.Millisecond},
		r, clk, slog.New(slog.DiscardHandler), func(string) {}, nil)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- l.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	return l
}

// TestLeaseRetriesUnansweredRenewals: while no grant came for two
// intervals and a half, renewals go every half interval, so that the first after a
// blip goes at most that long after it ends; while they are answered, one
// an interval, and no timer but the renewal's and the expiry's is armed.
func TestLeaseRetriesUnansweredRenewals(t *testing.T) {
	clk := clock.NewFake(time.Unix(1000, 0))
	r := &cutRenewer{fakeRenewer: fakeRenewer{grant: LeaseGrant{Armed: true}}}
	l := runDefaultLease(t, clk, r)
	sent := func() int { return r.count() + int(r.stuck.Load()) }
	// waitFor waits until n renewals were sent and, when answered, every
	// one has its answer and only the renewal and expiry timers are armed.
	waitFor := func(n int, answered bool) {
		t.Helper()
		err := testutil.Poll(5*time.Second, time.Millisecond, func() error {
			l.mu.Lock()
			inflight := l.inflight
			l.mu.Unlock()
			switch {
			case sent() != n:
				return fmt.Errorf("%d renewals sent, want %d", sent(), n)
			case answered && inflight != 0:
				return errors.New("renewals in flight")
			case answered && clk.Waiters() != 2:
				return fmt.Errorf("%d timers armed, want the renewal's and the expiry's", clk.Waiters())
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	waitFor(1, true) // the first renewal, at once
	clk.Advance(100 * time.Millisecond)
	waitFor(2, true) // no grant had come when the loop set its timer
	for i := 3; i <= 12; i++ {
		clk.Advance(190 * time.Millisecond) // past where a retry would go
		clk.Advance(10 * time.Millisecond)
		waitFor(i, true)
	}
	r.cut.Store(true)
	n := sent()
	// The ticks 200, 400 and 600 ms after the last grant; at 600 ms it is
	// more than two intervals and a half old: from then on every 100 ms.
	for i, want := range []int{0, 1, 1, 2, 2, 3, 4, 5, 6, 7, 8} {
		clk.Advance(100 * time.Millisecond)
		testutil.Eventually(t, 5*time.Second, func() error {
			if sent() != n+want {
				return fmt.Errorf("%d renewals sent in %d ms of a blip, want %d", sent()-n, (i+1)*100, want)
			}
			return nil
		})
	}
	r.cut.Store(false)
	answered := r.count()
	clk.Advance(100 * time.Millisecond) // the next renewal is answered
	testutil.Eventually(t, 5*time.Second, func() error {
		if r.count() == answered || clk.Waiters() != 2 {
			return errors.New("no renewal answered after the blip, or the retry still armed")
		}
		return nil
	})
	if !l.Valid() {
		t.Fatal("the lease did not survive the blip")
	}
}

// slowRenewer answers every renewal delay after it was sent (on the fake
// clock), counting the renewals it was sent.
type slowRenewer struct {
	fakeRenewer
	clk   *clock.Fake
	delay time.Duration
	sent  atomic.Int32
}

func (s *slowRenewer) Renew(ctx context.Context, req LeaseRequest) (LeaseGrant, error) {
	s.sent.Add(1)
	select {
	case <-s.clk.After(s.delay):
	case <-ctx.Done():
		return LeaseGrant{}, ctx.Err()
	}
	return s.fakeRenewer.Renew(ctx, req)
}

// TestLeaseDoesNotRetryLateAnswers: a leader that answers every renewal
// 150 ms late (slow, not gone) gets one renewal an interval (and one more
// before the first grant): a retry goes only while no grant came for two
// intervals and a half.
func TestLeaseDoesNotRetryLateAnswers(t *testing.T) {
	clk := clock.NewFake(time.Unix(1000, 0))
	r := &slowRenewer{fakeRenewer: fakeRenewer{grant: LeaseGrant{Armed: true}}, clk: clk, delay: 150 * time.Millisecond}
	l := runDefaultLease(t, clk, r)
	wait := func(what string, cond func() bool) {
		t.Helper()
		testutil.Eventually(t, 5*time.Second, func() error {
			if !cond() {
				return errors.New(what)
			}
			return nil
		})
	}
	for k := 1; k <= 10; k++ { // each interval: the tick's renewal, answered 150 ms on
		wait("the tick's renewal", func() bool { return int(r.sent.Load()) >= k })
		// The renewal's timer, the answer's, and once held the expiry's.
		wait("its answer's timer", func() bool { return clk.Waiters() >= 2+min(k-1, 1) })
		clk.Advance(100 * time.Millisecond) // where a retry would go
		clk.Advance(50 * time.Millisecond)  // the answer
		wait("the answer", func() bool { return r.count() >= k })
		clk.Advance(50 * time.Millisecond) // the next tick
	}
	if n := r.sent.Load(); n > 12 || !l.Valid() {
		t.Fatalf("%d renewals sent in 10 intervals of late answers (want 11, and at most one retry), lease valid %v", n, l.Valid())
	}
}

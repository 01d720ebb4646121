package clock

import (
	"context"
	"sync"
	"time"
)

// Fake is a Clock that moves only when told to (Advance, Set, AdvanceNext).
// It is safe for concurrent use.
//
// Moving it fires, in deadline order (ties in the order the timers were
// made), every timer, ticker and AfterFunc due up to the new time, with Now
// set to each one's deadline as it fires (so a goroutine woken on the way
// may read a time short of where the move ends). A timer's or ticker's channel has
// room for one value and a send never blocks: a tick nobody has received
// yet makes the next ones be dropped, as with time.Ticker. AfterFunc's f
// runs synchronously inside the call that moves the clock, without the
// clock's lock held, so it may use the clock. As with the time package of
// Go 1.23 on, Stop and Reset discard a value sent but not yet received.
//
// A timer made (or reset) with a non-positive duration is due at once: it
// fires at the next Advance, even Advance(0), at the current time.
type Fake struct {
	mu      sync.Mutex
	now     time.Time
	seq     uint64
	pending []*fakeTimer // armed timers and tickers
	// armed is closed (and dropped) when a timer is armed; BlockUntil
	// waits on it.
	armed chan struct{}
}

var _ Clock = (*Fake)(nil)

// NewFake returns a fake clock whose time is start.
func NewFake(start time.Time) *Fake { return &Fake{now: start} }

type fakeTimer struct {
	f      *Fake
	c      chan time.Time // nil for AfterFunc timers
	fn     func()         // AfterFunc's
	when   time.Time
	period time.Duration // tickers only
	seq    uint64        // creation order, for ties
	active bool          // in f.pending
}

// Now returns the fake's current time.
func (f *Fake) Now() time.Time {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.now
}

// NewTimer returns a timer that fires once the clock has moved d on.
func (f *Fake) NewTimer(d time.Duration) Timer {
	return f.newTimer(d, 0, make(chan time.Time, 1), nil)
}

// NewTicker returns a ticker that fires every d of the clock's time. It
// panics if d is not positive, as time.NewTicker does.
func (f *Fake) NewTicker(d time.Duration) Ticker {
	if d <= 0 {
		panic("clock: non-positive interval for NewTicker")
	}
	return fakeTicker{f.newTimer(d, d, make(chan time.Time, 1), nil)}
}

// AfterFunc returns a timer that calls fn, inside the call that moves the
// clock, once the clock has moved d on. Its C is nil.
func (f *Fake) AfterFunc(d time.Duration, fn func()) Timer {
	return f.newTimer(d, 0, nil, fn)
}

// After returns NewTimer(d).C().
func (f *Fake) After(d time.Duration) <-chan time.Time { return f.NewTimer(d).C() }

func (f *Fake) newTimer(d, period time.Duration, c chan time.Time, fn func()) *fakeTimer {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.seq++
	t := &fakeTimer{f: f, c: c, fn: fn, period: period, seq: f.seq}
	f.arm(t, d)
	return t
}

// arm makes t due d from now (now itself when d is not positive). Called
// with mu held.
func (f *Fake) arm(t *fakeTimer, d time.Duration) {
	t.when = f.now.Add(max(d, 0))
	if !t.active {
		t.active = true
		f.pending = append(f.pending, t)
	}
	if f.armed != nil {
		close(f.armed)
		f.armed = nil
	}
}

// disarm takes t off the pending list and reports whether it was on it.
// Called with mu held.
func (f *Fake) disarm(t *fakeTimer) bool {
	if !t.active {
		return false
	}
	t.active = false
	for i, p := range f.pending {
		if p == t {
			f.pending = append(f.pending[:i], f.pending[i+1:]...)
			break
		}
	}
	return true
}

// first returns the pending timer due first (nil if none). Called with mu
// held.
func (f *Fake) first() *fakeTimer {
	var first *fakeTimer
	for _, t := range f.pending {
		if first == nil || t.when.Before(first.when) || t.when.Equal(first.when) && t.seq < first.seq {
			first = t
		}
	}
	return first
}

// Advance moves the clock d on, firing what falls due on the way.
func (f *Fake) Advance(d time.Duration) {
	f.mu.Lock()
	end := f.now.Add(d)
	f.mu.Unlock()
	f.Set(end)
}

// Set moves the clock on to t, firing what falls due on the way. The clock
// never goes back: a t before Now only fires what is due already.
func (f *Fake) Set(t time.Time) {
	for {
		f.mu.Lock()
		next := f.first()
		if next == nil || next.when.After(t) {
			if t.After(f.now) {
				f.now = t
			}
			f.mu.Unlock()
			return
		}
		if next.when.After(f.now) {
			f.now = next.when
		}
		fn := f.fire(next)
		f.mu.Unlock()
		if fn != nil {
			fn()
		}
	}
}

// fire fires t at the current time: it sends on t's channel (dropping the
// value if the last one was not received), or returns the function to call.
// A ticker is armed again one period on. Called with mu held.
func (f *Fake) fire(t *fakeTimer) func() {
	if t.period > 0 {
		t.when = t.when.Add(t.period)
	} else {
		f.disarm(t)
	}
	if t.fn != nil {
		return t.fn
	}
	select {
	case t.c <- f.now:
	default:
	}
	return nil
}

// Next returns the earliest deadline of a pending timer or ticker, and
// false if there is none.
func (f *Fake) Next() (time.Time, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if t := f.first(); t != nil {
		return t.when, true
	}
	return time.Time{}, false
}

// AdvanceNext moves the clock to the earliest pending deadline and fires
// what is due then. It returns false, and does nothing, when nothing is
// pending.
func (f *Fake) AdvanceNext() bool {
	when, ok := f.Next()
	if ok {
		f.Set(when)
	}
	return ok
}

// Waiters returns the number of pending timers and tickers (AfterFunc
// timers included).
func (f *Fake) Waiters() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.pending)
}

// BlockUntil returns once at least n timers and tickers are pending, or
// ctx's error when ctx ends first. A test calls it to let a goroutine arm
// its timer before moving the clock.
func (f *Fake) BlockUntil(ctx context.Context, n int) error {
	f.mu.Lock()
	for len(f.pending) < n {
		if f.armed == nil {
			f.armed = make(chan struct{})
		}
		armed := f.armed
		f.mu.Unlock()
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-armed:
		}
		f.mu.Lock()
	}
	f.mu.Unlock()
	return nil
}

func (t *fakeTimer) C() <-chan time.Time { return t.c }

// drain discards a value sent but not received, and reports whether there
// was one. Called with mu held.
func (t *fakeTimer) drain() bool {
	select {
	case <-t.c: // a nil channel (AfterFunc) is never ready
		return true
	default:
		return false
	}
}

// Stop disarms a timer. Like time.Timer's, it returns true if the timer was
// pending, or had fired but its value was not received yet (discarded now).
func (t *fakeTimer) Stop() bool {
	t.f.mu.Lock()
	defer t.f.mu.Unlock()
	stopped := t.f.disarm(t)
	drained := t.drain()
	return stopped || drained
}

// Reset makes a timer fire d from now; it returns what Stop would have.
func (t *fakeTimer) Reset(d time.Duration) bool {
	t.f.mu.Lock()
	defer t.f.mu.Unlock()
	stopped := t.f.disarm(t)
	drained := t.drain()
	t.f.arm(t, d)
	return stopped || drained
}

// fakeTicker is a fakeTimer with a period, behind the Ticker interface.
type fakeTicker struct{ t *fakeTimer }

func (k fakeTicker) C() <-chan time.Time { return k.t.c }

// Stop turns the ticker off and discards a tick not received yet.
func (k fakeTicker) Stop() { k.t.Stop() }

// Reset restarts the ticker with period d, the first tick d from now. It
// panics if d is not positive, as time.Ticker's does.
func (k fakeTicker) Reset(d time.Duration) {
	if d <= 0 {
		panic("clock: non-positive interval for Ticker.Reset")
	}
	f := k.t.f
	f.mu.Lock()
	defer f.mu.Unlock()
	f.disarm(k.t)
	k.t.drain()
	k.t.period = d
	f.arm(k.t, d)
}

package clock

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

var t0 = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

// received returns what ch holds now, if anything.
func received(ch <-chan time.Time) (time.Time, bool) {
	select {
	case v := <-ch:
		return v, true
	default:
		return time.Time{}, false
	}
}

func TestRealIsAClock(t *testing.T) {
	var c Clock = Real{}
	if now := c.Now(); !strings.Contains(now.String(), "m=") {
		t.Fatalf("Real.Now() has no monotonic reading: %v", now)
	}
	tm := c.NewTimer(time.Millisecond)
	select {
	case <-tm.C():
	case <-time.After(5 * time.Second):
		t.Fatal("real timer did not fire")
	}
	tk := c.NewTicker(time.Millisecond)
	<-tk.C()
	tk.Stop()
	<-c.After(time.Millisecond)
	done := make(chan struct{})
	af := c.AfterFunc(time.Millisecond, func() { close(done) })
	if af.C() != nil {
		t.Fatal("AfterFunc timer has a channel")
	}
	<-done
}

// TestFakeFiresInDeadlineOrder: timers, tickers and AfterFuncs fire in
// deadline order, ties in creation order, each with Now at its deadline.
func TestFakeFiresInDeadlineOrder(t *testing.T) {
	type timer struct {
		name string
		d    time.Duration
	}
	for _, tc := range []struct {
		name    string
		timers  []timer
		advance []time.Duration
		want    []string // name@offset from t0
	}{
		{
			name:    "one advance",
			timers:  []timer{{"c", 3 * time.Second}, {"a", time.Second}, {"b", 2 * time.Second}},
			advance: []time.Duration{5 * time.Second},
			want:    []string{"a@1s", "b@2s", "c@3s"},
		},
		{
			name:    "ties in creation order",
			timers:  []timer{{"x", time.Second}, {"y", time.Second}, {"z", time.Second}, {"w", 500 * time.Millisecond}},
			advance: []time.Duration{time.Second},
			want:    []string{"w@500ms", "x@1s", "y@1s", "z@1s"},
		},
		{
			name:    "only what is due",
			timers:  []timer{{"a", time.Second}, {"b", 2 * time.Second}, {"c", 3 * time.Second}},
			advance: []time.Duration{1500 * time.Millisecond, 0, 1500 * time.Millisecond},
			want:    []string{"a@1s", "b@2s", "c@3s"},
		},
		{
			name:    "non-positive fires at the next advance, even of 0, at the current time",
			timers:  []timer{{"later", time.Second}, {"zero", 0}, {"negative", -time.Hour}},
			advance: []time.Duration{0},
			want:    []string{"zero@0s", "negative@0s"},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := NewFake(t0)
			var mu sync.Mutex
			var got []string
			for _, tm := range tc.timers {
				c.AfterFunc(tm.d, func() {
					mu.Lock()
					got = append(got, fmt.Sprintf("%s@%v", tm.name, c.Now().Sub(t0)))
					mu.Unlock()
				})
			}
			var end time.Duration
			for _, d := range tc.advance {
				c.Advance(d)
				end += d
			}
			if !slices.Equal(got, tc.want) {
				t.Fatalf("fired %v, want %v", got, tc.want)
			}
			if now := c.Now(); !now.Equal(t0.Add(end)) {
				t.Fatalf("now %v, want %v", now, t0.Add(end))
			}
		})
	}
}

// TestFakeTimerAndTickerInterleave: a ticker due several times fires each
// period, interleaved with timers, and its channel drops the ticks nobody
// received, like time.Ticker's.
func TestFakeTimerAndTickerInterleave(t *testing.T) {
	c := NewFake(t0)
	tk := c.NewTicker(time.Second)
	var seen []string
	c.AfterFunc(1500*time.Millisecond, func() {
		v, ok := received(tk.C())
		seen = append(seen, fmt.Sprintf("%v %v@%v", ok, v.Sub(t0), c.Now().Sub(t0)))
	})
	tm := c.NewTimer(2500 * time.Millisecond)
	c.Advance(5 * time.Second)
	if want := []string{"true 1s@1.5s"}; !slices.Equal(seen, want) {
		t.Fatalf("AfterFunc saw %v, want %v", seen, want)
	}
	// Ticks at 2s, 3s, 4s, 5s: the first is kept, the rest dropped.
	if v, ok := received(tk.C()); !ok || !v.Equal(t0.Add(2*time.Second)) {
		t.Fatalf("tick %v %v, want the one at 2s", v, ok)
	}
	if v, ok := received(tk.C()); ok {
		t.Fatalf("a second tick %v: ticks not received were not dropped", v)
	}
	if v, ok := received(tm.C()); !ok || !v.Equal(t0.Add(2500*time.Millisecond)) {
		t.Fatalf("timer sent %v %v, want its deadline", v, ok)
	}
	c.Advance(time.Second)
	if v, ok := received(tk.C()); !ok || !v.Equal(t0.Add(6*time.Second)) {
		t.Fatalf("tick %v %v, want the one at 6s", v, ok)
	}
	tk.Reset(300 * time.Millisecond)
	c.Advance(time.Second)
	if v, ok := received(tk.C()); !ok || !v.Equal(t0.Add(6300*time.Millisecond)) {
		t.Fatalf("after Reset: tick %v %v, want the one at 6.3s", v, ok)
	}
	tk.Stop()
	if c.Waiters() != 0 {
		t.Fatalf("%d waiters after the ticker stopped", c.Waiters())
	}
	c.Advance(time.Hour)
	if v, ok := received(tk.C()); ok {
		t.Fatalf("tick %v after Stop", v)
	}
	tk.Reset(time.Second) // restarts a stopped ticker
	c.Advance(time.Second)
	if _, ok := received(tk.C()); !ok {
		t.Fatal("no tick after a stopped ticker was reset")
	}
}

func TestFakeNewTickerPanicsOnNonPositive(t *testing.T) {
	for _, d := range []time.Duration{0, -time.Second} {
		func() {
			defer func() {
				if recover() == nil {
					t.Errorf("NewTicker(%v) did not panic", d)
				}
			}()
			NewFake(t0).NewTicker(d)
		}()
	}
}

// TestTimerStopReset runs the same steps on the fake and on real timers:
// the results of Stop and Reset, and what the channel holds, must agree
// with time.Timer's (Go 1.23 on: Stop and Reset discard a value not yet
// received, and count it as a stop).
func TestTimerStopReset(t *testing.T) {
	const d = 5 * time.Millisecond
	type step struct {
		op   string // "stop", "reset", "expire", "recv"
		want bool   // stop and reset: the result; recv: a value was there
	}
	cases := []struct {
		name  string
		steps []step
	}{
		{"stop a pending timer", []step{{"stop", true}, {"stop", false}, {"expire", false}, {"recv", false}}},
		{"stop an expired timer not received", []step{{"expire", false}, {"stop", true}, {"recv", false}, {"stop", false}}},
		{"stop after receiving", []step{{"expire", false}, {"recv", true}, {"stop", false}}},
		{"reset a pending timer", []step{{"reset", true}, {"expire", false}, {"recv", true}}},
		{"reset an expired timer not received", []step{{"expire", false}, {"reset", true}, {"recv", false}, {"expire", false}, {"recv", true}}},
		{"reset after receiving", []step{{"expire", false}, {"recv", true}, {"reset", false}, {"expire", false}, {"recv", true}}},
		{"reset a stopped timer", []step{{"stop", true}, {"reset", false}, {"reset", true}, {"expire", false}, {"recv", true}}},
	}
	clocks := []struct {
		name   string
		clock  func() Clock
		expire func(Clock)
	}{
		{"fake", func() Clock { return NewFake(t0) }, func(c Clock) { c.(*Fake).Advance(d) }},
		{"real", func() Clock { return Real{} }, func(Clock) { time.Sleep(4 * d) }},
	}
	for _, ck := range clocks {
		for _, tc := range cases {
			t.Run(ck.name+"/"+tc.name, func(t *testing.T) {
				c := ck.clock()
				tm := c.NewTimer(d)
				for i, s := range tc.steps {
					var got bool
					switch s.op {
					case "stop":
						got = tm.Stop()
					case "reset":
						got = tm.Reset(d)
					case "expire":
						ck.expire(c)
						continue
					case "recv":
						_, got = received(tm.C())
					}
					if got != s.want {
						t.Fatalf("step %d (%s): %v, want %v", i, s.op, got, s.want)
					}
				}
			})
		}
	}
}

func TestAfterFuncStop(t *testing.T) {
	c := NewFake(t0)
	calls := 0
	tm := c.AfterFunc(time.Second, func() { calls++ })
	if !tm.Stop() || tm.Stop() {
		t.Fatal("Stop of a pending AfterFunc: want true, then false")
	}
	c.Advance(time.Hour)
	if calls != 0 {
		t.Fatal("a stopped AfterFunc ran")
	}
	if tm.Reset(time.Second) {
		t.Fatal("Reset of a stopped AfterFunc returned true")
	}
	c.Advance(time.Second)
	if calls != 1 || tm.Stop() {
		t.Fatalf("after it ran: %d calls; Stop must return false", calls)
	}
}

// TestAfterFuncUsesTheClock: f runs without the clock's lock, so it may
// read the time, arm timers (due ones fire in the same Advance) and stop
// others.
func TestAfterFuncUsesTheClock(t *testing.T) {
	c := NewFake(t0)
	var fired []time.Duration
	var tick func()
	tick = func() {
		fired = append(fired, c.Now().Sub(t0))
		c.AfterFunc(time.Second, tick)
	}
	c.AfterFunc(time.Second, tick)
	// Due at the same time as victim but made first, so it runs first.
	var victim Timer
	c.AfterFunc(2*time.Second, func() {
		if !victim.Stop() {
			t.Error("Stop of a timer not fired yet returned false")
		}
	})
	victim = c.NewTimer(2 * time.Second)
	c.Advance(3 * time.Second)
	if want := []time.Duration{time.Second, 2 * time.Second, 3 * time.Second}; !slices.Equal(fired, want) {
		t.Fatalf("fired at %v, want %v", fired, want)
	}
	if v, ok := received(victim.C()); ok {
		t.Fatalf("a timer stopped before its turn fired at %v", v)
	}
	if c.Waiters() != 1 {
		t.Fatalf("%d waiters, want the re-armed tick only", c.Waiters())
	}
}

func TestFakeNextAndAdvanceNext(t *testing.T) {
	c := NewFake(t0)
	if _, ok := c.Next(); ok || c.AdvanceNext() {
		t.Fatal("an idle clock has a next deadline")
	}
	a := c.NewTimer(3 * time.Second)
	b := c.NewTimer(time.Second)
	if next, ok := c.Next(); !ok || !next.Equal(t0.Add(time.Second)) {
		t.Fatalf("next %v %v, want 1s", next, ok)
	}
	if !c.AdvanceNext() || !c.Now().Equal(t0.Add(time.Second)) {
		t.Fatalf("AdvanceNext: now %v", c.Now())
	}
	if _, ok := received(b.C()); !ok {
		t.Fatal("the first timer did not fire")
	}
	if _, ok := received(a.C()); ok {
		t.Fatal("the second timer fired early")
	}
	if !c.AdvanceNext() || !c.Now().Equal(t0.Add(3*time.Second)) {
		t.Fatalf("AdvanceNext: now %v", c.Now())
	}
	if _, ok := received(a.C()); !ok {
		t.Fatal("the second timer did not fire")
	}
	if c.AdvanceNext() {
		t.Fatal("AdvanceNext with nothing pending")
	}
	c.Set(t0) // the clock never goes back
	if !c.Now().Equal(t0.Add(3 * time.Second)) {
		t.Fatalf("Set to the past moved the clock to %v", c.Now())
	}
	c.Set(t0.Add(time.Hour))
	if !c.Now().Equal(t0.Add(time.Hour)) {
		t.Fatalf("Set: now %v", c.Now())
	}
}

// TestBlockUntil: a test waits for a goroutine to arm its timer before
// moving the clock, without polling.
func TestBlockUntil(t *testing.T) {
	c := NewFake(t0)
	ctx := context.Background()
	short, cancel := context.WithTimeout(ctx, 20*time.Millisecond)
	defer cancel()
	if err := c.BlockUntil(short, 1); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("BlockUntil with nothing armed: %v", err)
	}
	go1 := make(chan struct{})
	got := make(chan time.Time)
	for range 2 {
		go func() {
			<-go1
			got <- <-c.After(time.Minute)
		}()
	}
	close(go1)
	if err := c.BlockUntil(ctx, 2); err != nil {
		t.Fatal(err)
	}
	if c.Waiters() != 2 {
		t.Fatalf("%d waiters, want 2", c.Waiters())
	}
	c.Advance(time.Minute)
	for range 2 {
		if v := <-got; !v.Equal(t0.Add(time.Minute)) {
			t.Fatalf("got %v", v)
		}
	}
	if err := c.BlockUntil(ctx, 0); err != nil {
		t.Fatal(err)
	}
}

// TestFakeConcurrentUse is for the race detector.
func TestFakeConcurrentUse(t *testing.T) {
	c := NewFake(t0)
	var wg sync.WaitGroup
	for i := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := range 100 {
				tm := c.NewTimer(time.Duration(i+j) * time.Millisecond)
				if j%2 == 0 {
					tm.Stop()
				} else {
					tm.Reset(time.Millisecond)
				}
				c.AfterFunc(time.Millisecond, func() { c.Now() })
			}
		}()
	}
	for range 100 {
		c.Advance(time.Millisecond)
		c.Waiters()
		c.Next()
	}
	wg.Wait()
	c.Advance(time.Hour)
	if n := c.Waiters(); n != 0 {
		t.Fatalf("%d waiters after all fired", n)
	}
}

package procs

import (
	"context"
	"log/slog"
	"testing"
	"time"
)

// The decision: busy at once, idle only after IdlePeriods quiet periods
// in a row; a period between the thresholds holds the processors and
// restarts the count.
func TestStep(t *testing.T) {
	g := &Governor{Busy: 0.5, Idle: 0.05, IdlePeriods: 3}
	for _, tc := range []struct {
		name string
		uses []float64
		one  bool
	}{
		{"starts busy", nil, false},
		{"two quiet periods", []float64{0.01, 0.01}, false},
		{"three quiet periods", []float64{0.01, 0.01, 0.01}, true},
		{"a lukewarm period restarts the count", []float64{0.01, 0.01, 0.2, 0.01, 0.01}, false},
		{"lukewarm keeps one processor", []float64{0.01, 0.01, 0.01, 0.3}, true},
		{"busy leaves it at once", []float64{0.01, 0.01, 0.01, 0.6}, false},
		{"and comes back after quiet", []float64{0.01, 0.01, 0.01, 0.6, 0.01, 0.01, 0.01}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var s state
			for _, u := range tc.uses {
				s = g.step(s, u)
			}
			if s.one != tc.one {
				t.Fatalf("after %v: one processor %v, want %v", tc.uses, s.one, tc.one)
			}
		})
	}
}

// Run reads the CPU clock each period, sets one processor once quiet and
// the default once busy, and the default again when it stops.
func TestRunSwitches(t *testing.T) {
	cpu := make(chan time.Duration, 1)
	sets := make(chan int, 10)
	used := time.Duration(0)
	cpu <- used
	g := &Governor{Every: time.Millisecond, Busy: 0.5, Idle: 0.05, IdlePeriods: 2, Log: slog.New(slog.DiscardHandler),
		CPU: func() (time.Duration, error) { return <-cpu, nil }, Set: func(n int) { sets <- n }}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { g.Run(ctx); close(done) }()
	expect := func(n int) {
		t.Helper()
		select {
		case got := <-sets:
			if got != n {
				t.Fatalf("set %d, want %d", got, n)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("no set, want %d", n)
		}
	}
	for range 2 { // quiet: no CPU used
		cpu <- used
	}
	expect(1)
	used += time.Hour // far more than a core over any period
	cpu <- used
	expect(0)
	cancel()
	cpu <- used // a read may be pending
	<-done
	expect(0)
}

// Package procs runs an idle corrald on one processor.
//
// An idle corrald wakes a few dozen times a second (lease renewals, Raft,
// gossip), and each wake costs far more than the work it does: with
// GOMAXPROCS at the machine's core count, a goroutine made runnable wakes
// a second thread to spin for work, and the runtime's sysmon thread polls
// every 20 µs while any processor runs or sits in a syscall (the Raft
// log's fsync). On a 3-host lab, one processor took the leader's CPU from
// 1.84 / 1.79 % to 1.56 / 1.48 % and the followers' from 1.23-1.30 % to
// 1.01-1.03 % (docs/architecture.md, Measured). Work that wants cores —
// a backup hashing its chunks, a large cluster's leader — gets them back:
// the Governor samples the process's CPU time and restores the runtime's
// default as soon as one period used more than Busy of a core, and goes
// back to one processor only after IdlePeriods periods in a row under
// Idle.
//
// SetTimerSlack, called once at start, lets the kernel fire the process's
// timers up to 1 ms late, so that sysmon's 20 µs polls, and wake-ups that
// fall close together, cost one wake-up where they cost many: on the same
// lab it took the leader from 1.34-1.36 % to 0.96-1.00 % and the followers
// from 0.90-0.96 % to 0.68-0.72 %.
package procs

import (
	"context"
	"log/slog"
	"os"
	"runtime"
	"syscall"
	"time"
)

// Governor switches GOMAXPROCS between 1 (idle) and the runtime's default
// (busy).
type Governor struct {
	// Every is the sampling period.
	Every time.Duration
	// Busy: a period that used more than this fraction of one core
	// restores the default at once.
	Busy float64
	// Idle and IdlePeriods: that many periods in a row under this
	// fraction go back to one processor.
	Idle        float64
	IdlePeriods int
	// CPU returns the process's CPU time so far (user + system).
	CPU func() (time.Duration, error)
	// Set sets GOMAXPROCS: 1, or 0 for the runtime's default.
	Set func(n int)
	Log *slog.Logger
}

// New returns the Governor corrald runs: it samples every 2 s, leaves one
// processor once a period used more than half a core, and returns to it
// after 10 s under 5 % of a core.
func New(log *slog.Logger) *Governor {
	return &Governor{Every: 2 * time.Second, Busy: 0.5, Idle: 0.05, IdlePeriods: 5, CPU: processCPU, Set: setProcs, Log: log}
}

// Enabled says whether the process may be governed: not when the
// operator set GOMAXPROCS, nor on a single core.
func Enabled() bool {
	return os.Getenv("GOMAXPROCS") == "" && runtime.GOMAXPROCS(0) > 1
}

// state is where the governor is: on one processor or not, and how many
// idle periods in a row it has seen.
type state struct {
	one  bool
	idle int
}

// step is the decision for one period that used the fraction used of a
// core.
func (g *Governor) step(s state, used float64) state {
	switch {
	case used > g.Busy:
		return state{}
	case used >= g.Idle:
		return state{one: s.one}
	case s.one:
		return s
	case s.idle+1 >= g.IdlePeriods:
		return state{one: true}
	default:
		return state{idle: s.idle + 1}
	}
}

// Run governs until ctx ends, then restores the default. The process
// starts at its default, busy as it starts.
func (g *Governor) Run(ctx context.Context) {
	defer g.Set(0)
	tick := time.NewTicker(g.Every)
	defer tick.Stop()
	var s state
	last, err := g.CPU()
	if err != nil {
		g.Log.Warn("cpu time unreadable: processors not governed", "err", err)
		return
	}
	lastAt := time.Now()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		cpu, err := g.CPU()
		now := time.Now()
		if err != nil || now.Sub(lastAt) <= 0 {
			continue
		}
		used := float64(cpu-last) / float64(now.Sub(lastAt))
		last, lastAt = cpu, now
		next := g.step(s, used)
		if next.one != s.one {
			if next.one {
				g.Set(1)
				g.Log.Debug("idle: one processor", "cpu", used)
			} else {
				g.Set(0)
				g.Log.Debug("busy: all processors", "cpu", used)
			}
		}
		s = next
	}
}

func processCPU() (time.Duration, error) {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0, err
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano()), nil
}

func setProcs(n int) {
	if n == 0 {
		runtime.SetDefaultGOMAXPROCS()
		return
	}
	runtime.GOMAXPROCS(n)
}

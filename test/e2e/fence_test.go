package e2e

import (
	"errors"
	"flag"
	"fmt"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/corralhq/corral/api"
	"github.com/corralhq/corral/fencer"
	"github.com/corralhq/corral/internal/lab"
	"github.com/corralhq/corral/internal/testutil"
)

// The four ways a host's corrald loses its lease while the host's guests
// keep running: corrald SIGKILLed (a crash, the OOM killer), SIGSTOPped (a
// hang), or the host cut off from the network, as a follower or as the
// leader. In each, the guests must be dead before their copies start on
// another host.
const (
	faultKill      = "kill"
	faultStop      = "sigstop"
	faultPartition = "partition-follower"
	faultLeader    = "partition-leader"
)

var fenceRuns = flag.Int("fence-runs", 20, "runs per fault in BenchmarkFenceFaults")

// defaultFenceMargin is corrald's default fence_margin, which the lab uses.
const defaultFenceMargin = 200 * time.Millisecond

// fenceResult is one run of a fault, measured by the exact checker.
type fenceResult struct {
	fault string
	// gaps: for each guest, the time from its old copy's death to its new
	// copy's start on another host (negative: both ran).
	gaps []time.Duration
	// afterExpiry: for each guest, its old copy's death minus the end of
	// the victim's lease (negative: dead before the lease ended).
	afterExpiry []time.Duration
	overlaps    []string
}

// saturate starts a CPU hog on every host: with the busy guests, the
// machine's CPUs are saturated, as on a real host failing under load.
func (e *env) saturate() {
	for _, h := range e.lab.Hosts {
		if err := h.StartHog(e.ctx()); err != nil {
			e.t.Fatal(err)
		}
	}
	e.t.Cleanup(func() {
		for _, h := range e.lab.Hosts {
			h.StopHogs()
		}
	})
}

// busyDiskless is a diskless, kernel-booted guest that keeps its vCPU busy.
func (e *env) busyDiskless(name, host string) api.VMCreateRequest {
	req := e.vmRequest(name)
	req.Spec.Disks = nil
	req.Spec.Kernel.Cmdline += " corral.busy=1"
	req.Host = host
	return req
}

// fenceFault runs one fault on a host of e: two busy diskless guests on the
// victim, the fault, recovery on the survivors, then the victim back in
// service and the guests deleted, so that runs can follow each other on
// one lab.
func (e *env) fenceFault(fault string, seq int) fenceResult {
	e.t.Helper()
	leader := e.leader()
	victim := e.follower()
	if fault == faultLeader {
		victim = leader
	}
	h := e.host(victim)
	si := e.survivor(victim)
	w, err := e.lab.WatchGuests()
	if err != nil {
		e.t.Fatal(err)
	}
	defer w.Stop()
	var names []string
	for i := 0; i < 2; i++ {
		req := e.busyDiskless(fmt.Sprintf("f%d-%s-%d", seq, strings.SplitN(fault, "-", 2)[0], i), victim)
		if _, err := e.client(si).CreateVM(e.ctx(), req); err != nil {
			e.t.Fatal(err)
		}
		names = append(names, req.Name)
	}
	for _, n := range names {
		e.waitVM(n, 3*time.Minute, running)
	}
	// Each guest's QEMU is up on the victim, and the victim's fencer has
	// pinned it.
	testutil.Eventually(e.t, time.Minute, func() error {
		st, err := fencer.Query(e.ctx(), h.FencerStatusSocket())
		if err != nil {
			return err
		}
		for _, n := range names {
			if !slices.Contains(st.Guests, n) {
				return fmt.Errorf("fencer on %s: %s not pinned (%v)", victim, n, st.Guests)
			}
		}
		if st.Mode != fencer.Armed {
			return fmt.Errorf("fencer on %s is %s", victim, st.Mode)
		}
		return nil
	})

	switch fault {
	case faultKill:
		err = h.StopDaemon(e.ctx(), "corrald", true)
	case faultStop:
		err = h.Signal("corrald", syscall.SIGSTOP)
	case faultPartition, faultLeader:
		err = h.Partition(e.ctx())
	}
	if err != nil {
		e.t.Fatal(err)
	}
	e.waitMoved(si, names, victim, 3*time.Minute)
	// The old copies are dead (the new ones run, so this is a formality
	// unless the checker finds an overlap) and the new ones started.
	var rep lab.GuestReport
	testutil.Eventually(e.t, time.Minute, func() error {
		var err error
		if rep, err = w.Report(); err != nil {
			return err
		}
		for _, n := range names {
			var old, cur bool
			for _, l := range rep.LivesOf(n) {
				old = old || (l.Host == victim && l.End != 0)
				cur = cur || (l.Host != victim)
			}
			if !old || !cur {
				return fmt.Errorf("%s: old copy on %s ended: %v, new copy seen: %v", n, victim, old, cur)
			}
		}
		return nil
	})
	st, err := fencer.Query(e.ctx(), h.FencerStatusSocket())
	if err != nil {
		e.t.Fatal(err)
	}
	if len(st.Fences) == 0 {
		e.t.Fatalf("the fencer on %s never fired: %+v", victim, st)
	}
	last := st.Fences[len(st.Fences)-1]
	res := fenceResult{fault: fault}
	for _, o := range rep.Overlaps {
		res.overlaps = append(res.overlaps, fmt.Sprintf("%s on %s and %s for %v", o.VM, o.A.Host, o.B.Host, o.For))
	}
	for _, n := range names {
		for _, ho := range rep.Handovers {
			if ho.VM == n && ho.From.Host == victim {
				res.gaps = append(res.gaps, ho.Gap)
				res.afterExpiry = append(res.afterExpiry, ho.From.End-time.Duration(last.DeadlineNS))
			}
		}
	}
	e.t.Logf("run %d %s on %s: gaps %v, death - lease end %v, fence took %v", seq, fault, victim,
		res.gaps, res.afterExpiry, time.Duration(last.DeadNS-last.StartNS))
	if slices.ContainsFunc(res.gaps, func(g time.Duration) bool { return g > 10*time.Second }) {
		// A slow recovery is no safety failure, but say what took so long.
		if evs, err := e.client(si).Events(e.ctx(), 0, 0, 0); err == nil {
			for _, ev := range evs[max(len(evs)-40, 0):] {
				e.t.Logf("  slow recovery, event %s %s %s %s: %s", ev.Time.Format("15:04:05.000"), ev.Kind, ev.Host, ev.VM, ev.Message)
			}
		}
	}

	switch fault {
	case faultKill:
		err = h.StartDaemon(e.ctx(), "corrald")
	case faultStop:
		err = h.Signal("corrald", syscall.SIGCONT)
	case faultPartition, faultLeader:
		err = h.Heal(e.ctx())
	}
	if err != nil {
		e.t.Fatal(err)
	}
	testutil.Eventually(e.t, 2*time.Minute, func() error {
		hv, err := e.client(si).Host(e.ctx(), victim)
		if err != nil {
			return err
		}
		if hv.Mode != "active" || hv.Lease != "ok" {
			return fmt.Errorf("%s: mode %s, lease %s", victim, hv.Mode, hv.Lease)
		}
		return nil
	})
	for _, n := range names {
		if _, err := e.client(si).DeleteVM(e.ctx(), n, false); err != nil {
			e.t.Fatal(err)
		}
	}
	testutil.Eventually(e.t, 2*time.Minute, func() error {
		for _, n := range names {
			if _, err := e.client(si).VM(e.ctx(), n); !errors.Is(err, api.ErrNotFound) {
				return fmt.Errorf("%s not deleted yet (%v)", n, err)
			}
		}
		return nil
	})
	return res
}

// check fails the test on an overlap or a gap under 0.9 x fence_margin.
func (r fenceResult) check(t testing.TB) {
	t.Helper()
	if len(r.overlaps) > 0 {
		t.Fatalf("%s: a guest ran on two hosts at once: %v", r.fault, r.overlaps)
	}
	if len(r.gaps) != 2 {
		t.Fatalf("%s: %d handovers measured, want 2", r.fault, len(r.gaps))
	}
	for _, g := range r.gaps {
		if g < defaultFenceMargin*9/10 {
			t.Fatalf("%s: a new copy started %v after the old one died, want >= %v", r.fault, g, defaultFenceMargin*9/10)
		}
	}
}

func newSaturatedEnv(t testing.TB) *env {
	e := newEnv(t, 3, "")
	e.saturate()
	return e
}

// TestFenceCorraldKilled: corrald SIGKILLed on a host with guests, under
// CPU saturation: the fencer kills the guests when the lease ends, before
// the leader recovers them elsewhere. No copy overlaps another.
func TestFenceCorraldKilled(t *testing.T) { newSaturatedEnv(t).fenceFault(faultKill, 0).check(t) }

// TestFenceCorraldStopped: the same with corrald hung (SIGSTOP).
func TestFenceCorraldStopped(t *testing.T) { newSaturatedEnv(t).fenceFault(faultStop, 0).check(t) }

// TestFencePartitionedHosts: a follower cut off, then the leader cut off.
func TestFencePartitionedHosts(t *testing.T) {
	e := newSaturatedEnv(t)
	e.fenceFault(faultPartition, 0).check(t)
	e.fenceFault(faultLeader, 1).check(t)
}

// BenchmarkFenceFaults runs each fault -fence-runs times under CPU
// saturation and prints the distributions of the gaps and of the guests'
// deaths relative to the lease's end (make bench-fence).
func BenchmarkFenceFaults(b *testing.B) {
	e := newSaturatedEnv(b)
	for _, fault := range []string{faultKill, faultStop, faultPartition, faultLeader} {
		var gaps, after []time.Duration
		for i := 0; i < *fenceRuns; i++ {
			r := e.fenceFault(fault, i)
			r.check(b)
			gaps = append(gaps, r.gaps...)
			after = append(after, r.afterExpiry...)
		}
		fmt.Printf("%-19s runs %d, overlaps 0, gap death->new start: %s\n", fault, *fenceRuns, dist(gaps))
		fmt.Printf("%-19s          guest death - lease end:     %s\n", "", dist(after))
	}
}

// dist summarises durations: min, median, p90, max.
func dist(ds []time.Duration) string {
	if len(ds) == 0 {
		return "none"
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	q := func(p float64) time.Duration { return s[int(p*float64(len(s)-1))] }
	r := func(d time.Duration) string { return d.Round(time.Millisecond).String() }
	return fmt.Sprintf("min %s, median %s, p90 %s, max %s (n=%d)", r(s[0]), r(q(0.5)), r(q(0.9)), r(s[len(s)-1]), len(s))
}

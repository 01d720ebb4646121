package sim

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"math"
	"os"
	"runtime/debug"
	"slices"
	"strings"
	"syscall"
	"testing"
	"testing/synctest"
	"time"
	"unsafe"

	"github.com/corralhq/corral/daemon/controller"
	"github.com/corralhq/corral/model"
	"github.com/corralhq/corral/raftlog"
)

var (
	flagHosts = flag.Int("sim.hosts", 200, "simulated hosts")
	flagVMs   = flag.Int("sim.vms", 10000, "simulated VMs (HA, spread over the hosts)")
	flagRack  = flag.Int("sim.rack", 40, "hosts per rack")
	flagDrain = flag.Int("sim.drain", 5, "hosts drained in the rolling drain")
	flagWave  = flag.Int("sim.drain-wave", 10, "hosts of the rolling drain drained at once: each wave is drained, then put back in service, before the next")
	flagSeed  = flag.Uint64("sim.seed", 1, "seed of the network's delays and losses and of the elections")
	flagLoss  = flag.Float64("sim.loss", 0.001, "probability that a message is lost")
	flagOut   = flag.String("sim.out", "", "write the report as JSON to this file")
)

// scenarioResult is what one scenario measured, in simulated time.
type scenarioResult struct {
	Name        string  `json:"name"`
	VMs         int     `json:"vms"`     // the guests it had to bring back (or move)
	Seconds     float64 `json:"seconds"` // until the last is back
	P50         float64 `json:"p50_seconds,omitempty"`
	P99         float64 `json:"p99_seconds,omitempty"`
	RaftEntries int64   `json:"raft_entries"`
	RaftBytes   int64   `json:"raft_bytes"`
	// Renewal traffic is in the entries too: EntriesPerSecIdle of the
	// report tells how much of it there is without any incident.
	CPUPerSimSecond float64 `json:"cpu_seconds_per_simulated_second"`
	Elections       int     `json:"elections"`
}

type report struct {
	Hosts             int              `json:"hosts"`
	VMs               int              `json:"vms"`
	Seed              uint64           `json:"seed"`
	SetupSeconds      float64          `json:"setup_simulated_seconds"`
	EntriesPerSecIdle float64          `json:"raft_entries_per_second_idle"`
	BytesPerSecIdle   float64          `json:"raft_bytes_per_second_idle"`
	CPUPerSimSecIdle  float64          `json:"cpu_seconds_per_simulated_second_idle"`
	Scenarios         []scenarioResult `json:"scenarios"`
	GossipDetectSec   float64          `json:"gossip_failure_detection_seconds"`
	GossipSpreadSec   float64          `json:"gossip_dissemination_seconds"`
	Starts            int64            `json:"guest_starts_checked"`
	Scans             int64            `json:"hypervisor_scans"`
	Violations        []string         `json:"violations"`
	WallSeconds       float64          `json:"wall_seconds"`
	SimSeconds        float64          `json:"simulated_seconds"`
}

// wallNow is the machine's time: in the bubble, time.Now is simulated,
// but the CPU clock of the process is not.
func wallNow() time.Time {
	var ts syscall.Timespec
	syscall.Syscall(syscall.SYS_CLOCK_GETTIME, 1 /* CLOCK_MONOTONIC */, uintptr(unsafe.Pointer(&ts)), 0)
	return time.Unix(ts.Sec, ts.Nsec)
}

func cpuSeconds() float64 {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano()).Seconds()
}

// TestSim runs the scenarios of the simulator (see doc.go) and fails on any
// two running copies of a VM or on a scenario that does not finish.
func TestSim(t *testing.T) {
	if testing.Short() {
		t.Skip("the simulator runs a few minutes")
	}
	n, vms, rack := *flagHosts, *flagVMs, *flagRack
	if n < 5*rack || vms < n {
		t.Fatalf("need at least 5 racks (-sim.hosts >= 5 × -sim.rack) and a VM per host")
	}
	// The simulation's heap is its state and short-lived copies of it:
	// collect less often (the machine has memory to spare).
	defer debug.SetGCPercent(debug.SetGCPercent(400))
	wall := time.Now()
	var rep report
	synctest.Test(t, func(t *testing.T) {
		rep = run(t, n, vms, rack, *flagDrain, *flagSeed, *flagLoss)
	})
	rep.WallSeconds = time.Since(wall).Seconds()
	t.Logf("simulator: %d hosts, %d VMs, seed %d: %.0f simulated seconds in %.1f s of wall time", rep.Hosts, rep.VMs, rep.Seed, rep.SimSeconds, rep.WallSeconds)
	t.Logf("  setup (register hosts, start every VM): %.1f s", rep.SetupSeconds)
	t.Logf("  idle: %.1f Raft entries/s, %.0f B/s (lease renewals), %.2f CPU s per simulated s", rep.EntriesPerSecIdle, rep.BytesPerSecIdle, rep.CPUPerSimSecIdle)
	for _, s := range rep.Scenarios {
		s.log(t)
	}
	t.Logf("  gossip at %d hosts (memberlist's detection; spread: an epidemic estimate): failure known after %.1f s, an update spread in %.1f s", n, rep.GossipDetectSec, rep.GossipSpreadSec)
	t.Logf("  invariant: %d guest starts and %d scans of every hypervisor, %d violations", rep.Starts, rep.Scans, len(rep.Violations))
	for _, v := range rep.Violations {
		t.Errorf("two running copies: %s", v)
	}
	if *flagOut != "" {
		b, _ := json.MarshalIndent(rep, "", "  ")
		if err := os.WriteFile(*flagOut, append(b, '\n'), 0o644); err != nil {
			t.Error(err)
		}
	}
}

func run(t *testing.T, n, vms, rack, drain int, seed uint64, loss float64) report {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel() // a failed test ends every loop of the bubble too
	simStart := time.Now()
	wallStart := wallNow()
	progress := func(what string) {
		t.Logf("%7.1f s simulated, %6.1f s wall: %s", time.Since(simStart).Seconds(), wallNow().Sub(wallStart).Seconds(), what)
	}
	w := newWorld(n, rack, seed, loss)
	rep := report{Hosts: n, VMs: vms, Seed: seed}
	// Voters in the first three racks; the first leads.
	for i := range 3 {
		h := w.hosts[i*rack]
		w.servers[h.name] = raftlog.Server{ID: h.name, Address: h.addr + ":7947", Voter: true}
	}
	for _, h := range w.hosts {
		h.start(ctx)
	}
	w.elect(ctx, w.hosts[0])

	// Scans of every hypervisor, once a simulated second.
	scanDone := make(chan struct{})
	go func() {
		defer close(scanDone)
		for sleep(ctx, time.Second) {
			w.scan()
		}
	}()

	waitFor(t, ctx, "every host registered", 5*time.Minute, func() bool { return len(w.mem.Hosts()) == n })
	// The VMs: created straight in the state (placement of 50,000 VMs one
	// request at a time is not what this measures), spread evenly.
	var batch []raftlog.Command
	flush := func() {
		if len(batch) == 0 {
			return
		}
		b := raftlog.Batch{Entries: make([][]byte, len(batch))}
		for i, c := range batch {
			b.Entries[i] = raftlog.MustEncode(c)
		}
		if _, err := w.apply(ctx, b); err != nil {
			t.Fatalf("create VMs: %v", err)
		}
		batch = batch[:0]
	}
	for i := range vms {
		spec := model.VMSpec{VCPUs: 1, MemoryMiB: 512, Disks: []model.DiskSpec{{SizeMiB: 10}}, HA: model.DefaultHA()}
		spec.HA.Enabled, spec.HA.Priority = true, i%3
		name := fmt.Sprintf("vm%05d", i)
		batch = append(batch, raftlog.CreateVM{VM: model.VM{ID: "id-" + name, Name: name, Host: w.hosts[i%n].name, Spec: spec}})
		if len(batch) == 500 {
			flush()
		}
	}
	flush()
	allRunning := func() bool {
		w.runMu.Lock()
		defer w.runMu.Unlock()
		c := 0
		for _, on := range w.running {
			if len(on) > 0 {
				c++
			}
		}
		return c == vms
	}
	waitFor(t, ctx, "every VM running", 10*time.Minute, allRunning)
	rep.SetupSeconds = time.Since(simStart).Seconds()
	progress("every VM running")

	// Idle: lease renewals only.
	e0, b0, c0, s0 := w.entries.Load(), w.bytes.Load(), cpuSeconds(), time.Now()
	sleep(ctx, 10*time.Second)
	d := time.Since(s0).Seconds()
	rep.EntriesPerSecIdle = float64(w.entries.Load()-e0) / d
	rep.BytesPerSecIdle = float64(w.bytes.Load()-b0) / d
	rep.CPUPerSimSecIdle = (cpuSeconds() - c0) / d
	progress("idle measured")

	lastRack := (n - 1) / rack
	rackHosts := func(r int) []*host {
		var out []*host
		for _, h := range w.hosts {
			if h.rack == r {
				out = append(out, h)
			}
		}
		return out
	}
	// A rack without a voter lost (power).
	rep.Scenarios = append(rep.Scenarios, w.lose(t, ctx, "rack lost (power)", rackHosts(lastRack), w.power))
	waitFor(t, ctx, "settled", time.Minute, w.settled)
	progress("a rack lost and recovered")
	// The leader's rack lost (power), mid-storm of its own recovery.
	leaderRack := w.currentLeader().rack
	rep.Scenarios = append(rep.Scenarios, w.lose(t, ctx, "rack with the leader lost (power)", rackHosts(leaderRack), w.power))
	waitFor(t, ctx, "settled", time.Minute, w.settled)
	// The leader replaces the lost voter (after dead_voter_after).
	waitFor(t, ctx, "three live voters", 3*time.Minute, func() bool {
		w.mu.Lock()
		defer w.mu.Unlock()
		live := 0
		for _, id := range w.voters() {
			if h := w.byName[id]; h.up && !h.cut {
				live++
			}
		}
		return live == 3
	})
	progress("the leader's rack lost and recovered, its voter replaced")
	// A rack cut off (its switch failed): its hosts run on and must fence
	// themselves before their guests start elsewhere.
	cutRack := lastRack - 1
	if cutRack == leaderRack {
		cutRack--
	}
	rep.Scenarios = append(rep.Scenarios, w.lose(t, ctx, "rack cut off (switch)", rackHosts(cutRack), w.cutOff))
	waitFor(t, ctx, "settled", time.Minute, w.settled)
	progress("a rack cut off and recovered")
	// A rolling drain: a wave of hosts at a time, each wave back in
	// service before the next is drained.
	var live []*host
	leader := w.currentLeader()
	w.mu.Lock()
	for _, h := range w.hosts {
		if h.up && !h.cut && h != leader {
			live = append(live, h)
		}
	}
	w.mu.Unlock()
	rep.Scenarios = append(rep.Scenarios, w.rollingDrain(t, ctx, live[:min(drain, len(live))], *flagWave))
	progress("rolling drain done")

	rep.GossipDetectSec = (probeInterval + suspicionTimeout(n)).Seconds()
	rep.GossipSpreadSec = gossipRounds(n) * gossipInterval.Seconds()
	rep.SimSeconds = time.Since(simStart).Seconds()
	cancel()
	for _, h := range w.hosts {
		h.done.Wait()
		h.fencer.Release()
	}
	<-scanDone
	w.scan()
	w.runMu.Lock()
	rep.Starts, rep.Scans, rep.Violations = w.starts, w.checks, w.violations
	w.runMu.Unlock()
	return rep
}

// gossipRounds: memberlist spreads an update to gossipNodes random peers
// each gossip interval, so (epidemic model) it reaches n hosts in about
// log(n)/log(1+gossipNodes) rounds, plus ln(n) rounds for the last few.
func gossipRounds(n int) float64 {
	return math.Ceil(math.Log(float64(n))/math.Log(1+gossipNodes) + math.Log(float64(n))/float64(gossipNodes))
}

// lose takes hosts out with how (power or cutOff) and measures until every
// HA VM they ran runs on a live host again.
func (w *world) lose(t *testing.T, ctx context.Context, name string, hosts []*host, how func(context.Context, *host)) scenarioResult {
	lost := map[string]bool{}
	for _, h := range hosts {
		for _, v := range w.vmsOf(h.name) {
			if v.Host == h.name && v.Spec.HA.Enabled {
				lost[v.Name] = true
			}
		}
	}
	count := len(lost)
	w.mu.Lock()
	el := w.elections
	w.mu.Unlock()
	e0, b0, c0, s0 := w.entries.Load(), w.bytes.Load(), cpuSeconds(), time.Now()
	for _, h := range hosts {
		how(ctx, h)
	}
	var back []float64 // when each came back, to the 100 ms of the poll
	var placed []float64
	from := map[string]string{}
	for vm := range lost {
		v, _ := w.mem.VM(vm)
		from[vm] = v.Host
	}
	waitFor(t, ctx, name+": every HA VM running again", 5*time.Minute, func() bool {
		for vm, old := range from {
			if v, err := w.mem.VM(vm); err == nil && v.Host != old {
				placed = append(placed, time.Since(s0).Seconds())
				delete(from, vm)
			}
		}
		for vm := range lost {
			if w.runningOnLiveHost(vm) {
				back = append(back, time.Since(s0).Seconds())
				delete(lost, vm)
			}
		}
		return len(lost) == 0
	})
	d := time.Since(s0).Seconds()
	slices.Sort(back)
	slices.Sort(placed)
	if len(placed) > 0 {
		t.Logf("  %s: placed elsewhere after p50 %.1f s, p99 %.1f s, last %.1f s", name, placed[len(placed)/2], placed[len(placed)*99/100], placed[len(placed)-1])
	}
	if p := os.Getenv("SIM_EVENTS"); p != "" && name == "rack lost (power)" {
		f, _ := os.Create(p)
		for _, e := range w.mem.Events(0, 1<<30) {
			if !e.Time.Before(s0) {
				fmt.Fprintf(f, "%.3f %s %s %s %s\n", e.Time.Sub(s0).Seconds(), e.Kind, e.Host, e.VM, e.Message)
			}
		}
		f.Close()
	}
	w.mu.Lock()
	el = w.elections - el
	w.mu.Unlock()
	res := scenarioResult{Name: name, VMs: count, Seconds: d, P50: back[len(back)/2], P99: back[len(back)*99/100], RaftEntries: w.entries.Load() - e0, RaftBytes: w.bytes.Load() - b0,
		CPUPerSimSecond: (cpuSeconds() - c0) / d, Elections: el}
	res.log(t)
	return res
}

func (s scenarioResult) log(t *testing.T) {
	pct := ""
	if s.P99 > 0 {
		pct = fmt.Sprintf(" (p50 %.1f, p99 %.1f)", s.P50, s.P99)
	}
	t.Logf("  %-34s %5d VMs  %6.2f s%s  %6d Raft entries  %9d B  %.2f CPU s/sim s  %d elections",
		s.Name, s.VMs, s.Seconds, pct, s.RaftEntries, s.RaftBytes, s.CPUPerSimSecond, s.Elections)
}

// settled: no VM waits for a host (every VM of the state runs somewhere
// live, or has failed for want of room).
func (w *world) settled() bool {
	for _, v := range w.mem.VMs() {
		if v.Failed == "" && v.Desired == model.PowerRunning && !w.runningOnLiveHost(v.Name) {
			return false
		}
	}
	return true
}

// rollingDrain drains the hosts wave hosts at a time by live migration:
// it drains every host of a wave, waits until they are all empty, puts
// them back in service, then goes on with the next wave (their guests may
// land on hosts of later waves, and move again then, as in a real rolling
// maintenance).
func (w *world) rollingDrain(t *testing.T, ctx context.Context, hosts []*host, wave int) scenarioResult {
	wave = max(wave, 1)
	res := scenarioResult{Name: fmt.Sprintf("rolling drain of %d hosts, %d at once", len(hosts), min(wave, len(hosts)))}
	e0, b0, c0, s0 := w.entries.Load(), w.bytes.Load(), cpuSeconds(), time.Now()
	for i := 0; i < len(hosts); i += wave {
		if i > 0 {
			t.Logf("  rolling drain: %d of %d hosts done, %d VMs moved, %.0f s", i, len(hosts), res.VMs, time.Since(s0).Seconds())
		}
		batch := hosts[i:min(i+wave, len(hosts))]
		for _, h := range batch {
			res.VMs += len(w.vmsOf(h.name))
			if err := w.leaderCall(ctx, func(l *controller.Leader) error {
				_, err := l.DrainHost(ctx, controller.NameRequest{Name: h.name})
				return err
			}); err != nil {
				t.Fatalf("drain %s: %v", h.name, err)
			}
		}
		for _, h := range batch {
			waitFor(t, ctx, "drain of "+h.name, 10*time.Minute, func() bool {
				hh, err := w.mem.Host(h.name)
				return err == nil && !hh.Draining && len(w.vmsOf(h.name)) == 0
			})
		}
		for _, h := range batch {
			if err := w.leaderCall(ctx, func(l *controller.Leader) error {
				_, err := l.RestoreHost(ctx, controller.HostRestoreRequest{Name: h.name})
				return err
			}); err != nil {
				t.Fatalf("restore %s: %v", h.name, err)
			}
		}
	}
	res.Seconds = time.Since(s0).Seconds()
	res.RaftEntries, res.RaftBytes = w.entries.Load()-e0, w.bytes.Load()-b0
	res.CPUPerSimSecond = (cpuSeconds() - c0) / res.Seconds
	res.log(t)
	return res
}

// leaderCall runs an operator's request on the leader, retrying while
// there is none or it is not ready.
func (w *world) leaderCall(ctx context.Context, fn func(*controller.Leader) error) error {
	var err error
	for range 100 {
		if l := w.currentLeader(); l != nil {
			if err = fn(l.leader); err == nil || !strings.Contains(err.Error(), "leader") {
				return err
			}
		}
		sleep(ctx, 100*time.Millisecond)
	}
	return err
}

// waitFor polls cond every 100 ms of simulated time.
func waitFor(t *testing.T, ctx context.Context, what string, limit time.Duration, cond func() bool) {
	t.Helper()
	end := time.Now().Add(limit)
	for !cond() {
		if time.Now().After(end) {
			t.Fatalf("%s: not after %v (simulated)", what, limit)
		}
		if !sleep(ctx, 100*time.Millisecond) {
			t.Fatalf("%s: cancelled", what)
		}
	}
}

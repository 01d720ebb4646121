package controller

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/corralhq/corral/daemon/hypervisor"
	"github.com/corralhq/corral/internal/testutil"
	"github.com/corralhq/corral/model"
)

// fakeAgent answers AgentExec with the exit code and output set last.
type fakeAgent struct {
	mu    sync.Mutex
	code  int
	out   string
	calls int
}

func (a *fakeAgent) set(code int, out string) { a.mu.Lock(); a.code, a.out = code, out; a.mu.Unlock() }
func (a *fakeAgent) count() int               { a.mu.Lock(); defer a.mu.Unlock(); return a.calls }
func (a *fakeAgent) exec(name string, argv []string) (hypervisor.ExecResult, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.calls++
	if len(argv) != 3 || argv[0] != "/bin/sh" || argv[1] != "-c" {
		return hypervisor.ExecResult{}, fmt.Errorf("unexpected argv %q", argv)
	}
	return hypervisor.ExecResult{ExitCode: a.code, Output: a.out}, nil
}

// waitHealth waits until the VM reports health want. The probe loop ticks
// on the fake clock: the clock moves on a probe tick at a time meanwhile.
func (e *hostEnv) waitHealth(t *testing.T, name, want string) model.VM {
	t.Helper()
	var v model.VM
	testutil.Eventually(t, 5*time.Second, func() error {
		v, _ = e.store.VM(name)
		if v.Actual.State != model.StateRunning || v.Actual.Health != want {
			e.clock.Advance(e.loop.cfg.ProbeTick)
			return fmt.Errorf("%s: %s, health %q (%s), want %q", name, v.Actual.State, v.Actual.Health, v.Actual.HealthDetail, want)
		}
		return nil
	})
	return v
}

// probeAfter advances the clock by d and waits for one more probe, its
// result recorded (so that the next step starts from it). The probe loop
// ticks on the fake clock, and a tick that finds the last probe still
// running starts none, so the clock moves on a tick at a time while it
// waits.
func (e *hostEnv) probeAfter(t *testing.T, a *fakeAgent, d time.Duration) {
	t.Helper()
	n := a.count()
	e.clock.Advance(d)
	testutil.Eventually(t, 5*time.Second, func() error {
		if a.count() == n {
			e.clock.Advance(e.loop.cfg.ProbeTick)
			return fmt.Errorf("no probe after %d", n)
		}
		if e.probing() {
			return fmt.Errorf("probe %d not recorded yet", n+1)
		}
		return nil
	})
}

// probing reports whether a probe's result is still to be recorded.
func (e *hostEnv) probing() bool {
	e.loop.mu.Lock()
	defer e.loop.mu.Unlock()
	for _, tr := range e.loop.track {
		if tr.health.probing {
			return true
		}
	}
	return false
}

// A guest with a command health check starts "starting"; failures within
// its start period do not count; one pass makes it healthy; Retries
// failures in a row unhealthy, with the command's output; a restart of
// the guest starts over; and a guest never healthy turns unhealthy once
// its start period is over.
func TestHostLoopHealthExec(t *testing.T) {
	e := newHostEnv(t)
	a := &fakeAgent{code: 1, out: "not yet"}
	e.drv.SetAgent(a.exec, nil)
	stop := e.run(t)
	e.create(t, "web", "h1", func(v *model.VM) {
		v.Spec.Health = &model.HealthCheck{Exec: "test -e /run/ready", IntervalSec: 10, Retries: 2, StartSec: 60}
	})
	e.waitHealth(t, "web", model.HealthStarting)
	// Failing within the start period: still starting.
	e.probeAfter(t, a, 10*time.Second)
	e.probeAfter(t, a, 10*time.Second)
	e.waitHealth(t, "web", model.HealthStarting)

	a.set(0, "")
	e.probeAfter(t, a, 10*time.Second)
	e.waitHealth(t, "web", model.HealthHealthy)

	// corrald restarts: the guest stays healthy, no "starting" is reported.
	before := len(e.rep.reports())
	e.restartCorrald(t, stop)
	e.probeAfter(t, a, 10*time.Second)
	for _, r := range e.rep.reports()[before:] {
		if r.Name == "web" && r.Health != model.HealthHealthy {
			t.Fatalf("after a corrald restart, web reported %q", r.Health)
		}
	}

	a.set(1, "service down\n")
	e.probeAfter(t, a, 10*time.Second)
	e.waitHealth(t, "web", model.HealthHealthy) // one failure is not enough
	e.probeAfter(t, a, 10*time.Second)
	v := e.waitHealth(t, "web", model.HealthUnhealthy)
	if !strings.Contains(v.Actual.HealthDetail, `"test -e /run/ready" exited 1: service down`) {
		t.Fatalf("detail %q", v.Actual.HealthDetail)
	}

	// The guest crashes and is restarted: its health starts over.
	e.clock.Advance(time.Second)
	e.drv.Crash("web")
	e.waitRestarts(t, "web", 1)
	e.waitHealth(t, "web", model.HealthStarting)
	// Never healthy: past the start period, two failures make it
	// unhealthy. The clock passes every deadline on its way, so the probes
	// of the start period run (and do not count) and at most one of those
	// 61 s is past it.
	e.probeAfter(t, a, 61*time.Second)
	e.waitHealth(t, "web", model.HealthStarting)
	e.probeAfter(t, a, 10*time.Second)
	e.probeAfter(t, a, 10*time.Second)
	e.waitHealth(t, "web", model.HealthUnhealthy)

	// A VM without a check reports no health and is never probed.
	e.create(t, "plain", "h1", nil)
	if v := e.waitState(t, "plain", model.StateRunning); v.Actual.Health != "" {
		t.Fatalf("health of a VM without a check: %q", v.Actual.Health)
	}
}

// A TCP check connects to the address the guest agent reports: healthy
// while something listens there, unhealthy once nothing does.
func TestHostLoopHealthTCP(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	port := ln.Addr().(*net.TCPAddr).Port
	e := newHostEnv(t)
	// The guest's NIC is on "lo" here: the check dials through it only.
	e.loop.cfg.Bridge = func(string) string { return "lo" }
	var mu sync.Mutex
	probes := 0
	e.drv.SetAgent(nil, func(name string) []netip.Addr {
		mu.Lock()
		defer mu.Unlock()
		probes++
		return []netip.Addr{netip.MustParseAddr("fe80::1"), netip.MustParseAddr("127.0.0.1")}
	})
	e.start(t)
	e.create(t, "web", "h1", func(v *model.VM) {
		v.Spec.Health = &model.HealthCheck{TCPPort: port, IntervalSec: 1, Retries: 1, StartSec: 1}
		v.Spec.NICs = []model.NICSpec{{Network: "n1", MAC: "52:54:00:00:00:01"}}
	})
	e.waitHealth(t, "web", model.HealthHealthy)
	// The same address, but the guest's NIC on another device: the host
	// does not reach it (nor anything else) through its other interfaces.
	ctx := context.Background()
	if ok, detail := e.loop.probe(ctx, "web", model.HealthCheck{TCPPort: port}, []string{"corral-none"}); ok || !strings.Contains(detail, "corral-none") {
		t.Fatalf("dialled past the guest's bridge: %v %q", ok, detail)
	}
	if ok, detail := e.loop.probe(ctx, "web", model.HealthCheck{TCPPort: port}, nil); ok || !strings.Contains(detail, "no NIC") {
		t.Fatalf("dialled a guest without NICs: %v %q", ok, detail)
	}
	ln.Close()
	var v model.VM
	testutil.Eventually(t, 5*time.Second, func() error {
		e.clock.Advance(time.Second)
		v, _ = e.store.VM("web")
		if v.Actual.Health != model.HealthUnhealthy {
			return fmt.Errorf("health %q", v.Actual.Health)
		}
		return nil
	})
	if !strings.Contains(v.Actual.HealthDetail, "tcp:") || !strings.Contains(v.Actual.HealthDetail, "refused") {
		t.Fatalf("detail %q", v.Actual.HealthDetail)
	}
}

// The probe loop parks, its ticker stopped, while no guest here has a
// check (an idle host wakes for nothing), and ticks again once one has.
func TestProbeLoopParksWithoutChecks(t *testing.T) {
	e := newHostEnv(t)
	tr := &vmTrack{}
	setCheck := func(on bool) { // as decide does, through healthReport
		e.loop.mu.Lock()
		defer e.loop.mu.Unlock()
		e.loop.track["web"] = tr
		if !on {
			tr.health.check = nil
			return
		}
		e.loop.healthReport(tr, model.VM{Name: "web", Spec: model.VMSpec{Health: &model.HealthCheck{Exec: "true"}}}, e.clock.Now(), e.clock.Now())
	}
	armed := func(want int) {
		t.Helper()
		testutil.Eventually(t, 5*time.Second, func() error {
			if n := e.clock.Waiters(); n != want {
				e.clock.Advance(e.loop.cfg.ProbeTick) // let a ticking loop see the change
				return fmt.Errorf("%d timers armed, want %d", n, want)
			}
			return nil
		})
	}
	e.drv.SetAgent((&fakeAgent{}).exec, nil)
	setCheck(true)
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	done := make(chan struct{})
	go func() { e.loop.probeLoop(ctx, &wg); close(done) }()
	defer func() { cancel(); <-done; wg.Wait() }()
	armed(1)
	setCheck(false)
	armed(0)
	setCheck(true)
	armed(1)
}

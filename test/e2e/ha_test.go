package e2e

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/corralhq/corral/api"
	"github.com/corralhq/corral/daemon/hypervisor"
	"github.com/corralhq/corral/daemon/hypervisor/libvirt"
	"github.com/corralhq/corral/fencer"
	"github.com/corralhq/corral/internal/lab"
	"github.com/corralhq/corral/internal/testutil"
)

// pinned creates n guests on host h and waits until they boot.
func (e *env) pinned(h, prefix string, n int) []string {
	e.t.Helper()
	var names []string
	for i := 0; i < n; i++ {
		req := e.vmRequest(fmt.Sprintf("%s%d", prefix, i))
		req.Host = h
		if _, err := e.client(0).CreateVM(e.ctx(), req); err != nil {
			e.t.Fatal(err)
		}
		names = append(names, req.Name)
	}
	for _, n := range names {
		e.waitTicks(n, 1)
	}
	return names
}

// leader returns the current leader's name.
func (e *env) leader() string {
	e.t.Helper()
	for i := range e.lab.Hosts {
		if s, err := e.client(i).Status(e.ctx()); err == nil && s.Leader != "" {
			return s.Leader
		}
	}
	e.t.Fatal("no leader")
	return ""
}

// survivor returns a client of a host other than h.
func (e *env) survivor(h string) int {
	for i, x := range e.lab.Hosts {
		if x.Name != h {
			return i
		}
	}
	return 0
}

// checker polls every host's libvirt every 100ms and records any VM seen
// running on two hosts. One round lists the hosts one after the other, so
// a live migration's hand-over between two listings (the source listed
// before it stopped, the target after it resumed) looks like two copies;
// a suspect is therefore confirmed by listing its hosts again: a copy
// still running on the host listed first was running through the
// instant the other was seen. An overlap shorter than that second look
// (tens of ms) escapes this checker; the exact checker below, which
// follows every QEMU from the kernel, is the one for such windows.
type checker struct {
	mu      sync.Mutex
	doubles []string
	rounds  int
	stop    func()
}

func (e *env) startChecker() *checker {
	ctx, cancel := context.WithCancel(context.Background())
	c := &checker{}
	var drivers []*libvirt.Driver
	var wg sync.WaitGroup
	for _, h := range e.lab.Hosts {
		d := libvirt.New(libvirt.Config{URI: "qemu:///system", Socket: h.LibvirtSocket(), PoolDir: filepath.Join(e.lab.SharedDir(), "pool")})
		drivers = append(drivers, d)
		wg.Add(1)
		go func() { defer wg.Done(); d.Run(ctx) }()
	}
	// running lists, host by host, the VMs running there (only running
	// counts: a paused QEMU, starting up or the receiving end of a live
	// migration, runs no guest code).
	running := func(hosts []int) map[string][]int {
		where := map[string][]int{}
		for _, i := range hosts {
			doms, err := drivers[i].List(ctx)
			if err != nil {
				continue // libvirtd dead (host killed): nothing runs there
			}
			for _, dm := range doms {
				if dm.State == hypervisor.Running {
					where[dm.Name] = append(where[dm.Name], i)
				}
			}
		}
		return where
	}
	all := make([]int, len(drivers))
	for i := range all {
		all[i] = i
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		tick := time.NewTicker(100 * time.Millisecond)
		defer tick.Stop()
		for {
			var found []string
			for vm, hs := range running(all) {
				if len(hs) < 2 {
					continue
				}
				if again := running(hs)[vm]; len(again) > 1 {
					var names []string
					for _, i := range again {
						names = append(names, e.lab.Hosts[i].Name)
					}
					found = append(found, fmt.Sprintf("%s on %v at %s", vm, names, time.Now().Format("15:04:05.000")))
				}
			}
			c.mu.Lock()
			c.rounds++
			c.doubles = append(c.doubles, found...)
			c.mu.Unlock()
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
			}
		}
	}()
	c.stop = func() { cancel(); wg.Wait() }
	e.t.Cleanup(c.stop)
	return c
}

func (c *checker) check(t *testing.T) {
	t.Helper()
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.doubles) > 0 {
		t.Fatalf("a VM ran on two hosts at once: %v", c.doubles)
	}
	if c.rounds < 10 {
		t.Fatalf("checker ran only %d rounds", c.rounds)
	}
	t.Logf("checker: %d rounds of every host's libvirt, no VM ever running twice", c.rounds)
}

// exactChecker is the exact double-run checker: the life of every QEMU
// from the kernel (Lab.WatchGuests), each VM's copies compared across
// hosts. It cannot tell a paused QEMU from a running one, so tests that
// live-migrate, or whose second copy is refused by a disk lock after QEMU
// started, use the libvirt checker above.
type exactChecker struct {
	w       *lab.GuestWatch
	rep     lab.GuestReport
	err     error
	stopped bool
}

func (e *env) startExactChecker() *exactChecker {
	w, err := e.lab.WatchGuests()
	if err != nil {
		e.t.Fatal(err)
	}
	c := &exactChecker{w: w}
	e.t.Cleanup(c.stop)
	return c
}

func (c *exactChecker) stop() {
	if !c.stopped {
		c.stopped = true
		c.rep, c.err = c.w.Stop()
	}
}

func (c *exactChecker) check(t *testing.T) {
	t.Helper()
	c.stop()
	if c.err != nil {
		t.Fatal(c.err)
	}
	// A live migration's target QEMU lives beside the source's while it
	// receives the guest: an overlap, and not a double run.
	if d := c.rep.DoubleRuns(); len(d) > 0 {
		o := d[0]
		t.Fatalf("%d double runs; %s ran on %s and %s at once for %v", len(d), o.VM, o.A.Host, o.B.Host, o.For)
	}
	migrations := len(c.rep.Overlaps) - len(c.rep.DoubleRuns())
	if h, ok := c.rep.MinGap(); ok && !h.To.Incoming {
		t.Logf("exact checker: %d QEMU lives, %d live migrations, no VM on two hosts at once; smallest handover gap %v (%s, %s -> %s)",
			len(c.rep.Lives), migrations, h.Gap.Round(time.Millisecond), h.VM, h.From.Host, h.To.Host)
	} else {
		t.Logf("exact checker: %d QEMU lives, %d live migrations, no VM on two hosts at once", len(c.rep.Lives), migrations)
	}
}

// waitMoved waits until every named VM runs on a host other than from and
// returns them.
func (e *env) waitMoved(ci int, names []string, from string, timeout time.Duration) map[string]api.VM {
	e.t.Helper()
	out := map[string]api.VM{}
	testutil.Eventually(e.t, timeout, func() error {
		for _, n := range names {
			v, err := e.client(ci).VM(e.ctx(), n)
			if err != nil {
				return err
			}
			if v.Host == from || v.State != "running" {
				return fmt.Errorf("%s on %s is %s (%s)", n, v.Host, v.State, v.Message)
			}
			out[n] = v
		}
		return nil
	})
	return out
}

// counters returns each VM's last disk counter from its console log.
func (e *env) counters(ci int, names []string) map[string]guestLog {
	out := map[string]guestLog{}
	for _, n := range names {
		// Right after a corrald restart its host may answer "not found"
		// for a moment (it is still catching up): retry for a while.
		testutil.Eventually(e.t, 30*time.Second, func() error {
			l, err := e.client(ci).ConsoleLog(e.ctx(), n, 1<<20)
			if err != nil {
				return err
			}
			out[n] = parseGuestLog(l.Log)
			return nil
		})
	}
	return out
}

func testHostKill(t *testing.T, killLeader bool) {
	e := newEnv(t, 3, "")
	leader := e.leader()
	victim := leader
	if !killLeader {
		for _, h := range e.lab.Hosts {
			if h.Name != leader {
				victim = h.Name
				break
			}
		}
	}
	names := e.pinned(victim, "k", 2)
	si := e.survivor(victim)
	before := e.counters(si, names)
	killed := time.Now()
	if err := e.host(victim).Kill(e.ctx()); err != nil {
		t.Fatal(err)
	}
	moved := e.waitMoved(si, names, victim, 60*time.Second)
	t.Logf("killed %s (leader=%v): guests running on survivors after %v", victim, killLeader, time.Since(killed).Round(time.Millisecond))
	// Each guest's disk counter carries on from where it was.
	for _, n := range names {
		g := e.waitTicks(n, 0)
		testutil.Eventually(t, 30*time.Second, func() error {
			l, _ := e.client(si).ConsoleLog(e.ctx(), n, 1<<20)
			g = parseGuestLog(l.Log)
			if len(g.boots) == 0 {
				return fmt.Errorf("%s: no boot on %s yet", n, moved[n].Host)
			}
			return nil
		})
		if g.boots[0] < before[n].counter {
			t.Fatalf("%s: counter %d after recovery, %d before the kill", n, g.boots[0], before[n].counter)
		}
	}
	h, _ := e.client(si).Host(e.ctx(), victim)
	if h.Mode != "fenced" || !strings.Contains(h.FenceReason, "lease expired") {
		t.Fatalf("victim %+v", h)
	}
}

// TestKillFollowerHost: a follower dies with guests; they run on survivors,
// their disks intact.
func TestKillFollowerHost(t *testing.T) { testHostKill(t, false) }

// TestKillLeaderHost: the same when the dead host was the Raft leader.
func TestKillLeaderHost(t *testing.T) { testHostKill(t, true) }

// TestPartitionFencesItself: with the CPUs saturated, a partitioned host
// that keeps running fences itself; its guests come back elsewhere; no VM ever runs on two hosts;
// after healing it rejoins, runs none of its old guests, and takes new ones.
func TestPartitionFencesItself(t *testing.T) {
	e := newSaturatedEnv(t)
	chk := e.startExactChecker()
	victim := e.follower()
	names := e.pinned(victim, "p", 2)
	si := e.survivor(victim)
	if err := e.host(victim).Partition(e.ctx()); err != nil {
		t.Fatal(err)
	}
	e.waitMoved(si, names, victim, 60*time.Second)
	// The partitioned host's own view: it fenced itself.
	testutil.Eventually(t, 10*time.Second, func() error {
		out := e.virsh(victim, "list", "--name", "--state-running")
		if strings.TrimSpace(out) != "" {
			return fmt.Errorf("still running on %s: %s", victim, out)
		}
		return nil
	})
	if err := e.host(victim).Heal(e.ctx()); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, 60*time.Second, func() error {
		h, err := e.client(si).Host(e.ctx(), victim)
		if err != nil {
			return err
		}
		if h.Mode != "active" || h.Lease != "ok" {
			return fmt.Errorf("%s: mode %s lease %s", victim, h.Mode, h.Lease)
		}
		if out := e.virsh(victim, "list", "--all", "--name"); strings.TrimSpace(out) != "" {
			return fmt.Errorf("stale domains on %s: %s", victim, out)
		}
		return nil
	})
	// New placements go there again.
	req := e.vmRequest("after-heal")
	req.Host = victim
	if _, err := e.client(si).CreateVM(e.ctx(), req); err != nil {
		t.Fatal(err)
	}
	e.waitTicks("after-heal", 1)
	for _, n := range names {
		if v, _ := e.client(si).VM(e.ctx(), n); v.Host == victim {
			t.Fatalf("%s went back to %s", n, victim)
		}
	}
	chk.stop()
	chk.check(t)
}

// TestShortBlipRestartsNothing: a 3 s network blip changes nothing (the
// defaults ride out 3 s: lease_ttl 3.6 s less the 250 ms kill budget, less
// up to a renewal interval of 200 ms before the blip and half of one after
// it (renewals go every 100 ms while no grant came for 500 ms); renewals go to every
// voter while the host's Raft knows no leader).
func TestShortBlipRestartsNothing(t *testing.T) {
	e := newEnv(t, 3, "")
	victim := e.lab.Hosts[2].Name
	names := e.pinned(victim, "b", 2)
	before := map[string]api.VM{}
	for _, n := range names {
		before[n], _ = e.client(0).VM(e.ctx(), n)
	}
	logsBefore := e.counters(0, names)
	if err := e.host(victim).Partition(e.ctx()); err != nil {
		t.Fatal(err)
	}
	blip := time.Now()
	testutil.Eventually(t, 5*time.Second, func() error {
		if time.Since(blip) < 3*time.Second {
			return fmt.Errorf("blip lasts 3s")
		}
		return nil
	})
	if err := e.host(victim).Heal(e.ctx()); err != nil {
		t.Fatal(err)
	}
	// Give the cluster well past the fencing deadline to misbehave.
	after := e.waitTicks(names[0], logsBefore[names[0]].counter+8)
	_ = after
	for _, n := range names {
		v, _ := e.client(0).VM(e.ctx(), n)
		g := e.counters(0, []string{n})[n]
		if v.Host != victim || v.Generation != before[n].Generation || len(g.boots) != 1 || !v.Since.Equal(before[n].Since) {
			t.Fatalf("%s changed after a 3s blip: %+v, boots %v", n, v, g.boots)
		}
	}
	if h, _ := e.client(0).Host(e.ctx(), victim); h.Mode != "active" {
		t.Fatalf("%s is %s", victim, h.Mode)
	}
}

// TestOneBrokenLinkFencesNothing: a follower that cannot reach the leader,
// while both reach the third host, keeps its lease through it (each
// renewal tunnelled through the other voter) well past lease_ttl +
// fence_margin: its guests keep running where they are, and nothing is
// fenced or moved.
func TestOneBrokenLinkFencesNothing(t *testing.T) {
	e := newEnv(t, 3, "")
	leader := e.leader()
	victim := e.follower()
	names := e.pinned(victim, "l", 2)
	before := map[string]api.VM{}
	for _, n := range names {
		before[n], _ = e.client(0).VM(e.ctx(), n)
	}
	if err := e.host(victim).Cut(e.ctx(), []*lab.Host{e.host(leader)}, lab.Both); err != nil {
		t.Fatal(err)
	}
	cut := time.Now()
	defer e.host(victim).Uncut(context.Background())
	// Three leases (3.6 s + 0.2 s each) without a direct renewal.
	testutil.Eventually(t, 30*time.Second, func() error {
		if d := time.Since(cut); d < 12*time.Second {
			return fmt.Errorf("link cut for %v of 12s", d.Round(time.Second))
		}
		return nil
	})
	log, err := os.ReadFile(e.host(victim).LogFile("corrald"))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(log), "lease renewed through a relay") {
		t.Fatalf("%s never renewed through a relay", victim)
	}
	if err := e.host(victim).Uncut(e.ctx()); err != nil {
		t.Fatal(err)
	}
	for _, n := range names {
		v, _ := e.client(0).VM(e.ctx(), n)
		if v.Host != victim || v.Generation != before[n].Generation || !v.Since.Equal(before[n].Since) || v.State != "running" {
			t.Fatalf("%s changed while %s could not reach the leader: %+v", n, victim, v)
		}
	}
	evs, err := e.any().Events(e.ctx(), 0, 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	for _, ev := range evs {
		if ev.Host == victim && (ev.Kind == "fenced" || ev.Kind == "fencing" || ev.Kind == "suspected") {
			t.Fatalf("%s: event %s %q", victim, ev.Kind, ev.Message)
		}
	}
	if h, _ := e.client(0).Host(e.ctx(), victim); h.Mode != "active" {
		t.Fatalf("%s is %s", victim, h.Mode)
	}
}

// TestDrainLiveMigratesWithoutReboot: draining a host with 4 guests
// live-migrates them all; none reboots.
func TestDrainLiveMigratesWithoutReboot(t *testing.T) {
	e := newEnv(t, 3, "")
	chk := e.startChecker()
	victim := e.lab.Hosts[0].Name
	names := e.pinned(victim, "d", 4)
	before := e.counters(1, names)
	out, err := e.corralctl("h2", "host", "drain", victim)
	if err != nil {
		t.Fatalf("drain: %v\n%s", err, out)
	}
	t.Logf("%s", out)
	for _, n := range names {
		v, _ := e.client(1).VM(e.ctx(), n)
		if v.Host == victim || v.State != "running" || v.Home != victim {
			t.Fatalf("%s after drain: %+v", n, v)
		}
		// The target's console log starts at the migration: a reboot would
		// show a boot marker there and an uptime back near zero.
		g := e.waitTicks(n, before[n].counter)
		if len(g.boots) != 0 || g.uptime < before[n].uptime {
			t.Fatalf("%s rebooted during migration: boots %v, uptime %.1f -> %.1f", n, g.boots, before[n].uptime, g.uptime)
		}
	}
	h, _ := e.client(1).Host(e.ctx(), victim)
	if h.Mode != "maintenance" || h.Draining {
		t.Fatalf("host after drain: %+v", h)
	}
	if out := e.virsh(victim, "list", "--all", "--name"); strings.TrimSpace(out) != "" {
		t.Fatalf("domains left on %s: %s", victim, out)
	}
	// Nothing new goes to a host in maintenance.
	req := e.vmRequest("not-there")
	req.Host = victim
	if _, err := e.client(1).CreateVM(e.ctx(), req); err == nil {
		t.Fatal("placed a VM on a host in maintenance")
	}
	// Restore with failback: they come home, still without rebooting.
	if out, err := e.corralctl("h2", "host", "restore", victim, "--failback"); err != nil {
		t.Fatalf("restore: %v %s", err, out)
	}
	testutil.Eventually(t, 90*time.Second, func() error {
		for _, n := range names {
			v, _ := e.client(1).VM(e.ctx(), n)
			if v.Host != victim || v.State != "running" {
				return fmt.Errorf("%s on %s %s", n, v.Host, v.State)
			}
		}
		return nil
	})
	for _, n := range names {
		// Back on the first host, virtlogd appended to its old log: one boot.
		if g := e.waitTicks(n, 0); len(g.boots) != 1 || g.uptime < before[n].uptime {
			t.Fatalf("%s rebooted on failback: boots %v, uptime %.1f", n, g.boots, g.uptime)
		}
	}
	chk.stop()
	chk.check(t)
}

// TestCorraldShortOutage: corrald killed for less than lease_ttl: nothing
// moves, and the restarted daemon adopts its guests.
func TestCorraldShortOutage(t *testing.T) {
	e := newEnv(t, 3, "")
	victim := e.lab.Hosts[1].Name
	names := e.pinned(victim, "s", 2)
	before := map[string]api.VM{}
	for _, n := range names {
		before[n], _ = e.client(0).VM(e.ctx(), n)
	}
	h := e.host(victim)
	if err := h.StopDaemon(e.ctx(), "corrald", true); err != nil {
		t.Fatal(err)
	}
	down := time.Now()
	testutil.Eventually(t, 5*time.Second, func() error {
		if time.Since(down) < 1500*time.Millisecond {
			return fmt.Errorf("outage lasts 1.5s")
		}
		return nil
	})
	if err := h.StartDaemon(e.ctx(), "corrald"); err != nil {
		t.Fatal(err)
	}
	e.waitTicks(names[0], e.counters(0, names)[names[0]].counter+8)
	for _, n := range names {
		v, _ := e.client(0).VM(e.ctx(), n)
		g := e.counters(0, []string{n})[n]
		if v.Host != victim || v.Generation != before[n].Generation || len(g.boots) != 1 || v.State != "running" {
			t.Fatalf("%s after a 2s corrald outage: %+v, boots %v", n, v, g.boots)
		}
	}
}

// TestCorraldLongOutageDiskLocks: corrald and the fencer both killed for
// longer than the lease, no watchdog: nothing kills the guests on that
// host, so when the leader recovers them elsewhere the disk locks refuse
// the second copy, and the leader says why; when corrald returns it
// removes its stale copies and each VM ends up running exactly once. (With
// the fencer alive the guests die with the lease: TestFenceCorraldKilled.)
func TestCorraldLongOutageDiskLocks(t *testing.T) {
	e := newEnv(t, 3, "")
	chk := e.startChecker()
	victim := e.lab.Hosts[2].Name
	names := e.pinned(victim, "l", 2)
	si := e.survivor(victim)
	h := e.host(victim)
	for _, d := range []string{"corral-fencer", "corrald"} {
		if err := h.StopDaemon(e.ctx(), d, true); err != nil {
			t.Fatal(err)
		}
	}
	// The leader declares the host dead and tries to recover; the disk
	// locks held by the still-running guests refuse.
	testutil.Eventually(t, 60*time.Second, func() error {
		for _, n := range names {
			v, err := e.client(si).VM(e.ctx(), n)
			if err != nil {
				return err
			}
			if v.Host == victim || v.State != "error" || !strings.Contains(v.Message, "lock") {
				return fmt.Errorf("%s on %s: %s %q", n, v.Host, v.State, v.Message)
			}
		}
		return nil
	})
	if out := e.virsh(victim, "list", "--name", "--state-running"); len(strings.Fields(out)) != 2 {
		t.Fatalf("the guests should still run on %s: %q", victim, out)
	}
	evs, _ := e.client(si).Events(e.ctx(), 0, 0, 0)
	found := false
	for _, ev := range evs {
		if ev.Kind == "error" && strings.Contains(ev.Message, "lock") {
			found = true
		}
	}
	if !found {
		t.Fatal("no event says why the guests were not recovered")
	}
	// The fencer and corrald return: the fencer's deadline passed while it
	// was down, so it kills the stale copies at once; the recovered ones
	// start.
	for _, d := range []string{"corral-fencer", "corrald"} {
		if err := h.StartDaemon(e.ctx(), d); err != nil {
			t.Fatal(err)
		}
	}
	e.waitMoved(si, names, victim, 3*time.Minute)
	testutil.Eventually(t, 30*time.Second, func() error {
		if out := e.virsh(victim, "list", "--all", "--name"); strings.TrimSpace(out) != "" {
			return fmt.Errorf("stale domains on %s: %s", victim, out)
		}
		return nil
	})
	chk.stop()
	chk.check(t)
}

// newFencingEnv is a 3-host lab whose fence_command is the lab's fence
// agent, which finds its lab through CORRAL_LAB_DIR (the lab sets it for
// every daemon it starts).
func newFencingEnv(t *testing.T) *env {
	binaries(t)
	labBin := filepath.Join(binDir, "corral-lab")
	return newEnv(t, 3, fmt.Sprintf("fence_command = %q\n", labBin+" fence"))
}

// follower names a host that is not the leader.
func (e *env) follower() string {
	for _, h := range e.lab.Hosts {
		if h.Name != e.leader() {
			return h.Name
		}
	}
	e.t.Fatal("no follower")
	return ""
}

// TestExternalFencing: with the lab's fence agent as fence_command and the
// CPUs saturated, the leader powers a silent host off and recovers at once, without waiting
// for the lease.
func TestExternalFencing(t *testing.T) {
	e := newFencingEnv(t)
	e.saturate()
	chk := e.startExactChecker()
	victim := e.follower()
	names := e.pinned(victim, "x", 2)
	si := e.survivor(victim)
	start := time.Now()
	if err := e.host(victim).Partition(e.ctx()); err != nil {
		t.Fatal(err)
	}
	e.waitMoved(si, names, victim, 30*time.Second)
	took := time.Since(start)
	h, _ := e.client(si).Host(e.ctx(), victim)
	if !strings.Contains(h.FenceReason, "fence_command") {
		t.Fatalf("fenced for %q, want fence_command", h.FenceReason)
	}
	t.Logf("recovered through fence_command %v after the partition", took.Round(time.Millisecond))
	chk.stop()
	chk.check(t)
}

// TestCleanRestartWithFenceCommand: a package upgrade on a host with
// guests, with fence_command configured: the fencer is restarted (it keeps
// its deadline), then corrald is stopped cleanly and started again. The
// leader records the clean stop and does not power the host off at
// fence_after; the fencer, released once the leader knew, kills nothing;
// corrald returns and adopts its guests, none rebooted. A clean stop that
// outlasts the lease is fenced by fence_command and its guests recovered,
// never running twice.
func TestCleanRestartWithFenceCommand(t *testing.T) {
	e := newFencingEnv(t)
	chk := e.startExactChecker()
	victim := e.follower()
	names := e.pinned(victim, "r", 2)
	si := e.survivor(victim)
	before := map[string]api.VM{}
	for _, n := range names {
		before[n], _ = e.client(si).VM(e.ctx(), n)
	}
	h := e.host(victim)
	if err := h.RestartDaemon(e.ctx(), "corral-fencer"); err != nil {
		t.Fatal(err)
	}
	stopped := time.Now()
	if err := h.StopDaemon(e.ctx(), "corrald", false); err != nil {
		t.Fatal(err)
	}
	if st, err := fencer.Query(e.ctx(), h.FencerStatusSocket()); err != nil || st.Mode != fencer.Released || len(st.Fences) != 0 {
		t.Fatalf("fencer after a clean stop: %+v, %v", st, err)
	}
	// Down for 2 s from SIGTERM: past fence_after (0.9 s), where the leader
	// used to power the host off. The restart must renew within lease_ttl
	// + fence_margin (3.8 s) of the last renewal, or the host is fenced as
	// it should be. The host is marked stopped, never fenced.
	testutil.Eventually(t, 10*time.Second, func() error {
		hv, err := e.client(si).Host(e.ctx(), victim)
		if err != nil {
			return err
		}
		if hv.Mode == "fenced" {
			t.Fatalf("%s fenced %v after a clean stop: %s", victim, time.Since(stopped), hv.FenceReason)
		}
		if hv.StoppedAt.IsZero() {
			return fmt.Errorf("%s not marked stopped", victim)
		}
		if time.Since(stopped) < 2*time.Second {
			return fmt.Errorf("down for %v", time.Since(stopped))
		}
		return nil
	})
	if err := h.StartDaemon(e.ctx(), "corrald"); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, 30*time.Second, func() error {
		hv, err := e.client(si).Host(e.ctx(), victim)
		if err != nil {
			return err
		}
		if !hv.StoppedAt.IsZero() || hv.Lease != "ok" {
			return fmt.Errorf("%s: stopped at %v, lease %s", victim, hv.StoppedAt, hv.Lease)
		}
		return nil
	})
	e.waitTicks(names[0], e.counters(si, names)[names[0]].counter+5)
	for _, n := range names {
		v, _ := e.client(si).VM(e.ctx(), n)
		g := e.counters(si, []string{n})[n]
		if v.Host != victim || v.Generation != before[n].Generation || len(g.boots) != 1 || v.State != "running" {
			t.Fatalf("%s after a clean corrald restart: %+v, boots %v", n, v, g.boots)
		}
	}
	evs, _ := e.client(si).Events(e.ctx(), 0, 0, 0)
	for _, ev := range evs {
		if ev.Host == victim && (ev.Kind == "fencing" || ev.Kind == "fenced") {
			t.Fatalf("a clean restart fenced the host: %+v", ev)
		}
	}

	// Stopped for good: fenced by fence_command once the lease is over.
	stopped = time.Now()
	if err := h.StopDaemon(e.ctx(), "corrald", false); err != nil {
		t.Fatal(err)
	}
	e.waitMoved(si, names, victim, 60*time.Second)
	hv, _ := e.client(si).Host(e.ctx(), victim)
	if !strings.Contains(hv.FenceReason, "fence_command") {
		t.Fatalf("fenced for %q, want fence_command", hv.FenceReason)
	}
	t.Logf("a clean stop that lasted: recovered %v after SIGTERM", time.Since(stopped).Round(time.Millisecond))
	evs, _ = e.client(si).Events(e.ctx(), 0, 0, 0)
	var stopAt, fenceAt time.Time
	for _, ev := range evs {
		if ev.Host == victim {
			t.Logf("event %s %s: %s", ev.Time.Format("15:04:05.000"), ev.Kind, ev.Message)
			switch ev.Kind {
			case "daemon-stopped":
				stopAt = ev.Time
			case "fencing":
				fenceAt = ev.Time
			}
		}
	}
	// The leader heard the host last at most a heartbeat before the
	// notice: lease_ttl + fence_margin - heartbeat_interval (3.6 s).
	if fenceAt.Sub(stopAt) < 3600*time.Millisecond {
		t.Fatalf("fence_command ran %v after the clean stop, before the lease could expire", fenceAt.Sub(stopAt))
	}
	chk.stop()
	chk.check(t)
}

// TestHostWithoutQEMUTakesNoGuest: a host whose libvirt cannot run QEMU (a
// broken binary: /bin/false bound over it in the host's mount namespace,
// libvirtd restarted, as after a bad upgrade) turns failing with libvirt's
// reason, takes no new VM, and turns healthy by itself once QEMU works.
func TestHostWithoutQEMUTakesNoGuest(t *testing.T) {
	e := newEnv(t, 2, "")
	good, broken := e.lab.Hosts[0], e.lab.Hosts[1]
	const qemu = "/usr/bin/qemu-system-x86_64"
	if out, err := broken.Command(e.ctx(), "mount", "--bind", "/bin/false", qemu).CombinedOutput(); err != nil {
		t.Fatalf("bind /bin/false over %s: %v: %s", qemu, err, out)
	}
	bound := true
	unbind := func() {
		if out, err := broken.Command(context.Background(), "umount", qemu).CombinedOutput(); err != nil {
			t.Fatalf("umount %s: %v: %s", qemu, err, out)
		}
		bound = false
	}
	defer func() {
		if bound {
			unbind()
		}
	}()
	if err := broken.RestartDaemon(e.ctx(), "libvirtd"); err != nil {
		t.Fatal(err)
	}
	health := func(want, reason string) {
		t.Helper()
		testutil.Eventually(t, time.Minute, func() error {
			h, err := e.client(0).Host(e.ctx(), broken.Name)
			if err != nil {
				return err
			}
			if h.Health != want || !strings.Contains(strings.Join(h.HealthReasons, "; "), reason) {
				return fmt.Errorf("%s health %s %q, want %s %q", broken.Name, h.Health, h.HealthReasons, want, reason)
			}
			return nil
		})
	}
	health("failing", "libvirt cannot start guests: ")

	pinned := e.vmRequest("q0")
	pinned.Host = broken.Name
	if _, err := e.client(0).CreateVM(e.ctx(), pinned); err == nil || !strings.Contains(err.Error(), "libvirt cannot start guests") {
		t.Fatalf("a VM pinned to a host that cannot start guests: %v", err)
	}
	if _, err := e.client(0).CreateVM(e.ctx(), e.vmRequest("q1")); err != nil {
		t.Fatal(err)
	}
	if v := e.waitVM("q1", 2*time.Minute, running); v.Host != good.Name {
		t.Fatalf("q1 placed on %s", v.Host)
	}

	unbind()
	health("ok", "")
	if _, err := e.client(0).CreateVM(e.ctx(), pinned); err != nil {
		t.Fatal(err)
	}
	e.waitTicks("q0", 1)
}

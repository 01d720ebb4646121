package e2e

import (
	"fmt"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/corralhq/corral/api"
	"github.com/corralhq/corral/internal/testutil"
)

// waitGroup waits until a group has exactly want members, all running.
func (e *env) waitGroup(name string, want int, timeout time.Duration) api.Group {
	e.t.Helper()
	var g api.Group
	testutil.Eventually(e.t, timeout, func() error {
		var err error
		if g, err = e.any().Group(e.ctx(), name); err != nil {
			return err
		}
		if g.Count != want || len(g.Members) != want || g.Running != want {
			return fmt.Errorf("group %s: count %d, %d members, %d running (%+v)", name, g.Count, len(g.Members), g.Running, g.Members)
		}
		return nil
	})
	return g
}

// watchGroup polls a group every 200 ms until the returned stop is
// called, which says the least measure(group) seen and how many polls saw
// it.
func (e *env) watchGroup(name string, measure func(api.Group) int) (stop func() (least, polls int)) {
	var mu sync.Mutex
	least, polls := -1, 0
	done, watched := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(watched)
		for {
			select {
			case <-done:
				return
			case <-time.After(200 * time.Millisecond):
			}
			g, err := e.client(0).Group(e.ctx(), name)
			if err != nil {
				continue
			}
			mu.Lock()
			if m := measure(g); least < 0 || m < least {
				least = m
			}
			polls++
			mu.Unlock()
		}
	}()
	return func() (int, int) {
		close(done)
		<-watched
		mu.Lock()
		defer mu.Unlock()
		return least, polls
	}
}

func membersPerHost(g api.Group) map[string]int {
	out := map[string]int{}
	for _, m := range g.Members {
		out[m.Host]++
	}
	return out
}

// TestGroupScaleAndRecovery: a group of 4 made with corralctl spreads over
// 3 hosts; scaled to 6 it holds 2 per host, scaled to 2 it keeps web-1 and
// web-2; the host of a member is killed and the member runs again on a
// survivor, the count kept; no VM ever runs twice.
func TestGroupScaleAndRecovery(t *testing.T) {
	e := newEnv(t, 3, "")
	chk := e.startChecker()
	out, err := e.corralctl("h2", "group", "create", "web", "--count", "4", "--memory", "128M", "--image", "base",
		"--kernel", e.guest.Kernel, "--initrd", e.guest.Initrd, "--cmdline", "console=ttyS0 quiet", "--wait")
	if err != nil {
		t.Fatalf("group create: %v\n%s", err, out)
	}
	t.Logf("%s", strings.TrimSpace(out))
	g := e.waitGroup("web", 4, 2*time.Minute)
	if per := membersPerHost(g); len(per) != 3 {
		t.Fatalf("4 members on %d hosts: %v", len(per), per)
	}

	if _, err := e.client(0).ScaleGroup(e.ctx(), "web", 6); err != nil {
		t.Fatal(err)
	}
	g = e.waitGroup("web", 6, 2*time.Minute)
	for h, n := range membersPerHost(g) {
		if n != 2 {
			t.Fatalf("6 members over 3 hosts: %s has %d (%v)", h, n, membersPerHost(g))
		}
	}
	if out, err := e.corralctl("h3", "group", "scale", "web", "2", "--wait"); err != nil {
		t.Fatalf("group scale: %v\n%s", err, out)
	}
	g = e.waitGroup("web", 2, time.Minute)
	if g.Members[0].Name != "web-1" || g.Members[1].Name != "web-2" {
		t.Fatalf("after scaling to 2: %+v", g.Members)
	}
	testutil.Eventually(t, time.Minute, func() error {
		vms, err := e.any().VMs(e.ctx())
		if err != nil {
			return err
		}
		if len(vms) != 2 {
			return fmt.Errorf("%d VMs, want the 2 members", len(vms))
		}
		return nil
	})

	// Kill the host of a member (not the leader's, when there is a choice).
	leader := e.leader()
	victim := g.Members[0].Host
	if victim == leader && g.Members[1].Host != leader {
		victim = g.Members[1].Host
	}
	killed := time.Now()
	if err := e.host(victim).Kill(e.ctx()); err != nil {
		t.Fatal(err)
	}
	si := e.survivor(victim)
	testutil.Eventually(t, 2*time.Minute, func() error {
		g, err := e.client(si).Group(e.ctx(), "web")
		if err != nil {
			return err
		}
		if len(g.Members) != 2 || g.Running != 2 {
			return fmt.Errorf("%d members, %d running: %+v", len(g.Members), g.Running, g.Members)
		}
		for _, m := range g.Members {
			if m.Host == victim {
				return fmt.Errorf("%s still on %s", m.Name, victim)
			}
		}
		return nil
	})
	t.Logf("killed %s: both members running on survivors after %v", victim, time.Since(killed).Round(time.Millisecond))
	chk.stop()
	chk.check(t)
}

// TestGroupRollingUpdate: a new template rolls out over 4 members one at a
// time and the group never has fewer than 3 running (a watcher polls state
// throughout; by design it keeps all 4); a template whose kernel does not
// exist pauses the roll-out with the old members running; a rollback
// resumes it with the template before, and all 4 run it.
func TestGroupRollingUpdate(t *testing.T) {
	e := newEnv(t, 3, "")
	chk := e.startChecker()
	out, err := e.corralctl("h1", "group", "create", "app", "--count", "4", "--memory", "128M", "--image", "base",
		"--kernel", e.guest.Kernel, "--initrd", e.guest.Initrd, "--cmdline", "console=ttyS0 quiet", "--wait")
	if err != nil {
		t.Fatalf("group create: %v\n%s", err, out)
	}
	e.waitGroup("app", 4, 2*time.Minute)

	// Watch the running members while templates change.
	stopWatch := e.watchGroup("app", func(g api.Group) int { return g.Running })

	start := time.Now()
	out, err = e.corralctl("h2", "group", "update", "app", "--memory", "160M", "--wait")
	if err != nil {
		t.Fatalf("group update: %v\n%s", err, out)
	}
	t.Logf("roll-out of 4 members took %v: %s", time.Since(start).Round(100*time.Millisecond), strings.TrimSpace(out))
	g := e.waitGroup("app", 4, time.Minute)
	if g.Version != 2 || g.Current != 4 {
		t.Fatalf("after the roll-out: %+v", g)
	}
	for _, m := range g.Members {
		if v, _ := e.any().VM(e.ctx(), m.Name); v.Spec.MemoryMiB != 160 {
			t.Fatalf("%s has %d MiB", m.Name, v.Spec.MemoryMiB)
		}
	}

	// A template that cannot boot: the roll-out pauses, the old run on.
	missing := filepath.Join(filepath.Dir(e.guest.Kernel), "no-such-vmlinuz")
	out, err = e.corralctl("h3", "group", "update", "app", "--kernel", missing, "--wait")
	if err == nil || !strings.Contains(err.Error(), "roll-out paused") {
		t.Fatalf("update to a kernel that does not exist: %v\n%s", err, out)
	}
	g, _ = e.any().Group(e.ctx(), "app")
	if g.Paused == "" || g.Running < 4 {
		t.Fatalf("paused group: %+v", g)
	}
	old := 0
	for _, m := range g.Members {
		if m.Version == 2 && m.State == "running" {
			old++
		}
	}
	if old != 4 {
		t.Fatalf("%d members of template 2 running while paused: %+v", old, g.Members)
	}

	// Rollback: template 2's spec again, everywhere.
	if out, err := e.corralctl("h1", "group", "rollback", "app", "--wait"); err != nil {
		t.Fatalf("group rollback: %v\n%s", err, out)
	}
	g = e.waitGroup("app", 4, time.Minute)
	if g.Version != 4 || g.Current != 4 || g.Paused != "" {
		t.Fatalf("after the rollback: %+v", g)
	}
	minRunning, polls := stopWatch()
	t.Logf("running members polled %d times: never fewer than %d of 4", polls, minRunning)
	if minRunning < 3 || polls < 10 {
		t.Fatalf("running members fell to %d (%d polls)", minRunning, polls)
	}
	chk.stop()
	chk.check(t)
}

// TestGroupRolloutHealthCheck: members with a health check run through
// the real QEMU guest agent (a command in the guest) count only once
// healthy. A template whose guests boot but fail the check pauses the
// roll-out at its first new member, unhealthy, while the three old
// members stay running and healthy; a good template resumes and ends it,
// and the healthy members never fall below three.
func TestGroupRolloutHealthCheck(t *testing.T) {
	e := newEnv(t, 3, "")
	chk := e.startChecker()
	check := []string{"--health-exec", "grep -q corral.ok /proc/cmdline", "--health-interval", "1s", "--health-retries", "2", "--health-start", "10s"}
	out, err := e.corralctl("h1", append([]string{"group", "create", "svc", "--count", "3", "--memory", "128M", "--image", "base",
		"--kernel", e.guest.Kernel, "--initrd", e.guest.Initrd, "--cmdline", "console=ttyS0 quiet corral.ok=1", "--wait"}, check...)...)
	if err != nil {
		t.Fatalf("group create: %v\n%s", err, out)
	}
	g := e.waitGroup("svc", 3, 2*time.Minute)
	if g.Ready != 3 {
		t.Fatalf("after create --wait: %+v", g)
	}
	for _, m := range g.Members {
		if v, _ := e.any().VM(e.ctx(), m.Name); v.Health != "healthy" {
			t.Fatalf("%s: health %q (%s)", m.Name, v.Health, v.HealthDetail)
		}
	}

	// Watch the healthy members while templates change.
	stopWatch := e.watchGroup("svc", func(g api.Group) int { return g.Ready })

	// Guests that boot but fail the check.
	start := time.Now()
	out, err = e.corralctl("h2", "group", "update", "svc", "--cmdline", "console=ttyS0 quiet", "--wait")
	if err == nil || !strings.Contains(err.Error(), "roll-out paused") || !strings.Contains(err.Error(), "unhealthy") {
		t.Fatalf("update to guests that fail their check: %v\n%s", err, out)
	}
	t.Logf("paused after %v: %v", time.Since(start).Round(100*time.Millisecond), err)
	g, _ = e.any().Group(e.ctx(), "svc")
	old, bad := 0, 0
	for _, m := range g.Members {
		switch {
		case m.Version == 1 && m.State == "running" && m.Health == "healthy":
			old++
		case m.Version == 2 && m.State == "running" && m.Health == "unhealthy":
			bad++
		}
	}
	if old != 3 || bad != 1 || len(g.Members) != 4 {
		t.Fatalf("paused: %d healthy old members, %d unhealthy new: %+v", old, bad, g.Members)
	}
	if !strings.Contains(g.Paused, "exited 1") {
		t.Fatalf("pause reason %q", g.Paused)
	}

	// A good template resumes the roll-out and ends it.
	out, err = e.corralctl("h3", "group", "update", "svc", "--cmdline", "console=ttyS0 quiet corral.ok=1 corral.v=3", "--wait")
	if err != nil {
		t.Fatalf("update to a good template: %v\n%s", err, out)
	}
	g = e.waitGroup("svc", 3, 2*time.Minute)
	if g.Version != 3 || g.Current != 3 || g.Ready != 3 || g.Paused != "" {
		t.Fatalf("after the good template: %+v", g)
	}
	minReady, polls := stopWatch()
	t.Logf("healthy members polled %d times: never fewer than %d of 3", polls, minReady)
	if minReady < 3 || polls < 10 {
		t.Fatalf("healthy members fell to %d (%d polls)", minReady, polls)
	}
	chk.stop()
	chk.check(t)
}

// TestGroupAutoscaleUnderLoad: members whose guests spin their vCPU
// (corral.busy=1) make the leader grow an autoscaled group from 1 to its
// max of 3, each step an event with the measured CPU use.
func TestGroupAutoscaleUnderLoad(t *testing.T) {
	e := newEnv(t, 3, "")
	out, err := e.corralctl("h1", "group", "create", "hog", "--count", "1", "--memory", "128M", "--image", "base",
		"--kernel", e.guest.Kernel, "--initrd", e.guest.Initrd, "--cmdline", "console=ttyS0 quiet corral.busy=1",
		"--autoscale-min", "1", "--autoscale-max", "3", "--autoscale-cpu", "40", "--autoscale-up-cooldown", "1s")
	if err != nil {
		t.Fatalf("group create: %v\n%s", err, out)
	}
	start := time.Now()
	e.waitGroup("hog", 3, 4*time.Minute)
	t.Logf("grown from 1 to 3 members in %v", time.Since(start).Round(time.Second))
	evs, err := e.any().Events(e.ctx(), 0, 1000, 0)
	if err != nil {
		t.Fatal(err)
	}
	var steps []string
	for _, ev := range evs {
		if strings.Contains(ev.Message, "group hog autoscaled from") {
			steps = append(steps, ev.Message)
		}
	}
	if len(steps) == 0 || !strings.Contains(steps[0], "mean CPU") {
		t.Fatalf("autoscale events: %v", steps)
	}
	t.Logf("autoscale events: %s", strings.Join(steps, " | "))
	// Stop the hogs before the lab goes down.
	if out, err := e.corralctl("h1", "group", "rm", "hog"); err != nil {
		t.Fatalf("group rm: %v\n%s", err, out)
	}
}

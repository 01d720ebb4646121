package e2e

import (
	"fmt"
	"strings"
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

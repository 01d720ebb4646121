package e2e

import (
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/corralhq/corral/api"
	"github.com/corralhq/corral/internal/testutil"
)

// TestConsolidationStandbyAndPowerOn: 4 hosts, one guest on each, the
// lab's power agents as power_off_command and power_on_command. A
// consolidation round live-migrates the guest off the one host that is not
// a Raft voter (no reboot), puts that host in standby and powers it off
// (its daemons are gone, and it is not fenced). Then a host with a guest
// dies: it is fenced, its guest recovered, and the standby host powered
// on and back in service. A checker sees no VM run twice throughout.
func TestConsolidationStandbyAndPowerOn(t *testing.T) {
	binaries(t)
	labBin := filepath.Join(binDir, "corral-lab")
	e := newEnv(t, 4, fmt.Sprintf("power_off_command = %q\npower_on_command = %q\n", labBin+" fence", labBin+" power-on"))
	stop, err := e.lab.ServePower()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(stop)
	chk := e.startChecker()
	st, err := e.client(0).Status(e.ctx())
	if err != nil {
		t.Fatal(err)
	}
	spare := ""
	for _, h := range e.lab.Hosts {
		if !slices.Contains(st.Voters, h.Name) {
			spare = h.Name
		}
	}
	if spare == "" || len(st.Voters) != 3 {
		t.Fatalf("voters %v: want 3 of 4 hosts", st.Voters)
	}
	guest := map[string]string{}
	for _, h := range e.lab.Hosts {
		guest[h.Name] = e.pinned(h.Name, "e"+h.Name+"-", 1)[0]
	}
	moving := guest[spare]
	before := e.counters(0, []string{moving})[moving]

	out, err := e.corralctl(e.leader(), "cluster", "balance", "apply", "--goal", "consolidate")
	if err != nil {
		t.Fatalf("balance apply: %v\n%s", err, out)
	}
	t.Logf("%s", out)
	if !strings.Contains(out, moving+" "+spare+" -> ") || !strings.Contains(out, "Emptied:") {
		t.Fatalf("the consolidation does not empty %s:\n%s", spare, out)
	}
	e.waitVM(moving, 2*time.Minute, func(v api.VM) error {
		if v.Host == spare || v.State != "running" {
			return fmt.Errorf("%s on %s, %s", moving, v.Host, v.State)
		}
		return nil
	})
	if g := e.waitTicks(moving, before.counter+1); len(g.boots) != 0 || g.uptime < before.uptime {
		t.Fatalf("%s rebooted when it moved: boots %v, uptime %.1f -> %.1f", moving, g.boots, before.uptime, g.uptime)
	}
	testutil.Eventually(t, time.Minute, func() error {
		h, err := e.any().Host(e.ctx(), spare)
		if err != nil || h.Mode != "standby" {
			return fmt.Errorf("%s is %s (%v)", spare, h.Mode, err)
		}
		if running := e.host(spare).Running(); running["corrald"] || running["libvirtd"] {
			return fmt.Errorf("%s still runs %v", spare, running)
		}
		return nil
	})
	// Powered off: its silence is no failure.
	testutil.Eventually(t, 30*time.Second, func() error {
		h, _ := e.any().Host(e.ctx(), spare)
		if h.Gossip == "alive" {
			return fmt.Errorf("%s still alive in gossip", spare)
		}
		return nil
	})
	if h, _ := e.any().Host(e.ctx(), spare); h.Mode != "standby" {
		t.Fatalf("%s powered off is %s, want standby", spare, h.Mode)
	}

	// A voter that is not the leader dies with its guest.
	victim := ""
	for _, v := range st.Voters {
		if v != e.leader() {
			victim = v
		}
	}
	lost := ""
	for _, n := range guest {
		if v, _ := e.any().VM(e.ctx(), n); v.Host == victim {
			lost = n
		}
	}
	killed := time.Now()
	if err := e.host(victim).Kill(e.ctx()); err != nil {
		t.Fatal(err)
	}
	e.waitVM(lost, 2*time.Minute, func(v api.VM) error {
		if v.Host == victim || v.State != "running" {
			return fmt.Errorf("%s on %s, %s", lost, v.Host, v.State)
		}
		return nil
	})
	t.Logf("%s recovered %.1fs after %s was killed, with %s in standby", lost, time.Since(killed).Seconds(), victim, spare)
	testutil.Eventually(t, 3*time.Minute, func() error {
		h, err := e.any().Host(e.ctx(), spare)
		if err != nil || h.Mode != "active" || h.Gossip != "alive" {
			return fmt.Errorf("%s: %s, %s (%v)", spare, h.Mode, h.Gossip, err)
		}
		return nil
	})
	// Every power action is an event (the last one lands in the entry
	// after the mode's).
	var kinds []string
	testutil.Eventually(t, 10*time.Second, func() error {
		evs, _ := e.any().Events(e.ctx(), 0, 0, 0)
		kinds = nil
		for _, ev := range evs {
			if ev.Host == spare {
				kinds = append(kinds, ev.Kind)
			}
		}
		for _, want := range []string{"standby", "power-off", "powering-on", "power-on", "powered-on"} {
			if !slices.Contains(kinds, want) {
				return fmt.Errorf("no %s event for %s: %v", want, spare, kinds)
			}
		}
		return nil
	})
	if slices.Contains(kinds, "fenced") {
		t.Errorf("%s was fenced while in standby: %v", spare, kinds)
	}
	chk.stop()
	chk.check(t)
}

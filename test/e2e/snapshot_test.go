package e2e

import (
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/corralhq/corral/api"
	"github.com/corralhq/corral/internal/testutil"
)

// TestSnapshots: the test guest keeps a counter on its disk. A snapshot of
// the running guest, more writes, a live migration, a revert on the other
// host: the guest boots with the counter of the snapshot's moment. A
// snapshot of the stopped guest reverts to exactly its counter. A revert
// to a memory snapshot resumes the guest without a boot. Removing
// snapshots and the VM leaves no file behind.
func TestSnapshots(t *testing.T) {
	e := newEnv(t, 2, "")
	c := e.client(0)
	req := e.vmRequest("snap")
	req.Host = "h1"
	if _, err := c.CreateVM(e.ctx(), req); err != nil {
		t.Fatal(err)
	}
	e.waitVM("snap", 60*time.Second, running)
	// The agent answers once the guest is up: a frozen snapshot needs it.
	g := e.waitTicks("snap", 3)

	before := g.counter
	out, err := e.corralctl("h2", "vm", "snapshot", "create", "snap", "s1")
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%s", strings.TrimSpace(out))
	after := e.console("snap").counter
	v := e.waitVM("snap", 10*time.Second, func(v api.VM) error {
		if len(v.Snapshots) != 1 || v.Snapshots[0].State != "ready" {
			return fmt.Errorf("snapshots %+v", v.Snapshots)
		}
		return nil
	})
	if s := v.Snapshots[0]; s.Consistency == "stopped" {
		t.Fatalf("a running guest's snapshot says %+v", s)
	}
	if len(e.console("snap").boots) != 1 {
		t.Fatal("the snapshot rebooted the guest")
	}

	// More writes, then the guest moves to h2 by live migration: the
	// snapshot goes with the VM.
	g = e.waitTicks("snap", after+3)
	if out, err := e.corralctl("h1", "vm", "migrate", "snap", "--to", "h2", "--wait"); err != nil {
		t.Fatalf("migrate: %v %s", err, out)
	}
	// The console log is the new host's now: the guest goes on counting
	// there without a boot.
	moved := e.waitTicks("snap", g.counter+2)
	if len(moved.boots) != 0 {
		t.Fatalf("boots %v on h2: the migration rebooted the guest", moved.boots)
	}
	g = moved

	// Revert on h2: the guest is powered off and boots from the snapshot.
	if out, err := e.corralctl("h1", "vm", "snapshot", "revert", "snap", "s1"); err != nil {
		t.Fatalf("revert: %v %s", err, out)
	}
	var reverted guestLog
	testutil.Eventually(t, 90*time.Second, func() error {
		reverted = e.console("snap")
		if len(reverted.boots) < 1 {
			return errors.New("no boot after the revert yet")
		}
		return nil
	})
	boot := reverted.boots[len(reverted.boots)-1]
	t.Logf("counter %d..%d at the snapshot, %d before the revert, %d at the boot after it", before, after, g.counter, boot)
	if boot < before || boot > after {
		t.Fatalf("booted with counter %d after the revert; the snapshot was taken while it went from %d to %d", boot, before, after)
	}
	v = e.waitVM("snap", 60*time.Second, running)
	if v.Host != "h2" {
		t.Fatalf("reverted on %s, want h2 where it ran", v.Host)
	}

	// A snapshot of the stopped guest: exact.
	e.waitTicks("snap", boot+2)
	if _, err := c.StopVM(e.ctx(), "snap"); err != nil {
		t.Fatal(err)
	}
	e.waitVM("snap", 60*time.Second, isStopped)
	stopped := e.console("snap").counter
	if out, err := e.corralctl("h1", "vm", "snapshot", "create", "snap", "s2"); err != nil || !strings.Contains(out, "stopped") {
		t.Fatalf("snapshot of the stopped VM: %v %s", err, out)
	}
	if _, err := c.StartVM(e.ctx(), "snap"); err != nil {
		t.Fatal(err)
	}
	e.waitVM("snap", 60*time.Second, running)
	g = e.waitTicks("snap", stopped+3)
	if _, err := c.StopVM(e.ctx(), "snap"); err != nil {
		t.Fatal(err)
	}
	e.waitVM("snap", 60*time.Second, isStopped)
	if out, err := e.corralctl("h2", "vm", "snapshot", "revert", "snap", "s2"); err != nil {
		t.Fatalf("revert: %v %s", err, out)
	}
	boots := len(e.console("snap").boots)
	if _, err := c.StartVM(e.ctx(), "snap"); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, 90*time.Second, func() error {
		if g = e.console("snap"); len(g.boots) <= boots {
			return errors.New("not booted yet")
		}
		return nil
	})
	if got := g.boots[len(g.boots)-1]; got != stopped {
		t.Fatalf("booted with counter %d after reverting to the stopped guest's snapshot, want %d", got, stopped)
	}

	out, err = e.corralctl("h1", "vm", "snapshot", "ls", "snap")
	if err != nil || !strings.Contains(out, "s1") || !strings.Contains(out, "s2") {
		t.Fatalf("snapshot ls: %v\n%s", err, out)
	}
	t.Logf("snapshot ls:\n%s", out)

	// The chain is 0 (s1) <- 2 (s2) <- 4 (active): layers 1 and 3 died
	// with the reverts. With s1 gone, the stopped VM's host commits layer
	// 2 into 0 (qemu-img); the guest boots with its data intact.
	pool := e.lab.SharedDir() + "/pool"
	layers := func() int {
		n := 0
		files, _ := os.ReadDir(pool)
		for _, f := range files {
			if strings.HasPrefix(f.Name(), "vm-snap-") && strings.Contains(f.Name(), "-disk0") {
				n++
			}
		}
		return n
	}
	g = e.waitTicks("snap", g.counter+1)
	if _, err := c.StopVM(e.ctx(), "snap"); err != nil {
		t.Fatal(err)
	}
	e.waitVM("snap", 60*time.Second, isStopped)
	stopped = e.console("snap").counter
	if out, err := e.corralctl("h1", "vm", "snapshot", "rm", "snap", "s1"); err != nil {
		t.Fatalf("rm s1: %v %s", err, out)
	}
	testutil.Eventually(t, 60*time.Second, func() error {
		if n := layers(); n != 2 {
			return fmt.Errorf("%d disk layers in the pool, want 2 (0 with s2's content, and 4)", n)
		}
		return nil
	})
	boots = len(e.console("snap").boots)
	if _, err := c.StartVM(e.ctx(), "snap"); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, 90*time.Second, func() error {
		if g = e.console("snap"); len(g.boots) <= boots {
			return errors.New("not booted yet")
		}
		return nil
	})
	if got := g.boots[len(g.boots)-1]; got != stopped {
		t.Fatalf("booted with counter %d after the merge, want %d", got, stopped)
	}
	// The running guest's layers merge too (libvirt's block commit):
	// 0 (s2) <- 4 (s3) <- 5 (s4) <- 6 (active); with s2 gone, 4 is
	// committed into 0. With s3 gone too, 5 would be, but libvirt 9.0
	// holds a lock on 0 from that first commit while this QEMU lives: the
	// merge waits for the guest's next start.
	e.waitVM("snap", 60*time.Second, running)
	g = e.waitTicks("snap", g.counter+1)
	for _, s := range []string{"s3", "s4"} {
		if out, err := e.corralctl("h1", "vm", "snapshot", "create", "snap", s); err != nil {
			t.Fatalf("snapshot %s: %v %s", s, err, out)
		}
	}
	for _, s := range []string{"s2", "s3"} {
		if out, err := e.corralctl("h1", "vm", "snapshot", "rm", "snap", s); err != nil {
			t.Fatalf("rm %s: %v %s", s, err, out)
		}
	}
	testutil.Eventually(t, 60*time.Second, func() error {
		if n := layers(); n != 3 {
			return fmt.Errorf("%d disk layers in the pool, want 3 (0 holding s3, 5 holding s4, and 6)", n)
		}
		return nil
	})
	g = e.waitTicks("snap", g.counter+2)
	if got := e.console("snap"); len(got.boots) != boots+1 {
		t.Fatalf("boots %v: the merge rebooted the guest", got.boots)
	}
	if _, err := c.RestartVM(e.ctx(), "snap"); err != nil {
		t.Fatal(err)
	}
	beforeRestart := g.counter
	testutil.Eventually(t, 90*time.Second, func() error {
		if g = e.console("snap"); len(g.boots) < boots+2 {
			return errors.New("not restarted yet")
		}
		return nil
	})
	if got := g.boots[len(g.boots)-1]; got < beforeRestart {
		t.Fatalf("counter %d at the boot after the restart, %d before: the merges lost writes", got, beforeRestart)
	}
	testutil.Eventually(t, 90*time.Second, func() error {
		if n := layers(); n != 2 {
			return fmt.Errorf("%d disk layers in the pool, want 2 after the restart (0 holding s4, and 6)", n)
		}
		return nil
	})
	g = e.waitTicks("snap", g.counter+2)
	t.Logf("counter %d after the merges, boots %v", g.counter, g.boots)

	// A snapshot schedule: every 10 s, keep 2: once 4 are taken, exactly
	// the newest 2 scheduled ones stay (s4, an operator's, too), and the
	// expired ones' layers are merged away as the guest runs.
	if out, err := e.corralctl("h2", "vm", "snapshot", "schedule", "snap", "every 10s keep 2"); err != nil {
		t.Fatalf("schedule: %v %s", err, out)
	}
	testutil.Eventually(t, 2*time.Minute, func() error {
		v, err := e.any().VM(e.ctx(), "snap")
		if err != nil {
			return err
		}
		var autos []string
		for _, s := range v.Snapshots {
			if strings.HasPrefix(s.Name, "auto-") {
				autos = append(autos, s.Name)
			}
		}
		evs, _ := e.any().Events(e.ctx(), 0, 2000, 0)
		taken := 0
		for _, ev := range evs {
			if ev.VM == "snap" && ev.Kind == "snapshot" && strings.Contains(ev.Message, "auto-") {
				taken++
			}
		}
		if taken < 4 || len(autos) != 2 || len(v.Snapshots) != 3 {
			return fmt.Errorf("%d scheduled snapshots taken, %v kept of %d", taken, autos, len(v.Snapshots))
		}
		return nil
	})
	if out, err := e.corralctl("h2", "vm", "snapshot", "schedule", "snap", "--off"); err != nil {
		t.Fatalf("schedule off: %v %s", err, out)
	}

	// A memory snapshot, then a revert to it: the guest resumes where it
	// was, counting on from what its RAM held at the snapshot (below what
	// it had counted since), without a boot.
	ticks := func() []int {
		l, err := e.any().ConsoleLog(e.ctx(), "snap", 1<<20)
		if err != nil {
			t.Fatal(err)
		}
		var out []int
		for _, m := range tickRx.FindAllStringSubmatch(l.Log, -1) {
			n, _ := strconv.Atoi(m[1])
			out = append(out, n)
		}
		return out
	}
	g = e.waitTicks("snap", g.counter+1)
	boots, pre := len(g.boots), g.counter
	testutil.Eventually(t, 30*time.Second, func() error {
		out, err := e.corralctl("h1", "vm", "snapshot", "create", "snap", "m1", "--memory")
		if err != nil && strings.Contains(err.Error(), "being taken") {
			return err // a scheduled snapshot of the last slot is finishing
		}
		if err != nil {
			t.Fatalf("memory snapshot: %v %s", err, out)
		}
		t.Logf("%s", strings.TrimSpace(out))
		return nil
	})
	at := e.console("snap").counter
	if out, err := e.corralctl("h1", "vm", "snapshot", "ls", "snap"); err != nil || !strings.Contains(out, "memory") {
		t.Fatalf("snapshot ls: %v\n%s", err, out)
	}
	g = e.waitTicks("snap", at+5)
	seen := len(ticks())
	out, err = e.corralctl("h1", "vm", "snapshot", "revert", "snap", "m1")
	if err != nil || !strings.Contains(out, "resumes from the snapshot's memory") {
		t.Fatalf("revert to the memory snapshot: %v %s", err, out)
	}
	testutil.Eventually(t, 90*time.Second, func() error {
		all := ticks()
		for i := max(seen, 1); i < len(all); i++ {
			if all[i] < all[i-1] {
				if all[i] <= pre || all[i] > at+1 {
					t.Fatalf("counted %d after the revert: the snapshot was taken between %d and %d, the guest had counted %d", all[i], pre, at, all[i-1])
				}
				return nil
			}
		}
		return errors.New("the guest has not counted from the snapshot's memory yet")
	})
	e.waitVM("snap", 60*time.Second, func(v api.VM) error {
		if err := running(v); err != nil {
			return err
		}
		if !strings.Contains(v.Message, `resumed from the memory of snapshot "m1"`) {
			return fmt.Errorf("running, saying %q", v.Message)
		}
		return nil
	})
	if got := e.console("snap"); len(got.boots) != boots {
		t.Fatalf("boots %v: the revert to a memory snapshot booted the guest", got.boots)
	}

	if out, err := e.corralctl("h1", "vm", "rm", "snap"); err != nil {
		t.Fatalf("rm: %v %s", err, out)
	}
	testutil.Eventually(t, 60*time.Second, func() error {
		files, _ := os.ReadDir(pool)
		for _, f := range files {
			if strings.HasPrefix(f.Name(), "vm-snap-") {
				return fmt.Errorf("%s left after vm rm", f.Name())
			}
		}
		return nil
	})
}

// isStopped is running for a stopped VM.
func isStopped(v api.VM) error {
	if v.State != "stopped" {
		return fmt.Errorf("%s is %s on %s (%s)", v.Name, v.State, v.Host, v.Message)
	}
	return nil
}

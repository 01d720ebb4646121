package e2e

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/corralhq/corral/api"
	"github.com/corralhq/corral/internal/testutil"
)

// TestGuestLifecycle: one guest through everything a host can do to it:
// create, QEMU killed, libvirtd restarted, corrald restarted, removal.
func TestGuestLifecycle(t *testing.T) {
	e := newEnv(t, 1, "")
	c := e.client(0)
	req := e.vmRequest("life")
	req.Spec.UserData = "#cloud-config\nhostname: life\n"
	if _, err := c.CreateVM(e.ctx(), req); err != nil {
		t.Fatal(err)
	}
	v := e.waitVM("life", 60*time.Second, running)
	g := e.waitTicks("life", 3)
	if len(g.boots) != 1 || g.boots[0] != 0 {
		t.Fatalf("boots %v", g.boots)
	}
	l, _ := c.ConsoleLog(e.ctx(), "life", 1<<20)
	if !strings.Contains(l.Log, "CORRAL-USERDATA #cloud-config hostname: life") {
		t.Fatal("the guest did not find its cloud-init seed")
	}
	t.Logf("running on %s since %s", v.Host, v.Since)

	// QEMU killed with SIGKILL: corral restarts the guest and its disk
	// counter carries on.
	before := g.counter
	syscall.Kill(e.qemuPID(v.Host, "life"), syscall.SIGKILL)
	testutil.Eventually(t, 60*time.Second, func() error {
		g = e.console("life")
		if len(g.boots) < 2 {
			return errors.New("no second boot yet")
		}
		return nil
	})
	if g.boots[1] < before {
		t.Fatalf("counter went back: %d at the second boot, %d before the kill", g.boots[1], before)
	}
	v = e.waitVM("life", 30*time.Second, func(v api.VM) error {
		if err := running(v); err != nil {
			return err
		}
		if v.Restarts != 1 {
			return fmt.Errorf("restarts %d", v.Restarts)
		}
		return nil
	})

	// The guest's kernel panics (an NMI, as an operator takes a crash
	// dump): pvpanic tells QEMU, libvirt ends the domain as crashed
	// (on_crash=destroy), and corral restarts it like any crash. The
	// guest kernel waits forever after a panic (no panic= on its command
	// line), so a third boot in a new QEMU is corral's doing. (Its console
	// shows no "Kernel panic" line: printk from NMI context is deferred to
	// the end of panic(), after pvpanic has ended the domain.)
	g = e.waitTicks("life", g.counter)
	pid := e.qemuPID(v.Host, "life")
	if out := e.virsh(v.Host, "inject-nmi", "life"); strings.Contains(out, "error") {
		t.Fatalf("inject-nmi: %s", out)
	}
	testutil.Eventually(t, 60*time.Second, func() error {
		g = e.console("life")
		if len(g.boots) < 3 {
			return errors.New("no third boot yet")
		}
		return nil
	})
	if e.qemuPID(v.Host, "life") == pid {
		t.Fatal("the guest rebooted inside the same QEMU: the panic was not reported")
	}
	v = e.waitVM("life", 30*time.Second, func(v api.VM) error {
		if err := running(v); err != nil {
			return err
		}
		if v.Restarts != 2 {
			return fmt.Errorf("restarts %d", v.Restarts)
		}
		return nil
	})

	// libvirtd restarts: the guest is untouched, corral reconnects.
	g = e.waitTicks("life", g.counter)
	if err := e.host(v.Host).RestartDaemon(e.ctx(), "libvirtd"); err != nil {
		t.Fatal(err)
	}
	after := e.waitTicks("life", g.counter+2)
	if len(after.boots) != len(g.boots) || after.uptime <= g.uptime {
		t.Fatalf("libvirtd restart rebooted the guest: boots %v -> %v, uptime %.1f -> %.1f", g.boots, after.boots, g.uptime, after.uptime)
	}
	// corrald reconnects: an operation through libvirt works. The guest
	// ticks on meanwhile, so the ticks above may come before corrald is
	// back (a CI run: still disconnected 4 s after the restart).
	testutil.Eventually(t, 30*time.Second, func() error {
		if _, err := c.VMStats(e.ctx(), "life"); err != nil {
			return fmt.Errorf("stats after libvirtd restart: %w", err)
		}
		return nil
	})

	// corrald restarts: the guest is adopted, not rebooted.
	g = after
	if err := e.host(v.Host).StopDaemon(e.ctx(), "corrald", false); err != nil {
		t.Fatal(err)
	}
	if err := e.host(v.Host).StartDaemon(e.ctx(), "corrald"); err != nil {
		t.Fatal(err)
	}
	after = e.waitTicks("life", g.counter+2)
	v2 := e.waitVM("life", 30*time.Second, running)
	if len(after.boots) != len(g.boots) || after.uptime <= g.uptime || !v2.Since.Equal(v.Since) {
		t.Fatalf("corrald restart rebooted the guest: boots %v -> %v, uptime %.1f -> %.1f, since %v -> %v",
			g.boots, after.boots, g.uptime, after.uptime, v.Since, v2.Since)
	}

	// Stop gracefully, then remove: domain and disks gone.
	if _, err := c.StopVM(e.ctx(), "life"); err != nil {
		t.Fatal(err)
	}
	e.waitVM("life", 60*time.Second, func(v api.VM) error {
		if v.State != "stopped" {
			return fmt.Errorf("state %s", v.State)
		}
		return nil
	})
	if l, _ := c.ConsoleLog(e.ctx(), "life", 1<<20); !strings.Contains(l.Log, "CORRAL-POWEROFF") {
		t.Fatal("the stop was not a graceful (ACPI) shutdown")
	}
	vols, _ := os.ReadDir(e.lab.SharedDir() + "/pool")
	var volNames []string
	for _, f := range vols {
		volNames = append(volNames, f.Name())
	}
	if out, err := e.corralctl(v.Host, "vm", "rm", "life"); err != nil {
		t.Fatalf("rm: %v %s", err, out)
	}
	if _, err := c.VM(e.ctx(), "life"); !errors.Is(err, api.ErrNotFound) {
		t.Fatalf("vm after rm: %v", err)
	}
	if out := e.virsh(v.Host, "list", "--all", "--name"); strings.Contains(out, "life") {
		t.Fatalf("domain still defined: %s", out)
	}
	left, _ := os.ReadDir(e.lab.SharedDir() + "/pool")
	for _, f := range left {
		if strings.HasPrefix(f.Name(), "vm-life-") {
			t.Fatalf("volume %s left after rm (before: %v)", f.Name(), volNames)
		}
	}
}

// TestPlacementAcrossThreeHosts: 12 VMs on a 3-host lab are placed by
// capacity and anti-affinity, all run, and every host lists the same VMs.
func TestPlacementAcrossThreeHosts(t *testing.T) {
	e := newEnv(t, 3, "")
	c := e.client(1)
	// Every lab host offers 2 CPUs × 4 (overcommit) = 8 vCPUs: twelve
	// 2-vCPU VMs fill the cluster exactly, four per host.
	for i := 0; i < 12; i++ {
		req := e.vmRequest(fmt.Sprintf("p%02d", i))
		req.Spec.VCPUs = 2
		req.Spec.AntiAffinity = fmt.Sprintf("grp%d", i%4)
		if _, err := e.client(i%3).CreateVM(e.ctx(), req); err != nil {
			t.Fatalf("create %s: %v", req.Name, err)
		}
	}
	req := e.vmRequest("one-too-many")
	_, err := c.CreateVM(e.ctx(), req)
	var ae *api.Error
	if !errors.As(err, &ae) || ae.Code != api.CodeNoCapacity || !strings.Contains(err.Error(), "not enough vCPUs") {
		t.Fatalf("13th VM: %v", err)
	}
	var vms []api.VM
	testutil.Eventually(t, 3*time.Minute, func() error {
		vms, err = c.VMs(e.ctx())
		if err != nil {
			return err
		}
		for _, v := range vms {
			if err := running(v); err != nil {
				return err
			}
		}
		return nil
	})
	perHost := map[string]int{}
	seen := map[string]bool{}
	for _, v := range vms {
		perHost[v.Host]++
		key := v.Spec.AntiAffinity + "@" + v.Host
		if seen[key] {
			t.Fatalf("anti-affinity broken: %s", key)
		}
		seen[key] = true
	}
	if perHost["h1"] != 4 || perHost["h2"] != 4 || perHost["h3"] != 4 {
		t.Fatalf("placement %v", perHost)
	}
	// libvirt on each host runs exactly its four.
	for _, h := range []string{"h1", "h2", "h3"} {
		out := e.virsh(h, "list", "--name", "--state-running")
		if n := len(strings.Fields(out)); n != 4 {
			t.Fatalf("%s runs %d domains: %s", h, n, out)
		}
	}
	// corralctl vm ls -o json agrees on every host.
	var first []api.VM
	testutil.Eventually(t, 30*time.Second, func() error {
		first = nil
		for _, h := range []string{"h1", "h2", "h3"} {
			out, err := e.corralctl(h, "vm", "ls", "-o", "json")
			if err != nil {
				return err
			}
			var got []api.VM
			if err := json.Unmarshal([]byte(out), &got); err != nil {
				return err
			}
			for i := range got {
				got[i].ReportedAt = time.Time{}
			}
			if first == nil {
				first = got
			} else if !jsonEqual(first, got) {
				return fmt.Errorf("%s disagrees", h)
			}
		}
		return nil
	})
	if len(first) != 12 {
		t.Fatalf("%d VMs listed", len(first))
	}
}

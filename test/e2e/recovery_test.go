package e2e

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/corralhq/corral/api"
	"github.com/corralhq/corral/internal/testutil"
)

var joinTokenRx = regexp.MustCompile(`(?m)^(corral1\.\S+)$`)

// TestClusterRecovery: the cluster's state is backed up; then guests
// move, a snapshot puts one on a new disk layer, one stops on a new
// layer, one is created; then every host loses its data_dir at once.
// corrald recover rebuilds the cluster from the backup on h1, the other
// hosts join it again with its new token, and every running guest is
// adopted where it really runs, on the layer it really uses, without a
// second QEMU life; the stopped one starts on its newest layer; the
// guest the backup did not know runs on until the recovery is ended,
// then is removed. The exact checker sees no VM on two hosts at once.
func TestClusterRecovery(t *testing.T) {
	e := newEnv(t, 3, "")
	chk := e.startExactChecker()
	names := map[string]string{"ra": "h1", "rb": "h2", "rc": "h3", "rd": "h2"}
	for _, n := range []string{"ra", "rb", "rc", "rd"} {
		req := e.vmRequest(n)
		req.Host = names[n]
		if _, err := e.client(0).CreateVM(e.ctx(), req); err != nil {
			t.Fatal(err)
		}
	}
	for n := range names {
		e.waitVM(n, 90*time.Second, running)
		e.waitTicks(n, 2)
	}

	file := filepath.Join(e.lab.SharedDir(), "cluster.backup")
	out, err := e.corralctl("h2", "cluster", "backup", "-o", file)
	if err != nil {
		t.Fatalf("cluster backup: %v %s", err, out)
	}
	t.Logf("%s", strings.TrimSpace(out))
	if fi, err := os.Stat(file); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("backup file: %v %v", fi, err)
	}

	// After the backup: rb moves to h3, ra gets a snapshot (a new active
	// layer), rd gets one and stops after writing on it, re is new.
	if out, err := e.corralctl("h1", "vm", "migrate", "rb", "--to", "h3", "--wait"); err != nil {
		t.Fatalf("migrate: %v %s", err, out)
	}
	for _, n := range []string{"ra", "rd"} {
		if out, err := e.corralctl("h1", "vm", "snapshot", "create", n, "after"); err != nil {
			t.Fatalf("snapshot %s: %v %s", n, err, out)
		}
		e.waitVM(n, 60*time.Second, func(v api.VM) error {
			if len(v.Snapshots) != 1 || v.Snapshots[0].State != "ready" {
				return fmt.Errorf("snapshots of %s: %+v", n, v.Snapshots)
			}
			return nil
		})
	}
	rdCounter := e.waitTicks("rd", e.console("rd").counter+2).counter
	if out, err := e.corralctl("h1", "vm", "stop", "rd", "--wait"); err != nil {
		t.Fatalf("stop rd: %v %s", err, out)
	}
	rdCounter = max(rdCounter, e.console("rd").counter)
	req := e.vmRequest("re")
	req.Host = "h1"
	if _, err := e.client(0).CreateVM(e.ctx(), req); err != nil {
		t.Fatal(err)
	}
	e.waitVM("re", 90*time.Second, running)
	where := map[string]string{}
	for _, n := range []string{"ra", "rb", "rc", "re"} {
		where[n] = e.waitVM(n, 10*time.Second, running).Host
	}
	if where["rb"] != "h3" {
		t.Fatalf("rb on %s after its migration", where["rb"])
	}

	livesBefore := map[string]int{}
	for _, n := range []string{"ra", "rb", "rc", "re"} {
		livesBefore[n] = len(watchLives(t, chk, n))
	}

	// The disaster: HA disarmed (else losing every voter fences every
	// host, see docs/recovery.md), every corrald killed, every data_dir
	// lost.
	if out, err := e.corralctl("h1", "cluster", "ha", "disarm"); err != nil {
		t.Fatalf("disarm: %v %s", err, out)
	}
	for _, h := range e.lab.Hosts {
		if err := h.StopDaemon(e.ctx(), "corrald", true); err != nil {
			t.Fatal(err)
		}
		if err := h.WipeDataDir(); err != nil {
			t.Fatal(err)
		}
	}

	h1 := e.host("h1")
	rec, err := exec.CommandContext(e.ctx(), e.lab.Corrald, "recover", "--from", file, "--config", h1.ConfigFile()).CombinedOutput()
	if err != nil {
		t.Fatalf("corrald recover: %v\n%s", err, rec)
	}
	t.Logf("corrald recover:\n%s", rec)
	m := joinTokenRx.FindSubmatch(rec)
	if m == nil {
		t.Fatal("corrald recover printed no join token")
	}
	if err := h1.StartDaemon(e.ctx(), "corrald"); err != nil {
		t.Fatal(err)
	}
	for _, h := range e.lab.Hosts[1:] {
		if err := h.SetConfig("join_token", fmt.Sprintf("%q", m[1])); err != nil {
			t.Fatal(err)
		}
		if err := h.StartDaemon(e.ctx(), "corrald"); err != nil {
			t.Fatal(err)
		}
	}

	var r *api.Recovery
	testutil.Eventually(t, 2*time.Minute, func() error {
		r, err = e.client(0).Recovery(e.ctx())
		if err != nil {
			return err
		}
		if r == nil || len(r.Waiting) > 0 {
			return fmt.Errorf("recovery %+v", r)
		}
		return nil
	})
	out, _ = e.corralctl("h2", "cluster", "recovery")
	t.Logf("cluster recovery:\n%s", out)
	if r.Adopted != 3 || r.Moved != 1 || r.Rechained != 2 || len(r.Unknown) != 1 || r.Unknown[0].Name != "re" || r.Unknown[0].Host != where["re"] {
		t.Fatalf("recovery %+v: want ra, rb, rc adopted, rb moved, the chains of ra and rd updated, re unknown", r)
	}
	for _, n := range []string{"ra", "rb", "rc"} {
		v := e.waitVM(n, 60*time.Second, running)
		if v.Host != where[n] {
			t.Fatalf("%s adopted on %s; it runs on %s", n, v.Host, where[n])
		}
	}
	// rd starts on the layer it last wrote: its counter goes on.
	e.waitVM("rd", 90*time.Second, running)
	testutil.Eventually(t, 90*time.Second, func() error {
		g := e.console("rd")
		if len(g.boots) < 2 {
			return errors.New("rd has not booted again yet")
		}
		if got := g.boots[len(g.boots)-1]; got < rdCounter {
			return fmt.Errorf("rd booted with counter %d; it had written %d before it stopped", got, rdCounter)
		}
		return nil
	})
	if v, _ := e.any().VM(e.ctx(), "re"); v.Name != "" {
		t.Fatalf("re, unknown to the backup, is in state: %+v", v)
	}
	if !e.runsOn(where["re"], "re") {
		t.Fatalf("unknown guest re no longer runs on %s before the recovery ended", where["re"])
	}

	// Ended: re is removed, HA is armed again, the cluster goes on.
	if out, err := e.corralctl("h3", "cluster", "recovery", "end"); err != nil {
		t.Fatalf("recovery end: %v %s", err, out)
	}
	testutil.Eventually(t, 60*time.Second, func() error {
		if e.runsOn(where["re"], "re") {
			return errors.New("re still runs")
		}
		s, err := e.client(1).Status(e.ctx())
		if err != nil {
			return err
		}
		if !s.HAArmed || len(s.Voters) != 3 {
			return fmt.Errorf("HA armed %v, voters %v", s.HAArmed, s.Voters)
		}
		return nil
	})
	if _, err := e.client(2).CreateVM(e.ctx(), e.vmRequest("rf")); err != nil {
		t.Fatal(err)
	}
	e.waitVM("rf", 90*time.Second, running)
	for _, n := range []string{"ra", "rb", "rc"} {
		if lives := watchLives(t, chk, n); len(lives) != livesBefore[n] {
			t.Fatalf("%s had %d QEMU lives before the disaster, %d after: adopted guests must not restart", n, livesBefore[n], len(lives))
		}
	}
	chk.check(t)
}

// runsOn reports whether libvirt on host h lists the domain vm running.
func (e *env) runsOn(h, vm string) bool {
	return strings.Contains(e.virsh(h, "domstate", vm), "running")
}

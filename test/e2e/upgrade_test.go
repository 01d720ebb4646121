package e2e

import (
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/corralhq/corral/api"
	"github.com/corralhq/corral/internal/lab"
	"github.com/corralhq/corral/internal/testutil"
	"github.com/corralhq/corral/raftlog"
)

// previousRelease is the last released commit: the N-1 this build must
// interoperate with (raftlog.Protocol 1). Move it with each release.
const previousRelease = "fc84968"

// buildRelease builds corrald and corral-fencer of commit rev into dir,
// stamped with rev as their version. The source comes from git archive
// rather than a worktree: nothing is registered in the repository, so an
// interrupted test leaves nothing behind there. Modules come from the
// module cache (or the Go module proxy).
func buildRelease(t *testing.T, rev, dir string) {
	t.Helper()
	root := testutil.RepoRoot()
	if out, err := exec.Command("git", "-C", root, "cat-file", "-e", rev+"^{commit}").CombinedOutput(); err != nil {
		t.Fatalf("commit %s, the previous release, is not in this clone (%v %s): the upgrade test builds it; in a shallow clone run git fetch --unshallow", rev, err, out)
	}
	src := t.TempDir()
	archive := exec.Command("sh", "-c", `git -C "$1" archive "$2" | tar -x -C "$3"`, "sh", root, rev, src)
	if out, err := archive.CombinedOutput(); err != nil {
		t.Fatalf("git archive %s: %v: %s", rev, err, out)
	}
	build := exec.Command("go", "build", "-ldflags", "-X github.com/corralhq/corral/internal/version.Version="+rev,
		"-o", dir+string(os.PathSeparator), "./cmd/corrald", "./cmd/corral-fencer")
	build.Dir = src
	build.Env = append(os.Environ(), "GOWORK=off", "GOFLAGS=-buildvcs=false")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build %s: %v: %s", rev, err, out)
	}
}

// install puts src at dst by rename, as a package upgrade does: a process
// running the old file keeps it, the next start runs the new one.
func install(t *testing.T, src, dst string) {
	t.Helper()
	in, err := os.Open(src)
	if err != nil {
		t.Fatal(err)
	}
	defer in.Close()
	tmp := dst + ".new"
	out, err := os.OpenFile(tmp, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o755)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(out, in); err != nil {
		t.Fatal(err)
	}
	if err := out.Close(); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, dst); err != nil {
		t.Fatal(err)
	}
}

// TestRollingUpgrade: a 3-host lab on the previous release with a guest on
// every host is upgraded host by host (fencer restarted, corrald stopped
// cleanly and started on the new binary, as the packages do), a VM created
// and run after each step; no guest ever restarts, whichever of old and new
// leads. After the last host the leader raises the cluster protocol to 2.
// Then one host is downgraded to the previous release: that corrald
// predates the start-up check, so it runs on, refusing (and logging) the
// protocol entry, and the leader leaves it unregistered and says why in an
// event; upgraded again, it returns.
func TestRollingUpgrade(t *testing.T) {
	testutil.NeedRoot(t)
	start := time.Now()
	newCorrald, corralctl := binaries(t)
	newFencer := filepath.Join(filepath.Dir(newCorrald), "corral-fencer")
	oldDir := t.TempDir()
	buildRelease(t, previousRelease, oldDir)
	oldCorrald, oldFencer := filepath.Join(oldDir, "corrald"), filepath.Join(oldDir, "corral-fencer")
	labBin := t.TempDir()
	labCorrald, labFencer := filepath.Join(labBin, "corrald"), filepath.Join(labBin, "corral-fencer")
	install(t, oldCorrald, labCorrald)
	install(t, oldFencer, labFencer)
	t.Logf("built %s in %v", previousRelease, time.Since(start).Round(time.Second))

	l := testutil.NewLab(t, lab.Config{Hosts: 3, Corrald: labCorrald, CorraldConfig: "health_load_per_cpu_degraded = 0\n"})
	e := &env{t: t, lab: l, ctlBin: corralctl}
	e.guest = testutil.BuildGuest(t, filepath.Join(l.SharedDir(), "guest"))
	e.waitCluster()
	e.importBase()
	for _, h := range e.hosts(0) {
		if h.Version != previousRelease {
			t.Fatalf("%s runs %q, want %s", h.Name, h.Version, previousRelease)
		}
	}
	watch := e.startExactChecker()
	var guests, crashed []string
	for _, h := range l.Hosts {
		guests = append(guests, e.pinned(h.Name, "old-"+h.Name+"-", 1)...)
	}
	since := map[string]time.Time{}
	for _, g := range guests {
		since[g] = e.waitVM(g, time.Minute, running).Since
	}
	// Every guest so far, and each one created later, lives once: no QEMU
	// restarts on any host, and each keeps its start time.
	untouched := func(when string) {
		t.Helper()
		rep, err := watch.w.Report()
		if err != nil {
			t.Fatal(err)
		}
		for _, g := range guests {
			lives := rep.LivesOf(g)
			if len(lives) != 1 || lives[0].End != 0 {
				t.Fatalf("%s: %s lived %d times: %+v", when, g, len(lives), lives)
			}
			if v := e.waitVM(g, 30*time.Second, running); !v.Since.Equal(since[g]) {
				t.Fatalf("%s: %s runs since %v, before since %v", when, g, v.Since, since[g])
			}
		}
	}

	install(t, newCorrald, labCorrald)
	install(t, newFencer, labFencer)
	// Followers first, the leader last (as one upgrades Raft servers):
	// the first steps run hosts of this release under a leader of the
	// previous one.
	var order []*lab.Host
	first := e.leader()
	for _, h := range l.Hosts {
		if h.Name != first {
			order = append(order, h)
		}
	}
	order = append(order, e.host(first))
	gated := false
	for _, h := range order {
		i := e.index(h.Name)
		stepStart := time.Now()
		leader := e.leader()
		if err := h.RestartDaemon(e.ctx(), "corral-fencer"); err != nil {
			t.Fatal(err)
		}
		if err := h.StopDaemon(e.ctx(), "corrald", false); err != nil {
			t.Fatal(err)
		}
		if err := h.StartDaemon(e.ctx(), "corrald"); err != nil {
			t.Fatal(err)
		}
		// Healthy on the new release: registered with its version, its
		// lease renewed, its clean-stop mark cleared. Its protocol is in
		// state once a leader of the new release registers it (one of the
		// previous release writes hosts without it).
		e.waitHost(i, h.Name, func(hv api.Host) error {
			if hv.Version != "dev" || hv.Lease != "ok" || !hv.StoppedAt.IsZero() || hv.Gossip != "alive" {
				return fmt.Errorf("version %s, lease %s, stopped at %v, gossip %s", hv.Version, hv.Lease, hv.StoppedAt, hv.Gossip)
			}
			s, err := e.client(i).Status(e.ctx())
			if err != nil || s.Leader == "" {
				return fmt.Errorf("no leader (%v)", err)
			}
			if e.runsNew(s.Leader) && hv.Protocol != raftlog.Protocol {
				return fmt.Errorf("protocol %d under a leader of this release", hv.Protocol)
			}
			return nil
		})
		name := "new-after-" + h.Name
		req := e.vmRequest(name)
		req.Host = h.Name
		if _, err := e.client(i).CreateVM(e.ctx(), req); err != nil {
			t.Fatalf("create %s: %v", name, err)
		}
		v := e.waitVM(name, 90*time.Second, running)
		e.waitTicks(name, 0)
		if leader := e.leader(); !gated && !e.runsNew(leader) {
			e.gatedUnderOldLeader(h.Name, name, leader)
			crashed, gated = append(crashed, name), true
		} else {
			since[name] = v.Since
			guests = append(guests, name)
		}
		untouched("after upgrading " + h.Name)
		t.Logf("%s upgraded in %v (leader before: %s, now: %s); %s runs on %s",
			h.Name, time.Since(stepStart).Round(100*time.Millisecond), leader, e.leader(), name, v.Host)
	}

	if !gated {
		t.Fatal("no host of this release ever ran under a leader of the previous one")
	}
	// Every host on the new release: the cluster's protocol is raised.
	testutil.Eventually(t, 30*time.Second, func() error {
		for i := range l.Hosts {
			s, err := e.client(i).Status(e.ctx())
			if err != nil {
				return err
			}
			if s.Protocol != raftlog.Protocol || s.HostsProtocol != raftlog.Protocol {
				return fmt.Errorf("%s: cluster protocol %d, hosts %d", s.Host, s.Protocol, s.HostsProtocol)
			}
		}
		return nil
	})
	if out, err := e.corralctl("h1", "host", "ls"); err != nil || strings.Count(out, "dev") != 3 {
		t.Fatalf("host ls: %v\n%s", err, out)
	} else {
		t.Logf("host ls:\n%s", out)
	}
	if ev := e.event("protocol", ""); !strings.Contains(ev.Message, fmt.Sprintf("raised from 1 to %d", raftlog.Protocol)) {
		t.Fatalf("protocol event: %+v", ev)
	}

	// Nothing either release sent was refused by the other (a field one
	// does not know is refused by strict decoding; an entry type, logged).
	for _, h := range l.Hosts {
		b, _ := os.ReadFile(h.LogFile("corrald"))
		for _, bad := range []string{"unknown field", "refused a raft entry"} {
			if i := strings.Index(string(b), bad); i >= 0 {
				t.Fatalf("%s logged %q: %s", h.Name, bad, string(b)[max(i-300, 0):min(i+300, len(b))])
			}
		}
	}
	for _, name := range crashed {
		if lives := watchLives(t, watch, name); len(lives) != 2 {
			t.Fatalf("%s, crashed once, lived %d times: %+v", name, len(lives), lives)
		}
	}

	// Downgrade a follower to the previous release.
	var victim *lab.Host
	vi := 0
	for i, h := range l.Hosts {
		if h.Name != e.leader() {
			victim, vi = h, i
		}
	}
	install(t, oldCorrald, labCorrald)
	if err := victim.StopDaemon(e.ctx(), "corrald", false); err != nil {
		t.Fatal(err)
	}
	downgraded := time.Now()
	if err := victim.StartDaemon(e.ctx(), "corrald"); err != nil {
		t.Fatalf("the previous release did not start on a state of protocol %d: %v", raftlog.Protocol, err)
	}
	ev := e.event("protocol-refused", victim.Name)
	want := fmt.Sprintf("host %s runs corrald %s, which speaks cluster protocol 1, below the cluster's %d: not registered", victim.Name, previousRelease, raftlog.Protocol)
	if !strings.Contains(ev.Message, want) {
		t.Fatalf("refusal event %q, want %q in it", ev.Message, want)
	}
	t.Logf("leader's event %v after the downgrade: %s", ev.Time.Sub(downgraded).Round(time.Millisecond), ev.Message)
	// The previous release refuses the protocol entry (it does not know
	// its type), logs it and runs on: it predates the start-up check.
	var line string
	testutil.Eventually(t, 30*time.Second, func() error {
		b, _ := os.ReadFile(victim.LogFile("corrald"))
		logs := string(b)
		if i := strings.LastIndex(logs, "refused a raft entry"); i >= 0 && strings.Contains(logs[i:], fmt.Sprintf("type %d", raftlog.TypeSetProtocol)) {
			line = logs[strings.LastIndex(logs[:i], "\n")+1:]
			line = line[:strings.IndexByte(line+"\n", '\n')]
			return nil
		}
		return fmt.Errorf("%s has not logged refusing the protocol entry", victim.Name)
	})
	t.Logf("%s (%s) logged: %s", victim.Name, previousRelease, line)
	if !victim.Running()["corrald"] {
		t.Fatalf("the previous release exited on %s", victim.Name)
	}
	hv := e.waitHost(e.survivor(victim.Name), victim.Name, func(hv api.Host) error {
		if hv.Gossip != "alive" {
			return fmt.Errorf("gossip %s", hv.Gossip)
		}
		return nil
	})
	if hv.Version != "dev" || hv.Protocol != raftlog.Protocol {
		t.Fatalf("the leader re-registered the downgraded host: %+v", hv)
	}
	untouched("after downgrading " + victim.Name)

	// Upgraded again, it returns.
	install(t, newCorrald, labCorrald)
	if err := victim.RestartDaemon(e.ctx(), "corrald"); err != nil {
		t.Fatal(err)
	}
	e.waitHost(vi, victim.Name, func(hv api.Host) error {
		if hv.Lease != "ok" || !hv.StoppedAt.IsZero() {
			return fmt.Errorf("lease %s, stopped at %v", hv.Lease, hv.StoppedAt)
		}
		return nil
	})
	untouched("after upgrading " + victim.Name + " again")
	watch.check(t)
	t.Logf("rolling upgrade test took %v", time.Since(start).Round(time.Second))
}

// gatedUnderOldLeader checks the two gates of protocol 2 while a host of
// this release (host) works under a leader of the previous one: a crash
// restart of vm, on host, is reported (without restart times, which that
// leader would refuse) and recorded; host rm --force is refused here,
// saying why, instead of by that leader as an unknown field.
func (e *env) gatedUnderOldLeader(host, vm, leader string) {
	e.t.Helper()
	err := e.client(e.index(host)).RemoveHost(e.ctx(), leader, true)
	if !errors.Is(err, api.ErrConflict) || !strings.Contains(err.Error(), "host rm --force needs cluster protocol 2") {
		e.t.Fatalf("host rm --force under a leader of %s: %v", previousRelease, err)
	}
	g := e.waitTicks(vm, 1)
	syscall.Kill(e.qemuPID(host, vm), syscall.SIGKILL)
	for _, c := range []int{e.index(host), e.index(leader)} {
		testutil.Eventually(e.t, 90*time.Second, func() error {
			v, err := e.client(c).VM(e.ctx(), vm)
			if err != nil {
				return err
			}
			if v.State != "running" || v.Restarts != 1 {
				return fmt.Errorf("%s: %s, %d restarts (%s)", vm, v.State, v.Restarts, v.Message)
			}
			return nil
		})
	}
	testutil.Eventually(e.t, 60*time.Second, func() error {
		if after := e.console(vm); len(after.boots) != len(g.boots)+1 {
			return fmt.Errorf("%s booted %v, before the kill %v", vm, after.boots, g.boots)
		}
		return nil
	})
	e.t.Logf("under leader %s (%s): %s's crash restart on %s recorded; host rm --force refused: %v", leader, previousRelease, vm, host, err)
}

// index returns the index of lab host name.
func (e *env) index(name string) int {
	for i, h := range e.lab.Hosts {
		if h.Name == name {
			return i
		}
	}
	e.t.Fatalf("no host %s", name)
	return 0
}

func watchLives(t *testing.T, c *exactChecker, vm string) []lab.Life {
	t.Helper()
	rep, err := c.w.Report()
	if err != nil {
		t.Fatal(err)
	}
	return rep.LivesOf(vm)
}

// hosts lists the hosts as host i sees them.
func (e *env) hosts(i int) []api.Host {
	e.t.Helper()
	hs, err := e.client(i).Hosts(e.ctx())
	if err != nil {
		e.t.Fatal(err)
	}
	return hs
}

// waitHost waits until host i sees host name satisfy cond, and returns it.
func (e *env) waitHost(i int, name string, cond func(api.Host) error) api.Host {
	e.t.Helper()
	var hv api.Host
	testutil.Eventually(e.t, 60*time.Second, func() error {
		var err error
		if hv, err = e.client(i).Host(e.ctx(), name); err != nil {
			return err
		}
		if err := cond(hv); err != nil {
			return fmt.Errorf("%s: %w", name, err)
		}
		return nil
	})
	return hv
}

// runsNew reports whether host name runs this build (it reports a
// protocol in its status; the previous release does not).
func (e *env) runsNew(name string) bool {
	h, err := e.lab.Host(name)
	if err != nil {
		return false
	}
	for i, x := range e.lab.Hosts {
		if x == h {
			s, err := e.client(i).Status(e.ctx())
			return err == nil && s.ThisProtocol != 0
		}
	}
	return false
}

// event waits for the last event of kind (about host, if set) and returns
// it.
func (e *env) event(kind, host string) api.Event {
	e.t.Helper()
	var found api.Event
	testutil.Eventually(e.t, 60*time.Second, func() error {
		evs, err := e.any().Events(e.ctx(), 0, 0, 0)
		if err != nil {
			return err
		}
		for _, ev := range evs {
			if ev.Kind == kind && (host == "" || ev.Host == host) {
				found = ev
			}
		}
		if found.Kind == "" {
			return fmt.Errorf("no %s event", kind)
		}
		return nil
	})
	return found
}

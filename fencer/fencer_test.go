package fencer

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/corralhq/corral/internal/guestproc"
	"github.com/corralhq/corral/internal/testutil"
)

// fakeGuest starts a process whose command line names a guest as QEMU's
// does (`-name guest=NAME,debug-threads=on`) and records it in runDir as
// libvirt would: a pid file and a status XML, with corral's metadata when
// corral is set.
func fakeGuest(t *testing.T, runDir, name string, corral bool) *exec.Cmd {
	t.Helper()
	cmd := exec.Command("bash", "-c", "read -r _", "-name", "guest="+name+",debug-threads=on")
	stdin, err := cmd.StdinPipe() // kept open: the process blocks on read
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() { cmd.Wait(); close(exited) }()
	t.Cleanup(func() { cmd.Process.Kill(); <-exited; stdin.Close() })
	// Start returns once execve has succeeded, which can be before the
	// kernel has laid out the new command line: wait to see the name, as
	// a guest's QEMU has long shown it by the time libvirt writes its pid.
	testutil.Eventually(t, 5*time.Second, func() error {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", cmd.Process.Pid))
		if err != nil || !bytes.Contains(b, []byte("guest="+name)) {
			return fmt.Errorf("command line of %d not set yet: %q %v", cmd.Process.Pid, b, err)
		}
		return nil
	})
	xml := "<domstatus><domain type='qemu'><name>" + name + "</name><metadata>"
	if corral {
		xml += "<corral:vm xmlns:corral='" + guestproc.MetadataNS + "' id='x'/>"
	}
	xml += "</metadata></domain></domstatus>"
	if err := os.WriteFile(filepath.Join(runDir, name+".xml"), []byte(xml), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(runDir, name+".pid"), []byte(fmt.Sprint(cmd.Process.Pid)), 0o600); err != nil {
		t.Fatal(err)
	}
	return cmd
}

func dead(c *exec.Cmd) bool { return c.ProcessState != nil }

// startFencer runs a fencer on a socket in dir until the test ends.
func startFencer(t *testing.T, dir, runDir string) (socket string, stop func()) {
	t.Helper()
	socket = filepath.Join(dir, "fencer.sock")
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	srv := New(Config{Socket: socket, RunDir: runDir, Scan: 10 * time.Millisecond}, slog.New(slog.DiscardHandler))
	go func() { done <- srv.Run(ctx) }()
	testutil.Eventually(t, 5*time.Second, func() error {
		_, err := Query(context.Background(), socket)
		return err
	})
	stopped := false
	stop = func() {
		if stopped {
			return
		}
		stopped = true
		cancel()
		if err := <-done; err != nil {
			t.Errorf("fencer: %v", err)
		}
	}
	t.Cleanup(stop)
	return socket, stop
}

func newClient(t *testing.T, socket string, budget time.Duration) *Client {
	c := NewClient(socket, budget, slog.New(slog.DiscardHandler))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { c.Run(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	return c
}

func waitPinned(t *testing.T, socket string, names ...string) {
	t.Helper()
	testutil.Eventually(t, 5*time.Second, func() error {
		st, err := Query(context.Background(), socket)
		if err != nil {
			return err
		}
		for _, n := range names {
			if !slices.Contains(st.Guests, n) {
				return fmt.Errorf("%s not pinned: %v", n, st.Guests)
			}
		}
		return nil
	})
}

// TestFencerKillsAtDeadline: an armed deadline passes unfed; the fencer
// kills corral's guests (and only corral's) before the deadline, budget
// early, and records the fence.
func TestFencerKillsAtDeadline(t *testing.T) {
	dir, runDir := t.TempDir(), t.TempDir()
	a := fakeGuest(t, runDir, "vm1", true)
	b := fakeGuest(t, runDir, "vm2", true)
	other := fakeGuest(t, runDir, "not-corral", false)
	socket, _ := startFencer(t, dir, runDir)
	waitPinned(t, socket, "vm1", "vm2")
	c := newClient(t, socket, 100*time.Millisecond)
	c.Arm(400 * time.Millisecond)
	if err := c.Sync(context.Background()); err != nil {
		t.Fatal(err)
	}
	if !c.Armed() {
		t.Fatal("client does not see the fencer armed")
	}
	testutil.Eventually(t, 5*time.Second, func() error {
		if !dead(a) || !dead(b) {
			return fmt.Errorf("guests alive")
		}
		return nil
	})
	if dead(other) {
		t.Fatal("killed a process that is not a corral guest")
	}
	st, _ := Query(context.Background(), socket)
	if st.Mode != Fenced || len(st.Fences) != 1 {
		t.Fatalf("status after the deadline: %+v", st)
	}
	f := st.Fences[0]
	if !slices.Equal(f.Killed, []string{"vm1", "vm2"}) || len(f.Alive) != 0 || f.DeadNS == 0 {
		t.Fatalf("fence record %+v", f)
	}
	if due := f.DeadlineNS - int64(100*time.Millisecond); f.StartNS < due {
		t.Fatalf("kill started %v before its due time", time.Duration(due-f.StartNS))
	}
	if f.DeadNS > f.DeadlineNS {
		t.Fatalf("guests died %v after the deadline", time.Duration(f.DeadNS-f.DeadlineNS))
	}
	t.Logf("kill started %v after due, all dead %v before the deadline",
		time.Duration(f.StartNS-(f.DeadlineNS-int64(100*time.Millisecond))), time.Duration(f.DeadlineNS-f.DeadNS))

	// Fenced, it kills any corral guest that appears, until armed again.
	late := fakeGuest(t, runDir, "vm3", true)
	testutil.Eventually(t, 5*time.Second, func() error {
		if !dead(late) {
			return fmt.Errorf("vm3 alive while fenced")
		}
		return nil
	})
	c.Arm(time.Minute - time.Second)
	if err := c.Sync(context.Background()); err != nil {
		t.Fatal(err)
	}
	fresh := fakeGuest(t, runDir, "vm4", true)
	waitPinned(t, socket, "vm4")
	if dead(fresh) {
		t.Fatal("armed again, the fencer still kills")
	}
}

// TestFencerRelease: a released fencer kills nothing when the old deadline
// passes (a clean stop the leader knows of; HA disarmed).
func TestFencerRelease(t *testing.T) {
	dir, runDir := t.TempDir(), t.TempDir()
	g := fakeGuest(t, runDir, "vm1", true)
	socket, _ := startFencer(t, dir, runDir)
	waitPinned(t, socket, "vm1")
	c := newClient(t, socket, 0)
	c.Arm(200 * time.Millisecond)
	c.Release()
	if err := c.Sync(context.Background()); err != nil {
		t.Fatal(err)
	}
	deadline := guestproc.MonoNow() + 300*time.Millisecond
	testutil.Eventually(t, 5*time.Second, func() error {
		if guestproc.MonoNow() < deadline {
			return fmt.Errorf("waiting past the released deadline")
		}
		return nil
	})
	st, _ := Query(context.Background(), socket)
	if dead(g) || st.Mode != Released || len(st.Fences) != 0 {
		t.Fatalf("released fencer: guest dead %v, status %+v", dead(g), st)
	}
}

// TestFencerDeadlinesOnlyMoveForward: an earlier deadline arriving late
// does not shorten or lengthen anything; a renewal whose kill time already
// passed is ignored.
func TestFencerDeadlinesOnlyMoveForward(t *testing.T) {
	dir, runDir := t.TempDir(), t.TempDir()
	socket, _ := startFencer(t, dir, runDir)
	now := guestproc.MonoNow()
	send := func(r Request) Status {
		t.Helper()
		st, err := roundTrip(socket, r)
		if err != nil {
			t.Fatal(err)
		}
		return st
	}
	far := int64(now + 30*time.Second)
	if st := send(Request{Op: OpArm, DeadlineNS: far}); st.Mode != Armed || st.DeadlineNS != far {
		t.Fatalf("%+v", st)
	}
	if st := send(Request{Op: OpArm, DeadlineNS: far - int64(time.Second)}); st.DeadlineNS != far {
		t.Fatalf("deadline moved back: %+v", st)
	}
	if st := send(Request{Op: OpArm, DeadlineNS: int64(now - time.Second)}); st.DeadlineNS != far || st.Mode != Armed {
		t.Fatalf("past deadline changed the state: %+v", st)
	}
}

// TestFencerRefusesBadRequests: input is bounded and validated.
func TestFencerRefusesBadRequests(t *testing.T) {
	dir, runDir := t.TempDir(), t.TempDir()
	socket, _ := startFencer(t, dir, runDir)
	now := guestproc.MonoNow()
	for _, r := range []Request{
		{Op: OpArm, DeadlineNS: int64(now + 2*MaxAhead)},
		{Op: OpArm, DeadlineNS: int64(now + time.Second), BudgetNS: int64(2 * MaxBudget)},
		{Op: OpArm, DeadlineNS: int64(now + time.Second), BudgetNS: -1},
		{Op: OpArm},
		{Op: "kill-everything"},
	} {
		st, err := roundTrip(socket, r)
		if err != nil {
			t.Fatal(err)
		}
		if st.Error == "" || st.Mode != Released {
			t.Fatalf("%+v accepted: %+v", r, st)
		}
	}
	// Unknown fields and undecodable lines are refused; an endless line
	// ends the connection.
	conn, err := net.Dial("unix", socket)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	fmt.Fprintf(conn, "{\"op\":\"status\",\"extra\":1}\nnot json\n")
	dec := json.NewDecoder(conn)
	for i := 0; i < 2; i++ {
		var st Status
		if err := dec.Decode(&st); err != nil || !strings.Contains(st.Error, "bad request") {
			t.Fatalf("answer %d: %+v, %v", i, st, err)
		}
	}
	conn.Write([]byte(strings.Repeat("x", 2*maxLine) + "\n"))
	conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	var st Status
	if err := dec.Decode(&st); err == nil {
		t.Fatalf("a %d-byte line was answered: %+v", 2*maxLine, st)
	}
}

// TestFencerRestartKeepsDeadline: a fencer restarted while armed carries on
// with the deadline it had, and fires at once for one that passed while it
// was down.
func TestFencerRestartKeepsDeadline(t *testing.T) {
	dir, runDir := t.TempDir(), t.TempDir()
	g := fakeGuest(t, runDir, "vm1", true)
	socket, stop := startFencer(t, dir, runDir)
	if _, err := roundTrip(socket, Request{Op: OpArm, DeadlineNS: int64(guestproc.MonoNow() + 300*time.Millisecond)}); err != nil {
		t.Fatal(err)
	}
	stop()
	if dead(g) {
		t.Fatal("guest died early")
	}
	// Down past the deadline; the new fencer fires on start.
	deadline := guestproc.MonoNow() + 400*time.Millisecond
	testutil.Eventually(t, 5*time.Second, func() error {
		if guestproc.MonoNow() < deadline {
			return fmt.Errorf("waiting past the deadline")
		}
		return nil
	})
	socket, _ = startFencer(t, dir, runDir)
	testutil.Eventually(t, 5*time.Second, func() error {
		if !dead(g) {
			return fmt.Errorf("guest alive after the restarted fencer's deadline")
		}
		return nil
	})
	if st, _ := Query(context.Background(), socket); st.Mode != Fenced {
		t.Fatalf("%+v", st)
	}
}

// TestPinnedByCommandLine: a pid file naming a process that is not that
// guest's QEMU (a recycled PID) pins nothing.
func TestPinnedByCommandLine(t *testing.T) {
	runDir := t.TempDir()
	fakeGuest(t, runDir, "vm1", true)
	os.WriteFile(filepath.Join(runDir, "vm2.xml"), []byte(guestproc.MetadataNS), 0o600)
	os.WriteFile(filepath.Join(runDir, "vm2.pid"), []byte(fmt.Sprint(os.Getpid())), 0o600)
	fakeGuest(t, runDir, "not-corral", false)
	if c, known := guestproc.IsCorral(runDir, "not-corral"); c || !known {
		t.Fatal("a domain without corral's metadata taken for corral's")
	}
	if c, known := guestproc.IsCorral(runDir, "vm1"); !c || !known {
		t.Fatal("corral's domain not recognised by its metadata")
	}
	if _, known := guestproc.IsCorral(runDir, "no-status-yet"); known {
		t.Fatal("a domain without status XML is not known yet")
	}
	ts, err := guestproc.Find(runDir)
	if err != nil || len(ts) != 3 {
		t.Fatalf("find: %v %v", ts, err)
	}
	for _, tg := range ts {
		p, err := guestproc.Open(tg)
		if (tg.Name != "vm2") != (err == nil) {
			t.Fatalf("open %s: %v", tg.Name, err)
		}
		if p != nil {
			p.Close()
		}
	}
}

// TestFencerStateFromAnotherBoot: a state file holding a deadline no arm
// could have set (it outlived a reboot) leaves the fencer fenced, killing
// corral's guests, never waiting for that deadline.
func TestFencerStateFromAnotherBoot(t *testing.T) {
	dir, runDir := t.TempDir(), t.TempDir()
	state := fmt.Sprintf(`{"mode":"armed","deadline_ns":%d}`, int64(guestproc.MonoNow()+time.Hour))
	if err := os.WriteFile(filepath.Join(dir, "fencer.state"), []byte(state), 0o600); err != nil {
		t.Fatal(err)
	}
	g := fakeGuest(t, runDir, "vm1", true)
	socket, _ := startFencer(t, dir, runDir)
	testutil.Eventually(t, 5*time.Second, func() error {
		if !dead(g) {
			return fmt.Errorf("guest alive")
		}
		return nil
	})
	if st, _ := Query(context.Background(), socket); st.Mode != Fenced {
		t.Fatalf("%+v", st)
	}
}

func roundTrip(socket string, r Request) (Status, error) {
	conn, err := net.Dial("unix", socket)
	if err != nil {
		return Status{}, err
	}
	defer conn.Close()
	json.NewEncoder(conn).Encode(r)
	var st Status
	err = json.NewDecoder(conn).Decode(&st)
	return st, err
}

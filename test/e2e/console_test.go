package e2e

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"net"
	"os/exec"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/creack/pty"

	"github.com/corralhq/corral/api"
	"github.com/corralhq/corral/internal/testutil"
	"github.com/corralhq/corral/internal/wsconsole"
)

// ptyRun is a command running under a pseudo-terminal, its output kept.
type ptyRun struct {
	cmd  *exec.Cmd
	tty  interface{ Write([]byte) (int, error) }
	mu   sync.Mutex
	out  bytes.Buffer
	done chan error
}

func startPTY(t *testing.T, cmd *exec.Cmd) *ptyRun {
	t.Helper()
	f, err := pty.StartWithSize(cmd, &pty.Winsize{Rows: 40, Cols: 120})
	if err != nil {
		t.Fatal(err)
	}
	r := &ptyRun{cmd: cmd, tty: f, done: make(chan error, 1)}
	go func() {
		b := make([]byte, 4096)
		for {
			n, err := f.Read(b)
			r.mu.Lock()
			r.out.Write(b[:n])
			r.mu.Unlock()
			if err != nil {
				break
			}
		}
	}()
	go func() { r.done <- cmd.Wait(); f.Close() }()
	t.Cleanup(func() {
		if cmd.ProcessState == nil {
			cmd.Process.Kill()
		}
	})
	return r
}

func (r *ptyRun) output() string { r.mu.Lock(); defer r.mu.Unlock(); return r.out.String() }

func (r *ptyRun) wait(t *testing.T, want string, timeout time.Duration) {
	t.Helper()
	testutil.Eventually(t, timeout, func() error {
		if out := r.output(); !strings.Contains(out, want) {
			return fmt.Errorf("terminal shows %q, want %q", tail(out, 600), want)
		}
		return nil
	})
}

func (r *ptyRun) exit(t *testing.T, timeout time.Duration) error {
	t.Helper()
	select {
	case err := <-r.done:
		return err
	case <-time.After(timeout):
		t.Fatalf("still running after %v; terminal: %q", timeout, tail(r.output(), 600))
		return nil
	}
}

func tail(s string, n int) string {
	if len(s) > n {
		return s[len(s)-n:]
	}
	return s
}

// TestVMConsole: corralctl vm console, under a pseudo-terminal on h1, for
// a guest on h2 (the daemons relay): it shows the guest's boot output
// (the log's tail), runs a typed line in the guest's shell and shows the
// result, and detaches on Ctrl-] with status 0. A second session reads
// read-only while the first types; stopping the guest ends it, with the
// reason and a failure status. A stopped VM's console is refused.
func TestVMConsole(t *testing.T) {
	e := newEnv(t, 2, "")
	req := e.vmRequest("c1")
	req.Host = "h2"
	if _, err := e.any().CreateVM(e.ctx(), req); err != nil {
		t.Fatal(err)
	}
	e.waitVM("c1", 2*time.Minute, func(v api.VM) error {
		if v.State != "running" {
			return fmt.Errorf("c1 is %s", v.State)
		}
		log, err := e.any().ConsoleLog(e.ctx(), "c1", 64<<10)
		if err != nil || !strings.Contains(log.Log, "CORRAL-BOOT host=c1") {
			return fmt.Errorf("c1 not booted yet (%v)", err)
		}
		return nil
	})

	s1 := startPTY(t, e.host("h1").Command(e.ctx(), e.ctlBin, "vm", "console", "c1"))
	s1.wait(t, "Connected to the console of c1 on h2 (you type here)", 30*time.Second)
	s1.wait(t, "CORRAL-BOOT host=c1", 10*time.Second)

	s2 := startPTY(t, e.host("h2").Command(e.ctx(), e.ctlBin, "vm", "console", "c1"))
	s2.wait(t, "read-only", 30*time.Second)

	s1.tty.Write([]byte("echo $((6*7))-XY\r"))
	s1.wait(t, "42-XY", 20*time.Second)
	s2.wait(t, "42-XY", 10*time.Second) // the reader sees it too
	s1.tty.Write([]byte{0x1d})
	if err := s1.exit(t, 10*time.Second); err != nil {
		t.Fatalf("detach: %v; terminal: %q", err, tail(s1.output(), 600))
	}
	s1.wait(t, "Detached.", time.Second)

	// A writer on the guest's own host (no relay) types too.
	s3 := startPTY(t, e.host("h2").Command(e.ctx(), e.ctlBin, "vm", "console", "c1"))
	s3.wait(t, "you type here", 30*time.Second)
	// Typed a key at a time, as a person (or a browser) sends them.
	tick := time.NewTicker(30 * time.Millisecond)
	for _, c := range []byte("echo $((7*6))-ZZ\r") {
		<-tick.C
		s3.tty.Write([]byte{c})
	}
	tick.Stop()
	s3.wait(t, "42-ZZ", 20*time.Second)
	s3.tty.Write([]byte{0x1d})
	if err := s3.exit(t, 10*time.Second); err != nil {
		t.Fatalf("detach on the guest's host: %v", err)
	}

	// The graphical display, relayed from h1 to the guest on h2: QEMU's
	// VNC names the guest, shows its screen, and what is typed there runs
	// in the shell on tty1 (vgaping says so on the serial console).
	disp, err := wsconsole.OpenVMDisplay(e.ctx(), e.client(0), "c1")
	if err != nil {
		t.Fatal(err)
	}
	rfb, err := testutil.RFBHandshake(disp)
	if err != nil || !strings.Contains(rfb.Name, "c1") {
		t.Fatalf("display of c1: %+v %v", rfb, err)
	}
	testutil.Eventually(t, 30*time.Second, func() error {
		if lit, err := rfb.Frame(); err != nil || lit == 0 {
			return fmt.Errorf("screen: %d pixels lit, %v", lit, err)
		}
		return nil
	})
	testutil.Eventually(t, 30*time.Second, func() error {
		if err := rfb.Type("vgaping through the relay\n"); err != nil {
			t.Fatal(err)
		}
		if log, _ := e.any().ConsoleLog(e.ctx(), "c1", 64<<10); !strings.Contains(log.Log, "CORRAL-VGA-INPUT through the relay") {
			return errors.New("what was typed on the display did not run")
		}
		return nil
	})
	// corralctl vm vnc: a port on loopback for a local VNC viewer.
	vnc := exec.Command(e.ctlBin, "--socket", e.lab.Hosts[0].Socket(), "vm", "vnc", "c1", "--listen", "127.0.0.1:0", "--once")
	stderr, err := vnc.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := vnc.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if vnc.ProcessState == nil {
			vnc.Process.Kill()
			vnc.Wait()
		}
	})
	line, err := bufio.NewReader(stderr).ReadString('\n')
	m := regexp.MustCompile(`is at (127\.0\.0\.1:\d+)`).FindStringSubmatch(line)
	if err != nil || m == nil {
		t.Fatalf("corralctl vm vnc said %q (%v)", line, err)
	}
	viewer, err := net.Dial("tcp", m[1])
	if err != nil {
		t.Fatal(err)
	}
	if r, err := testutil.RFBHandshake(viewer); err != nil || !strings.Contains(r.Name, "c1") {
		t.Fatalf("viewer through corralctl vm vnc: %+v %v", r, err)
	}
	viewer.Close()
	vncDone := make(chan error, 1)
	go func() { vncDone <- vnc.Wait() }()
	select {
	case err := <-vncDone:
		if err != nil {
			t.Fatalf("corralctl vm vnc --once: %v", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("corralctl vm vnc --once still runs after its viewer left")
	}

	if _, err := e.any().StopVM(e.ctx(), "c1"); err != nil {
		t.Fatal(err)
	}
	// The display's session ends with the guest, saying so.
	testutil.Eventually(t, 90*time.Second, func() error {
		_, err := rfb.Frame()
		var ce *wsconsole.ClosedError
		if !errors.As(err, &ce) || !strings.Contains(ce.Reason, "display closed") {
			return fmt.Errorf("display of a stopped guest: %v", err)
		}
		return nil
	})
	disp.Close()
	var exit *exec.ExitError
	if err := s2.exit(t, 90*time.Second); !errors.As(err, &exit) {
		t.Fatalf("session of a stopped guest ended with %v; terminal: %q", err, tail(s2.output(), 600))
	}
	s2.wait(t, "console closed", time.Second)
	e.waitVM("c1", time.Minute, func(v api.VM) error {
		if v.State != "stopped" {
			return fmt.Errorf("c1 is %s", v.State)
		}
		return nil
	})
	if out, err := e.corralctl("h1", "vm", "console", "c1"); err == nil || !strings.Contains(err.Error(), "stopped") {
		t.Fatalf("console of a stopped VM: %v\n%s", err, out)
	}
}

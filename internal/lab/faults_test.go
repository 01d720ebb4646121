package lab_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/corralhq/corral/internal/lab"
	"github.com/corralhq/corral/internal/testutil"
)

// TestFaults drives each fault injector on one lab of three hosts and
// checks it with real traffic or real writes, then its undo.
func TestFaults(t *testing.T) {
	testutil.NeedRoot(t)
	l := testutil.NewLab(t, lab.Config{Hosts: 3, NoCorrald: true, DataDirMiB: 8})
	h1, h2, h3 := l.Hosts[0], l.Hosts[1], l.Hosts[2]
	ctx := context.Background()
	gw := strings.TrimSuffix(l.Subnet, "0/24") + "1"

	t.Run("CutBoth", func(t *testing.T) {
		defer h1.Uncut(ctx)
		u1, u2 := udpIn(t, h1), udpIn(t, h2)
		// An established flow (conntrack has seen both ways) ...
		eventuallyDelivered(t, u1, u2)
		eventuallyDelivered(t, u2, u1)
		for i := 0; i < 2; i++ { // idempotent
			if err := h1.Cut(ctx, []*lab.Host{h2}, lab.Both); err != nil {
				t.Fatal(err)
			}
		}
		if out := nft(t, h1); strings.Count(out, "drop") != 2 || strings.Count(out, h2.IP) != 2 {
			t.Fatalf("after two identical cuts, want one rule per hook and h2 in each set once:\n%s", out)
		}
		// ... is cut both ways, and so are new ones.
		notDelivered(t, u1, u2)
		notDelivered(t, u2, u1)
		mustNotPing(t, h1, h2.IP)
		mustNotPing(t, h2, h1.IP)
		// h3 and the root namespace are untouched.
		eventuallyPing(t, h1, h3.IP)
		eventuallyPing(t, h3, h1.IP)
		eventuallyPing(t, h1, gw)
		for i := 0; i < 2; i++ { // idempotent, and no error once gone
			if err := h1.Uncut(ctx); err != nil {
				t.Fatal(err)
			}
		}
		eventuallyPing(t, h1, h2.IP)
		eventuallyPing(t, h2, h1.IP)
		eventuallyDelivered(t, u2, u1)
	})

	t.Run("CutInbound", func(t *testing.T) {
		defer h1.Uncut(ctx)
		u1, u2 := udpIn(t, h1), udpIn(t, h2)
		if err := h1.Cut(ctx, []*lab.Host{h2}, lab.Inbound); err != nil {
			t.Fatal(err)
		}
		// h1 receives nothing from h2 (h2's echo request dies at h1) ...
		mustNotPing(t, h2, h1.IP)
		notDelivered(t, u2, u1)
		// ... but what h1 sends reaches h2.
		eventuallyDelivered(t, u1, u2)
		eventuallyPing(t, h3, h1.IP)
		if err := h1.Uncut(ctx); err != nil {
			t.Fatal(err)
		}
		eventuallyDelivered(t, u2, u1)
		eventuallyPing(t, h2, h1.IP)
	})

	t.Run("Netem", func(t *testing.T) {
		if err := h1.ClearNetem(ctx); err != nil { // none yet: no error
			t.Fatal(err)
		}
		err := h1.Netem(ctx, 100, 0, 0)
		if errors.Is(err, lab.ErrNoNetem) {
			// This kernel has no netem (this machine's has not): what can
			// be checked is that the error says so, and that nothing is
			// left behind. Loss (nftables) stands in for it in chaos runs.
			if out, _ := exec.Command("tc", "-n", h1.Netns, "qdisc", "show", "dev", "eth0").CombinedOutput(); bytes.Contains(out, []byte("netem")) {
				t.Fatalf("netem qdisc after ErrNoNetem: %s", out)
			}
			t.Logf("no netem in this kernel: %v", err)
			return
		}
		if err != nil {
			t.Fatal(err)
		}
		defer h1.ClearNetem(ctx)
		mustNotPing(t, h1, h2.IP)
		if err := h1.Netem(ctx, 0, 200*time.Millisecond, 0); err != nil { // replaces
			t.Fatal(err)
		}
		var rtt time.Duration
		testutil.Eventually(t, 5*time.Second, func() error {
			var err error
			rtt, err = ping(h1, h2.IP)
			return err
		})
		if rtt < 190*time.Millisecond {
			t.Fatalf("rtt %v with 200ms of netem delay", rtt)
		}
		for i := 0; i < 2; i++ {
			if err := h1.ClearNetem(ctx); err != nil {
				t.Fatal(err)
			}
		}
		if out, _ := exec.Command("tc", "-n", h1.Netns, "qdisc", "show", "dev", "eth0").CombinedOutput(); bytes.Contains(out, []byte("netem")) {
			t.Fatalf("netem left after ClearNetem: %s", out)
		}
		eventuallyPing(t, h1, h2.IP)
	})

	t.Run("Delay", func(t *testing.T) {
		defer h1.ClearDelay(ctx)
		const delay = 300 * time.Millisecond
		for i := 0; i < 2; i++ { // a second call replaces the first
			if err := h1.Delay(ctx, delay, 20*time.Millisecond); err != nil {
				t.Fatal(err)
			}
		}
		// Round trips with h1, either way, take the delay longer (h1's
		// echo replies wait too); h2 and h3 between them do not.
		for _, pair := range [][2]*lab.Host{{h1, h2}, {h2, h1}, {h3, h1}} {
			rtt, err := ping(pair[0], pair[1].IP)
			if err != nil || rtt < delay-20*time.Millisecond {
				t.Fatalf("%s -> %s with h1 delayed %v: rtt %v, %v", pair[0].Name, pair[1].Name, delay, rtt, err)
			}
		}
		if rtt, err := ping(h2, h3.IP); err != nil || rtt >= delay/2 {
			t.Fatalf("h2 -> h3, untouched: rtt %v, %v", rtt, err)
		}
		// A burst gets through whole, each packet held, none lost.
		out, err := h2.Command(ctx, "ping", "-n", "-q", "-i", "0.01", "-c", "200", "-W", "2", h1.IP).CombinedOutput()
		if err != nil || !strings.Contains(string(out), " 0% packet loss") {
			t.Fatalf("burst of 200 through the delay: %v\n%s", err, out)
		}
		if err := h1.ClearDelay(ctx); err != nil {
			t.Fatal(err)
		}
		if rtt, err := ping(h2, h1.IP); err != nil || rtt >= delay/2 {
			t.Fatalf("after ClearDelay: rtt %v, %v", rtt, err)
		}
		if err := h1.ClearDelay(ctx); err != nil { // none left: not an error
			t.Fatal(err)
		}
	})

	t.Run("Loss", func(t *testing.T) {
		defer h1.ClearLoss(ctx)
		if err := h1.Loss(ctx, 30); err != nil {
			t.Fatal(err)
		}
		if out := nftTable(t, h1, "inet corrallab_loss"); strings.Count(out, "numgen random mod 100 < 30 drop") != 2 {
			t.Fatalf("loss rules:\n%s", out)
		}
		if err := h1.Loss(ctx, 100); err != nil { // replaces
			t.Fatal(err)
		}
		mustNotPing(t, h1, h2.IP)
		mustNotPing(t, h2, h1.IP)
		for i := 0; i < 2; i++ {
			if err := h1.ClearLoss(ctx); err != nil {
				t.Fatal(err)
			}
		}
		eventuallyPing(t, h1, h2.IP)
		eventuallyPing(t, h2, h1.IP)
	})

	t.Run("DataDir", func(t *testing.T) {
		h := h2
		var st unix.Statfs_t
		if err := unix.Statfs(h.DataDir(), &st); err != nil {
			t.Fatal(err)
		}
		if st.Type != unix.TMPFS_MAGIC || uint64(st.Blocks)*uint64(st.Bsize) != 8<<20 {
			t.Fatalf("data dir: fs type %#x, %d bytes; want an 8 MiB tmpfs", st.Type, uint64(st.Blocks)*uint64(st.Bsize))
		}
		probe := filepath.Join(h.DataDir(), "probe")
		defer os.Remove(probe)
		if err := h.FreeDataDir(); err != nil { // nothing to free: no error
			t.Fatal(err)
		}
		for i := 0; i < 2; i++ { // idempotent: the second finds it full
			if err := h.FillDataDir(); err != nil {
				t.Fatal(err)
			}
		}
		if err := os.WriteFile(probe, make([]byte, 1<<20), 0o600); !errors.Is(err, syscall.ENOSPC) {
			t.Fatalf("1 MiB write to a full data dir: %v, want ENOSPC", err)
		}
		// corrald, in the host's mount namespace, finds it full too.
		out, err := h.Command(ctx, "dd", "if=/dev/zero", "of="+probe, "bs=1M", "count=1").CombinedOutput()
		if err == nil || !strings.Contains(string(out), "No space left") {
			t.Fatalf("dd inside %s: %v: %s", h.Name, err, out)
		}
		for i := 0; i < 2; i++ {
			if err := h.FreeDataDir(); err != nil {
				t.Fatal(err)
			}
		}
		if err := os.WriteFile(probe, make([]byte, 1<<20), 0o600); err != nil {
			t.Fatalf("1 MiB write after FreeDataDir: %v", err)
		}
	})

	t.Run("DataDirDown", func(t *testing.T) {
		if err := l.Down(ctx); err != nil {
			t.Fatal(err)
		}
		for _, h := range l.Hosts {
			if mountedAt(h.DataDir()) {
				t.Errorf("%s: data dir still mounted after Down", h.Name)
			}
		}
	})
}

// A lab whose Up fails after a host's data_dir tmpfs is mounted leaves no
// mount behind. Up fails at h2's network namespace, which the test takes
// first; by then h1 is built and h2's data_dir is mounted.
func TestDataDirUpFailsCleanly(t *testing.T) {
	testutil.NeedRoot(t)
	id, release := testutil.ClaimLabID(t)
	defer release()
	base, err := os.MkdirTemp("", "corral-lab-")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(base)
	os.Chmod(base, 0o755)
	blocker := fmt.Sprintf("corral%d-h2", id)
	if out, err := exec.Command("ip", "netns", "add", blocker).CombinedOutput(); err != nil {
		t.Fatalf("ip netns add %s: %v: %s", blocker, err, out)
	}
	defer exec.Command("ip", "netns", "del", blocker).Run()
	dir := filepath.Join(base, "lab")
	_, err = lab.Up(context.Background(), lab.Config{Dir: dir, ID: id, Hosts: 2, NoCorrald: true, DataDirMiB: 8})
	if err == nil || !strings.Contains(err.Error(), "h2") {
		t.Fatalf("up with h2's namespace taken: %v", err)
	}
	b, _ := os.ReadFile("/proc/self/mountinfo")
	if strings.Contains(string(b), " "+dir) {
		t.Fatalf("mounts left under %s:\n%s", dir, b)
	}
	if _, err := os.Stat(dir); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("lab directory left: %v", err)
	}
}

// Without Config.DataDirMiB, FillDataDir refuses to fill what would be the
// machine's own disk.
func TestDataDirFillRefusedOnDisk(t *testing.T) {
	dir := t.TempDir()
	hostDir := filepath.Join(dir, "hosts", "h1")
	if err := os.MkdirAll(filepath.Join(hostDir, "data"), 0o755); err != nil {
		t.Fatal(err)
	}
	state := fmt.Sprintf(`{"dir": %q, "hosts": [{"name": "h1", "dir": %q}]}`, dir, hostDir)
	if err := os.WriteFile(filepath.Join(dir, "lab.json"), []byte(state), 0o644); err != nil {
		t.Fatal(err)
	}
	l, err := lab.Load(dir)
	if err != nil {
		t.Fatal(err)
	}
	h := l.Hosts[0]
	if err := h.FillDataDir(); err == nil || !strings.Contains(err.Error(), "DataDirMiB") {
		t.Fatalf("fill without a tmpfs: %v", err)
	}
	if ents, _ := os.ReadDir(h.DataDir()); len(ents) != 0 {
		t.Fatalf("data dir holds %v", ents)
	}
	if err := h.FreeDataDir(); err != nil {
		t.Fatal(err)
	}
}

// udpIn returns a UDP socket bound to h's address inside h's network
// namespace, closed at the end of the test.
func udpIn(t *testing.T, h *lab.Host) *net.UDPConn {
	t.Helper()
	type result struct {
		c   *net.UDPConn
		err error
	}
	ch := make(chan result, 1)
	go func() {
		// The thread enters h's namespace for good: it stays locked and
		// ends with this goroutine.
		runtime.LockOSThread()
		ns, err := os.Open("/run/netns/" + h.Netns)
		if err != nil {
			ch <- result{err: err}
			return
		}
		defer ns.Close()
		if err := unix.Setns(int(ns.Fd()), unix.CLONE_NEWNET); err != nil {
			ch <- result{err: err}
			return
		}
		c, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.ParseIP(h.IP)})
		ch <- result{c, err}
	}()
	r := <-ch
	if r.err != nil {
		t.Fatalf("udp socket in %s: %v", h.Name, r.err)
	}
	t.Cleanup(func() { r.c.Close() })
	return r.c
}

var seq int

// deliver sends a fresh datagram from one socket to the other and reports
// whether it arrived within wait.
func deliver(from, to *net.UDPConn, wait time.Duration) (bool, error) {
	seq++
	msg := []byte("probe " + strconv.Itoa(seq))
	if _, err := from.WriteToUDP(msg, to.LocalAddr().(*net.UDPAddr)); errors.Is(err, syscall.EPERM) {
		return false, nil // dropped on its way out (the output hook)
	} else if err != nil {
		return false, err
	}
	to.SetReadDeadline(time.Now().Add(wait))
	buf := make([]byte, 64)
	for {
		n, _, err := to.ReadFromUDP(buf)
		if errors.Is(err, os.ErrDeadlineExceeded) {
			return false, nil
		}
		if err != nil {
			return false, err
		}
		if bytes.Equal(buf[:n], msg) {
			return true, nil
		}
	}
}

func eventuallyDelivered(t *testing.T, from, to *net.UDPConn) {
	t.Helper()
	testutil.Eventually(t, 5*time.Second, func() error {
		ok, err := deliver(from, to, 200*time.Millisecond)
		if err == nil && !ok {
			err = fmt.Errorf("udp %s -> %s not delivered", from.LocalAddr(), to.LocalAddr())
		}
		return err
	})
}

// notDelivered checks that a datagram does not arrive within a second
// (a negative needs some window; a second is ping -W1's).
func notDelivered(t *testing.T, from, to *net.UDPConn) {
	t.Helper()
	ok, err := deliver(from, to, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if ok {
		t.Fatalf("udp %s -> %s delivered through a cut", from.LocalAddr(), to.LocalAddr())
	}
}

var rttRE = regexp.MustCompile(`time=([0-9.]+) ms`)

// ping sends one echo request from inside h and returns the round trip.
func ping(h *lab.Host, ip string) (time.Duration, error) {
	out, err := h.Command(context.Background(), "ping", "-n", "-c1", "-W1", ip).CombinedOutput()
	if err != nil {
		return 0, fmt.Errorf("ping %s from %s: %v: %s", ip, h.Name, err, out)
	}
	m := rttRE.FindSubmatch(out)
	if m == nil {
		return 0, fmt.Errorf("ping %s from %s: no time in %q", ip, h.Name, out)
	}
	ms, err := strconv.ParseFloat(string(m[1]), 64)
	return time.Duration(ms * float64(time.Millisecond)), err
}

func eventuallyPing(t *testing.T, h *lab.Host, ip string) {
	t.Helper()
	testutil.Eventually(t, 5*time.Second, func() error {
		_, err := ping(h, ip)
		return err
	})
}

func mustNotPing(t *testing.T, h *lab.Host, ip string) {
	t.Helper()
	if _, err := ping(h, ip); err == nil {
		t.Fatalf("%s reaches %s through a cut", h.Name, ip)
	}
}

func nft(t *testing.T, h *lab.Host) string {
	t.Helper()
	return nftTable(t, h, "inet corrallab")
}

func nftTable(t *testing.T, h *lab.Host, table string) string {
	t.Helper()
	out, err := exec.Command("ip", append([]string{"netns", "exec", h.Netns, "nft", "list", "table"}, strings.Fields(table)...)...).CombinedOutput()
	if err != nil {
		t.Fatalf("nft list %s in %s: %v: %s", table, h.Name, err, out)
	}
	return string(out)
}

func mountedAt(path string) bool {
	b, _ := os.ReadFile("/proc/self/mountinfo")
	for _, line := range strings.Split(string(b), "\n") {
		if f := strings.Fields(line); len(f) > 4 && f[4] == path {
			return true
		}
	}
	return false
}

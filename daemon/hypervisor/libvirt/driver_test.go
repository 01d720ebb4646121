package libvirt

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/corralhq/corral/daemon/hypervisor"
	"github.com/corralhq/corral/internal/lab"
	"github.com/corralhq/corral/internal/testutil"
	"github.com/corralhq/corral/model"
)

// TestDriverAgainstLibvirtd runs the driver against a real libvirtd in a lab
// host, with the busybox test guest under QEMU.
func TestDriverAgainstLibvirtd(t *testing.T) {
	if !inGuestLab(t) {
		return
	}
	ctx, d := connectedDriver(t)
	t.Logf("domain type %s", d.DomainType())
	// Every connection has libvirtd probe QEMU before a guest needs it.
	waitWarmups(t, d, 1)

	// Base image into the pool, overlay and seed on it.
	base, _ := os.ReadFile(os.Getenv("T_BASE"))
	if err := os.WriteFile(d.VolumePath("image-base"), base, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := d.Refresh(ctx); err != nil {
		t.Fatal(err)
	}
	disk, err := d.EnsureVolume(ctx, hypervisor.Volume{Name: "vm-t1-disk0.qcow2", Backing: "image-base", BackingFormat: "qcow2"})
	if err != nil {
		t.Fatal(err)
	}
	seed, err := d.EnsureSeed(ctx, "vm-t1-seed.iso", "#cloud-config\nhostname: t1\n", "instance-id: t1\n")
	if err != nil {
		t.Fatal(err)
	}
	// User data may hold secrets: nobody but root reads the seed (libvirt
	// gives it to QEMU's user when the guest starts).
	if fi, err := os.Stat(seed); err != nil || fi.Mode().Perm()&0o077 != 0 {
		t.Fatalf("seed %s: mode %v, %v", seed, fi.Mode(), err)
	}
	// A bridge with an address, for the guest's NIC.
	for _, args := range [][]string{{"link", "add", "corraltest0", "type", "bridge"}, {"addr", "add", "10.77.0.1/24", "dev", "corraltest0"}, {"link", "set", "corraltest0", "up"}} {
		if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
			t.Fatalf("ip %v: %v: %s", args, err, out)
		}
	}
	spec := hypervisor.DomainSpec{
		VMID: "6f1c2a3b-0000-4000-8000-000000000001", Name: "t1", Generation: 1, SpecVersion: 1, VCPUs: 1, MemoryMiB: 128,
		Kernel: &model.KernelBoot{Kernel: os.Getenv("T_KERNEL"), Initrd: os.Getenv("T_INITRD"),
			Cmdline: "console=ttyS0 quiet corral.name=t1 corral.ip=10.77.0.2/24 corral.listen=8080"},
		Disks: []hypervisor.Disk{{Path: disk, Format: "qcow2"}, {Path: seed, Format: "raw", ReadOnly: true}},
		NICs:  []hypervisor.NIC{{Bridge: "corraltest0", MAC: "52:54:00:77:00:02"}},
	}
	if err := d.Define(ctx, spec); err != nil {
		t.Fatal(err)
	}
	other := spec
	other.VMID = "6f1c2a3b-0000-4000-8000-000000000002"
	if err := d.Define(ctx, other); err == nil {
		t.Fatal("redefined a domain that belongs to another VM id")
	}
	started := time.Now().Truncate(time.Millisecond)
	if err := d.Start(ctx, "t1", hypervisor.RunInfo{StartedAt: started, RestartSeq: 7}); err != nil {
		t.Fatal(err)
	}
	waitLog(t, "t1", `CORRAL-USERDATA #cloud-config hostname: t1`)
	first := bootCounter(t, waitLog(t, "t1", `CORRAL-BOOT host=t1 counter=(\d+)`))
	dom := getDomain(t, d, "t1")
	if dom.State != hypervisor.Running || dom.VMID != spec.VMID || dom.Generation != 1 || !dom.StartedAt.Equal(started) || dom.RestartSeq != 7 {
		t.Fatalf("domain = %+v", dom)
	}
	st, err := d.Stats(ctx, "t1")
	if err != nil || st.CPUTime == 0 || len(st.Disks) != 2 {
		t.Fatalf("stats %+v %v", st, err)
	}

	// The guest agent (qemu-ga in the test guest) runs a command and
	// returns its exit code and output; until it is up, ErrNoAgent.
	testutil.Eventually(t, 30*time.Second, func() error {
		res, err := d.AgentExec(ctx, "t1", []string{"/bin/sh", "-c", "echo out; echo err >&2; exit 3"}, 5*time.Second)
		if err != nil {
			if !errors.Is(err, hypervisor.ErrNoAgent) {
				t.Fatalf("agent exec: %v", err)
			}
			return err
		}
		if res.ExitCode != 3 || res.Output != "out\nerr\n" {
			t.Fatalf("agent exec = %+v", res)
		}
		return nil
	})
	if _, err := d.AgentExec(ctx, "t1", []string{"/bin/sh", "-c", "sleep 30"}, time.Second); err == nil || errors.Is(err, hypervisor.ErrNoAgent) {
		t.Fatalf("a command past its timeout: %v", err)
	}
	// The agent reports the guest's address, and the guest serves on it
	// (what a TCP health check dials).
	testutil.Eventually(t, 30*time.Second, func() error {
		addrs, err := d.GuestAddrs(ctx, "t1")
		if err != nil {
			return err
		}
		if len(addrs) != 1 || addrs[0].String() != "10.77.0.2" {
			return fmt.Errorf("guest addresses %v, want 10.77.0.2", addrs)
		}
		conn, err := net.DialTimeout("tcp", "10.77.0.2:8080", 5*time.Second)
		if err != nil {
			return err
		}
		return conn.Close()
	})

	// A snapshot: the running guest's disk moves onto an overlay on its
	// file in one step, with the agent freezing the guest (there is one);
	// the seed stays as it is. The guest goes on counting, on the overlay.
	overlay, err := d.EnsureVolume(ctx, hypervisor.Volume{Name: "vm-t1-disk0-L1.qcow2", Backing: "vm-t1-disk0.qcow2", BackingFormat: "qcow2"})
	if err != nil {
		t.Fatal(err)
	}
	if files, err := d.DiskFiles(ctx, "t1"); err != nil || len(files) != 1 || files[0] != disk {
		t.Fatalf("disk files before the snapshot: %v %v", files, err)
	}
	if err := d.SnapshotDisks(ctx, "t1", []string{overlay}, hypervisor.SnapshotOptions{Quiesce: true}); err != nil {
		t.Fatalf("snapshot with the guest frozen: %v", err)
	}
	if files, err := d.DiskFiles(ctx, "t1"); err != nil || len(files) != 1 || files[0] != overlay {
		t.Fatalf("disk files after the snapshot: %v %v", files, err)
	}
	if err := d.SetLayer(ctx, "t1", 1); err != nil {
		t.Fatal(err)
	}
	if dom := getDomain(t, d, "t1"); dom.Layer != 1 || !dom.StartedAt.Equal(started) || dom.RestartSeq != 7 {
		t.Fatalf("domain after SetLayer: %+v", dom)
	}
	before := tickCounter(t, d, "t1")
	testutil.Eventually(t, 30*time.Second, func() error {
		if n := tickCounter(t, d, "t1"); n < before+2 {
			return fmt.Errorf("counter %d, was %d at the snapshot", n, before)
		}
		return nil
	})
	if fi, err := os.Stat(overlay); err != nil || fi.Size() == 0 {
		t.Fatalf("overlay %v %v", fi, err)
	}

	// A second layer, then the first committed into the disk under it
	// while the guest runs (libvirt's block commit): the guest's chain
	// loses the layer, the layer above now sits on the disk.
	overlay2, err := d.EnsureVolume(ctx, hypervisor.Volume{Name: "vm-t1-disk0-L2.qcow2", Backing: "vm-t1-disk0-L1.qcow2", BackingFormat: "qcow2"})
	if err != nil {
		t.Fatal(err)
	}
	if err := d.SnapshotDisks(ctx, "t1", []string{overlay2}, hypervisor.SnapshotOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := d.CommitLayer(ctx, "t1", []string{disk}, []string{overlay}, [][]string{{overlay2}}); err != nil {
		t.Fatalf("commit: %v", err)
	}
	if b, err := qcow2Backing(overlay2); err != nil || b != disk {
		t.Fatalf("layer 2 is on %q (%v), want %s", b, err, disk)
	}
	l0, dom0, _ := d.lookup("t1")
	if chains, err := d.liveChains(l0, dom0); err != nil || len(chains["vda"]) < 2 || chains["vda"][0] != overlay2 || chains["vda"][1] != disk {
		t.Fatalf("guest's chain %v %v", chains, err)
	}
	// Again: nothing left to do.
	if err := d.CommitLayer(ctx, "t1", []string{disk}, []string{overlay}, [][]string{{overlay2}}); err != nil {
		t.Fatalf("commit again: %v", err)
	}
	// A second commit into the same disk while the guest still runs is
	// refused: libvirt 9.0 keeps the lock manager's lease it took on the
	// disk for the first (corral waits for the guest's next QEMU).
	overlay3, err := d.EnsureVolume(ctx, hypervisor.Volume{Name: "vm-t1-disk0-L3.qcow2", Backing: "vm-t1-disk0-L2.qcow2", BackingFormat: "qcow2"})
	if err != nil {
		t.Fatal(err)
	}
	if err := d.SnapshotDisks(ctx, "t1", []string{overlay3}, hypervisor.SnapshotOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := d.CommitLayer(ctx, "t1", []string{disk}, []string{overlay2}, [][]string{{overlay3}}); !errors.Is(err, hypervisor.ErrDiskLocked) {
		t.Fatalf("second commit into the same disk: %v, want %v", err, hypervisor.ErrDiskLocked)
	}
	if b, err := qcow2Backing(overlay3); err != nil || b != overlay2 {
		t.Fatalf("layer 3 is on %q (%v), want it still on %s", b, err, overlay2)
	}

	before = tickCounter(t, d, "t1")
	testutil.Eventually(t, 30*time.Second, func() error {
		if n := tickCounter(t, d, "t1"); n < before+2 {
			return fmt.Errorf("counter %d, was %d at the commit", n, before)
		}
		return nil
	})

	// The VGA display: QEMU's VNC server on a Unix socket, no address.
	// It names the guest, shows what the guest wrote on tty1, and the
	// shell there runs what is typed.
	conn, err := d.OpenDisplay(ctx, "t1")
	if err != nil {
		t.Fatal(err)
	}
	rfb, err := testutil.RFBHandshake(conn)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(rfb.Name, "t1") || rfb.Width == 0 || rfb.Height == 0 {
		t.Fatalf("display %q %dx%d", rfb.Name, rfb.Width, rfb.Height)
	}
	testutil.Eventually(t, 30*time.Second, func() error {
		if lit, err := rfb.Frame(); err != nil || lit == 0 {
			return fmt.Errorf("screen: %d pixels lit, %v", lit, err)
		}
		return nil
	})
	testutil.Eventually(t, 30*time.Second, func() error {
		if err := rfb.Type("vgaping typed on vga\n"); err != nil {
			t.Fatal(err)
		}
		if b, _ := d.ConsoleLog(ctx, "t1", 0); !strings.Contains(string(b), "CORRAL-VGA-INPUT typed on vga") {
			return errors.New("what was typed on the display did not run")
		}
		return nil
	})
	conn.Close()
	// Nothing listens for VNC on the network (5900 and up).
	if out, err := exec.Command("ss", "-Hltnp").CombinedOutput(); err != nil || strings.Contains(string(out), "qemu") {
		t.Fatalf("QEMU listens on TCP: %s %v", out, err)
	}

	// libvirtd restarts: the guest keeps running, the driver reconnects.
	l, err := lab.Load(os.Getenv("T_LAB"))
	if err != nil {
		t.Fatal(err)
	}
	h := l.Hosts[0]
	if err := h.RestartDaemon(ctx, "libvirtd"); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, 15*time.Second, func() error {
		dom, err := d.Get(ctx, "t1")
		if err != nil {
			return err
		}
		if dom.State != hypervisor.Running || !dom.StartedAt.Equal(started) {
			return fmt.Errorf("after libvirtd restart: %+v", dom)
		}
		return nil
	})
	// The new libvirtd may have thrown the probe away: it is made again.
	waitWarmups(t, d, 2)
	drainEvents(d)

	// QEMU killed: the domain stops, and libvirt says why.
	pid := qemuPID(t, "t1")
	syscall.Kill(pid, syscall.SIGKILL)
	testutil.Eventually(t, 30*time.Second, func() error {
		if dom = getDomain(t, d, "t1"); dom.State != hypervisor.Shutoff {
			return fmt.Errorf("after kill: %+v", dom)
		}
		return nil
	})
	t.Logf("QEMU killed: state %s/%s", dom.State, dom.Reason)
	if dom.Reason == "shutdown" || dom.Reason == "destroyed" {
		t.Fatalf("a killed QEMU must not look like a requested stop: %+v", dom)
	}
	// Start again: a lifecycle event says so, and the disk kept its counter.
	drainEvents(d)
	if err := d.Start(ctx, "t1", hypervisor.RunInfo{StartedAt: time.Now()}); err != nil {
		t.Fatal(err)
	}
	waitEvent(t, d, "t1", hypervisor.EventStarted)
	testutil.Eventually(t, 60*time.Second, func() error {
		b, _ := d.ConsoleLog(ctx, "t1", 0)
		ms := regexp.MustCompile(`CORRAL-BOOT host=t1 counter=(\d+)`).FindAllSubmatch(b, -1)
		if len(ms) < 2 {
			return errors.New("no second boot yet")
		}
		if n, _ := strconv.Atoi(string(ms[len(ms)-1][1])); n <= first {
			return fmt.Errorf("counter %d after restart, was %d at first boot", n, first)
		}
		return nil
	})

	// Graceful shutdown through ACPI.
	if err := d.Shutdown(ctx, "t1", time.Minute); err != nil {
		t.Fatal(err)
	}
	dom = getDomain(t, d, "t1")
	if dom.State != hypervisor.Shutoff || dom.Reason != "shutdown" {
		t.Fatalf("after graceful shutdown: %+v", dom)
	}
	if b, _ := d.ConsoleLog(ctx, "t1", 0); !strings.Contains(string(b), "CORRAL-POWEROFF") {
		t.Fatal("guest did not see the power button")
	}

	// Clean up: undefine, delete volumes.
	if err := d.Undefine(ctx, "t1"); err != nil {
		t.Fatal(err)
	}
	for _, v := range []string{"vm-t1-disk0-L3.qcow2", "vm-t1-disk0-L2.qcow2", "vm-t1-disk0-L1.qcow2", "vm-t1-disk0.qcow2", "vm-t1-seed.iso"} {
		if err := d.DeleteVolume(ctx, v); err != nil {
			t.Fatal(err)
		}
		if _, err := os.Stat(d.VolumePath(v)); !os.IsNotExist(err) {
			t.Fatalf("%s still there", v)
		}
	}
	if doms, err := d.List(ctx); err != nil || len(doms) != 0 {
		t.Fatalf("list after undefine: %v %v", doms, err)
	}
	if _, err := d.Get(ctx, "t1"); !errors.Is(err, hypervisor.ErrNoDomain) {
		t.Fatalf("get after undefine: %v", err)
	}
}

// inGuestLab runs the calling test again inside the host of a one-host lab
// with the test guest built (its paths in T_POOL, T_KERNEL, T_INITRD,
// T_BASE; the lab's directory in T_LAB), and reports whether this is that
// run.
func inGuestLab(t *testing.T) bool {
	return testutil.InLabHost(t, func() (*lab.Host, map[string]string) {
		testutil.NeedRoot(t)
		l := testutil.NewLab(t, lab.Config{Hosts: 1, NoCorrald: true})
		g := testutil.BuildGuest(t, filepath.Join(l.SharedDir(), "guest"))
		return l.Hosts[0], map[string]string{
			"T_POOL": filepath.Join(l.SharedDir(), "pool"), "T_KERNEL": g.Kernel, "T_INITRD": g.Initrd,
			"T_BASE": g.BaseDisk, "T_LAB": l.Dir,
		}
	})
}

// connectedDriver runs a driver against the lab host's libvirtd until the
// test ends, and returns once it is connected, with a context of 3 minutes.
func connectedDriver(t *testing.T) (context.Context, *Driver) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	d := New(Config{URI: "qemu:///system", Socket: "/run/libvirt/libvirt-sock", PoolDir: os.Getenv("T_POOL"), Logger: testutil.Logger(t)})
	runDone := make(chan error, 1)
	go func() { runDone <- d.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-runDone })
	testutil.Eventually(t, 10*time.Second, func() error {
		if !d.Connected() {
			return errors.New("not connected")
		}
		return nil
	})
	return ctx, d
}

// waitWarmups waits until the driver has had libvirtd's domain
// capabilities for n connections.
func waitWarmups(t *testing.T, d *Driver, n int32) {
	t.Helper()
	testutil.Eventually(t, 60*time.Second, func() error {
		if got := d.warmups.Load(); got < n {
			return fmt.Errorf("capabilities of %d connections, want %d", got, n)
		}
		return nil
	})
}

// tickCounter is the last counter the guest printed.
func tickCounter(t *testing.T, d *Driver, name string) int {
	t.Helper()
	b, _ := d.ConsoleLog(context.Background(), name, 0)
	ms := regexp.MustCompile(`CORRAL-TICK counter=(\d+)`).FindAllSubmatch(b, -1)
	if len(ms) == 0 {
		return -1
	}
	n, _ := strconv.Atoi(string(ms[len(ms)-1][1]))
	return n
}

func getDomain(t *testing.T, d *Driver, name string) hypervisor.Domain {
	t.Helper()
	dom, err := d.Get(context.Background(), name)
	if err != nil {
		t.Fatal(err)
	}
	return dom
}

// waitLog waits for a line matching re in the console log and returns it.
func waitLog(t *testing.T, name, re string) string {
	t.Helper()
	rx := regexp.MustCompile(re)
	var line string
	testutil.Eventually(t, 60*time.Second, func() error {
		f, err := os.Open(consoleLog(name))
		if err != nil {
			return err
		}
		defer f.Close()
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			if rx.MatchString(sc.Text()) {
				line = sc.Text()
			}
		}
		if line == "" {
			return fmt.Errorf("no %q in the console log yet", re)
		}
		return nil
	})
	return line
}

func bootCounter(t *testing.T, line string) int {
	m := regexp.MustCompile(`counter=(\d+)`).FindStringSubmatch(line)
	n, _ := strconv.Atoi(m[1])
	return n
}

func qemuPID(t *testing.T, name string) int {
	t.Helper()
	b, err := os.ReadFile("/run/libvirt/qemu/" + name + ".pid")
	if err != nil {
		t.Fatal(err)
	}
	pid, _ := strconv.Atoi(strings.TrimSpace(string(b)))
	return pid
}

func drainEvents(d *Driver) {
	for {
		select {
		case <-d.Events():
		default:
			return
		}
	}
}

func waitEvent(t *testing.T, d *Driver, name string, kind hypervisor.EventKind) hypervisor.Event {
	t.Helper()
	timeout := time.After(30 * time.Second)
	for {
		select {
		case ev := <-d.Events():
			if ev.Name == name && ev.Kind == kind {
				return ev
			}
		case <-timeout:
			t.Fatalf("no %s event for %s", kind, name)
		}
	}
}

// TestStoragePoolFollowsConfig: an existing libvirt pool named like ours
// that points elsewhere than storage_pool is moved there, unless a domain
// still uses a disk in its old directory; then the driver stays connected
// and says why nothing can start, and moves the pool once the domain is
// gone. A pool whose old directory vanished is moved too.
func TestStoragePoolFollowsConfig(t *testing.T) {
	if !testutil.InLabHost(t, func() (*lab.Host, map[string]string) {
		testutil.NeedRoot(t)
		l := testutil.NewLab(t, lab.Config{Hosts: 1, NoCorrald: true})
		return l.Hosts[0], map[string]string{"T_DIR": l.SharedDir()}
	}) {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	dirA, dirB, dirC := filepath.Join(os.Getenv("T_DIR"), "pool-a"), filepath.Join(os.Getenv("T_DIR"), "pool-b"), filepath.Join(os.Getenv("T_DIR"), "pool-c")
	run := func(dir string) (*Driver, func()) {
		t.Helper()
		d := New(Config{URI: "qemu:///system", Socket: "/run/libvirt/libvirt-sock", PoolDir: dir, Logger: testutil.Logger(t)})
		rctx, stop := context.WithCancel(ctx)
		done := make(chan error, 1)
		go func() { done <- d.Run(rctx) }()
		testutil.Eventually(t, 10*time.Second, func() error {
			if !d.Connected() {
				return errors.New("not connected")
			}
			return nil
		})
		return d, func() { stop(); <-done }
	}
	poolTarget := func(d *Driver) string {
		t.Helper()
		l, p, err := d.pool()
		if err != nil {
			t.Fatal(err)
		}
		x, err := l.StoragePoolGetXMLDesc(p, 0)
		if err != nil {
			t.Fatal(err)
		}
		m := regexp.MustCompile(`<path>([^<]*)</path>`).FindStringSubmatch(x)
		if m == nil {
			t.Fatalf("no target path in %s", x)
		}
		return m[1]
	}

	// The pool at A, and a domain (defined, not running) with a disk there.
	d, stop := run(dirA)
	if p := d.Problem(); p != "" {
		t.Fatal(p)
	}
	disk, err := d.EnsureVolume(ctx, hypervisor.Volume{Name: "vm-sp-disk0.qcow2", SizeMiB: 16})
	if err != nil {
		t.Fatal(err)
	}
	spec := hypervisor.DomainSpec{VMID: "6f1c2a3b-0000-4000-8000-0000000000a1", Name: "sp", Generation: 1, SpecVersion: 1,
		VCPUs: 1, MemoryMiB: 64, Disks: []hypervisor.Disk{{Path: disk, Format: "qcow2"}}}
	if err := d.Define(ctx, spec); err != nil {
		t.Fatal(err)
	}
	stop()

	// storage_pool becomes B: refused while "sp" uses A, without dropping
	// the connection (it used to reconnect ten times a second).
	d, stop = run(dirB)
	p := d.Problem()
	if !strings.Contains(p, "points at "+dirA) || !strings.Contains(p, "not at storage_pool "+dirB) || !strings.Contains(p, "domains sp use disks there") {
		t.Fatalf("storage problem %q", p)
	}
	if got := poolTarget(d); got != dirA {
		t.Fatalf("pool moved to %s while a domain uses %s", got, dirA)
	}
	connected := 0
	for len(d.Events()) > 0 {
		if ev := <-d.Events(); ev.Kind == hypervisor.EventConnected {
			connected++
		}
	}
	if connected != 1 || !d.Connected() {
		t.Fatalf("%d connections, connected now %v: the pool problem cost the connection", connected, d.Connected())
	}
	// Once the domain is gone the pool moves to B by itself.
	if err := d.Undefine(ctx, "sp"); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, 3*poolRetry, func() error {
		if p := d.Problem(); p != "" {
			return errors.New(p)
		}
		return nil
	})
	if got := poolTarget(d); got != dirB {
		t.Fatalf("pool at %s, want %s", got, dirB)
	}
	if _, err := os.Stat(filepath.Join(dirA, "vm-sp-disk0.qcow2")); err != nil {
		t.Fatalf("the old directory's files must stay: %v", err)
	}
	stop()

	// B vanishes (an unmounted NFS share): storage_pool C takes the pool.
	if err := os.RemoveAll(dirB); err != nil {
		t.Fatal(err)
	}
	d, stop = run(dirC)
	defer stop()
	if p := d.Problem(); p != "" {
		t.Fatal(p)
	}
	if got := poolTarget(d); got != dirC {
		t.Fatalf("pool at %s, want %s", got, dirC)
	}
}

func TestBackoffResetsOnlyAfterAStableConnection(t *testing.T) {
	var b backoff
	var waits []time.Duration
	for range 8 {
		waits = append(waits, b.wait())
		b.connected(time.Millisecond) // accepted, then dropped at once
		b.failed()
	}
	want := []time.Duration{100 * time.Millisecond, 200 * time.Millisecond, 400 * time.Millisecond, 800 * time.Millisecond,
		1600 * time.Millisecond, 3200 * time.Millisecond, 5 * time.Second, 5 * time.Second}
	if fmt.Sprint(waits) != fmt.Sprint(want) {
		t.Fatalf("waits %v, want %v", waits, want)
	}
	b.connected(backoffStable)
	if b.wait() != backoffMin {
		t.Fatalf("after a stable connection: %v", b.wait())
	}
}

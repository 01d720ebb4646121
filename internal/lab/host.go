package lab

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// Daemons a host runs, in start order. The fencer comes before corrald,
// which feeds it, as the packaged units order them.
var daemons = []string{"virtlogd", "virtlockd", "libvirtd", "corral-fencer", "corrald"}

// FencerSocket is the fencer's socket inside a host (and corrald's default).
const FencerSocket = "/run/corral-fencer/fencer.sock"

func (h *Host) nsFile() string { return filepath.Join(h.lab.nsDir(), h.Name+".mnt") }

// Socket is the path of the host's corrald admin socket, reachable from the
// root namespaces.
func (h *Host) Socket() string { return filepath.Join(h.Dir, "run-corral", "corral.sock") }

// LibvirtSocket is the path of the host's libvirtd socket, reachable from
// the root namespaces.
func (h *Host) LibvirtSocket() string { return filepath.Join(h.Dir, "run-libvirt", "libvirt-sock") }

// ConfigFile is the host's corral.toml.
func (h *Host) ConfigFile() string { return filepath.Join(h.Dir, "corral.toml") }

// LogFile is where daemon d of the host logs.
func (h *Host) LogFile(d string) string { return filepath.Join(h.Dir, "logs", d+".log") }

// LibvirtPath maps a path inside the host's private /var/log/libvirt,
// /var/lib/libvirt or /etc/libvirt to where the root namespace sees it.
func (h *Host) LibvirtPath(p string) string {
	for _, m := range []struct{ in, out string }{
		{"/var/log/libvirt", "log-libvirt"}, {"/var/lib/libvirt", "lib-libvirt"}, {"/etc/libvirt", "etc-libvirt"},
	} {
		if rest, ok := strings.CutPrefix(p, m.in); ok {
			return filepath.Join(h.Dir, m.out, rest)
		}
	}
	return p
}

// copyLibvirtConfig copies the daemons' configuration files (*.conf) of
// this machine's libvirt, and nothing it holds as state: no domain,
// network, storage pool, secret, hook or autostart link (an earlier run of
// corrald or of a test against the machine's libvirtd would otherwise leak
// a pool or network into every lab host).
func copyLibvirtConfig(src, dst string) error {
	ents, err := os.ReadDir(src)
	if err != nil {
		return err
	}
	for _, e := range ents {
		if !e.Type().IsRegular() || !strings.HasSuffix(e.Name(), ".conf") {
			continue
		}
		fi, err := e.Info()
		if err != nil {
			return err
		}
		b, err := os.ReadFile(filepath.Join(src, e.Name()))
		if err != nil {
			return err
		}
		if err := os.WriteFile(filepath.Join(dst, e.Name()), b, fi.Mode().Perm()); err != nil {
			return err
		}
	}
	return nil
}

// create makes the host's directories, configuration, network namespace and
// link.
func (h *Host) create(ctx context.Context) error {
	for _, d := range []string{"etc-libvirt", "lib-libvirt", "log-libvirt/qemu", "run-corral", "run-libvirt", "data", "logs"} {
		if err := os.MkdirAll(filepath.Join(h.Dir, d), 0o755); err != nil {
			return err
		}
	}
	if err := h.mountDataDir(ctx); err != nil {
		return err
	}
	if err := copyLibvirtConfig("/etc/libvirt", filepath.Join(h.Dir, "etc-libvirt")); err != nil {
		return err
	}
	// All hosts share one cgroup tree, so libvirt must not manage cgroups;
	// virtlockd guards disks on the shared storage; libvirtd listens on TCP
	// (lab only: no auth) for peer-to-peer live migration.
	appends := map[string]string{
		"qemu.conf":     "\ncgroup_controllers = [ ]\nlock_manager = \"lockd\"\n",
		"libvirtd.conf": "\nlisten_tls = 0\nlisten_tcp = 1\nauth_tcp = \"none\"\n",
	}
	for f, text := range appends {
		p := filepath.Join(h.Dir, "etc-libvirt", f)
		fh, err := os.OpenFile(p, os.O_APPEND|os.O_WRONLY|os.O_CREATE, 0o644)
		if err != nil {
			return err
		}
		_, err = fh.WriteString(text)
		fh.Close()
		if err != nil {
			return err
		}
	}
	conf := h.config + fmt.Sprintf("data_dir = %q\n", h.DataDir())
	// 0600: it may hold a join token.
	if err := os.WriteFile(h.ConfigFile(), []byte(conf), 0o600); err != nil {
		return err
	}
	if err := run(ctx, "ip", "netns", "add", h.Netns); err != nil {
		return err
	}
	if err := run(ctx, "ip", "link", "add", h.Veth, "type", "veth", "peer", "name", "eth0", "netns", h.Netns); err != nil {
		return err
	}
	if err := run(ctx, "ip", "link", "set", h.Veth, "master", h.lab.Bridge, "up"); err != nil {
		return err
	}
	_, ipnet, _ := net.ParseCIDR(h.lab.Subnet)
	gw := ipnet.IP.To4()
	gw[3] = 1
	for _, args := range [][]string{
		{"link", "set", "lo", "up"},
		{"addr", "add", h.IP + "/24", "dev", "eth0"},
		{"link", "set", "eth0", "up"},
		{"route", "add", "default", "via", gw.String()},
	} {
		if err := run(ctx, "ip", append([]string{"-n", h.Netns}, args...)...); err != nil {
			return err
		}
	}
	return nil
}

// makeMountNS creates a fresh mount namespace for the host, bound to its ns
// file: sysfs of its network namespace, an empty /run (as after a reboot)
// and its own libvirt directories.
func (h *Host) makeMountNS(ctx context.Context) error {
	if err := h.unmountNS(); err != nil {
		return err
	}
	if err := os.WriteFile(h.nsFile(), nil, 0o644); err != nil {
		return err
	}
	// A boot starts with an empty /run/libvirt, as after a real reboot.
	if err := os.RemoveAll(filepath.Join(h.Dir, "run-libvirt")); err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Join(h.Dir, "run-libvirt"), 0o755); err != nil {
		return err
	}
	script := strings.Join([]string{
		"set -e",
		"umount -l /sys",
		"nsenter --net=/run/netns/" + h.Netns + " mount -t sysfs sysfs /sys",
		"mount -t tmpfs -o mode=0755 tmpfs /run",
		"mkdir -p /run/corral /run/lock /run/libvirt",
		"mount --bind " + filepath.Join(h.Dir, "run-corral") + " /run/corral",
		"mount --bind " + filepath.Join(h.Dir, "run-libvirt") + " /run/libvirt",
		"mount --bind " + filepath.Join(h.Dir, "etc-libvirt") + " /etc/libvirt",
		"mount --bind " + filepath.Join(h.Dir, "lib-libvirt") + " /var/lib/libvirt",
		"mount --bind " + filepath.Join(h.Dir, "log-libvirt") + " /var/log/libvirt",
	}, "\n")
	if err := run(ctx, "unshare", "--mount="+h.nsFile(), "--propagation", "private", "sh", "-c", script); err != nil {
		return err
	}
	h.NetIno, h.MntIno = nsIno("/run/netns/"+h.Netns), nsIno(h.nsFile())
	return h.lab.save()
}

// appendConfig adds lines to the host's corral.toml.
func (h *Host) appendConfig(text string) error {
	f, err := os.OpenFile(h.ConfigFile(), os.O_APPEND|os.O_WRONLY, 0o600)
	if err != nil {
		return err
	}
	if _, err := f.WriteString(text); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

func (h *Host) unmountNS() error {
	if mounted(h.nsFile()) {
		if err := run(context.Background(), "umount", h.nsFile()); err != nil {
			return err
		}
	}
	return nil
}

// Command returns a command that runs inside the host's namespaces. Called
// from inside them already (a test re-run there), it runs the command
// directly: the namespace files are not visible from inside.
func (h *Host) Command(ctx context.Context, name string, args ...string) *exec.Cmd {
	if h.inside() {
		return exec.CommandContext(ctx, name, args...)
	}
	full := append([]string{"--mount=" + h.nsFile(), "--net=/run/netns/" + h.Netns, "--", name}, args...)
	return exec.CommandContext(ctx, "nsenter", full...)
}

// inside reports whether this process runs in the host's namespaces.
func (h *Host) inside() bool {
	return h.NetIno != 0 && nsIno("/proc/self/ns/net") == h.NetIno && nsIno("/proc/self/ns/mnt") == h.MntIno
}

func nsIno(path string) uint64 {
	fi, err := os.Stat(path)
	if err != nil {
		return 0
	}
	return fi.Sys().(*syscall.Stat_t).Ino
}

// Boot powers the host on: link up, fresh /run, daemons started in order.
func (h *Host) Boot(ctx context.Context) error {
	if err := run(ctx, "ip", "link", "set", h.Veth, "up"); err != nil {
		return err
	}
	if err := h.makeMountNS(ctx); err != nil {
		return err
	}
	os.Remove(h.Socket())
	for _, d := range daemons {
		if (d == "corrald" || d == "corral-fencer") && h.lab.NoCorrald {
			continue
		}
		if err := h.StartDaemon(ctx, d); err != nil {
			return err
		}
	}
	return nil
}

// StartDaemon starts one daemon of the host (virtlogd, virtlockd, libvirtd
// or corrald) and waits until it answers on its socket.
func (h *Host) StartDaemon(ctx context.Context, d string) error {
	var args []string
	var ready func(pid int) bool
	switch d {
	case "virtlogd", "virtlockd":
		sock := "/run/libvirt/" + d + "-sock"
		ready = func(pid int) bool { return socketUp(fmt.Sprintf("/proc/%d/root%s", pid, sock)) }
	case "libvirtd":
		args = []string{"--listen"}
		ready = func(pid int) bool { return socketUp(fmt.Sprintf("/proc/%d/root/run/libvirt/libvirt-sock", pid)) }
	case "corrald":
		args = []string{"--config", h.ConfigFile()}
		ready = func(int) bool { return socketUp(h.Socket()) }
	case "corral-fencer":
		// At real-time priority from exec on, so that every thread has it,
		// as the packaged unit's CPUSchedulingPolicy does.
		args = []string{"-f", "50", h.lab.binary("corral-fencer"), "--socket", FencerSocket}
		ready = func(pid int) bool { return socketUp(fmt.Sprintf("/proc/%d/root%s", pid, FencerSocket)) }
	default:
		return fmt.Errorf("unknown daemon %q", d)
	}
	bin := d
	switch d {
	case "corrald":
		bin = h.lab.Corrald
	case "corral-fencer":
		bin = "chrt"
	}
	logf, err := os.OpenFile(h.LogFile(d), os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o644)
	if err != nil {
		return err
	}
	defer logf.Close()
	cmd := h.Command(context.Background(), bin, args...)
	cmd.Stdout, cmd.Stderr = logf, logf
	// The testbed's fence agent (corral-lab fence, run by corrald as its
	// fence_command) finds the lab through this.
	cmd.Env = append(os.Environ(), "CORRAL_LAB_DIR="+h.lab.Dir)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start %s: %w", d, err)
	}
	pid := cmd.Process.Pid
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	h.PIDs[d] = pid
	if err := h.lab.save(); err != nil {
		return err
	}
	deadline := time.Now().Add(30 * time.Second)
	for !ready(pid) {
		select {
		case err := <-exited:
			return fmt.Errorf("%s exited during start-up (%v); see %s", d, err, h.LogFile(d))
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s did not come up within 30s; see %s", d, h.LogFile(d))
		}
	}
	return nil
}

func socketUp(path string) bool {
	c, err := net.DialTimeout("unix", path, 200*time.Millisecond)
	if err != nil {
		return false
	}
	c.Close()
	return true
}

// StopDaemon stops one daemon by its recorded PID: SIGTERM (a clean stop)
// or, with kill, SIGKILL. It waits until the process is gone.
func (h *Host) StopDaemon(ctx context.Context, d string, kill bool) error {
	pid, ok := h.PIDs[d]
	if !ok || !alive(pid) {
		return fmt.Errorf("%s is not running on %s", d, h.Name)
	}
	sig := syscall.SIGTERM
	if kill {
		sig = syscall.SIGKILL
	}
	if err := syscall.Kill(pid, sig); err != nil {
		return err
	}
	if err := waitFor(ctx, 30*time.Second, d+" to exit", func() bool { return !alive(pid) }); err != nil {
		return err
	}
	delete(h.PIDs, d)
	return h.lab.save()
}

// Signal sends sig to daemon d of the host (SIGSTOP to hang it, SIGCONT to
// let it go on).
func (h *Host) Signal(d string, sig syscall.Signal) error {
	pid, ok := h.PIDs[d]
	if !ok || !alive(pid) {
		return fmt.Errorf("%s is not running on %s", d, h.Name)
	}
	return syscall.Kill(pid, sig)
}

// FencerStatusSocket is the host's fencer socket as the root namespaces
// reach it (through the fencer's own root), or "" when it is not running.
func (h *Host) FencerStatusSocket() string {
	pid, ok := h.PIDs["corral-fencer"]
	if !ok || !alive(pid) {
		return ""
	}
	return fmt.Sprintf("/proc/%d/root%s", pid, FencerSocket)
}

// StartHog starts a process that spins on a CPU inside the host's
// namespaces, as a busy workload of the host's own would; it dies with the
// host (Kill) or by StopHogs.
func (h *Host) StartHog(ctx context.Context) error {
	cmd := h.Command(context.Background(), "sh", "-c", "while :; do :; done")
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		return err
	}
	go cmd.Wait()
	h.hogs = append(h.hogs, cmd.Process.Pid)
	return nil
}

// StopHogs ends the host's CPU hogs, by PID.
func (h *Host) StopHogs() {
	for _, pid := range h.hogs {
		syscall.Kill(pid, syscall.SIGKILL)
	}
	h.hogs = nil
}

// RestartDaemon stops d cleanly and starts it again.
func (h *Host) RestartDaemon(ctx context.Context, d string) error {
	if err := h.StopDaemon(ctx, d, false); err != nil {
		return err
	}
	return h.StartDaemon(ctx, d)
}

// alive reports whether pid exists and is not a zombie.
func alive(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	// state is the field after the parenthesised command name
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	return i > 0 && len(s) > i+2 && s[i+2] != 'Z'
}

// pids lists every process in the host's network namespace. It compares
// namespace inodes under /proc, so it works from any namespace (the fence
// agent runs inside another lab host).
func (h *Host) pids() []int {
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return nil
	}
	var pids []int
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == os.Getpid() {
			continue
		}
		if nsIno(fmt.Sprintf("/proc/%d/ns/net", pid)) == h.NetIno && alive(pid) {
			pids = append(pids, pid)
		}
	}
	return pids
}

// killAll SIGKILLs every process in the host's network namespace (its
// daemons and their QEMU guests) until none is left.
func (h *Host) killAll() {
	if h.NetIno == 0 {
		return
	}
	for i := 0; i < 100; i++ {
		pids := h.pids()
		if len(pids) == 0 {
			break
		}
		for _, p := range pids {
			syscall.Kill(p, syscall.SIGKILL)
		}
		time.Sleep(20 * time.Millisecond)
	}
	h.PIDs = map[string]int{}
}

// PowerOff kills every process of the host at once, as a fence agent cutting
// its power would. Unlike Kill it leaves the link alone, so it works from
// inside another host's namespaces.
func (h *Host) PowerOff() error {
	h.killAll()
	return h.lab.save()
}

// Kill is a power loss: every process of the host dies at once and its
// link goes down.
func (h *Host) Kill(ctx context.Context) error {
	if err := run(ctx, "ip", "link", "set", h.Veth, "down"); err != nil {
		return err
	}
	h.killAll()
	return h.lab.save()
}

// Partition cuts the host's link; it keeps running.
func (h *Host) Partition(ctx context.Context) error {
	return run(ctx, "ip", "link", "set", h.Veth, "down")
}

// Heal restores the host's link.
func (h *Host) Heal(ctx context.Context) error {
	return run(ctx, "ip", "link", "set", h.Veth, "up")
}

// Running reports which daemons of the host are alive.
func (h *Host) Running() map[string]bool {
	out := map[string]bool{}
	for _, d := range daemons {
		if pid, ok := h.PIDs[d]; ok && alive(pid) {
			out[d] = true
		}
	}
	return out
}

// LinkUp reports whether the host's link is up.
func (h *Host) LinkUp() bool {
	ifc, err := net.InterfaceByName(h.Veth)
	return err == nil && ifc.Flags&net.FlagUp != 0
}

// WipeDataDir removes everything in the host's data_dir, as if its disk
// were lost: Raft state and identity. corrald must be stopped.
func (h *Host) WipeDataDir() error {
	if pid, ok := h.PIDs["corrald"]; ok && alive(pid) {
		return fmt.Errorf("wipe data dir of %s: corrald runs (pid %d)", h.Name, pid)
	}
	entries, err := os.ReadDir(h.DataDir())
	if err != nil {
		return err
	}
	for _, e := range entries {
		if err := os.RemoveAll(filepath.Join(h.DataDir(), e.Name())); err != nil {
			return err
		}
	}
	return nil
}

// SetConfig sets key to value (a TOML value, quoted if a string) in the
// host's corral.toml, replacing the key's line if it has one; the line
// goes first, where a key is top-level whatever tables follow.
func (h *Host) SetConfig(key, value string) error {
	data, err := os.ReadFile(h.ConfigFile())
	if err != nil {
		return err
	}
	lines := []string{key + " = " + value}
	for _, l := range strings.Split(strings.TrimRight(string(data), "\n"), "\n") {
		if k, _, ok := strings.Cut(l, "="); ok && strings.TrimSpace(k) == key {
			continue
		}
		lines = append(lines, l)
	}
	return os.WriteFile(h.ConfigFile(), []byte(strings.Join(lines, "\n")+"\n"), 0o600)
}

// Package lab is corral's testbed: N corral hosts on one machine. Each host
// is a network namespace plus a mount namespace with private /run,
// /var/lib/libvirt, /etc/libvirt (the machine's *.conf files only, none of
// its libvirtd's state), /var/log/libvirt, /etc/corral and
// /var/lib/corral, with its own virtlogd, virtlockd, libvirtd, fencer
// (corral-fencer, from beside the corrald binary) and corrald.
// Hosts reach each other through veth pairs on one bridge; a shared storage
// directory is visible to every host at the same path. The lab can power a
// host off (kill every process in its namespace and cut its link), partition
// and heal it, and restart its daemons. For chaos runs (faults.go) it can
// also cut a host's IP traffic to chosen peers, one way or both (Cut, an
// nftables table in the host's network namespace, for splits and
// asymmetric partitions), degrade its link (Netem: loss and delay; Loss:
// random loss with nftables, for kernels without netem), and
// fill its corrald data_dir (FillDataDir, when Config.DataDirMiB makes
// each data_dir a tmpfs of that size); each has its undo.
//
// cmd/corral-lab is its command line; end-to-end tests and the demo use it.
// It needs root, iproute2, util-linux (unshare, nsenter), libvirt and QEMU,
// and installs nothing: Check reports what is missing. Cut also needs nft
// (nftables) and Netem a kernel with the netem qdisc.
package lab

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/corralhq/corral/daemon/identity"
)

// Config describes a lab.
type Config struct {
	// Dir holds everything the lab makes (default /var/lib/corral-lab).
	Dir string
	// ID (0-255) keeps concurrent labs apart: it is part of namespace,
	// bridge and interface names and the third octet of the subnet
	// 10.77.ID.0/24.
	ID    int
	Hosts int
	// Corrald is the corrald binary to run on every host.
	Corrald string
	// CorraldConfig is appended to every host's corral.toml.
	CorraldConfig string
	// Seeds lists the hosts (by index) every host joins through; default all.
	Seeds []int
	// NoCorrald boots hosts with their libvirt daemons only (for driver
	// tests).
	NoCorrald bool
	// Insecure runs corrald without cluster identities (insecure = true),
	// for comparisons; by default h1 runs corrald init and the other hosts
	// join with its token, as an operator would set a cluster up.
	Insecure bool
	// DataDirMiB, when > 0, makes every host's data_dir a tmpfs of that
	// many MiB, which FillDataDir can fill; 0 leaves it on the lab's disk.
	DataDirMiB int
}

// Host is one lab host.
type Host struct {
	Name  string         `json:"name"`
	IP    string         `json:"ip"`
	Netns string         `json:"netns"`
	Veth  string         `json:"veth"` // root-side end of its link
	Dir   string         `json:"dir"`
	PIDs  map[string]int `json:"pids"` // daemon -> pid
	// NetIno and MntIno identify the host's namespaces.
	NetIno uint64 `json:"net_ino"`
	MntIno uint64 `json:"mnt_ino"`
	lab    *Lab
	config string
	hogs   []int
}

// Lab is a running (or stopped) testbed; its state is in Dir/lab.json.
type Lab struct {
	Dir       string  `json:"dir"`
	ID        int     `json:"id"`
	Bridge    string  `json:"bridge"`
	Subnet    string  `json:"subnet"`
	Hosts     []*Host `json:"hosts"`
	Corrald   string  `json:"corrald"`
	NoCorrald bool    `json:"no_corrald,omitempty"`
	// DataDirMiB is Config.DataDirMiB: each host's data_dir is a tmpfs.
	DataDirMiB int `json:"data_dir_mib,omitempty"`
}

// DefaultDir is where corral-lab keeps its labs.
const DefaultDir = "/var/lib/corral-lab"

// Check returns an error naming every missing requirement.
func Check() error {
	var missing []string
	if os.Geteuid() != 0 {
		missing = append(missing, "root privileges")
	}
	for _, tool := range []struct{ bin, pkg string }{
		{"ip", "iproute2"}, {"unshare", "util-linux"}, {"chrt", "util-linux"}, {"nsenter", "util-linux"}, {"mount", "mount"},
		{"libvirtd", "libvirt-daemon-system"}, {"virtlogd", "libvirt-daemon-system"}, {"virtlockd", "libvirt-daemon-system"},
		{"qemu-system-x86_64", "qemu-system-x86"}, {"qemu-img", "qemu-utils"},
	} {
		if _, err := exec.LookPath(tool.bin); err != nil {
			missing = append(missing, fmt.Sprintf("%s (Debian package %s)", tool.bin, tool.pkg))
		}
	}
	if len(missing) > 0 {
		return fmt.Errorf("the lab needs: %s", strings.Join(missing, ", "))
	}
	return nil
}

func (l *Lab) stateFile() string { return filepath.Join(l.Dir, "lab.json") }

// binary returns the path of another corral program beside corrald.
func (l *Lab) binary(name string) string { return filepath.Join(filepath.Dir(l.Corrald), name) }
func (l *Lab) nsDir() string             { return filepath.Join(l.Dir, "ns") }

// SharedDir is the storage directory every host sees at the same path.
func (l *Lab) SharedDir() string { return filepath.Join(l.Dir, "shared") }

func (l *Lab) save() error {
	b, err := json.MarshalIndent(l, "", "  ")
	if err != nil {
		return err
	}
	tmp := l.stateFile() + ".tmp"
	if err := os.WriteFile(tmp, b, 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, l.stateFile())
}

// Load reads the lab in dir.
func Load(dir string) (*Lab, error) {
	b, err := os.ReadFile(filepath.Join(dir, "lab.json"))
	if err != nil {
		return nil, fmt.Errorf("no lab in %s: %w", dir, err)
	}
	var l Lab
	if err := json.Unmarshal(b, &l); err != nil {
		return nil, fmt.Errorf("lab state %s: %w", dir, err)
	}
	for _, h := range l.Hosts {
		h.lab = &l
	}
	return &l, nil
}

// Host returns the host called name.
func (l *Lab) Host(name string) (*Host, error) {
	for _, h := range l.Hosts {
		if h.Name == name {
			return h, nil
		}
	}
	return nil, fmt.Errorf("no host %q in the lab (hosts: %s)", name, strings.Join(l.names(), ", "))
}

func (l *Lab) names() []string {
	var out []string
	for _, h := range l.Hosts {
		out = append(out, h.Name)
	}
	return out
}

// run runs a command in the root namespaces and returns its error with
// its output.
func run(ctx context.Context, name string, args ...string) error {
	out, err := exec.CommandContext(ctx, name, args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("%s %s: %v: %s", name, strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return nil
}

// Up builds the lab: bridge, hosts, shared storage, daemons. It fails if a
// lab already exists in cfg.Dir.
func Up(ctx context.Context, cfg Config) (*Lab, error) {
	if err := Check(); err != nil {
		return nil, err
	}
	if cfg.Dir == "" {
		cfg.Dir = DefaultDir
	}
	if cfg.Hosts < 1 || cfg.Hosts > 200 {
		return nil, fmt.Errorf("hosts: %d, want 1..200", cfg.Hosts)
	}
	if cfg.ID < 0 || cfg.ID > 255 {
		return nil, fmt.Errorf("lab id %d, want 0..255", cfg.ID)
	}
	if cfg.DataDirMiB < 0 {
		return nil, fmt.Errorf("data dir size: %d MiB, want >= 0", cfg.DataDirMiB)
	}
	if cfg.Corrald == "" && !cfg.NoCorrald {
		return nil, errors.New("no corrald binary given")
	}
	corrald := ""
	if !cfg.NoCorrald {
		abs, err := filepath.Abs(cfg.Corrald)
		if err != nil {
			return nil, err
		}
		corrald = abs
		if _, err := os.Stat(filepath.Join(filepath.Dir(abs), "corral-fencer")); err != nil {
			return nil, fmt.Errorf("corral-fencer must sit beside corrald: %w", err)
		}
	}
	if _, err := os.Stat(filepath.Join(cfg.Dir, "lab.json")); err == nil {
		return nil, fmt.Errorf("a lab already exists in %s (corral-lab down first)", cfg.Dir)
	}
	// Another lab with this id would have its namespaces and links taken
	// over; refuse rather than break it.
	if br := fmt.Sprintf("corral%dbr", cfg.ID); linkExists(br) || nsExists(fmt.Sprintf("corral%d-h1", cfg.ID)) {
		return nil, fmt.Errorf("lab id %d is in use (bridge %s or namespace corral%d-h1 exists): another lab is up; take it down (corral-lab --dir DIR down) or choose another --id", cfg.ID, br, cfg.ID)
	}
	if err := traversable(cfg.Dir); err != nil {
		return nil, err
	}
	l := &Lab{
		Dir: cfg.Dir, ID: cfg.ID, Corrald: corrald, NoCorrald: cfg.NoCorrald, DataDirMiB: cfg.DataDirMiB,
		Bridge: fmt.Sprintf("corral%dbr", cfg.ID),
		Subnet: fmt.Sprintf("10.77.%d.0/24", cfg.ID),
	}
	for i := 0; i < cfg.Hosts; i++ {
		name := fmt.Sprintf("h%d", i+1)
		l.Hosts = append(l.Hosts, &Host{
			Name: name, IP: fmt.Sprintf("10.77.%d.%d", cfg.ID, 11+i),
			Netns: fmt.Sprintf("corral%d-%s", cfg.ID, name), Veth: fmt.Sprintf("c%d%s", cfg.ID, name),
			Dir: filepath.Join(cfg.Dir, "hosts", name), PIDs: map[string]int{}, lab: l,
		})
	}
	seeds := cfg.Seeds
	if len(seeds) == 0 {
		for i := range l.Hosts {
			seeds = append(seeds, i)
		}
	}
	var seedIPs []string
	for _, s := range seeds {
		seedIPs = append(seedIPs, fmt.Sprintf("%q", l.Hosts[s].IP))
	}
	for _, d := range []string{l.Dir, l.nsDir(), filepath.Join(l.SharedDir(), "pool")} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return nil, err
		}
	}
	// QEMU runs as libvirt-qemu: it must be able to reach the shared
	// storage (disks, kernels) through the lab directory.
	if err := os.Chmod(l.Dir, 0o755); err != nil {
		return nil, err
	}
	if err := l.save(); err != nil {
		return nil, err
	}
	// From here on, a failure tears down what was built.
	fail := func(err error) (*Lab, error) {
		l.Down(context.Background())
		return nil, err
	}
	// The mount namespace files must live on a private mount.
	if err := run(ctx, "mount", "--bind", l.nsDir(), l.nsDir()); err != nil {
		return fail(err)
	}
	if err := run(ctx, "mount", "--make-private", l.nsDir()); err != nil {
		return fail(err)
	}
	if err := l.setupBridge(ctx); err != nil {
		return fail(err)
	}
	for _, h := range l.Hosts {
		h.config = fmt.Sprintf(`name = %q
bind_addr = %q
seeds = [%s]
bootstrap_expect = %d
storage_pool = %q
kernel_dir = %q
%s
`, h.Name, h.IP, strings.Join(seedIPs, ", "), min(3, cfg.Hosts), filepath.Join(l.SharedDir(), "pool"), l.SharedDir(), cfg.CorraldConfig)
		if err := h.create(ctx); err != nil {
			return fail(fmt.Errorf("%s: %w", h.Name, err))
		}
		if err := l.save(); err != nil {
			return fail(err)
		}
	}
	if !cfg.NoCorrald {
		if err := l.identities(ctx, cfg.Insecure); err != nil {
			return fail(err)
		}
	}
	for _, h := range l.Hosts {
		if err := h.Boot(ctx); err != nil {
			return fail(fmt.Errorf("%s: %w", h.Name, err))
		}
	}
	return l, l.save()
}

// identities sets the cluster's identity up the operator's way: corrald
// init on h1, its first join token in every other host's corral.toml.
// Insecure instead turns identities off on every host.
func (l *Lab) identities(ctx context.Context, insecure bool) error {
	if insecure {
		for _, h := range l.Hosts {
			if err := h.appendConfig("insecure = true\n"); err != nil {
				return err
			}
		}
		return nil
	}
	first := l.Hosts[0]
	if out, err := exec.CommandContext(ctx, l.Corrald, "init", "--config", first.ConfigFile()).CombinedOutput(); err != nil {
		return fmt.Errorf("corrald init on %s: %v: %s", first.Name, err, out)
	}
	tok, ok := identity.InitToken(filepath.Join(first.DataDir(), "identity"))
	if !ok {
		return fmt.Errorf("corrald init on %s wrote no join token", first.Name)
	}
	for _, h := range l.Hosts[1:] {
		if err := h.appendConfig(fmt.Sprintf("join_token = %q\n", tok.String())); err != nil {
			return err
		}
	}
	return nil
}

func (l *Lab) setupBridge(ctx context.Context) error {
	if err := run(ctx, "ip", "link", "add", l.Bridge, "type", "bridge"); err != nil {
		return err
	}
	_, ipnet, _ := net.ParseCIDR(l.Subnet)
	gw := ipnet.IP.To4()
	gw[3] = 1
	if err := run(ctx, "ip", "addr", "add", gw.String()+"/24", "dev", l.Bridge); err != nil {
		return err
	}
	return run(ctx, "ip", "link", "set", l.Bridge, "up")
}

// Down stops every process of every host, and removes the namespaces,
// links, bridge, mounts and directory of the lab. It is safe to run twice
// and on a half-built lab.
func (l *Lab) Down(ctx context.Context) error {
	var errs []error
	for _, h := range l.Hosts {
		h.killAll()
		if err := h.unmountNS(); err != nil {
			errs = append(errs, err)
		}
		if nsExists(h.Netns) {
			if err := run(ctx, "ip", "netns", "del", h.Netns); err != nil {
				errs = append(errs, err)
			}
		}
		if linkExists(h.Veth) {
			run(ctx, "ip", "link", "del", h.Veth)
		}
		if err := h.unmountDataDir(ctx); err != nil {
			errs = append(errs, err)
		}
	}
	if linkExists(l.Bridge) {
		if err := run(ctx, "ip", "link", "del", l.Bridge); err != nil {
			errs = append(errs, err)
		}
	}
	if mounted(l.nsDir()) {
		if err := run(ctx, "umount", l.nsDir()); err != nil {
			errs = append(errs, err)
		}
	}
	if len(errs) == 0 {
		if err := os.RemoveAll(l.Dir); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// traversable checks that QEMU, which runs as its own user, can reach
// dir: every existing directory above it must let others through (x).
// Otherwise guests fail much later with "Cannot access storage file".
func traversable(dir string) error {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return err
	}
	for p := filepath.Dir(abs); ; p = filepath.Dir(p) {
		fi, err := os.Stat(p)
		if err == nil && fi.Mode().Perm()&0o001 == 0 {
			return fmt.Errorf("lab directory %s: %s is mode %04o, which QEMU's user cannot pass through: put the lab elsewhere or chmod o+x %s", dir, p, fi.Mode().Perm(), p)
		}
		if p == filepath.Dir(p) {
			return nil
		}
	}
}

// IDInUse reports whether anything of a lab with this id is on the machine:
// its bridge or any of its host namespaces. A lab left behind by a run that
// was killed, or one another process has up, shows here even when no lock
// file says so.
func IDInUse(id int) bool {
	if linkExists(fmt.Sprintf("corral%dbr", id)) {
		return true
	}
	m, _ := filepath.Glob(fmt.Sprintf("/run/netns/corral%d-*", id))
	return len(m) > 0
}

func nsExists(name string) bool {
	_, err := os.Stat(filepath.Join("/run/netns", name))
	return err == nil
}

func linkExists(name string) bool {
	_, err := net.InterfaceByName(name)
	return err == nil
}

// mounted reports whether path is a mount point (per /proc/self/mountinfo).
func mounted(path string) bool {
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return false
	}
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) > 4 && f[4] == path {
			return true
		}
	}
	return false
}

// waitFor polls cond every 50ms until it is true or timeout passes.
func waitFor(ctx context.Context, timeout time.Duration, what string, cond func() bool) error {
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			return fmt.Errorf("timed out after %v waiting for %s", timeout, what)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
	return nil
}

package lab

import (
	"context"
	"errors"
	"fmt"
	"math"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// Fault injectors for chaos runs. Each works on real kernel state of the
// host (nftables and a qdisc in its network namespace, a tmpfs data_dir),
// is idempotent, and has an undo that succeeds when there is nothing to
// undo. They run from the root namespaces.

// ErrNoNetem means the running kernel has no netem qdisc, so Netem cannot
// degrade a link on this machine.
var ErrNoNetem = errors.New("the kernel has no netem qdisc (CONFIG_NET_SCH_NETEM, module sch_netem)")

// Direction says which of a host's traffic Cut drops.
type Direction int

const (
	// Inbound drops what the peers send to the host; the host can still
	// send to them (an asymmetric partition).
	Inbound Direction = iota + 1
	// Outbound drops what the host sends to the peers.
	Outbound
	// Both drops traffic between the host and the peers either way.
	Both
)

func (d Direction) String() string {
	switch d {
	case Inbound:
		return "inbound"
	case Outbound:
		return "outbound"
	case Both:
		return "both"
	}
	return fmt.Sprintf("Direction(%d)", int(d))
}

// cutTable is the nftables table the lab owns in each host's network
// namespace; Uncut deletes it whole.
const cutTable = "inet corrallab"

// Cut drops IP traffic between the host and peers (by their addresses) in
// direction dir, in the host's own input and output hooks, established
// connections included (no conntrack state is consulted). Traffic with
// other hosts and with the root namespace is untouched. Cuts add up: a
// second Cut adds its peers to those already cut, and repeating one
// changes nothing. A 2|3 split is a Cut(Both) of each host on one side
// from the other side. It filters the host's own traffic, not guests
// bridged through it.
func (h *Host) Cut(ctx context.Context, peers []*Host, dir Direction) error {
	if dir != Inbound && dir != Outbound && dir != Both {
		return fmt.Errorf("cut %s: bad direction %d", h.Name, int(dir))
	}
	if _, err := exec.LookPath("nft"); err != nil {
		return fmt.Errorf("cut %s: needs nft (Debian package nftables): %w", h.Name, err)
	}
	var ips []string
	for _, p := range peers {
		if p == nil || p == h || p.Name == h.Name {
			return fmt.Errorf("cut %s: a host cannot be cut from itself or from nothing", h.Name)
		}
		if ip := net.ParseIP(p.IP); ip == nil || ip.To4() == nil {
			return fmt.Errorf("cut %s: peer %s has no IPv4 address (%q)", h.Name, p.Name, p.IP)
		}
		ips = append(ips, p.IP)
	}
	// One transaction: the table, its two address sets and chains exist
	// (add is a no-op when they do), each chain holds exactly its one rule
	// (flush, then add), and the peers join the sets.
	script := []string{
		"add table " + cutTable,
		"add set " + cutTable + " inbound { type ipv4_addr; }",
		"add set " + cutTable + " outbound { type ipv4_addr; }",
		"add chain " + cutTable + " input { type filter hook input priority -300; policy accept; }",
		"add chain " + cutTable + " output { type filter hook output priority -300; policy accept; }",
		"flush chain " + cutTable + " input",
		"flush chain " + cutTable + " output",
		"add rule " + cutTable + " input ip saddr @inbound drop",
		"add rule " + cutTable + " output ip daddr @outbound drop",
	}
	if len(ips) > 0 {
		elems := " { " + strings.Join(ips, ", ") + " }"
		if dir == Inbound || dir == Both {
			script = append(script, "add element "+cutTable+" inbound"+elems)
		}
		if dir == Outbound || dir == Both {
			script = append(script, "add element "+cutTable+" outbound"+elems)
		}
	}
	if err := run(ctx, "ip", "netns", "exec", h.Netns, "nft", strings.Join(script, "\n")); err != nil {
		return fmt.Errorf("cut %s: %w", h.Name, err)
	}
	return nil
}

// Uncut removes every cut of the host (the lab's nftables table); it is not
// an error if there is none.
func (h *Host) Uncut(ctx context.Context) error {
	if _, err := exec.LookPath("nft"); err != nil {
		return fmt.Errorf("uncut %s: needs nft (Debian package nftables): %w", h.Name, err)
	}
	// Adding the table first makes the delete succeed when it is absent.
	if err := run(ctx, "ip", "netns", "exec", h.Netns, "nft", "add table "+cutTable+"\ndelete table "+cutTable); err != nil {
		return fmt.Errorf("uncut %s: %w", h.Name, err)
	}
	return nil
}

// Netem degrades what the host sends on its link (eth0 in its network
// namespace): loss percent of packets dropped (0-100), and each delayed by
// delay ± jitter. A second call replaces the first. On a kernel without
// netem it returns an error wrapping ErrNoNetem.
func (h *Host) Netem(ctx context.Context, loss float64, delay, jitter time.Duration) error {
	params, err := netemArgs(loss, delay, jitter)
	if err != nil {
		return fmt.Errorf("netem %s: %w", h.Name, err)
	}
	args := append([]string{"-n", h.Netns, "qdisc", "replace", "dev", "eth0", "root", "netem"}, params...)
	if err := run(ctx, "tc", args...); err != nil {
		if strings.Contains(err.Error(), "qdisc kind is unknown") {
			return fmt.Errorf("netem %s: %w: %v", h.Name, ErrNoNetem, err)
		}
		return fmt.Errorf("netem %s: %w", h.Name, err)
	}
	return nil
}

// netemArgs returns the netem parameters of tc for loss (percent), delay
// and jitter.
func netemArgs(loss float64, delay, jitter time.Duration) ([]string, error) {
	switch {
	case math.IsNaN(loss) || loss < 0 || loss > 100:
		return nil, fmt.Errorf("loss %v%%, want 0..100", loss)
	case delay < 0 || jitter < 0:
		return nil, fmt.Errorf("delay %v, jitter %v: want >= 0", delay, jitter)
	case jitter > 0 && delay == 0:
		return nil, fmt.Errorf("jitter %v without a delay", jitter)
	}
	args := []string{"loss", strconv.FormatFloat(loss, 'f', -1, 64) + "%"}
	if delay > 0 {
		args = append(args, "delay", strconv.FormatInt(delay.Microseconds(), 10)+"us")
		if jitter > 0 {
			args = append(args, strconv.FormatInt(jitter.Microseconds(), 10)+"us")
		}
	}
	return args, nil
}

// ClearNetem removes the host's netem qdisc; it is not an error if there
// is none.
func (h *Host) ClearNetem(ctx context.Context) error {
	out, err := exec.CommandContext(ctx, "tc", "-n", h.Netns, "qdisc", "show", "dev", "eth0", "root").CombinedOutput()
	if err != nil {
		return fmt.Errorf("clear netem %s: tc qdisc show: %v: %s", h.Name, err, strings.TrimSpace(string(out)))
	}
	if !strings.HasPrefix(strings.TrimSpace(string(out)), "qdisc netem ") {
		return nil
	}
	if err := run(ctx, "tc", "-n", h.Netns, "qdisc", "del", "dev", "eth0", "root"); err != nil {
		return fmt.Errorf("clear netem %s: %w", h.Name, err)
	}
	return nil
}

// lossTable is the nftables table of Loss in a host's network namespace.
const lossTable = "inet corrallab_loss"

// Loss drops pct percent (1-100) of the host's packets, chosen at random,
// in both directions on its link (not loopback), with nftables: packet
// loss where the kernel has no netem. A second call replaces the first.
func (h *Host) Loss(ctx context.Context, pct int) error {
	if pct < 1 || pct > 100 {
		return fmt.Errorf("loss %s: %d%%, want 1..100", h.Name, pct)
	}
	if _, err := exec.LookPath("nft"); err != nil {
		return fmt.Errorf("loss %s: needs nft (Debian package nftables): %w", h.Name, err)
	}
	script := []string{
		"add table " + lossTable,
		"delete table " + lossTable,
		"add table " + lossTable,
		"add chain " + lossTable + " input { type filter hook input priority -300; policy accept; }",
		"add chain " + lossTable + " output { type filter hook output priority -300; policy accept; }",
		`add rule ` + lossTable + ` input iifname "lo" accept`,
		`add rule ` + lossTable + ` output oifname "lo" accept`,
	}
	match := fmt.Sprintf("numgen random mod 100 < %d ", pct)
	if pct == 100 {
		match = "" // nft refuses 100 as a value of mod 100
	}
	for _, hook := range []string{"input", "output"} {
		script = append(script, fmt.Sprintf("add rule %s %s %sdrop", lossTable, hook, match))
	}
	if err := run(ctx, "ip", "netns", "exec", h.Netns, "nft", strings.Join(script, "\n")); err != nil {
		return fmt.Errorf("loss %s: %w", h.Name, err)
	}
	return nil
}

// ClearLoss ends Loss; it is not an error if there is none.
func (h *Host) ClearLoss(ctx context.Context) error {
	if err := run(ctx, "ip", "netns", "exec", h.Netns, "nft", "add table "+lossTable+"\ndelete table "+lossTable); err != nil {
		return fmt.Errorf("clear loss %s: %w", h.Name, err)
	}
	return nil
}

// DataDir is the host's corrald data_dir, as every namespace sees it.
func (h *Host) DataDir() string { return filepath.Join(h.Dir, "data") }

func (h *Host) fillerFile() string { return filepath.Join(h.DataDir(), ".lab-filler") }

// mountDataDir makes the host's data_dir a tmpfs of Config.DataDirMiB, in
// the root mount namespace, so that the host's mount namespace (made after
// it, at boot) has it too.
func (h *Host) mountDataDir(ctx context.Context) error {
	if h.lab.DataDirMiB <= 0 || mounted(h.DataDir()) {
		return nil
	}
	return run(ctx, "mount", "-t", "tmpfs", "-o", fmt.Sprintf("size=%dM,mode=0700", h.lab.DataDirMiB), "tmpfs", h.DataDir())
}

// unmountDataDir undoes mountDataDir, if it was done. A busy mount is
// detached lazily rather than left behind.
func (h *Host) unmountDataDir(ctx context.Context) error {
	if h.Dir == "" || !mounted(h.DataDir()) {
		return nil
	}
	if err := run(ctx, "umount", h.DataDir()); err != nil {
		if lerr := run(ctx, "umount", "-l", h.DataDir()); lerr != nil {
			return errors.Join(err, lerr)
		}
	}
	return nil
}

// FillDataDir fills the host's data_dir (a tmpfs of Config.DataDirMiB)
// with a filler file until the file system is full; running out of space
// is the point, not an error. Without DataDirMiB it refuses: the data_dir
// would be on the machine's own disk.
func (h *Host) FillDataDir() error {
	if h.lab.DataDirMiB <= 0 || !mounted(h.DataDir()) {
		return fmt.Errorf("fill data dir of %s: %s is not a lab tmpfs (set Config.DataDirMiB); refusing to fill the machine's disk", h.Name, h.DataDir())
	}
	f, err := os.OpenFile(h.fillerFile(), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		if errors.Is(err, syscall.ENOSPC) {
			return nil // full already: not even an inode left
		}
		return fmt.Errorf("fill data dir of %s: %w", h.Name, err)
	}
	buf := make([]byte, 1<<20)
	for {
		if _, err := f.Write(buf); err != nil {
			f.Close()
			if errors.Is(err, syscall.ENOSPC) {
				return nil
			}
			return fmt.Errorf("fill data dir of %s: %w", h.Name, err)
		}
	}
}

// FreeDataDir removes FillDataDir's filler file; it is not an error if
// there is none.
func (h *Host) FreeDataDir() error {
	if err := os.Remove(h.fillerFile()); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("free data dir of %s: %w", h.Name, err)
	}
	return nil
}

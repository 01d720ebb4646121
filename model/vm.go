package model

import (
	"fmt"
	"net"
	"path/filepath"
	"slices"
	"strings"
	"time"
	"unicode/utf8"
)

// PowerState is the power state an operator wants for a VM.
type PowerState string

const (
	PowerRunning PowerState = "running"
	PowerStopped PowerState = "stopped"
)

// Valid reports whether p is a known desired power state.
func (p PowerState) Valid() bool { return p == PowerRunning || p == PowerStopped }

// DiskSpec is one disk of a VM: a copy-on-write overlay on a base image, or
// a blank volume.
type DiskSpec struct {
	// Image names a base image; the disk is a qcow2 overlay on it.
	Image string `json:"image,omitempty"`
	// SizeMiB is the size of a blank disk, or the virtual size of an
	// overlay (0: the image's size).
	SizeMiB int64 `json:"size_mib,omitempty"`
}

// KernelBoot boots a VM directly from a kernel and initrd on the host
// (appliance guests). The paths must exist on every host, typically on
// shared storage.
type KernelBoot struct {
	Kernel  string `json:"kernel"`
	Initrd  string `json:"initrd,omitempty"`
	Cmdline string `json:"cmdline,omitempty"`
}

// NICSpec is a network interface on a corral network.
type NICSpec struct {
	Network string `json:"network"`
	// MAC is chosen by the leader when the VM is created and kept through
	// restarts, recovery and migration.
	MAC string `json:"mac,omitempty"`
}

// HAPolicy says what corral does when a VM's guest or host fails.
type HAPolicy struct {
	// Enabled: recover the VM on another host when its host fails.
	Enabled bool `json:"enabled"`
	// Priority orders recovery: higher first.
	Priority int `json:"priority"`
	// MaxRestart local restarts after crashes within RestartWindowSec,
	// then the VM is relocated, at most MaxRelocate times, then failed.
	MaxRestart       int `json:"max_restart"`
	RestartWindowSec int `json:"restart_window_s"`
	MaxRelocate      int `json:"max_relocate"`
}

// DefaultHA is the policy of a VM created without one.
func DefaultHA() HAPolicy {
	return HAPolicy{Enabled: true, MaxRestart: 3, RestartWindowSec: 600, MaxRelocate: 2}
}

// VMSpec is what an operator asks for when creating a VM.
type VMSpec struct {
	VCPUs     int         `json:"vcpus"`
	MemoryMiB int64       `json:"memory_mib"`
	Disks     []DiskSpec  `json:"disks,omitempty"`
	Kernel    *KernelBoot `json:"kernel,omitempty"`
	NICs      []NICSpec   `json:"nics,omitempty"`
	// UserData is cloud-init user data; the host attaches it as a NoCloud
	// seed (an ISO 9660 volume labelled cidata).
	UserData string            `json:"user_data,omitempty"`
	Labels   map[string]string `json:"labels,omitempty"`
	// AntiAffinity names a group; two VMs of one group never share a host.
	AntiAffinity string `json:"anti_affinity,omitempty"`
	// Require lists host labels the VM's host must carry.
	Require map[string]string `json:"require,omitempty"`
	HA      HAPolicy          `json:"ha"`
	// Spread names a soft anti-affinity set: the VM goes to a host that
	// holds the fewest VMs of that set among those that fit (a group's
	// members have their group's name here; raftlog.FeatureGroups).
	Spread string `json:"spread,omitempty"`
	// Health, when set, is checked by the VM's host while the guest runs
	// (raftlog.FeatureHealthChecks).
	Health *HealthCheck `json:"health,omitempty"`
	// Prefer and Avoid are soft placement rules (raftlog.FeatureSoftRules).
	Prefer []SoftRule `json:"prefer,omitempty"`
	Avoid  []SoftRule `json:"avoid,omitempty"`
}

// HealthCheck says how the VM's host tells whether a running guest
// serves: a shell command the QEMU guest agent runs in the guest (healthy
// when it exits 0), or a TCP port on the guest's address as its agent
// reports it (healthy when the host can connect). Exactly one is given.
// A guest is "starting" until a check passes; failures within StartSec of
// its start do not count; Retries failures in a row make it "unhealthy",
// one pass "healthy" again.
type HealthCheck struct {
	Exec        string `json:"exec,omitempty"`
	TCPPort     int    `json:"tcp_port,omitempty"`
	IntervalSec int    `json:"interval_s,omitempty"`
	TimeoutSec  int    `json:"timeout_s,omitempty"`
	Retries     int    `json:"retries,omitempty"`
	StartSec    int    `json:"start_s,omitempty"`
}

// Health states of a running guest with a health check (Actual.Health).
const (
	HealthStarting  = "starting"
	HealthHealthy   = "healthy"
	HealthUnhealthy = "unhealthy"
)

// Limits and defaults of health checks.
const (
	maxHealthExec       = 1024
	maxHealthIntervalS  = 3600
	maxHealthTimeoutS   = 60
	maxHealthRetries    = 100
	maxHealthStartS     = 3600
	MaxHealthDetail     = 256
	defaultHealthEveryS = 10
	defaultHealthTimeS  = 5
	defaultHealthTries  = 3
	defaultHealthStartS = 60
)

// Interval, Timeout, Tries and Start return the check's timings with the
// defaults (10 s, 5 s, 3 failures, 60 s) applied.
func (c HealthCheck) Interval() time.Duration { return secOr(c.IntervalSec, defaultHealthEveryS) }
func (c HealthCheck) Timeout() time.Duration  { return secOr(c.TimeoutSec, defaultHealthTimeS) }
func (c HealthCheck) Start() time.Duration    { return secOr(c.StartSec, defaultHealthStartS) }
func (c HealthCheck) Tries() int {
	if c.Retries > 0 {
		return c.Retries
	}
	return defaultHealthTries
}

// Clip returns s cut to at most n bytes, at a character boundary.
func Clip(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n]
}

func secOr(s, def int) time.Duration {
	if s > 0 {
		return time.Duration(s) * time.Second
	}
	return time.Duration(def) * time.Second
}

// Validate checks a health check of the VM called name.
func (c HealthCheck) Validate(name string) error {
	bad := func(format string, args ...any) error {
		return fmt.Errorf("vm %q: health check: %s: %w", name, fmt.Sprintf(format, args...), ErrInvalid)
	}
	switch {
	case (c.Exec == "") == (c.TCPPort == 0):
		return bad("give either a command (exec) or a TCP port")
	case len(c.Exec) > maxHealthExec || strings.ContainsRune(c.Exec, 0):
		return bad("command longer than %d bytes or with a NUL", maxHealthExec)
	case c.TCPPort < 0 || c.TCPPort > 65535:
		return bad("TCP port %d out of range 1..65535", c.TCPPort)
	case c.IntervalSec < 0 || c.IntervalSec > maxHealthIntervalS:
		return bad("interval %ds out of range 1..%d", c.IntervalSec, maxHealthIntervalS)
	case c.TimeoutSec < 0 || c.TimeoutSec > maxHealthTimeoutS:
		return bad("timeout %ds out of range 1..%d", c.TimeoutSec, maxHealthTimeoutS)
	case c.Retries < 0 || c.Retries > maxHealthRetries:
		return bad("retries %d out of range 1..%d", c.Retries, maxHealthRetries)
	case c.StartSec < 0 || c.StartSec > maxHealthStartS:
		return bad("start period %ds out of range 0..%d", c.StartSec, maxHealthStartS)
	}
	return nil
}

// Limits on a VM: enough for any real host, small enough to reject typos
// like a memory size given in bytes.
const (
	MaxVCPUs       = 512
	MinMemoryMiB   = 16
	MaxMemoryMiB   = 16 << 20 // 16 TiB
	MaxDisks       = 16
	MaxDiskMiB     = 64 << 20 // 64 TiB
	MaxNICs        = 8
	MaxUserData    = 64 << 10
	maxPathLen     = 4096
	maxCmdlineLen  = 4096
	maxHAPriority  = 1000
	maxHAMaxCount  = 100
	maxHAWindowSec = 7 * 24 * 3600
)

// CheckKernelDir checks that a kernel boot's kernel and initrd lie inside
// dir (kernel_dir): a VM must not boot, and so expose to its guest, any
// file of the host it names (/etc/shadow, a block device).
func (k *KernelBoot) CheckKernelDir(dir string) error {
	if k == nil {
		return nil
	}
	root := filepath.Clean(dir)
	for _, p := range []string{k.Kernel, k.Initrd} {
		if p == "" {
			continue
		}
		if c := filepath.Clean(p); c == root || !strings.HasPrefix(c, root+"/") {
			return fmt.Errorf("%q is outside kernel_dir %s; put kernels and initrds there: %w", p, root, ErrInvalid)
		}
	}
	return nil
}

// Validate checks a spec for the VM called name.
func (s VMSpec) Validate(name string) error {
	bad := func(format string, args ...any) error {
		return fmt.Errorf("vm %q: %s: %w", name, fmt.Sprintf(format, args...), ErrInvalid)
	}
	if s.VCPUs < 1 || s.VCPUs > MaxVCPUs {
		return bad("vcpus %d out of range 1..%d", s.VCPUs, MaxVCPUs)
	}
	if s.MemoryMiB < MinMemoryMiB || s.MemoryMiB > MaxMemoryMiB {
		return bad("memory %d MiB out of range %d..%d MiB", s.MemoryMiB, MinMemoryMiB, int64(MaxMemoryMiB))
	}
	if len(s.Disks) > MaxDisks {
		return bad("%d disks, at most %d", len(s.Disks), MaxDisks)
	}
	for i, d := range s.Disks {
		if d.SizeMiB < 0 || d.SizeMiB > MaxDiskMiB {
			return bad("disk %d: size %d MiB out of range 0..%d", i, d.SizeMiB, int64(MaxDiskMiB))
		}
		if d.Image == "" && d.SizeMiB == 0 {
			return bad("disk %d: give an image or a size", i)
		}
		if d.Image != "" {
			if err := ValidateName("image", d.Image); err != nil {
				return fmt.Errorf("vm %q: disk %d: %w", name, i, err)
			}
		}
	}
	if k := s.Kernel; k != nil {
		if !strings.HasPrefix(k.Kernel, "/") || len(k.Kernel) > maxPathLen {
			return bad("kernel %q must be an absolute path", k.Kernel)
		}
		if k.Initrd != "" && (!strings.HasPrefix(k.Initrd, "/") || len(k.Initrd) > maxPathLen) {
			return bad("initrd %q must be an absolute path", k.Initrd)
		}
		if len(k.Cmdline) > maxCmdlineLen || strings.ContainsAny(k.Cmdline, "\n\x00") {
			return bad("kernel command line too long or has a newline")
		}
	}
	if len(s.Disks) == 0 && s.Kernel == nil {
		return bad("nothing to boot: give a disk (image or size) or a kernel")
	}
	if len(s.NICs) > MaxNICs {
		return bad("%d NICs, at most %d", len(s.NICs), MaxNICs)
	}
	for i, n := range s.NICs {
		if err := ValidateName("network", n.Network); err != nil {
			return fmt.Errorf("vm %q: nic %d: %w", name, i, err)
		}
		if n.MAC != "" {
			if hw, err := net.ParseMAC(n.MAC); err != nil || len(hw) != 6 || hw[0]&1 != 0 {
				return bad("nic %d: %q is not a unicast MAC address", i, n.MAC)
			}
		}
	}
	if len(s.UserData) > MaxUserData {
		return bad("user data is %d bytes, at most %d", len(s.UserData), MaxUserData)
	}
	if s.AntiAffinity != "" {
		if err := ValidateName("anti-affinity group", s.AntiAffinity); err != nil {
			return fmt.Errorf("vm %q: %w", name, err)
		}
	}
	if s.Spread != "" {
		if err := ValidateName("spread set", s.Spread); err != nil {
			return fmt.Errorf("vm %q: %w", name, err)
		}
	}
	if err := ValidateLabels(s.Labels); err != nil {
		return fmt.Errorf("vm %q: %w", name, err)
	}
	if err := ValidateLabels(s.Require); err != nil {
		return fmt.Errorf("vm %q: required host labels: %w", name, err)
	}
	ha := s.HA
	if ha.Priority < -maxHAPriority || ha.Priority > maxHAPriority {
		return bad("ha priority %d out of range -%d..%d", ha.Priority, maxHAPriority, maxHAPriority)
	}
	if ha.MaxRestart < 0 || ha.MaxRestart > maxHAMaxCount || ha.MaxRelocate < 0 || ha.MaxRelocate > maxHAMaxCount {
		return bad("ha max_restart and max_relocate must be within 0..%d", maxHAMaxCount)
	}
	if ha.RestartWindowSec < 0 || ha.RestartWindowSec > maxHAWindowSec {
		return bad("ha restart window %ds out of range 0..%d", ha.RestartWindowSec, maxHAWindowSec)
	}
	if err := validateSoftRules("prefer", s.Prefer); err != nil {
		return fmt.Errorf("vm %q: %w", name, err)
	}
	if err := validateSoftRules("avoid", s.Avoid); err != nil {
		return fmt.Errorf("vm %q: %w", name, err)
	}
	if s.Health != nil {
		return s.Health.Validate(name)
	}
	return nil
}

// Clone returns a deep copy of s.
func (s VMSpec) Clone() VMSpec {
	s.Labels = CloneLabels(s.Labels)
	s.Require = CloneLabels(s.Require)
	s.Disks = append([]DiskSpec(nil), s.Disks...)
	s.NICs = append([]NICSpec(nil), s.NICs...)
	if s.Kernel != nil {
		k := *s.Kernel
		s.Kernel = &k
	}
	if s.Health != nil {
		h := *s.Health
		s.Health = &h
	}
	s.Prefer = slices.Clone(s.Prefer)
	s.Avoid = slices.Clone(s.Avoid)
	return s
}

// VMState is a VM's actual state as its host last reported it, or as the
// leader derived it.
type VMState string

const (
	StatePending   VMState = "pending"  // not placed, or its host has not reported yet
	StateStarting  VMState = "starting" // being defined and started
	StateRunning   VMState = "running"
	StateStopping  VMState = "stopping"
	StateStopped   VMState = "stopped"
	StateCrashed   VMState = "crashed" // died unexpectedly; restart pending
	StateFailed    VMState = "failed"  // corral gave up; see Failed
	StateError     VMState = "error"   // the host could not act; see Message
	StateDeleting  VMState = "deleting"
	StateMigrating VMState = "migrating"
	StateDeleted   VMState = "deleted" // host removed domain and disks
)

// Actual is the last report about a VM from the host it is placed on.
type Actual struct {
	State      VMState `json:"state"`
	Host       string  `json:"host,omitempty"`
	Generation uint64  `json:"generation,omitempty"`
	// Since is when the guest was started (running) or when State began.
	Since   time.Time `json:"since,omitzero"`
	Message string    `json:"message,omitempty"`
	// Restarts counts local restarts after crashes in the current window.
	Restarts int `json:"restarts,omitempty"`
	// RestartTimes are those restarts' times (UTC, oldest first, at most
	// the VM's max_restart): a restarted corrald on Host counts on from
	// them while Generation is still the VM's.
	RestartTimes []time.Time `json:"restart_times,omitempty"`
	// SpecVersion is the spec version the running domain was defined with.
	SpecVersion uint64    `json:"spec_version,omitempty"`
	UpdatedAt   time.Time `json:"updated_at,omitzero"`
	// Health is the running guest's health (HealthStarting, ...) when its
	// spec has a health check; HealthDetail says why it is not healthy.
	Health       string `json:"health,omitempty"`
	HealthDetail string `json:"health_detail,omitempty"`
}

// VM is a guest as recorded in cluster state: what the operator asked for,
// where the leader placed it, and what its host last reported.
type VM struct {
	ID      string     `json:"id"`
	Name    string     `json:"name"`
	Spec    VMSpec     `json:"spec"`
	Host    string     `json:"host"` // assigned host; empty while unplaced
	Desired PowerState `json:"desired"`
	// Generation counts placements. It is bumped every time Host changes,
	// and a host acts on (and reports about) one generation only, so stale
	// reports from a former host are ignored.
	Generation uint64 `json:"generation"`
	// SpecVersion is bumped by every change of Spec (resize).
	SpecVersion uint64 `json:"spec_version"`
	// RestartSeq is bumped by "vm restart"; the host restarts the guest
	// when it sees a value it has not acted on.
	RestartSeq uint64 `json:"restart_seq,omitempty"`
	// Deleting: the operator removed the VM; its host destroys the domain
	// and its disks, then the leader forgets it.
	Deleting bool `json:"deleting,omitempty"`
	// Failed is why corral gave up on the VM (crash loop beyond its HA
	// limits); a start clears it.
	Failed      string    `json:"failed,omitempty"`
	Relocations int       `json:"relocations,omitempty"`
	CreatedAt   time.Time `json:"created_at"`
	Actual      Actual    `json:"actual"`
	// Migration is a live migration the leader asked for; the VM's host
	// drives it and the placement changes when it succeeds.
	Migration *Migration `json:"migration,omitempty"`
	// Home is the host a drain moved the VM away from (for failback).
	Home string `json:"home,omitempty"`
	// Project holds the VM; empty: DefaultProject (raftlog.FeatureProjects).
	Project string `json:"project,omitempty"`
	// Group is the group the VM is a member of (raftlog.FeatureGroups),
	// GroupVersion the version of the group's template it was made from.
	Group        string `json:"group,omitempty"`
	GroupVersion uint64 `json:"group_version,omitempty"`
	// Chain is the layers of the VM's disks and its snapshots
	// (raftlog.FeatureSnapshots).
	Chain Chain `json:"chain,omitzero"`
	// SnapshotPolicy takes snapshots on a schedule.
	SnapshotPolicy *SnapshotPolicy `json:"snapshot_policy,omitempty"`
	// Backup is the backup of the VM under way (raftlog.FeatureBackups).
	Backup *BackupJob `json:"backup,omitempty"`
	// BackupPolicy backs the VM up on a schedule.
	BackupPolicy *BackupPolicy `json:"backup_policy,omitempty"`
	// Restore says where the VM's disks come from when they do not exist
	// yet: a VM restored from a backup (raftlog.FeatureBackups); cleared
	// once the guest has run.
	Restore *RestoreSource `json:"restore,omitempty"`
	// Adopted: in a recovered cluster (Cluster.Recovery), a host has
	// reported the guest running; a second report is a second copy.
	// Cleared when the recovery ends.
	Adopted bool `json:"adopted,omitempty"`
}

// RestoreSource is the backup a new VM's disks are restored from.
type RestoreSource struct {
	Backup string `json:"backup"`
	Target string `json:"target"`
}

// Migration is a requested live migration.
type Migration struct {
	Target    string    `json:"target"`
	Reason    string    `json:"reason"` // drain, failback, balance, operator
	StartedAt time.Time `json:"started_at"`
}

// Clone returns a deep copy of v.
func (v VM) Clone() VM {
	v.Spec = v.Spec.Clone()
	v.Actual.RestartTimes = slices.Clone(v.Actual.RestartTimes)
	v.Chain = v.Chain.Clone()
	if v.SnapshotPolicy != nil {
		p := *v.SnapshotPolicy
		v.SnapshotPolicy = &p
	}
	if v.Backup != nil {
		j := *v.Backup
		v.Backup = &j
	}
	if v.BackupPolicy != nil {
		p := *v.BackupPolicy
		v.BackupPolicy = &p
	}
	if v.Restore != nil {
		r := *v.Restore
		v.Restore = &r
	}
	if v.Migration != nil {
		m := *v.Migration
		v.Migration = &m
	}
	return v
}

// DiskVolume names the storage volume of disk i of the VM: unique per VM
// incarnation (the ID), recognisable by name.
func (v VM) DiskVolume(i int) string {
	return fmt.Sprintf("vm-%s-%s-disk%d.qcow2", v.Name, shortID(v.ID), i)
}

// SeedVolume names the cloud-init NoCloud seed volume of the VM.
func (v VM) SeedVolume() string {
	return fmt.Sprintf("vm-%s-%s-seed.iso", v.Name, shortID(v.ID))
}

func shortID(id string) string {
	if len(id) > 8 {
		return id[:8]
	}
	return id
}

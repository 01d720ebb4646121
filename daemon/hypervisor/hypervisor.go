// Package hypervisor holds the vocabulary shared by the code that runs
// guests (daemon/controller's host loop) and its drivers: the libvirt driver
// in hypervisor/libvirt and the fake in hypervisor/fake. The Driver
// interface itself is declared by its consumer, the controller.
package hypervisor

import (
	"errors"
	"fmt"
	"time"

	"github.com/corralhq/corral/model"
)

// Errors of drivers.
var (
	// ErrNoDomain: no domain of that name.
	ErrNoDomain = fmt.Errorf("no such domain: %w", model.ErrNotFound)
	// ErrDisconnected: the hypervisor is not reachable right now (libvirtd
	// restarting); the caller retries later. It is not a host failure.
	ErrDisconnected = fmt.Errorf("hypervisor disconnected: %w", model.ErrUnavailable)
	// ErrNotManaged: a domain of that name exists but corral does not
	// manage it.
	ErrNotManaged = errors.New("domain exists and is not managed by corral")
	// ErrNoAgent: the guest's agent does not answer (not installed, not
	// started yet, or hung).
	ErrNoAgent = errors.New("guest agent not connected")
	// ErrNotRunning: the domain exists but runs no guest (a console of a
	// stopped VM).
	ErrNotRunning = fmt.Errorf("guest not running: %w", model.ErrConflict)
	// ErrConsoleOverrun: a console's reader fell too far behind the guest's
	// output, and the session was dropped.
	ErrConsoleOverrun = errors.New("console reader too slow; session dropped")
	// ErrDiskLocked: a running guest's disk layer cannot be written by a
	// block commit because libvirt's lock manager still holds a lease on
	// it from an earlier commit into it (libvirt 9.0 takes one and never
	// lets it go while the guest's QEMU lives).
	ErrDiskLocked = errors.New("disk layer locked by an earlier block commit until the guest's QEMU restarts")
	// ErrNoVolume: no file of that name in the pool.
	ErrNoVolume = fmt.Errorf("no such volume: %w", model.ErrNotFound)
)

// MaxExecOutput bounds what a command run by the guest agent may return.
const MaxExecOutput = 4 << 10

// ExecResult is how a command the guest agent ran ended.
type ExecResult struct {
	ExitCode int
	Signal   int // the signal that ended it; 0 if it exited
	// Output is its standard output and error, at most MaxExecOutput bytes.
	Output string
}

// Disk is a disk attached to a domain.
type Disk struct {
	Path     string `json:"path"`
	Format   string `json:"format"` // qcow2 or raw
	ReadOnly bool   `json:"read_only,omitempty"`
}

// NIC is a network interface on a host bridge.
type NIC struct {
	Bridge string `json:"bridge"`
	MAC    string `json:"mac"`
}

// DomainSpec is everything a driver needs to define a VM's domain.
type DomainSpec struct {
	VMID        string
	Name        string
	Generation  uint64
	SpecVersion uint64
	VCPUs       int
	MemoryMiB   int64
	Disks       []Disk
	Kernel      *model.KernelBoot
	NICs        []NIC
}

// State is a domain's state.
type State string

const (
	Running  State = "running"
	Paused   State = "paused"
	Shutdown State = "shutdown" // shutting down
	Shutoff  State = "shutoff"
	Crashed  State = "crashed"
	Other    State = "other"
)

// Active reports whether the domain has a running QEMU.
func (s State) Active() bool { return s == Running || s == Paused || s == Shutdown }

// Domain is a corral-managed domain as the hypervisor reports it.
type Domain struct {
	Name        string
	VMID        string
	Generation  uint64
	SpecVersion uint64
	State       State
	// Reason is the hypervisor's reason for State (e.g. "crashed",
	// "shutdown", "destroyed", "migrated", "booted").
	Reason string
	// StartedAt and RestartSeq are recorded when corral starts the guest
	// and travel with it (live migration); zero when unknown.
	StartedAt  time.Time
	RestartSeq uint64
	// Layer is the disk layer the guest runs on (model.Chain), recorded
	// when corral starts it or moves its disks; 0 when unknown.
	Layer uint64
}

// RunInfo is recorded with a guest when it starts.
type RunInfo struct {
	StartedAt  time.Time
	RestartSeq uint64
	Layer      uint64
}

// SnapshotOptions say how a running guest's snapshot is taken.
type SnapshotOptions struct {
	// Quiesce: the guest agent freezes the guest's file systems around it.
	Quiesce bool
	// Memory, a file's path, saves the guest's RAM and device state there
	// too: the guest is paused from before its RAM is written until its
	// disks have moved, so RAM and disks are of one instant (nothing to
	// freeze: not with Quiesce).
	Memory string
}

// EventKind classifies lifecycle events.
type EventKind string

const (
	EventStarted   EventKind = "started"
	EventStopped   EventKind = "stopped"
	EventCrashed   EventKind = "crashed"
	EventShutdown  EventKind = "shutdown"
	EventSuspended EventKind = "suspended"
	EventResumed   EventKind = "resumed"
	EventDefined   EventKind = "defined"
	EventUndefined EventKind = "undefined"
	// EventConnected: the driver (re)connected to the hypervisor; the
	// consumer should resynchronise.
	EventConnected EventKind = "connected"
)

// Event is a lifecycle event of a domain.
type Event struct {
	Name   string
	Kind   EventKind
	Detail string
}

// Volume is a storage volume to create if missing.
type Volume struct {
	Name    string
	SizeMiB int64 // blank size, or virtual size of an overlay (0: the base's)
	// Backing names a base volume in the pool; the volume is then a qcow2
	// overlay on it.
	Backing       string
	BackingFormat string
}

// Stats are per-domain counters.
type Stats struct {
	State        State       `json:"state"`
	CPUTime      uint64      `json:"cpu_time_ns"`
	VCPUs        int         `json:"vcpus"`
	MemoryKiB    uint64      `json:"memory_kib"`
	MaxMemoryKiB uint64      `json:"max_memory_kib"`
	Disks        []DiskStats `json:"disks"`
	NICs         []NICStats  `json:"nics"`
}

// DiskStats are block device counters.
type DiskStats struct {
	Name       string `json:"name"`
	ReadBytes  int64  `json:"read_bytes"`
	WriteBytes int64  `json:"write_bytes"`
	ReadReqs   int64  `json:"read_reqs"`
	WriteReqs  int64  `json:"write_reqs"`
}

// NICStats are interface counters.
type NICStats struct {
	Name      string `json:"name"`
	RxBytes   int64  `json:"rx_bytes"`
	TxBytes   int64  `json:"tx_bytes"`
	RxPackets int64  `json:"rx_packets"`
	TxPackets int64  `json:"tx_packets"`
	RxErrs    int64  `json:"rx_errs"`
	TxErrs    int64  `json:"tx_errs"`
	RxDrop    int64  `json:"rx_drop"`
	TxDrop    int64  `json:"tx_drop"`
}

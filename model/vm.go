package model

import (
	"fmt"
	"time"
)

// PowerState is the power state an operator wants for a VM.
type PowerState string

const (
	PowerRunning PowerState = "running"
	PowerStopped PowerState = "stopped"
)

// Valid reports whether p is a known desired power state.
func (p PowerState) Valid() bool { return p == PowerRunning || p == PowerStopped }

// VMSpec is what an operator asks for when creating a VM.
type VMSpec struct {
	VCPUs     int               `json:"vcpus"`
	MemoryMiB int64             `json:"memory_mib"`
	Labels    map[string]string `json:"labels,omitempty"`
	// AntiAffinity names a group; two VMs of one group never share a host.
	AntiAffinity string `json:"anti_affinity,omitempty"`
}

// Limits on a VM's size: enough for any real host, small enough to reject
// typos like a memory size given in bytes.
const (
	MaxVCPUs     = 512
	MaxMemoryMiB = 16 << 20 // 16 TiB
)

// Validate checks a spec for the VM called name.
func (s VMSpec) Validate(name string) error {
	if s.VCPUs < 1 || s.VCPUs > MaxVCPUs {
		return fmt.Errorf("vm %q: vcpus %d out of range 1..%d: %w", name, s.VCPUs, MaxVCPUs, ErrInvalid)
	}
	if s.MemoryMiB < 16 || s.MemoryMiB > MaxMemoryMiB {
		return fmt.Errorf("vm %q: memory %d MiB out of range 16..%d MiB: %w", name, s.MemoryMiB, int64(MaxMemoryMiB), ErrInvalid)
	}
	if s.AntiAffinity != "" {
		if err := ValidateName("anti-affinity group", s.AntiAffinity); err != nil {
			return fmt.Errorf("vm %q: %w", name, err)
		}
	}
	if err := ValidateLabels(s.Labels); err != nil {
		return fmt.Errorf("vm %q: %w", name, err)
	}
	return nil
}

// Clone returns a deep copy of s.
func (s VMSpec) Clone() VMSpec {
	s.Labels = CloneLabels(s.Labels)
	return s
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
	Generation uint64    `json:"generation"`
	CreatedAt  time.Time `json:"created_at"`
}

// Clone returns a deep copy of v.
func (v VM) Clone() VM {
	v.Spec = v.Spec.Clone()
	return v
}

// Package placement chooses a host for a VM. It is pure: the caller passes
// the hosts (with whatever liveness it knows), the VMs already placed and
// the options; nothing here reads a clock, the network or the disk.
//
// An Index is built once from the state and then answers Place calls,
// recording each decision so that a batch (recovery of a failed host's VMs)
// sees its own earlier choices.
package placement

import (
	"fmt"
	"sort"
	"strings"

	"github.com/corralhq/corral/model"
)

// Strategy picks among hosts that fit.
type Strategy string

const (
	// Spread puts a VM on the host with the lowest memory use after placing
	// it (the default): failures hit fewer VMs.
	Spread Strategy = "spread"
	// Pack fills hosts one by one: fewer hosts busy.
	Pack Strategy = "pack"
)

// Options tune placement.
type Options struct {
	Strategy Strategy
	// CPUOvercommit and MemoryOvercommit multiply a host's allocatable
	// vCPUs and memory (1.0 = no overcommit).
	CPUOvercommit    float64
	MemoryOvercommit float64
	// Reserved vCPUs and memory per host are kept for the host itself.
	ReservedVCPUs     int
	ReservedMemoryMiB int64
}

// DefaultOptions: spread, 4× CPU overcommit, no memory overcommit, 1 GiB of
// memory kept for the host.
func DefaultOptions() Options {
	return Options{Strategy: Spread, CPUOvercommit: 4, MemoryOvercommit: 1, ReservedMemoryMiB: 1024}
}

// Candidate is a host with what the caller knows about its liveness.
type Candidate struct {
	Host model.Host
	// Unavailable, when set, says why the host takes no new VMs (down,
	// fenced, unhealthy...), as the caller determined it.
	Unavailable string
}

// Request is one VM to place.
type Request struct {
	Name string
	Spec model.VMSpec
	// Host pins the VM to one host.
	Host string
	// Exclude lists hosts not to use (e.g. the host a VM is leaving).
	Exclude map[string]bool
}

// HostReason says why one host was rejected.
type HostReason struct {
	Host   string `json:"host"`
	Reason string `json:"reason"`
}

// NoFitError is returned when no host can take the VM; it lists why for
// each host and matches model.ErrNoCapacity.
type NoFitError struct {
	VM      string
	Reasons []HostReason
}

func (e *NoFitError) Error() string {
	if len(e.Reasons) == 0 {
		return fmt.Sprintf("no host for vm %q: the cluster has no hosts", e.VM)
	}
	parts := make([]string, len(e.Reasons))
	for i, r := range e.Reasons {
		parts[i] = r.Host + ": " + r.Reason
	}
	return fmt.Sprintf("no host for vm %q: %s", e.VM, strings.Join(parts, "; "))
}

// Unwrap makes errors.Is(err, model.ErrNoCapacity) true.
func (e *NoFitError) Unwrap() error { return model.ErrNoCapacity }

// ErrorDetails gives the per-host reasons to the admin API.
func (e *NoFitError) ErrorDetails() any { return e.Reasons }

type usage struct {
	cand   Candidate
	vcpus  int
	memory int64
	vms    int
	groups map[string]string // anti-affinity group -> a VM of it on the host
	spread map[string]int    // spread set -> its VMs on the host
}

// Index answers placement requests against one view of the state.
type Index struct {
	opts  Options
	hosts []*usage // sorted by name
	by    map[string]*usage
}

// NewIndex builds an index from the candidates and the VMs in state. Every
// VM assigned to a host counts against it, running or not (it may start at
// any time), except VMs being deleted.
func NewIndex(cands []Candidate, vms []model.VM, opts Options) *Index {
	if opts.Strategy == "" {
		opts.Strategy = Spread
	}
	if opts.CPUOvercommit <= 0 {
		opts.CPUOvercommit = 1
	}
	if opts.MemoryOvercommit <= 0 {
		opts.MemoryOvercommit = 1
	}
	x := &Index{opts: opts, by: make(map[string]*usage, len(cands))}
	for _, c := range cands {
		u := &usage{cand: c, groups: map[string]string{}, spread: map[string]int{}}
		x.hosts = append(x.hosts, u)
		x.by[c.Host.Name] = u
	}
	sort.Slice(x.hosts, func(i, j int) bool { return x.hosts[i].cand.Host.Name < x.hosts[j].cand.Host.Name })
	for _, v := range vms {
		if v.Host == "" || v.Deleting {
			continue
		}
		if u, ok := x.by[v.Host]; ok {
			u.add(v.Name, v.Spec)
		}
	}
	return x
}

func (u *usage) add(name string, s model.VMSpec) {
	u.vcpus += s.VCPUs
	u.memory += s.MemoryMiB
	u.vms++
	if s.AntiAffinity != "" {
		if _, ok := u.groups[s.AntiAffinity]; !ok {
			u.groups[s.AntiAffinity] = name
		}
	}
	if s.Spread != "" {
		u.spread[s.Spread]++
	}
}

func (x *Index) capacity(h model.Host) (vcpus int, memory int64) {
	vcpus = int(float64(h.Capacity.VCPUs-x.opts.ReservedVCPUs) * x.opts.CPUOvercommit)
	memory = int64(float64(h.Capacity.MemoryMiB-x.opts.ReservedMemoryMiB) * x.opts.MemoryOvercommit)
	return max(vcpus, 0), max(memory, 0)
}

// reject returns why u cannot take the request, or "" when it fits. With
// explain false it returns a fixed non-empty string instead of a reason, so
// the hot path formats nothing.
func (x *Index) reject(u *usage, r Request, require []string, explain bool) string {
	const no = "no"
	h := u.cand.Host
	switch {
	case r.Exclude[h.Name]:
		return "excluded"
	case u.cand.Unavailable != "":
		return u.cand.Unavailable
	case h.Mode != model.ModeActive:
		return "mode " + string(h.Mode)
	}
	for _, k := range require {
		if v, ok := h.Labels[k]; !ok || v != r.Spec.Require[k] {
			if !explain {
				return no
			}
			return fmt.Sprintf("needs label %s=%s", k, r.Spec.Require[k])
		}
	}
	if g := r.Spec.AntiAffinity; g != "" {
		if other, ok := u.groups[g]; ok {
			if !explain {
				return no
			}
			return fmt.Sprintf("anti-affinity group %s already has vm %s here", g, other)
		}
	}
	capCPU, capMem := x.capacity(h)
	if free := capCPU - u.vcpus; r.Spec.VCPUs > free {
		if !explain {
			return no
		}
		return fmt.Sprintf("not enough vCPUs: %d free of %d, need %d", max(free, 0), capCPU, r.Spec.VCPUs)
	}
	if free := capMem - u.memory; r.Spec.MemoryMiB > free {
		if !explain {
			return no
		}
		return fmt.Sprintf("not enough memory: %d MiB free of %d, need %d", max(free, 0), capMem, r.Spec.MemoryMiB)
	}
	return ""
}

// Place chooses a host for r, records the VM there, and returns the host's
// name. It returns an error matching model.ErrNotFound for a pinned host
// that does not exist, and a *NoFitError when nothing fits.
func (x *Index) Place(r Request) (string, error) {
	candidates := x.hosts
	if r.Host != "" {
		u, ok := x.by[r.Host]
		if !ok {
			return "", fmt.Errorf("host %q: %w", r.Host, model.ErrNotFound)
		}
		candidates = []*usage{u}
	}
	require := model.SortedKeys(r.Spec.Require)
	var (
		best       *usage
		bestScore  float64
		bestSpread int
	)
	for _, u := range candidates {
		if x.reject(u, r, require, false) != "" {
			continue
		}
		_, capMem := x.capacity(u.cand.Host)
		score := float64(u.memory+r.Spec.MemoryMiB) / float64(max(capMem, 1))
		if x.opts.Strategy == Pack {
			score = -score
		}
		// A spread set comes first: the fewest of its VMs, then the
		// strategy's score.
		spread := 0
		if r.Spec.Spread != "" {
			spread = u.spread[r.Spec.Spread]
		}
		if best == nil || spread < bestSpread || spread == bestSpread && score < bestScore {
			best, bestScore, bestSpread = u, score, spread
		}
	}
	if best == nil {
		// Nothing fits: go round again, this time saying why.
		nf := &NoFitError{VM: r.Name}
		for _, u := range candidates {
			nf.Reasons = append(nf.Reasons, HostReason{Host: u.cand.Host.Name, Reason: x.reject(u, r, require, true)})
		}
		return "", nf
	}
	best.add(r.Name, r.Spec)
	return best.cand.Host.Name, nil
}

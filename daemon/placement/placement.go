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
	// KeepOn: the balancer's consolidation must not empty this host (a
	// Raft voter, when emptied hosts are powered off).
	KeepOn bool
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
	labels map[string]int    // "key=value" -> VMs carrying it on the host
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
		u := &usage{cand: c, groups: map[string]string{}, spread: map[string]int{}, labels: map[string]int{}}
		x.hosts = append(x.hosts, u)
		x.by[c.Host.Name] = u
	}
	sort.Slice(x.hosts, func(i, j int) bool { return x.hosts[i].cand.Host.Name < x.hosts[j].cand.Host.Name })
	for i := range vms {
		x.Count(&vms[i])
	}
	return x
}

// Count counts v against its host, as NewIndex does each VM it is given:
// a VM assigned to a candidate host, unless it is being deleted. It lets
// an index be built over the state's VMs without copying them
// (controller's Store.EachVM); v is read, not kept.
func (x *Index) Count(v *model.VM) {
	if v.Host == "" || v.Deleting {
		return
	}
	if u, ok := x.by[v.Host]; ok {
		u.add(v.Name, v.Spec)
	}
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
	for k, v := range s.Labels {
		u.labels[k+"="+v]++
	}
}

// softRules are a VM's soft rules, ready to weigh hosts: the "vm"
// rules' label keys are made once per placement, not once per host.
type softRules struct {
	spec  model.VMSpec
	rules []model.SoftRule
	sign  []int    // +1 prefer, -1 avoid
	keys  []string // "key=value"
}

func newSoftRules(spec model.VMSpec) *softRules {
	if len(spec.Prefer) == 0 && len(spec.Avoid) == 0 {
		return nil
	}
	s := &softRules{spec: spec}
	for i, set := range [][]model.SoftRule{spec.Prefer, spec.Avoid} {
		for _, r := range set {
			s.rules = append(s.rules, r)
			s.sign = append(s.sign, 1-2*i)
			s.keys = append(s.keys, r.Key+"="+r.Value)
		}
	}
	return s
}

// score is the sum of the weights of the rules u meets: Prefer rules
// count up, Avoid rules down.
func (s *softRules) score(u *usage) int {
	sum := 0
	for i, r := range s.rules {
		if u.meets(r, s.keys[i], s.spec, false) {
			sum += s.sign[i] * r.Weight
		}
	}
	return sum
}

// meets says whether u meets r (whose label is key). self says whether the
// VM is already counted on u (an explanation of where it runs), so that a
// "vm" rule does not meet the VM itself.
func (u *usage) meets(r model.SoftRule, key string, spec model.VMSpec, self bool) bool {
	if r.Kind == model.SoftHost {
		v, ok := u.cand.Host.Labels[r.Key]
		return ok && v == r.Value
	}
	return u.others(r, key, spec, self) > 0
}

// others counts the VMs on u, other than the VM itself, that carry the
// label of a "vm" rule.
func (u *usage) others(r model.SoftRule, key string, spec model.VMSpec, self bool) int {
	n := u.labels[key]
	if self && spec.Labels[r.Key] == r.Value {
		if _, ok := spec.Labels[r.Key]; ok {
			n--
		}
	}
	return n
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
		bestSoft   int
	)
	soft := newSoftRules(r.Spec)
	for _, u := range candidates {
		if x.reject(u, r, require, false) != "" {
			continue
		}
		_, capMem := x.capacity(u.cand.Host)
		score := float64(u.memory+r.Spec.MemoryMiB) / float64(max(capMem, 1))
		if x.opts.Strategy == Pack {
			score = -score
		}
		// Soft rules come first (the highest sum of weights), then a
		// spread set (the fewest of its VMs), then the strategy's score.
		weight := 0
		if soft != nil {
			weight = soft.score(u)
		}
		spread := 0
		if r.Spec.Spread != "" {
			spread = u.spread[r.Spec.Spread]
		}
		better := best == nil || weight > bestSoft ||
			weight == bestSoft && (spread < bestSpread || spread == bestSpread && score < bestScore)
		if better {
			best, bestScore, bestSpread, bestSoft = u, score, spread, weight
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

// RuleCheck says whether a VM's host meets one of its placement rules.
type RuleCheck struct {
	Rule   string `json:"rule"` // "require rack=r1", "prefer host:ssd=yes:50", ...
	Met    bool   `json:"met"`
	Detail string `json:"detail,omitempty"`
}

// Explain says which of a placed VM's rules its host meets: required
// labels, its anti-affinity group and spread set, and its soft rules with
// their weights. The index must count the VM on host (built from state).
func (x *Index) Explain(spec model.VMSpec, host string) []RuleCheck {
	u, ok := x.by[host]
	if !ok {
		return nil
	}
	var out []RuleCheck
	for _, k := range model.SortedKeys(spec.Require) {
		v, has := u.cand.Host.Labels[k]
		out = append(out, RuleCheck{Rule: "require " + k + "=" + spec.Require[k], Met: has && v == spec.Require[k]})
	}
	if g := spec.AntiAffinity; g != "" {
		// Hard: placement kept the group apart, so the VM is its only one here.
		out = append(out, RuleCheck{Rule: "anti-affinity " + g, Met: true, Detail: "no other VM of the group here"})
	}
	if s := spec.Spread; s != "" {
		n := u.spread[s] - 1
		out = append(out, RuleCheck{Rule: "spread " + s, Met: n == 0, Detail: fmt.Sprintf("%d other VMs of the set here", max(n, 0))})
	}
	for _, set := range []struct {
		verb  string
		rules []model.SoftRule
	}{{"prefer", spec.Prefer}, {"avoid", spec.Avoid}} {
		for _, r := range set.rules {
			key := r.Key + "=" + r.Value
			met := u.meets(r, key, spec, true)
			c := RuleCheck{Rule: set.verb + " " + r.String(), Met: met == (set.verb == "prefer")}
			switch {
			case r.Kind == model.SoftHost && met:
				c.Detail = "the host has " + r.Key + "=" + r.Value
			case r.Kind == model.SoftHost:
				c.Detail = "the host lacks " + r.Key + "=" + r.Value
			default:
				c.Detail = fmt.Sprintf("%d other VMs with %s here", u.others(r, key, spec, true), key)
			}
			out = append(out, c)
		}
	}
	return out
}

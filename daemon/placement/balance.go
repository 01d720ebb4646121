package placement

import (
	"fmt"
	"math"
	"sort"

	"github.com/corralhq/corral/model"
)

// The balancer plans live migrations toward a goal over the same index
// placement uses, so that every move passes every hard rule and keeps or
// improves the VM's soft rules. It is pure: the leader gives it the state
// and says which VMs may move now (budgets, states); it returns moves and
// why, and the leader runs them as live migrations.

// Goal is what the balancer works toward.
type Goal string

const (
	// Off: no balancing.
	Off Goal = "off"
	// Balance evens memory use across hosts.
	Balance Goal = "spread"
	// Consolidate empties the least used hosts onto the others, keeping
	// N+1: the hosts left can still take the HA VMs of any one of them.
	Consolidate Goal = "consolidate"
)

// ParseGoal reads a goal's name.
func ParseGoal(s string) (Goal, error) {
	switch g := Goal(s); g {
	case Off, Balance, Consolidate:
		return g, nil
	}
	return "", fmt.Errorf("balance goal %q: want off, spread or consolidate: %w", s, model.ErrInvalid)
}

// BalanceOptions tune a plan.
type BalanceOptions struct {
	Goal Goal
	// MinGain is the gap between the most and the least used host's
	// memory share (0.10: 10 points) from which spread moves VMs, and
	// below which it stops: the hysteresis that keeps a balanced cluster
	// still. Each move must also bring its two hosts closer.
	MinGain float64
	// MaxMoves bounds a plan.
	MaxMoves int
	// Movable says why a VM may not move now ("" if it may): not running,
	// migrating, over its budget of moves.
	Movable func(v model.VM) string
}

// Move is one planned live migration (or, for a stopped VM, a cold move
// of its placement).
type Move struct {
	VM   string `json:"vm"`
	From string `json:"from"`
	To   string `json:"to"`
	Cold bool   `json:"cold,omitempty"`
	Why  string `json:"why"`
}

// BalancePlan is what a round would do, and why nothing more.
type BalancePlan struct {
	Goal  Goal     `json:"goal"`
	Moves []Move   `json:"moves"`
	Freed []string `json:"freed,omitempty"` // consolidate: hosts left empty
	Notes []string `json:"notes,omitempty"`
}

// PlanBalance plans moves toward o.Goal among cands (hosts that are
// unavailable or not active take nothing and are left alone) for vms.
func PlanBalance(cands []Candidate, vms []model.VM, popts Options, o BalanceOptions) BalancePlan {
	p := BalancePlan{Goal: o.Goal, Moves: []Move{}}
	if o.MaxMoves <= 0 {
		o.MaxMoves = 10
	}
	if o.Movable == nil {
		o.Movable = func(model.VM) string { return "" }
	}
	switch o.Goal {
	case Balance:
		planSpread(cands, vms, popts, o, &p)
	case Consolidate:
		popts.Strategy = Pack
		planConsolidate(cands, vms, popts, o, &p)
	default:
		p.Notes = append(p.Notes, "balancing is off")
	}
	return p
}

// remove takes a VM off the host it is counted on (the index's copy).
func (x *Index) remove(name string, s model.VMSpec, host string) {
	if u, ok := x.by[host]; ok {
		u.sub(name, s)
	}
}

func (u *usage) sub(name string, s model.VMSpec) {
	u.vcpus -= s.VCPUs
	u.memory -= s.MemoryMiB
	u.vms--
	if g := s.AntiAffinity; g != "" && u.groups[g] == name {
		delete(u.groups, g)
	}
	if s.Spread != "" {
		u.spread[s.Spread]--
	}
	for k, v := range s.Labels {
		u.labels[k+"="+v]--
	}
}

// share is a host's memory use as a share of what it may hold.
func (x *Index) share(u *usage) float64 {
	_, capMem := x.capacity(u.cand.Host)
	return float64(u.memory) / float64(max(capMem, 1))
}

func (u *usage) usable() bool {
	return u.cand.Unavailable == "" && u.cand.Host.Mode == model.ModeActive
}

// softAt is a VM's soft score on u, counting it there or not.
func softAt(u *usage, s model.VMSpec, counted bool) int {
	rules := newSoftRules(s)
	if rules == nil {
		return 0
	}
	sum := 0
	for i, r := range rules.rules {
		if u.meets(r, rules.keys[i], s, counted) {
			sum += rules.sign[i] * r.Weight
		}
	}
	return sum
}

// tryMove moves v to host to in x if every hard rule allows it and its
// soft score does not drop; it returns why not otherwise.
func (x *Index) tryMove(v model.VM, to string) string {
	return x.tryMoveTo(v, x.by[v.Host], x.by[to])
}

func (x *Index) tryMoveTo(v model.VM, from, dst *usage) string {
	capCPU, capMem := x.capacity(dst.cand.Host)
	if dst.memory+v.Spec.MemoryMiB > capMem || dst.vcpus+v.Spec.VCPUs > capCPU {
		return "not enough room" // the common case when packing: no formatting
	}
	before := softAt(from, v.Spec, true)
	from.sub(v.Name, v.Spec)
	r := Request{Name: v.Name, Spec: v.Spec}
	var require []string
	if len(v.Spec.Require) > 0 {
		require = model.SortedKeys(v.Spec.Require)
	}
	if why := x.reject(dst, r, require, true); why != "" {
		from.add(v.Name, v.Spec)
		return why
	}
	if softAt(dst, v.Spec, false) < before {
		from.add(v.Name, v.Spec)
		return "its soft rules prefer where it is"
	}
	dst.add(v.Name, v.Spec)
	return ""
}

func planSpread(cands []Candidate, vms []model.VM, popts Options, o BalanceOptions, p *BalancePlan) {
	x := NewIndex(cands, vms, popts)
	var hosts []*usage
	for _, u := range x.hosts {
		if u.usable() {
			hosts = append(hosts, u)
		}
	}
	if len(hosts) < 2 {
		p.Notes = append(p.Notes, "fewer than two hosts take VMs")
		return
	}
	where := map[string]model.VM{}
	for _, v := range vms {
		if v.Host != "" && !v.Deleting {
			where[v.Name] = v
		}
	}
	gap := func() (hi, lo *usage, g float64) {
		for _, u := range hosts {
			if hi == nil || x.share(u) > x.share(hi) {
				hi = u
			}
			if lo == nil || x.share(u) < x.share(lo) {
				lo = u
			}
		}
		return hi, lo, x.share(hi) - x.share(lo)
	}
	for len(p.Moves) < o.MaxMoves {
		hi, lo, g := gap()
		if g < o.MinGain {
			p.Notes = append(p.Notes, fmt.Sprintf("balanced: memory use differs by %.0f points at most (the balancer starts at %.0f)", 100*g, 100*o.MinGain))
			return
		}
		// The VM on the most used host whose move to the least used one
		// brings the two closest. Each move must bring them closer by a
		// point or more. Moving m MiB between hosts of capacities Ch and
		// Cl changes sum(memory^2 / capacity) over the hosts by
		// m(a + b - 2d), a = m/Ch and b = m/Cl their share changes and d
		// the gap between them; the gap after is |d - a - b|, under d
		// exactly when a + b < 2d. So that sum falls with every move,
		// whatever the hosts' sizes, and no plan can undo another.
		var best model.VM
		pair, why := g, ""
		for _, v := range sortedOn(where, hi.cand.Host.Name) {
			if w := o.Movable(v); w != "" {
				why = v.Name + ": " + w
				continue
			}
			if w := x.tryMove(v, lo.cand.Host.Name); w != "" {
				why = v.Name + " cannot go to " + lo.cand.Host.Name + ": " + w
				continue
			}
			if d := math.Abs(x.share(hi) - x.share(lo)); d < pair-0.01 {
				best, pair = v, d
			}
			x.remove(v.Name, v.Spec, lo.cand.Host.Name) // undo: only trying
			hi.add(v.Name, v.Spec)
		}
		if best.Name == "" {
			note := fmt.Sprintf("no move from %s (%.0f%% used) to %s (%.0f%%) brings them closer", hi.cand.Host.Name, 100*x.share(hi), lo.cand.Host.Name, 100*x.share(lo))
			if why != "" {
				note += "; last: " + why
			}
			p.Notes = append(p.Notes, note)
			return
		}
		hiBefore, loBefore := x.share(hi), x.share(lo)
		x.tryMove(best, lo.cand.Host.Name)
		p.Moves = append(p.Moves, Move{VM: best.Name, From: hi.cand.Host.Name, To: lo.cand.Host.Name,
			Why: fmt.Sprintf("memory use %.0f%% -> %.0f%% on %s, %.0f%% -> %.0f%% on %s (spread %.0f points)",
				100*hiBefore, 100*x.share(hi), hi.cand.Host.Name, 100*loBefore, 100*x.share(lo), lo.cand.Host.Name, 100*g)})
		best.Host = lo.cand.Host.Name
		where[best.Name] = best
	}
}

// sortedOn lists the VMs on host, biggest first (fewer moves), then by name.
func sortedOn(where map[string]model.VM, host string) []model.VM {
	var out []model.VM
	for _, v := range where {
		if v.Host == host {
			out = append(out, v)
		}
	}
	bySize(out)
	return out
}

func planConsolidate(cands []Candidate, vms []model.VM, popts Options, o BalanceOptions, p *BalancePlan) {
	x := NewIndex(cands, vms, popts)
	where := map[string]model.VM{}
	for _, v := range vms {
		if v.Host != "" && !v.Deleting {
			where[v.Name] = v
		}
	}
	ha := haNeeds(where)
	byHost := map[string][]model.VM{}
	for _, v := range sortedVMs(where) {
		byHost[v.Host] = append(byHost[v.Host], v)
	}
	var order []*usage
	for _, u := range x.hosts {
		if u.usable() {
			order = append(order, u)
		}
	}
	// The least used hosts first: they are the cheapest to empty.
	sort.SliceStable(order, func(i, j int) bool { return x.share(order[i]) < x.share(order[j]) })
	freed := map[string]bool{}
	for _, h := range order {
		if len(order)-len(freed) <= 1 {
			break
		}
		if h.cand.KeepOn {
			continue
		}
		on := byHost[h.cand.Host.Name]
		if len(on) == 0 {
			continue // already empty
		}
		if len(p.Moves)+len(on) > o.MaxMoves {
			p.Notes = append(p.Notes, fmt.Sprintf("%s: emptying it takes %d moves, more than this round's %d left", h.cand.Host.Name, len(on), o.MaxMoves-len(p.Moves)))
			break
		}
		moves, why := x.empty(h, on, freed, o)
		if why == "" {
			// N+1: with h empty too, the hosts left must still take the
			// HA VMs of any one of them.
			freed[h.cand.Host.Name] = true
			shift(ha, where, moves, 1)
			if w := x.headroom(order, ha, freed); w != "" {
				why = "keeping it for N+1: " + w
				delete(freed, h.cand.Host.Name)
				shift(ha, where, moves, -1)
			}
		}
		if why != "" {
			x.undo(moves, where)
			p.Notes = append(p.Notes, fmt.Sprintf("%s stays: %s", h.cand.Host.Name, why))
			continue
		}
		for _, m := range moves {
			v := where[m.VM]
			v.Host = m.To
			where[m.VM] = v
			byHost[m.To] = append(byHost[m.To], v)
		}
		delete(byHost, h.cand.Host.Name)
		p.Moves = append(p.Moves, moves...)
		p.Freed = append(p.Freed, h.cand.Host.Name)
	}
	if len(p.Freed) == 0 && len(p.Notes) == 0 {
		p.Notes = append(p.Notes, "no host can be emptied")
	}
}

// empty moves every VM on h elsewhere in x (packing), or says why not;
// the moves it made are returned for undo either way.
func (x *Index) empty(h *usage, on []model.VM, freed map[string]bool, o BalanceOptions) ([]Move, string) {
	var moves []Move
	used := x.share(h)
	targets := x.packTargets(h, freed)
	for _, v := range on {
		cold := v.Desired == model.PowerStopped && v.Actual.State == model.StateStopped
		if !cold {
			if w := o.Movable(v); w != "" {
				return moves, v.Name + ": " + w
			}
		}
		to, why := x.packTarget(v, targets)
		if to == "" {
			return moves, v.Name + " fits nowhere else: " + why
		}
		moves = append(moves, Move{VM: v.Name, From: h.cand.Host.Name, To: to, Cold: cold,
			Why: fmt.Sprintf("emptying %s (%.0f%% of its memory used) to power it down", h.cand.Host.Name, 100*used)})
	}
	return moves, ""
}

// packTargets are the hosts VMs leaving from may go to, the most used
// first (packing): not from, not freed, taking VMs.
func (x *Index) packTargets(from *usage, freed map[string]bool) []*usage {
	var targets []*usage
	for _, u := range x.hosts {
		if u != from && !freed[u.cand.Host.Name] && u.usable() {
			targets = append(targets, u)
		}
	}
	sort.SliceStable(targets, func(i, j int) bool { return x.share(targets[i]) > x.share(targets[j]) })
	return targets
}

// packTarget moves v to the first of targets that takes it, keeping its
// soft score, and names it; or says why none does.
func (x *Index) packTarget(v model.VM, targets []*usage) (string, string) {
	from := x.by[v.Host]
	var last *usage
	why := ""
	for _, u := range targets {
		if w := x.tryMoveTo(v, from, u); w != "" {
			last, why = u, w
			continue
		}
		return u.cand.Host.Name, ""
	}
	if last == nil {
		return "", "no other host takes VMs"
	}
	return "", last.cand.Host.Name + ": " + why
}

// undo puts moves back (in reverse) in x.
func (x *Index) undo(moves []Move, where map[string]model.VM) {
	for i := len(moves) - 1; i >= 0; i-- {
		m := moves[i]
		v := where[m.VM]
		x.remove(v.Name, v.Spec, m.To)
		x.by[m.From].add(v.Name, v.Spec)
	}
}

// need is the HA VMs' demand on a host.
type need struct {
	vcpus  int
	memory int64
}

// haNeeds sums the HA VMs' demand per host.
func haNeeds(where map[string]model.VM) map[string]need {
	out := map[string]need{}
	for _, v := range where {
		if v.Spec.HA.Enabled {
			n := out[v.Host]
			n.vcpus += v.Spec.VCPUs
			n.memory += v.Spec.MemoryMiB
			out[v.Host] = n
		}
	}
	return out
}

// shift moves the HA demand of moves in ha (sign -1 takes it back).
func shift(ha map[string]need, where map[string]model.VM, moves []Move, sign int) {
	for _, m := range moves {
		v := where[m.VM]
		if !v.Spec.HA.Enabled {
			continue
		}
		f, t := ha[m.From], ha[m.To]
		f.vcpus -= sign * v.Spec.VCPUs
		f.memory -= int64(sign) * v.Spec.MemoryMiB
		t.vcpus += sign * v.Spec.VCPUs
		t.memory += int64(sign) * v.Spec.MemoryMiB
		ha[m.From], ha[m.To] = f, t
	}
}

// headroom checks N+1 in x as it is (the moves made): the HA VMs of any
// one host left must fit in the free memory and vCPUs of the others
// (capacity, as the N+1 reserve is counted; recovery then places them one
// by one). ha is the HA demand per host after the moves.
func (x *Index) headroom(order []*usage, ha map[string]need, freed map[string]bool) string {
	var freeCPU int
	var freeMem int64
	left := order[:0:0]
	for _, u := range order {
		if freed[u.cand.Host.Name] {
			continue
		}
		left = append(left, u)
		capCPU, capMem := x.capacity(u.cand.Host)
		freeCPU += max(capCPU-u.vcpus, 0)
		freeMem += max(capMem-u.memory, 0)
	}
	for _, u := range left {
		n := ha[u.cand.Host.Name]
		capCPU, capMem := x.capacity(u.cand.Host)
		otherCPU, otherMem := freeCPU-max(capCPU-u.vcpus, 0), freeMem-max(capMem-u.memory, 0)
		if n.memory > otherMem || n.vcpus > otherCPU {
			return fmt.Sprintf("the others could not take %s's HA VMs (%d MiB, %d vCPUs; %d MiB, %d vCPUs free)", u.cand.Host.Name, n.memory, n.vcpus, otherMem, otherCPU)
		}
	}
	return ""
}

// sortedVMs lists VMs biggest first, then by name.
func sortedVMs(where map[string]model.VM) []model.VM {
	out := make([]model.VM, 0, len(where))
	for _, v := range where {
		out = append(out, v)
	}
	bySize(out)
	return out
}

// Headroom says whether the hosts that take VMs could take the HA VMs of
// any one of them (N+1, by capacity): "" if so, else which host's they
// could not.
func Headroom(cands []Candidate, vms []model.VM, popts Options) string {
	x := NewIndex(cands, vms, popts)
	var order []*usage
	for _, u := range x.hosts {
		if u.usable() {
			order = append(order, u)
		}
	}
	where := map[string]model.VM{}
	for _, v := range vms {
		if v.Host != "" && !v.Deleting {
			where[v.Name] = v
		}
	}
	return x.headroom(order, haNeeds(where), map[string]bool{})
}

// bySize sorts VMs biggest first, then by name.
func bySize(vms []model.VM) {
	sort.Slice(vms, func(i, j int) bool {
		if vms[i].Spec.MemoryMiB != vms[j].Spec.MemoryMiB {
			return vms[i].Spec.MemoryMiB > vms[j].Spec.MemoryMiB
		}
		return vms[i].Name < vms[j].Name
	})
}

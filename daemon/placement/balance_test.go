package placement

import (
	"fmt"
	"strings"
	"testing"

	"github.com/corralhq/corral/model"
)

func running(name, host string, mem int64, ha bool) model.VM {
	return model.VM{Name: name, Host: host, Desired: model.PowerRunning, Actual: model.Actual{State: model.StateRunning},
		Spec: model.VMSpec{VCPUs: 1, MemoryMiB: mem, HA: model.HAPolicy{Enabled: ha}}}
}

// apply returns vms with the plan's moves made.
func apply(vms []model.VM, p BalancePlan) []model.VM {
	out := append([]model.VM(nil), vms...)
	for _, m := range p.Moves {
		for i := range out {
			if out[i].Name == m.VM {
				out[i].Host = m.To
			}
		}
	}
	return out
}

func movesOf(p BalancePlan) string {
	var s []string
	for _, m := range p.Moves {
		s = append(s, fmt.Sprintf("%s:%s>%s", m.VM, m.From, m.To))
	}
	return strings.Join(s, " ")
}

// Spread evens memory use while the most and least used hosts differ by
// MinGain or more, each move bringing its two hosts closer; planning again
// on the result moves nothing (no ping-pong), and neither does a nearly
// balanced cluster.
func TestBalanceSpreadHysteresis(t *testing.T) {
	cands := []Candidate{{Host: host("a", 16, 10240, nil)}, {Host: host("b", 16, 10240, nil)}, {Host: host("c", 16, 10240, nil)}}
	vms := []model.VM{running("a1", "a", 4096, true), running("a2", "a", 2048, true), running("a3", "a", 2048, true),
		running("c1", "c", 2048, true)}
	o := BalanceOptions{Goal: Balance, MinGain: 0.05, MaxMoves: 10}
	p := PlanBalance(cands, vms, noReserve, o)
	if movesOf(p) != "a1:a>b" {
		t.Fatalf("moves %q; notes %v", movesOf(p), p.Notes)
	}
	if !strings.Contains(p.Moves[0].Why, "memory use 80% -> 40% on a, 0% -> 40% on b") {
		t.Fatalf("why: %s", p.Moves[0].Why)
	}
	after := apply(vms, p)
	if again := PlanBalance(cands, after, noReserve, o); len(again.Moves) != 0 {
		t.Fatalf("planned again on the result: %q (ping-pong); notes %v", movesOf(again), again.Notes)
	}
	// 40%, 40%, 20%: a gap of 20 points, under a threshold of 25.
	o.MinGain = 0.25
	if p := PlanBalance(cands, after, noReserve, o); len(p.Moves) != 0 || !strings.Contains(strings.Join(p.Notes, ";"), "balanced") {
		t.Fatalf("a small gain moved: %q %v", movesOf(p), p.Notes)
	}
}

// Every hard rule holds, soft rules are kept, the Movable budget and
// MaxMoves bound the plan, and hosts that take no VMs are left alone.
func TestBalanceRespectsRulesAndBudgets(t *testing.T) {
	maint := host("m", 16, 10240, nil)
	maint.Mode = model.ModeMaintenance
	cands := []Candidate{{Host: host("a", 16, 10240, map[string]string{"ssd": "yes"})}, {Host: host("b", 16, 10240, nil)},
		{Host: maint}, {Host: host("d", 16, 10240, nil), Unavailable: "lease renewals late"}}
	pinned := running("needs-ssd", "a", 2048, true)
	pinned.Spec.Require = map[string]string{"ssd": "yes"}
	fond := running("likes-ssd", "a", 2048, true)
	fond.Spec.Prefer = []model.SoftRule{{Kind: model.SoftHost, Key: "ssd", Value: "yes", Weight: 10}}
	grouped := running("g1", "a", 2048, true)
	grouped.Spec.AntiAffinity = "g"
	other := running("g2", "b", 1024, true)
	other.Spec.AntiAffinity = "g"
	tired := running("moved-today", "a", 2048, true)
	free := running("free", "a", 1024, true)
	vms := []model.VM{pinned, fond, grouped, other, tired, free}
	o := BalanceOptions{Goal: Balance, MinGain: 0.05, MaxMoves: 10, Movable: func(v model.VM) string {
		if v.Name == "moved-today" {
			return "moved 2 times in 24 h, the most a VM may"
		}
		return ""
	}}
	p := PlanBalance(cands, vms, noReserve, o)
	if movesOf(p) != "free:a>b" {
		t.Fatalf("moves %q; notes %v", movesOf(p), p.Notes)
	}
	for _, m := range p.Moves {
		if m.To == "m" || m.To == "d" {
			t.Fatalf("moved to a host that takes no VMs: %+v", m)
		}
	}
	o.MaxMoves = 1
	o.Movable = nil
	if p := PlanBalance(cands, vms, noReserve, o); len(p.Moves) != 1 {
		t.Fatalf("MaxMoves 1: %q", movesOf(p))
	}
}

// Consolidate empties the least used hosts while the others keep room for
// the HA VMs of any one of them (N+1); a stopped VM moves cold; a host
// whose VMs may not move stays.
func TestBalanceConsolidateKeepsNPlusOne(t *testing.T) {
	cands := []Candidate{{Host: host("a", 16, 8192, nil)}, {Host: host("b", 16, 8192, nil)}, {Host: host("c", 16, 8192, nil)}, {Host: host("d", 16, 8192, nil)}}
	stopped := running("s1", "d", 512, false)
	stopped.Desired, stopped.Actual.State = model.PowerStopped, model.StateStopped
	vms := []model.VM{running("a1", "a", 3072, true), running("b1", "b", 2048, true), running("c1", "c", 1024, true), stopped}
	o := BalanceOptions{Goal: Consolidate, MaxMoves: 10}
	p := PlanBalance(cands, vms, noReserve, o)
	// d (the stopped VM, cold) and c go; b would leave a and b unable to
	// take each other's HA VMs... a+b+c memory is 6 GiB on two 8 GiB hosts.
	if got := strings.Join(p.Freed, ","); got != "d,c" {
		t.Fatalf("freed %q; moves %q; notes %v", got, movesOf(p), p.Notes)
	}
	var cold bool
	for _, m := range p.Moves {
		cold = cold || m.VM == "s1" && m.Cold
	}
	if !cold {
		t.Fatalf("the stopped VM did not move cold: %+v", p.Moves)
	}
	if !strings.Contains(strings.Join(p.Notes, ";"), "N+1") {
		t.Fatalf("notes %v", p.Notes)
	}
	// The hosts left can take either's HA VMs: 4 GiB used of 16.
	after := apply(vms, p)
	x := NewIndex(cands, after, noReserve)
	for _, h := range []string{"a", "b"} {
		if x.by[h].memory > 8192 {
			t.Fatalf("%s holds %d MiB", h, x.by[h].memory)
		}
	}
	// A VM that may not move keeps its host; b empties instead (a then
	// holds a1 and b1, c keeps room for them).
	o.Movable = func(v model.VM) string {
		if v.Name == "c1" {
			return "over budget"
		}
		return ""
	}
	if p := PlanBalance(cands, vms, noReserve, o); strings.Join(p.Freed, ",") != "d,b" {
		t.Fatalf("freed %v with c1 unmovable; notes %v", p.Freed, p.Notes)
	}
}

// BenchmarkPlanConsolidate1000Hosts: a consolidation plan over 1,000
// hosts and 50,000 VMs, a quarter of the memory in use.
func BenchmarkPlanConsolidate1000Hosts(b *testing.B) {
	var cands []Candidate
	for i := range 1000 {
		cands = append(cands, Candidate{Host: host(fmt.Sprintf("h%04d", i), 256, 1<<18, nil)})
	}
	var vms []model.VM
	for i := range 50000 {
		vms = append(vms, running(fmt.Sprint("v", i), fmt.Sprintf("h%04d", i%1000), int64(1024+(i%5)*256), i%2 == 0))
	}
	var p BalancePlan
	for range b.N {
		p = PlanBalance(cands, vms, noReserve, BalanceOptions{Goal: Consolidate, MaxMoves: 50000})
	}
	// The most hosts any packing could free: all but those the memory in
	// use needs at least (a bound first-fit decreasing cannot beat).
	var mem int64
	for _, v := range vms {
		mem += v.Spec.MemoryMiB
	}
	capMem := cands[0].Host.Capacity.MemoryMiB
	b.ReportMetric(float64(len(p.Freed)), "hosts-freed")
	b.ReportMetric(float64(int64(len(cands))-(mem+capMem-1)/capMem), "bound")
	b.ReportMetric(float64(len(p.Moves)), "moves")
}

// With hosts of different sizes, every spread move lowers the sum over
// hosts of memory^2 / capacity, and planning again on the result moves
// nothing.
func TestBalanceSpreadUnequalHosts(t *testing.T) {
	cands := []Candidate{{Host: host("big", 32, 32768, nil)}, {Host: host("mid", 16, 16384, nil)}, {Host: host("small", 8, 4096, nil)}}
	var vms []model.VM
	for i := range 12 {
		vms = append(vms, running(fmt.Sprint("v", i), "big", int64(512+256*(i%4)), true))
	}
	potential := func(vms []model.VM) float64 {
		mem := map[string]float64{}
		for _, v := range vms {
			mem[v.Host] += float64(v.Spec.MemoryMiB)
		}
		sum := 0.0
		for _, c := range cands {
			sum += mem[c.Host.Name] * mem[c.Host.Name] / float64(c.Host.Capacity.MemoryMiB)
		}
		return sum
	}
	o := BalanceOptions{Goal: Balance, MinGain: 0.05, MaxMoves: 100}
	p := PlanBalance(cands, vms, noReserve, o)
	if len(p.Moves) == 0 {
		t.Fatalf("nothing moved: %v", p.Notes)
	}
	cur := vms
	for _, m := range p.Moves {
		next := apply(cur, BalancePlan{Moves: []Move{m}})
		if potential(next) >= potential(cur) {
			t.Fatalf("move %+v raised sum(memory^2/capacity) from %.1f to %.1f", m, potential(cur), potential(next))
		}
		cur = next
	}
	if again := PlanBalance(cands, cur, noReserve, o); len(again.Moves) != 0 {
		t.Fatalf("planned again on the result: %q", movesOf(again))
	}
}

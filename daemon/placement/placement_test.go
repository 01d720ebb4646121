package placement

import (
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/corralhq/corral/model"
)

func host(name string, vcpus int, memMiB int64, labels map[string]string) model.Host {
	return model.Host{Name: name, Mode: model.ModeActive, Labels: labels, Capacity: model.Capacity{VCPUs: vcpus, MemoryMiB: memMiB}}
}

func spec(vcpus int, mem int64) model.VMSpec { return model.VMSpec{VCPUs: vcpus, MemoryMiB: mem} }

var noReserve = Options{Strategy: Spread, CPUOvercommit: 1, MemoryOvercommit: 1}

func TestSpreadAndPack(t *testing.T) {
	cands := []Candidate{{Host: host("a", 8, 8192, nil)}, {Host: host("b", 8, 8192, nil)}, {Host: host("c", 8, 16384, nil)}}
	x := NewIndex(cands, nil, noReserve)
	var got []string
	for i := 0; i < 4; i++ {
		h, err := x.Place(Request{Name: fmt.Sprint(i), Spec: spec(1, 2048)})
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, h)
	}
	// Spread: c (twice the memory) takes the first, then a, b, then c again.
	if strings.Join(got, ",") != "c,a,b,c" {
		t.Fatalf("spread: %v", got)
	}
	opts := noReserve
	opts.Strategy = Pack
	x = NewIndex(cands, nil, opts)
	got = nil
	for i := 0; i < 5; i++ {
		h, _ := x.Place(Request{Name: fmt.Sprint(i), Spec: spec(1, 2048)})
		got = append(got, h)
	}
	if strings.Join(got, ",") != "a,a,a,a,b" {
		t.Fatalf("pack: %v", got)
	}
}

func TestRejectionReasons(t *testing.T) {
	maint := host("m", 8, 8192, nil)
	maint.Mode = model.ModeMaintenance
	cands := []Candidate{
		{Host: host("a", 2, 4096, map[string]string{"rack": "r1"})},
		{Host: host("b", 8, 8192, map[string]string{"rack": "r2"})},
		{Host: maint},
		{Host: host("d", 8, 8192, map[string]string{"rack": "r1"}), Unavailable: "host down"},
	}
	existing := []model.VM{{Name: "web1", Host: "b", Spec: model.VMSpec{VCPUs: 1, MemoryMiB: 1024, AntiAffinity: "web"}}}
	x := NewIndex(cands, existing, noReserve)
	_, err := x.Place(Request{Name: "big", Spec: model.VMSpec{VCPUs: 4, MemoryMiB: 1024, AntiAffinity: "web", Require: map[string]string{"rack": "r2"}}})
	var nf *NoFitError
	if !errors.As(err, &nf) || !errors.Is(err, model.ErrNoCapacity) {
		t.Fatalf("err = %v", err)
	}
	want := map[string]string{
		"a": "needs label rack=r2",
		"b": "anti-affinity group web already has vm web1 here",
		"m": "mode maintenance",
		"d": "host down",
	}
	for _, r := range nf.Reasons {
		if want[r.Host] != r.Reason {
			t.Errorf("%s: %q, want %q", r.Host, r.Reason, want[r.Host])
		}
	}
	_, err = x.Place(Request{Name: "fat", Spec: model.VMSpec{VCPUs: 4, MemoryMiB: 1024, Require: map[string]string{"rack": "r1"}}})
	if !errors.As(err, &nf) || !strings.Contains(err.Error(), "a: not enough vCPUs: 2 free of 2, need 4") {
		t.Fatalf("capacity: %v", err)
	}
	if _, err := x.Place(Request{Name: "p", Spec: spec(1, 512), Host: "zz"}); !errors.Is(err, model.ErrNotFound) {
		t.Fatalf("pinned to unknown host: %v", err)
	}
	if h, err := x.Place(Request{Name: "p", Spec: spec(1, 512), Host: "a"}); err != nil || h != "a" {
		t.Fatalf("pinned: %v %v", h, err)
	}
	if _, err := x.Place(Request{Name: "q", Spec: spec(1, 512), Exclude: map[string]bool{"a": true, "b": true}}); err == nil {
		t.Fatal("excluded hosts used")
	}
}

func TestOvercommitAndReserve(t *testing.T) {
	x := NewIndex([]Candidate{{Host: host("a", 4, 4096, nil)}}, nil, DefaultOptions())
	// 4 CPUs ×4 = 16 vCPUs; 4096-1024 = 3072 MiB.
	for i := 0; i < 3; i++ {
		if _, err := x.Place(Request{Name: fmt.Sprint(i), Spec: spec(5, 1024)}); err != nil {
			t.Fatalf("vm %d: %v", i, err)
		}
	}
	if _, err := x.Place(Request{Name: "x", Spec: spec(1, 1)}); err == nil {
		t.Fatal("placed beyond memory")
	}
}

func TestDeletingVMsFreeCapacity(t *testing.T) {
	vms := []model.VM{{Name: "old", Host: "a", Deleting: true, Spec: spec(4, 4096)}}
	x := NewIndex([]Candidate{{Host: host("a", 4, 4096, nil)}}, vms, noReserve)
	if _, err := x.Place(Request{Name: "new", Spec: spec(4, 4096)}); err != nil {
		t.Fatal(err)
	}
}

// BenchmarkPlace: decisions over 1,000 hosts that already run 50,000 VMs.
func BenchmarkPlace(b *testing.B) {
	var cands []Candidate
	for i := 0; i < 1000; i++ {
		cands = append(cands, Candidate{Host: host(fmt.Sprintf("host%04d", i), 64, 512*1024, map[string]string{"rack": fmt.Sprint(i % 20)})})
	}
	var vms []model.VM
	for i := 0; i < 50000; i++ {
		vms = append(vms, model.VM{Name: fmt.Sprintf("vm%05d", i), Host: fmt.Sprintf("host%04d", i%1000),
			Spec: model.VMSpec{VCPUs: 2, MemoryMiB: 4096, AntiAffinity: fmt.Sprintf("g%d", i%500)}})
	}
	x := NewIndex(cands, vms, DefaultOptions())
	req := Request{Name: "n", Spec: model.VMSpec{VCPUs: 1, MemoryMiB: 64, Require: map[string]string{"rack": "7"}}, Exclude: map[string]bool{"host0007": true}}
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if i%5000 == 4999 { // keep the hosts from filling up
			b.StopTimer()
			x = NewIndex(cands, vms, DefaultOptions())
			b.StartTimer()
		}
		if _, err := x.Place(req); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "decisions/s")
}

// BenchmarkIndex: building the index from 1,000 hosts and 50,000 VMs (done
// once per leader operation or recovery batch).
func BenchmarkIndex(b *testing.B) {
	var cands []Candidate
	for i := 0; i < 1000; i++ {
		cands = append(cands, Candidate{Host: host(fmt.Sprintf("host%04d", i), 64, 512*1024, nil)})
	}
	var vms []model.VM
	for i := 0; i < 50000; i++ {
		vms = append(vms, model.VM{Name: fmt.Sprintf("vm%05d", i), Host: fmt.Sprintf("host%04d", i%1000), Spec: model.VMSpec{VCPUs: 2, MemoryMiB: 4096, AntiAffinity: fmt.Sprintf("g%d", i%500)}})
	}
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		NewIndex(cands, vms, DefaultOptions())
	}
}

// A spread set is soft anti-affinity: under packing, its VMs still go one
// per host while hosts without one fit, then a second each, and a host
// that does not fit is passed by.
func TestSpreadSet(t *testing.T) {
	cands := []Candidate{{Host: host("a", 8, 8192, nil)}, {Host: host("b", 8, 8192, nil)}, {Host: host("c", 1, 8192, nil)}}
	opts := noReserve
	opts.Strategy = Pack
	x := NewIndex(cands, []model.VM{{Name: "busy", Host: "a", Spec: spec(1, 4096)}}, opts)
	s := spec(1, 512)
	s.Spread = "web"
	var got []string
	for i := 1; i <= 5; i++ {
		h, err := x.Place(Request{Name: fmt.Sprintf("web-%d", i), Spec: s})
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, h)
	}
	// a (fullest: pack), b, c (one vCPU: full after one), then a, b.
	if strings.Join(got, ",") != "a,b,c,a,b" {
		t.Fatalf("spread set under pack: %v", got)
	}
	// Without the set, packing piles them onto a.
	x = NewIndex(cands, nil, opts)
	plain := spec(1, 512)
	for i := 1; i <= 3; i++ {
		if h, _ := x.Place(Request{Name: fmt.Sprint(i), Spec: plain}); h != "a" {
			t.Fatalf("pack without a set put %d on %s", i, h)
		}
	}
}

// Soft rules choose among the hosts that fit: the highest sum of met
// Prefer weights less met Avoid weights wins, before spread sets and the
// strategy; they never override a hard rule or capacity.
func TestSoftRules(t *testing.T) {
	cands := []Candidate{
		{Host: host("a", 8, 8192, map[string]string{"ssd": "yes"})},
		{Host: host("b", 8, 8192, map[string]string{"ssd": "yes", "rack": "r1"})},
		{Host: host("c", 8, 16384, nil)}, // the most free memory: spread's pick
		{Host: host("d", 1, 1024, map[string]string{"ssd": "yes", "gpu": "yes"})},
	}
	existing := []model.VM{
		{Name: "db1", Host: "a", Spec: model.VMSpec{VCPUs: 1, MemoryMiB: 1024, Labels: map[string]string{"role": "db"}}},
		{Name: "cache1", Host: "b", Spec: model.VMSpec{VCPUs: 1, MemoryMiB: 1024, Labels: map[string]string{"app": "cache"}}},
	}
	place := func(s model.VMSpec) string {
		t.Helper()
		x := NewIndex(cands, existing, noReserve)
		h, err := x.Place(Request{Name: "x", Spec: s})
		if err != nil {
			t.Fatal(err)
		}
		return h
	}
	ssd := model.SoftRule{Kind: model.SoftHost, Key: "ssd", Value: "yes", Weight: 10}
	nearCache := model.SoftRule{Kind: model.SoftVM, Key: "app", Value: "cache", Weight: 30}
	awayDB := model.SoftRule{Kind: model.SoftVM, Key: "role", Value: "db", Weight: 50}
	gpu := model.SoftRule{Kind: model.SoftHost, Key: "gpu", Value: "yes", Weight: 100}
	for _, c := range []struct {
		name string
		spec model.VMSpec
		want string
	}{
		{"no rules: spread", spec(1, 1024), "c"},
		{"prefer ssd: a or b, spread between them", model.VMSpec{VCPUs: 1, MemoryMiB: 1024, Prefer: []model.SoftRule{ssd}}, "a"},
		{"prefer ssd, avoid db: b", model.VMSpec{VCPUs: 1, MemoryMiB: 1024, Prefer: []model.SoftRule{ssd}, Avoid: []model.SoftRule{awayDB}}, "b"},
		{"near the cache beats ssd alone", model.VMSpec{VCPUs: 1, MemoryMiB: 1024, Prefer: []model.SoftRule{ssd, nearCache}}, "b"},
		{"avoid db only: anywhere but a, spread", model.VMSpec{VCPUs: 1, MemoryMiB: 1024, Avoid: []model.SoftRule{awayDB}}, "c"},
		{"a preferred host that does not fit is not taken", model.VMSpec{VCPUs: 2, MemoryMiB: 2048, Prefer: []model.SoftRule{gpu}}, "c"},
		{"hard require beats soft", model.VMSpec{VCPUs: 1, MemoryMiB: 1024, Require: map[string]string{"ssd": "yes"}, Avoid: []model.SoftRule{ssd}}, "a"},
	} {
		if got := place(c.spec); got != c.want {
			t.Errorf("%s: placed on %s, want %s", c.name, got, c.want)
		}
	}

	// The explanation of a placed VM: which rules its host meets.
	me := model.VM{Name: "me", Host: "a", Spec: model.VMSpec{VCPUs: 1, MemoryMiB: 1024, Labels: map[string]string{"role": "db"},
		Require: map[string]string{"ssd": "yes"}, AntiAffinity: "g", Spread: "web",
		Prefer: []model.SoftRule{ssd, nearCache}, Avoid: []model.SoftRule{awayDB}}}
	x := NewIndex(cands, append(existing, me), noReserve)
	var got []string
	for _, rc := range x.Explain(me.Spec, "a") {
		got = append(got, fmt.Sprintf("%s=%v (%s)", rc.Rule, rc.Met, rc.Detail))
	}
	want := []string{
		"require ssd=yes=true ()",
		"anti-affinity g=true (no other VM of the group here)",
		"spread web=true (0 other VMs of the set here)",
		"prefer host:ssd=yes:10=true (the host has ssd=yes)",
		"prefer vm:app=cache:30=false (0 other VMs with app=cache here)",
		"avoid vm:role=db:50=false (1 other VMs with role=db here)", // db1; not itself
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Fatalf("explain:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}

// BenchmarkPlaceSoftRules: placing with two soft rules among 1,000 hosts
// holding 50,000 VMs.
func BenchmarkPlaceSoftRules(b *testing.B) {
	var cands []Candidate
	for i := range 1000 {
		cands = append(cands, Candidate{Host: host(fmt.Sprintf("h%04d", i), 256, 1<<20, map[string]string{"rack": fmt.Sprint(i % 40)})})
	}
	var vms []model.VM
	for i := range 50000 {
		vms = append(vms, model.VM{Name: fmt.Sprint("v", i), Host: fmt.Sprintf("h%04d", i%1000),
			Spec: model.VMSpec{VCPUs: 1, MemoryMiB: 1024, Labels: map[string]string{"app": fmt.Sprint(i % 100)}}})
	}
	x := NewIndex(cands, vms, noReserve)
	s := model.VMSpec{VCPUs: 1, MemoryMiB: 1024,
		Prefer: []model.SoftRule{{Kind: model.SoftHost, Key: "rack", Value: "7", Weight: 20}},
		Avoid:  []model.SoftRule{{Kind: model.SoftVM, Key: "app", Value: "3", Weight: 50}}}
	b.ResetTimer()
	for i := range b.N {
		if _, err := x.Place(Request{Name: fmt.Sprint("n", i), Spec: s}); err != nil {
			b.Fatal(err)
		}
	}
}

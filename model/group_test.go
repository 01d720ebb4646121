package model

import (
	"errors"
	"strings"
	"testing"
	"time"
)

func TestGroupValidate(t *testing.T) {
	tmpl := VMSpec{VCPUs: 1, MemoryMiB: 64, Disks: []DiskSpec{{SizeMiB: 8}}}
	ok := Group{Name: "web", Count: 3, Template: tmpl, Autoscale: &Autoscale{Min: 1, Max: 5, TargetCPU: 60}}
	if err := ok.Validate(); err != nil {
		t.Fatal(err)
	}
	for name, mod := range map[string]func(*Group){
		"long name":    func(g *Group) { g.Name = "a123456789a123456789a123456789a123456789a123456789a12345678" },
		"count":        func(g *Group) { g.Count = MaxGroupCount + 1 },
		"batch":        func(g *Group) { g.Batch = -1 },
		"template":     func(g *Group) { g.Template.VCPUs = 0 },
		"min > max":    func(g *Group) { g.Autoscale = &Autoscale{Min: 4, Max: 3, TargetCPU: 50} },
		"max 0":        func(g *Group) { g.Autoscale = &Autoscale{Max: 0, TargetCPU: 50} },
		"target 0":     func(g *Group) { g.Autoscale = &Autoscale{Max: 3} },
		"target 101":   func(g *Group) { g.Autoscale = &Autoscale{Max: 3, TargetCPU: 101} },
		"cooldown":     func(g *Group) { g.Autoscale = &Autoscale{Max: 3, TargetCPU: 50, DownCooldownSec: -1} },
		"bad project":  func(g *Group) { g.Project = "No" },
		"pause reason": func(g *Group) { g.Paused = string(make([]byte, 2000)) },
	} {
		g := ok
		a := *ok.Autoscale
		g.Autoscale = &a
		mod(&g)
		if err := g.Validate(); !errors.Is(err, ErrInvalid) {
			t.Errorf("%s: %v", name, err)
		}
	}
	up, down := (Autoscale{}).Cooldowns()
	if up != time.Minute || down != 5*time.Minute {
		t.Fatalf("default cooldowns %v %v", up, down)
	}
}

func TestHealthCheckValidate(t *testing.T) {
	for _, tc := range []struct {
		c  HealthCheck
		ok bool
	}{
		{HealthCheck{Exec: "curl -fs localhost"}, true},
		{HealthCheck{TCPPort: 443, IntervalSec: 5, TimeoutSec: 2, Retries: 1, StartSec: 0}, true},
		{HealthCheck{}, false},                                // neither
		{HealthCheck{Exec: "true", TCPPort: 80}, false},       // both
		{HealthCheck{TCPPort: 70000}, false},                  // port
		{HealthCheck{Exec: "a\x00b"}, false},                  // NUL
		{HealthCheck{Exec: strings.Repeat("x", 1025)}, false}, // too long
		{HealthCheck{Exec: "true", IntervalSec: -1}, false},
		{HealthCheck{Exec: "true", TimeoutSec: 61}, false},
		{HealthCheck{Exec: "true", Retries: 101}, false},
		{HealthCheck{Exec: "true", StartSec: 3601}, false},
	} {
		err := tc.c.Validate("v")
		if (err == nil) != tc.ok || (err != nil && !errors.Is(err, ErrInvalid)) {
			t.Errorf("%+v: %v", tc.c, err)
		}
	}
	c := HealthCheck{Exec: "true"}
	if c.Interval() != 10*time.Second || c.Timeout() != 5*time.Second || c.Tries() != 3 || c.Start() != time.Minute {
		t.Fatalf("defaults: %v %v %d %v", c.Interval(), c.Timeout(), c.Tries(), c.Start())
	}
	g := Group{Name: "web", Template: VMSpec{Kernel: &KernelBoot{Kernel: "/k", Cmdline: "ip=10.0.0.{{index}} name={{name}}"}}}
	if got := g.MemberSpec(3).Kernel.Cmdline; got != "ip=10.0.0.3 name=web-3" || g.Template.Kernel.Cmdline == got {
		t.Fatalf("member command line %q (template %q)", got, g.Template.Kernel.Cmdline)
	}
}

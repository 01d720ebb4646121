package model

import (
	"errors"
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

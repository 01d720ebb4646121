package model

import (
	"fmt"
	"strconv"
	"strings"
	"time"
)

// Group keeps Count alike VMs from one template. Its members are ordinary
// VMs named NAME-1, NAME-2, ... (VM.Group names the group); the leader
// creates the missing ones, lowest index first, and deletes the surplus,
// highest index first. Members spread over hosts: a host gets a second
// member only when every host that fits has one (VMSpec.Spread).
type Group struct {
	Name    string `json:"name"`
	Project string `json:"project,omitempty"`
	// Template is every member's spec. In its user data and kernel command
	// line, {{index}} and {{name}} become the member's index and VM name.
	Template VMSpec `json:"template"`
	Count    int    `json:"count"`
	// Stopped: members are created stopped.
	Stopped   bool      `json:"stopped,omitempty"`
	CreatedAt time.Time `json:"created_at"`
	// Version counts templates: it is bumped (by the state machine) when
	// the template changes, and each member records the version it was
	// made from (VM.GroupVersion). Members of an older version are
	// replaced by a roll-out.
	Version uint64 `json:"version"`
	// Previous is the template before the last change (for rollback).
	Previous *VMSpec `json:"previous,omitempty"`
	// Batch is how many members a roll-out replaces at a time (0: 1).
	Batch int `json:"batch,omitempty"`
	// Paused says why the roll-out stopped ("" when it did not).
	Paused string `json:"paused,omitempty"`
	// Autoscale, when set, lets the leader change Count with the members'
	// CPU use.
	Autoscale *Autoscale `json:"autoscale,omitempty"`
}

// Autoscale bounds and drives a group's count: the leader samples its
// running members' CPU use and moves the count toward the one that would
// put their mean at TargetCPU percent of their vCPUs, within Min..Max,
// no sooner than a cooldown after its last change.
type Autoscale struct {
	Min       int `json:"min"`
	Max       int `json:"max"`
	TargetCPU int `json:"target_cpu"`
	// UpCooldownSec and DownCooldownSec follow any change of the count
	// (0: 60 and 300). A scale-down also takes the highest count
	// recommended within its cooldown, so a dip does not remove members.
	UpCooldownSec   int `json:"up_cooldown_s,omitempty"`
	DownCooldownSec int `json:"down_cooldown_s,omitempty"`
}

// Cooldowns returns the up and down cooldowns, defaults applied.
func (a Autoscale) Cooldowns() (up, down time.Duration) {
	up, down = 60*time.Second, 300*time.Second
	if a.UpCooldownSec > 0 {
		up = time.Duration(a.UpCooldownSec) * time.Second
	}
	if a.DownCooldownSec > 0 {
		down = time.Duration(a.DownCooldownSec) * time.Second
	}
	return up, down
}

// Validate checks the bounds.
func (a Autoscale) Validate(group string) error {
	bad := func(format string, args ...any) error {
		return fmt.Errorf("group %q: autoscale: %s: %w", group, fmt.Sprintf(format, args...), ErrInvalid)
	}
	switch {
	case a.Min < 0 || a.Max < 1 || a.Min > a.Max || a.Max > MaxGroupCount:
		return bad("min %d and max %d: want 0 <= min <= max, 1 <= max <= %d", a.Min, a.Max, MaxGroupCount)
	case a.TargetCPU < 1 || a.TargetCPU > 100:
		return bad("target CPU %d%%: want 1..100", a.TargetCPU)
	case a.UpCooldownSec < 0 || a.UpCooldownSec > 86400 || a.DownCooldownSec < 0 || a.DownCooldownSec > 86400:
		return bad("cooldowns %ds and %ds: want 0..86400", a.UpCooldownSec, a.DownCooldownSec)
	}
	return nil
}

// MaxGroups bounds the groups the cluster keeps.
const MaxGroups = 1000

// MaxGroupCount bounds a group's count: a typo must not make the leader
// create a million VMs.
const MaxGroupCount = 1000

// maxGroupNameLen leaves room for "-1000" in member names.
const maxGroupNameLen = maxNameLen - 5

// Validate checks a group's own fields (the template as its first member's).
func (g Group) Validate() error {
	if err := ValidateName("group", g.Name); err != nil {
		return err
	}
	if len(g.Name) > maxGroupNameLen {
		return fmt.Errorf("group name %q is %d characters, at most %d (member names add -N): %w", g.Name, len(g.Name), maxGroupNameLen, ErrInvalid)
	}
	if g.Count < 0 || g.Count > MaxGroupCount {
		return fmt.Errorf("group %q: count %d out of range 0..%d: %w", g.Name, g.Count, MaxGroupCount, ErrInvalid)
	}
	if g.Batch < 0 || g.Batch > MaxGroupCount {
		return fmt.Errorf("group %q: batch %d out of range 0..%d: %w", g.Name, g.Batch, MaxGroupCount, ErrInvalid)
	}
	if len(g.Paused) > 1024 {
		return fmt.Errorf("group %q: pause reason of %d bytes: %w", g.Name, len(g.Paused), ErrInvalid)
	}
	if g.Autoscale != nil {
		if err := g.Autoscale.Validate(g.Name); err != nil {
			return err
		}
	}
	if err := ValidProjectRef(g.Project); err != nil {
		return err
	}
	return g.Template.Validate(MemberName(g.Name, 1))
}

// MemberName is the name of a group's member with index i (from 1).
func MemberName(group string, i int) string { return group + "-" + strconv.Itoa(i) }

// MemberIndex returns the index of a member's name in group, and false
// when the name is not of the form GROUP-N with N in 1..MaxGroupCount.
func MemberIndex(group, vm string) (int, bool) {
	s, ok := strings.CutPrefix(vm, group+"-")
	if !ok || s == "" || s[0] == '0' {
		return 0, false
	}
	i, err := strconv.Atoi(s)
	if err != nil || i < 1 || i > MaxGroupCount {
		return 0, false
	}
	return i, true
}

// BatchSize is how many members a roll-out replaces at a time.
func (g Group) BatchSize() int { return max(g.Batch, 1) }

// MemberSpec is the spec of a group's member i: the template, spread with
// its siblings, with {{index}} and {{name}} filled in its user data and
// kernel command line.
func (g Group) MemberSpec(i int) VMSpec {
	s := g.Template.Clone()
	s.Spread = g.Name
	r := strings.NewReplacer("{{index}}", strconv.Itoa(i), "{{name}}", MemberName(g.Name, i))
	s.UserData = r.Replace(s.UserData)
	if s.Kernel != nil {
		s.Kernel.Cmdline = r.Replace(s.Kernel.Cmdline)
	}
	return s
}

// GroupByName returns the group called name in gs.
func GroupByName(gs []Group, name string) (Group, bool) {
	for _, g := range gs {
		if g.Name == name {
			return g, true
		}
	}
	return Group{}, false
}

package controller

import (
	"context"
	"fmt"
	"slices"
	"strings"

	"github.com/corralhq/corral/model"
	"github.com/corralhq/corral/raftlog"
)

// Groups: the leader keeps each group's count (model.Group). Members are
// ordinary VMs: HA recovers them like any other, and the keeper only sees
// to their number. It creates the missing ones, lowest free index first,
// and marks the surplus for deletion, highest index first; a member being
// deleted no longer counts, so a member an operator deletes is replaced.
// A pass creates at most groupBatch members and asks for another pass when
// more are missing, so a large scale-up never holds the leader loop (and
// its liveness checks) for long. A member that cannot be created (no
// capacity, a quota, a name another VM holds) is reported once as a
// "group" event, not on every pass, until the reason changes or clears.

// groupBatch is how many members one pass creates at most.
const groupBatch = 32

// keepGroups runs one pass of the keeper (leader loop only).
func (l *Leader) keepGroups(ctx context.Context) {
	groups := l.store.Cluster().Groups
	l.mu.Lock()
	for name := range l.groupErr {
		if _, ok := model.GroupByName(groups, name); !ok {
			delete(l.groupErr, name)
		}
	}
	l.mu.Unlock()
	if len(groups) == 0 {
		return
	}
	members := map[string]map[int]model.VM{}
	taken := map[string]bool{}
	for _, v := range l.store.VMs() {
		taken[v.Name] = true
		if v.Group == "" || v.Deleting {
			continue
		}
		if i, ok := model.MemberIndex(v.Group, v.Name); ok {
			if members[v.Group] == nil {
				members[v.Group] = map[int]model.VM{}
			}
			members[v.Group][i] = v
		}
	}
	budget := groupBatch
	for _, g := range groups {
		have := members[g.Name]
		switch {
		case len(have) < g.Count:
			budget = l.growGroup(ctx, g, have, taken, budget)
		case len(have) > g.Count:
			l.shrinkGroup(ctx, g, have)
		default:
			l.groupProblem(ctx, g, "")
		}
	}
	if budget == 0 {
		l.poke() // more to create: another pass soon
	}
}

// growGroup creates missing members of g, at most budget, and returns
// what is left of the budget.
func (l *Leader) growGroup(ctx context.Context, g model.Group, have map[int]model.VM, taken map[string]bool, budget int) int {
	var created, skipped []string
	missing := g.Count - len(have)
	for i := 1; i <= model.MaxGroupCount && missing > 0 && budget > 0; i++ {
		if _, ok := have[i]; ok {
			continue
		}
		name := model.MemberName(g.Name, i)
		if taken[name] {
			skipped = append(skipped, name)
			continue
		}
		_, err := l.createVM(ctx, CreateVMRequest{Name: name, Spec: g.MemberSpec(i), Stopped: g.Stopped, Project: g.Project}, g.Name)
		if err != nil {
			l.groupProblem(ctx, g, fmt.Sprintf("cannot create %s: %v", name, err))
			break
		}
		taken[name] = true
		created = append(created, name)
		missing--
		budget--
	}
	if len(created) > 0 {
		l.eventIn(ctx, g.Project, "group", "", "", "group %s: created %s (%d of %d members)", g.Name, strings.Join(created, ", "), g.Count-missing, g.Count)
	}
	if missing == 0 {
		l.groupProblem(ctx, g, "")
	} else if len(skipped) > 0 && len(created) == 0 && budget > 0 {
		l.groupProblem(ctx, g, fmt.Sprintf("%d members missing; %s held by VMs outside the group", missing, strings.Join(skipped, ", ")))
	}
	return budget
}

// shrinkGroup marks g's surplus members for deletion, highest index first.
func (l *Leader) shrinkGroup(ctx context.Context, g model.Group, have map[int]model.VM) {
	idx := make([]int, 0, len(have))
	for i := range have {
		idx = append(idx, i)
	}
	slices.Sort(idx)
	var gone []string
	for k := len(idx) - 1; k >= g.Count; k-- {
		v := have[idx[k]]
		if _, err := l.DeleteVM(ctx, DeleteVMRequest{Name: v.Name}); err != nil {
			l.groupProblem(ctx, g, fmt.Sprintf("cannot delete %s: %v", v.Name, err))
			break
		}
		gone = append(gone, v.Name)
	}
	if len(gone) > 0 {
		l.eventIn(ctx, g.Project, "group", "", "", "group %s: deleting %s (count %d)", g.Name, strings.Join(gone, ", "), g.Count)
	}
}

// groupProblem records why g is short ("" once it is not), as an event
// when the reason changes.
func (l *Leader) groupProblem(ctx context.Context, g model.Group, why string) {
	l.mu.Lock()
	same := l.groupErr[g.Name] == why
	if why == "" {
		delete(l.groupErr, g.Name)
	} else {
		l.groupErr[g.Name] = why
	}
	l.mu.Unlock()
	if !same && why != "" {
		l.eventIn(ctx, g.Project, "group", "", "", "group %s: %s", g.Name, why)
	}
}

// SetGroupRequest creates a group (Create) or replaces an existing one's
// count and template.
type SetGroupRequest struct {
	Group  model.Group `json:"group"`
	Create bool        `json:"create,omitempty"`
}

// DeleteGroupRequest removes a group, its members too unless KeepVMs.
type DeleteGroupRequest struct {
	Name    string `json:"name"`
	KeepVMs bool   `json:"keep_vms,omitempty"`
}

// SetGroup checks a group as CreateVM checks a VM (but places nothing:
// the keeper creates the members) and records it.
func (l *Leader) SetGroup(ctx context.Context, req SetGroupRequest) (model.Group, error) {
	if err := l.ready(); err != nil {
		return model.Group{}, err
	}
	if err := raftlog.FeatureGroups.Check(l.store.Cluster(), l.store.Hosts()); err != nil {
		return model.Group{}, err
	}
	g := req.Group
	g.Template = g.Template.Clone()
	g.Template.Spread = "" // the group's own name, set per member
	if err := g.Validate(); err != nil {
		return g, err
	}
	if err := l.projectGate(g.Project); err != nil {
		return g, err
	}
	if l.cfg.KernelDir != "" {
		if err := g.Template.Kernel.CheckKernelDir(l.cfg.KernelDir); err != nil {
			return g, fmt.Errorf("group %q: %w", g.Name, err)
		}
	}
	for i, d := range g.Template.Disks {
		if d.Image == "" {
			continue
		}
		im, err := l.store.Image(d.Image)
		if err != nil {
			return g, fmt.Errorf("group %q: disk %d: %w", g.Name, i, err)
		}
		if err := usableIn(g.Project, "image", im.Name, im.Project); err != nil {
			return g, fmt.Errorf("group %q: disk %d: %w", g.Name, i, err)
		}
	}
	for i, nic := range g.Template.NICs {
		if nic.MAC != "" {
			return g, fmt.Errorf("group %q: nic %d: members get a MAC each; give none: %w", g.Name, i, model.ErrInvalid)
		}
		n, err := l.store.Network(nic.Network)
		if err != nil {
			return g, fmt.Errorf("group %q: nic %d: %w", g.Name, i, err)
		}
		if err := usableIn(g.Project, "network", n.Name, n.Project); err != nil {
			return g, fmt.Errorf("group %q: nic %d: %w", g.Name, i, err)
		}
	}
	old, existed := model.GroupByName(l.store.Cluster().Groups, g.Name)
	g.CreatedAt = l.clock.Now().UTC()
	if _, err := l.store.Apply(ctx, raftlog.SetGroup{Group: g, Create: req.Create}); err != nil {
		return g, err
	}
	switch {
	case req.Create:
		l.eventIn(ctx, g.Project, "group", "", "", "group %s created: %d members of %d vCPU, %d MiB", g.Name, g.Count, g.Template.VCPUs, g.Template.MemoryMiB)
	case existed && old.Count != g.Count:
		l.eventIn(ctx, g.Project, "group", "", "", "group %s scaled from %d to %d", g.Name, old.Count, g.Count)
	default:
		l.eventIn(ctx, g.Project, "group", "", "", "group %s updated: new members get the new template", g.Name)
	}
	l.poke()
	out, _ := model.GroupByName(l.store.Cluster().Groups, g.Name)
	return out, nil
}

// DeleteGroup removes a group: its members are deleted, or kept as VMs of
// no group.
func (l *Leader) DeleteGroup(ctx context.Context, req DeleteGroupRequest) (struct{}, error) {
	if err := l.ready(); err != nil {
		return struct{}{}, err
	}
	g, ok := model.GroupByName(l.store.Cluster().Groups, req.Name)
	if !ok {
		return struct{}{}, fmt.Errorf("group %q: %w", req.Name, model.ErrNotFound)
	}
	if _, err := l.store.Apply(ctx, raftlog.DeleteGroup{Name: req.Name, KeepVMs: req.KeepVMs}); err != nil {
		return struct{}{}, err
	}
	what := "its members are being deleted"
	if req.KeepVMs {
		what = "its members stay, in no group"
	}
	l.eventIn(ctx, g.Project, "group", "", "", "group %s removed: %s", g.Name, what)
	return struct{}{}, nil
}

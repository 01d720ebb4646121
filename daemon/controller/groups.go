package controller

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/corralhq/corral/model"
	"github.com/corralhq/corral/raftlog"
)

// Groups: the leader keeps each group's count (model.Group). Members are
// ordinary VMs: HA recovers them like any other, and the keeper only sees
// to their number and their template. It creates the missing ones, lowest
// free index first, and marks the surplus for deletion, members of older
// templates first, then the highest index; a member being deleted no
// longer counts, so a member an operator deletes is replaced. A pass
// creates at most groupBatch members and asks for another pass when more
// are missing, so a large scale-up never holds the leader loop (and its
// liveness checks) for long. A member that cannot be created (no
// capacity, a quota, a name another VM holds) is reported once as a
// "group" event, not on every pass, until the reason changes or clears.
//
// Roll-out: when the template changes (its version is bumped), members of
// older versions are replaced a batch at a time, new ones first: the
// keeper starts Batch new members beside the old, and deletes as many old
// ones only once the new ones are ready: running and, when the template
// has a health check, healthy. So the group never has fewer ready members
// than its count on account of the roll-out. A new member that fails (its
// HA gave up, its health check fails, or it is not ready within
// rolloutTimeout) pauses the roll-out with the reason; the old members
// keep running, and an update or a rollback (the previous template back)
// resumes it.

// groupBatch is how many members one pass creates at most.
const groupBatch = 32

// rolloutTimeout is how long a new member of a roll-out may take to be
// ready.
const rolloutTimeout = 5 * time.Minute

// groupMembers are a group's members not being deleted, by index.
type groupMembers map[int]model.VM

// keepGroups runs one pass of the keeper (leader loop only).
func (l *Leader) keepGroups(ctx context.Context) {
	groups := l.store.Cluster().Groups
	l.mu.Lock()
	for name := range l.groupErr {
		if _, ok := model.GroupByName(groups, name); !ok {
			delete(l.groupErr, name)
		}
	}
	for name := range l.groupShared {
		if _, ok := model.GroupByName(groups, name); !ok {
			delete(l.groupShared, name)
		}
	}
	l.mu.Unlock()
	if len(groups) == 0 {
		return
	}
	members := map[string]groupMembers{}
	taken := map[string]bool{}
	for _, v := range l.store.VMs() {
		taken[v.Name] = true
		if v.Group == "" || v.Deleting {
			continue
		}
		if i, ok := model.MemberIndex(v.Group, v.Name); ok {
			if members[v.Group] == nil {
				members[v.Group] = groupMembers{}
			}
			members[v.Group][i] = v
		}
	}
	budget := groupBatch
	for _, g := range groups {
		budget = l.keepGroup(ctx, g, members[g.Name], taken, budget)
		l.warnShared(ctx, g, members[g.Name])
	}
	if budget == 0 {
		l.poke() // more to create: another pass soon
	}
}

// keepGroup brings one group toward its count and template; it returns
// what is left of the pass's creation budget.
func (l *Leader) keepGroup(ctx context.Context, g model.Group, have groupMembers, taken map[string]bool, budget int) int {
	if have == nil {
		have = groupMembers{}
	}
	var old []int     // members of older templates
	var pending []int // new-template members not running yet
	now := l.clock.Now()
	for i, v := range have {
		switch {
		case v.GroupVersion != g.Version:
			old = append(old, i)
		case !MemberReady(v) && v.Desired == model.PowerRunning:
			pending = append(pending, i)
		}
	}
	rolling := len(old) > 0
	if rolling && g.Paused == "" {
		if why := l.failedMember(g, have, pending, now); why != "" {
			l.pauseRollout(ctx, g, why)
			return budget
		}
	}
	switch surplus := len(have) - g.Count; {
	case surplus < 0:
		return l.growGroup(ctx, g, have, taken, -surplus, budget)
	case surplus > 0:
		// During a roll-out, an old member stays until the new one that
		// replaces it runs.
		if rolling {
			surplus -= len(pending)
		}
		if surplus > 0 {
			l.shrinkGroup(ctx, g, have, surplus)
		}
	case rolling && g.Paused == "" && len(pending) == 0:
		// All new members run: start the next batch beside the old.
		return l.growGroup(ctx, g, have, taken, min(g.BatchSize(), len(old)), budget)
	default:
		if !rolling {
			l.groupProblem(ctx, g, "")
		}
	}
	return budget
}

// MemberReady says whether a member serves: it runs and, if its spec has
// a health check, passes it.
func MemberReady(v model.VM) bool {
	return v.Actual.State == model.StateRunning && (v.Spec.Health == nil || v.Actual.Health == model.HealthHealthy)
}

// failedMember says why a new member of g failed ("" when none did).
func (l *Leader) failedMember(g model.Group, have groupMembers, pending []int, now time.Time) string {
	for _, i := range pending {
		v := have[i]
		switch {
		case v.Failed != "":
			return fmt.Sprintf("new member %s failed: %s", v.Name, v.Failed)
		case v.Actual.State == model.StateCrashed || v.Actual.State == model.StateError:
			return fmt.Sprintf("new member %s is %s: %s", v.Name, v.Actual.State, v.Actual.Message)
		case v.Actual.State == model.StateRunning && v.Actual.Health == model.HealthUnhealthy:
			return fmt.Sprintf("new member %s is unhealthy: %s", v.Name, v.Actual.HealthDetail)
		case now.Sub(v.CreatedAt) > rolloutTimeout:
			state := string(v.Actual.State)
			if v.Actual.Health != "" {
				state += ", " + v.Actual.Health
			}
			return fmt.Sprintf("new member %s not ready %v after its creation (%s: %s)", v.Name, rolloutTimeout, state, v.Actual.Message)
		}
	}
	return ""
}

// pauseRollout records why g's roll-out stopped.
func (l *Leader) pauseRollout(ctx context.Context, g model.Group, why string) {
	g.Paused = why
	if _, err := l.store.Apply(ctx, raftlog.SetGroup{Group: g}); err != nil {
		l.log.Warn("pause roll-out", "group", g.Name, "err", err)
		return
	}
	l.eventIn(ctx, g.Project, "group", "", "", "group %s: roll-out to template %d paused: %s; the old members keep running (group update or group rollback resumes)", g.Name, g.Version, why)
}

// growGroup creates up to want members of g, at most budget, and returns
// what is left of the budget.
func (l *Leader) growGroup(ctx context.Context, g model.Group, have groupMembers, taken map[string]bool, want, budget int) int {
	var created, skipped []string
	missing := want
	for i := 1; i <= model.MaxGroupCount && missing > 0 && budget > 0; i++ {
		if _, ok := have[i]; ok {
			continue
		}
		name := model.MemberName(g.Name, i)
		if taken[name] {
			skipped = append(skipped, name)
			continue
		}
		v, err := l.createVM(ctx, CreateVMRequest{Name: name, Spec: g.MemberSpec(i), Stopped: g.Stopped, Project: g.Project}, g.Name, g.Version)
		if err != nil {
			l.groupProblem(ctx, g, fmt.Sprintf("cannot create %s: %v", name, err))
			break
		}
		taken[name] = true
		have[i] = v
		created = append(created, name)
		missing--
		budget--
	}
	if len(created) > 0 {
		l.eventIn(ctx, g.Project, "group", "", "", "group %s: created %s (template %d; %d members of %d)", g.Name, strings.Join(created, ", "), g.Version, len(have), g.Count)
	}
	if missing == 0 {
		l.groupProblem(ctx, g, "")
	} else if len(skipped) > 0 && len(created) == 0 && budget > 0 {
		l.groupProblem(ctx, g, fmt.Sprintf("%d members missing; %s held by VMs outside the group", missing, strings.Join(skipped, ", ")))
	}
	return budget
}

// shrinkGroup marks n of g's members for deletion: those of older
// templates first, then those not ready (not running, or failing their
// health check), then the highest index.
func (l *Leader) shrinkGroup(ctx context.Context, g model.Group, have groupMembers, n int) {
	idx := make([]int, 0, len(have))
	for i := range have {
		idx = append(idx, i)
	}
	// Older templates first, then members not running, then the highest
	// index.
	rank := func(i int) int {
		r := 0
		if have[i].GroupVersion != g.Version {
			r -= 2
		}
		if !MemberReady(have[i]) {
			r--
		}
		return r
	}
	slices.SortFunc(idx, func(a, b int) int {
		if ra, rb := rank(a), rank(b); ra != rb {
			return ra - rb
		}
		return b - a
	})
	var gone []string
	for _, i := range idx[:min(n, len(idx))] {
		v := have[i]
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

// warnShared says once, as an event, when members of g share a host:
// anti-affinity among members is soft, so a group larger than the hosts
// that fit still runs, but a host failure then takes several members.
func (l *Leader) warnShared(ctx context.Context, g model.Group, have groupMembers) {
	hosts := map[string]bool{}
	placed := 0
	for _, v := range have {
		if v.Host != "" {
			hosts[v.Host] = true
			placed++
		}
	}
	shared := placed > len(hosts)
	l.mu.Lock()
	was := l.groupShared[g.Name]
	if shared {
		l.groupShared[g.Name] = true
	} else {
		delete(l.groupShared, g.Name)
	}
	l.mu.Unlock()
	if shared && !was {
		l.eventIn(ctx, g.Project, "group", "", "", "group %s: warning: %d members on %d hosts, so some share a host (fewer hosts fit than members); a host failure takes all of its members", g.Name, placed, len(hosts))
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
	if g.Template.Health != nil {
		if err := raftlog.FeatureHealthChecks.Check(l.store.Cluster(), l.store.Hosts()); err != nil {
			return g, err
		}
	}
	if len(g.Template.Prefer) > 0 || len(g.Template.Avoid) > 0 {
		if err := raftlog.FeatureSoftRules.Check(l.store.Cluster(), l.store.Hosts()); err != nil {
			return g, err
		}
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
	old, _ := model.GroupByName(l.store.Cluster().Groups, g.Name)
	g.CreatedAt = l.clock.Now().UTC()
	if _, err := l.store.Apply(ctx, raftlog.SetGroup{Group: g, Create: req.Create}); err != nil {
		return g, err
	}
	out, _ := model.GroupByName(l.store.Cluster().Groups, g.Name)
	switch {
	case req.Create:
		l.eventIn(ctx, g.Project, "group", "", "", "group %s created: %d members of %d vCPU, %d MiB", g.Name, g.Count, g.Template.VCPUs, g.Template.MemoryMiB)
	case out.Version != old.Version:
		l.eventIn(ctx, g.Project, "group", "", "", "group %s: template %d rolling out, %d members at a time, new ones started before old ones go", g.Name, out.Version, out.BatchSize())
	case old.Count != g.Count:
		l.eventIn(ctx, g.Project, "group", "", "", "group %s scaled from %d to %d", g.Name, old.Count, g.Count)
	case old.Paused != "" && out.Paused == "":
		l.eventIn(ctx, g.Project, "group", "", "", "group %s: roll-out of template %d resumed", g.Name, out.Version)
	}
	l.poke()
	return out, nil
}

// ScaleGroupRequest changes only a group's count.
type ScaleGroupRequest struct {
	Name  string `json:"name"`
	Count int    `json:"count"`
	// Why is the autoscaler's reason (leader only: never forwarded).
	Why string `json:"why,omitempty"`
}

// ScaleGroup sets a group's count, keeping whatever else it holds now.
func (l *Leader) ScaleGroup(ctx context.Context, req ScaleGroupRequest) (model.Group, error) {
	if err := l.ready(); err != nil {
		return model.Group{}, err
	}
	old, ok := model.GroupByName(l.store.Cluster().Groups, req.Name)
	if !ok {
		return model.Group{}, fmt.Errorf("group %q: %w", req.Name, model.ErrNotFound)
	}
	if req.Count < 0 || req.Count > model.MaxGroupCount {
		return old, fmt.Errorf("group %q: count %d out of range 0..%d: %w", req.Name, req.Count, model.MaxGroupCount, model.ErrInvalid)
	}
	if _, err := l.store.Apply(ctx, raftlog.SetGroup{Group: model.Group{Name: req.Name, Count: req.Count}, CountOnly: true}); err != nil {
		return old, err
	}
	if old.Count != req.Count {
		if req.Why != "" {
			l.eventIn(ctx, old.Project, "group", "", "", "group %s autoscaled from %d to %d: %s", old.Name, old.Count, req.Count, req.Why)
		} else {
			l.eventIn(ctx, old.Project, "group", "", "", "group %s scaled from %d to %d", old.Name, old.Count, req.Count)
		}
	}
	l.poke()
	out, _ := model.GroupByName(l.store.Cluster().Groups, req.Name)
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

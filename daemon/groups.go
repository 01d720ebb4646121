package daemon

import (
	"context"
	"fmt"
	"slices"

	"github.com/corralhq/corral/api"
	"github.com/corralhq/corral/daemon/adminapi"
	"github.com/corralhq/corral/daemon/controller"
	"github.com/corralhq/corral/model"
	"github.com/corralhq/corral/raftlog"
)

// Groups (controller/groups.go keeps their counts): any host answers reads
// from its replica; changes go to the leader, once the cluster's protocol
// has them (raftlog.FeatureGroups, checked before forwarding, so a leader
// that does not know the methods is never asked).

func (b backend) groupView(g model.Group) api.Group {
	out := api.Group{Name: g.Name, Project: model.ProjectOf(g.Project), Count: g.Count, Template: specView(g.Template),
		Stopped: g.Stopped, CreatedAt: g.CreatedAt, Members: []api.GroupMember{}, Version: g.Version, Batch: g.BatchSize(),
		Paused: g.Paused, CanRollback: g.Previous != nil}
	if g.Autoscale != nil {
		a := api.Autoscale(*g.Autoscale)
		out.Autoscale = &a
	}
	byIndex := map[int]api.GroupMember{}
	var idx []int
	for _, v := range b.d.store.VMs() {
		if v.Group != g.Name || v.Deleting {
			continue
		}
		i, ok := model.MemberIndex(g.Name, v.Name)
		if !ok {
			continue
		}
		vv := vmView(v)
		byIndex[i] = api.GroupMember{Name: v.Name, Host: v.Host, State: vv.State, Message: vmMessage(vv), Version: v.GroupVersion, Health: vv.Health}
		idx = append(idx, i)
		if vv.State == string(model.StateRunning) {
			out.Running++
		}
		if controller.MemberReady(v) {
			out.Ready++
		}
		if v.GroupVersion == g.Version {
			out.Current++
		}
	}
	slices.Sort(idx)
	for _, i := range idx {
		out.Members = append(out.Members, byIndex[i])
	}
	return out
}

func vmMessage(v api.VM) string {
	if v.Failed != "" {
		return v.Failed
	}
	return v.Message
}

func (b backend) Groups(ctx context.Context) ([]api.Group, error) {
	scope := adminapi.Scope(ctx)
	out := []api.Group{}
	for _, g := range b.d.store.Cluster().Groups {
		if visible(scope, g.Project) {
			out = append(out, b.groupView(g))
		}
	}
	return out, nil
}

func (b backend) Group(ctx context.Context, name string) (api.Group, error) {
	g, ok := model.GroupByName(b.d.store.Cluster().Groups, name)
	if !ok || !visible(adminapi.Scope(ctx), g.Project) {
		return api.Group{}, fmt.Errorf("group %q: %w", name, model.ErrNotFound)
	}
	return b.groupView(g), nil
}

func (b backend) CreateGroup(ctx context.Context, req api.GroupCreateRequest) (api.Group, error) {
	project, err := inProject(ctx, req.Project)
	if err != nil {
		return api.Group{}, err
	}
	g := model.Group{Name: req.Name, Project: project, Count: req.Count, Stopped: req.Stopped,
		Template: specFromAPI(api.VMCreateRequest{Spec: req.Spec, HA: req.HA})}
	if req.Autoscale != nil {
		a := model.Autoscale(*req.Autoscale)
		g.Autoscale = &a
		if req.Count < a.Min || req.Count > a.Max {
			return api.Group{}, fmt.Errorf("group %q: count %d outside its autoscale range %d..%d: %w", req.Name, req.Count, a.Min, a.Max, model.ErrInvalid)
		}
	}
	if err := g.Validate(); err != nil {
		return api.Group{}, err
	}
	return b.putGroup(ctx, g, true)
}

func (b backend) ScaleGroup(ctx context.Context, name string, count int) (api.Group, error) {
	g, ok := model.GroupByName(b.d.store.Cluster().Groups, name)
	if !ok || !visible(adminapi.Scope(ctx), g.Project) {
		return api.Group{}, fmt.Errorf("group %q: %w", name, model.ErrNotFound)
	}
	if a := g.Autoscale; a != nil && (count < a.Min || count > a.Max) {
		return api.Group{}, fmt.Errorf("group %q is autoscaled within %d..%d: a count of %d would be undone; change or remove its autoscale first: %w",
			name, a.Min, a.Max, count, model.ErrConflict)
	}
	out, err := forward(ctx, b.d, mGroupScale, controller.ScaleGroupRequest{Name: name, Count: count})
	if err != nil {
		return api.Group{}, err
	}
	b.d.waitState(ctx, func() bool {
		cur, ok := model.GroupByName(b.d.store.Cluster().Groups, name)
		return ok && cur.Count == out.Count
	})
	return b.Group(ctx, name)
}

// UpdateGroup sets a new template, which the leader rolls out.
func (b backend) UpdateGroup(ctx context.Context, name string, req api.GroupUpdateRequest) (api.Group, error) {
	g, ok := model.GroupByName(b.d.store.Cluster().Groups, name)
	if !ok || !visible(adminapi.Scope(ctx), g.Project) {
		return api.Group{}, fmt.Errorf("group %q: %w", name, model.ErrNotFound)
	}
	g.Template = specFromAPI(api.VMCreateRequest{Spec: req.Spec, HA: req.HA})
	g.Batch, g.Paused = req.Batch, ""
	if err := g.Validate(); err != nil {
		return api.Group{}, err
	}
	return b.putGroup(ctx, g, false)
}

// SetGroupAutoscale sets (nil: removes) a group's autoscale.
func (b backend) SetGroupAutoscale(ctx context.Context, name string, a *api.Autoscale) (api.Group, error) {
	g, ok := model.GroupByName(b.d.store.Cluster().Groups, name)
	if !ok || !visible(adminapi.Scope(ctx), g.Project) {
		return api.Group{}, fmt.Errorf("group %q: %w", name, model.ErrNotFound)
	}
	g.Autoscale = nil
	if a != nil {
		m := model.Autoscale(*a)
		g.Autoscale = &m
	}
	if err := g.Validate(); err != nil {
		return api.Group{}, err
	}
	return b.putGroup(ctx, g, false)
}

// RollbackGroup rolls the template before the last change out again.
func (b backend) RollbackGroup(ctx context.Context, name string) (api.Group, error) {
	g, ok := model.GroupByName(b.d.store.Cluster().Groups, name)
	if !ok || !visible(adminapi.Scope(ctx), g.Project) {
		return api.Group{}, fmt.Errorf("group %q: %w", name, model.ErrNotFound)
	}
	if g.Previous == nil {
		return api.Group{}, fmt.Errorf("group %q has had one template only: nothing to roll back to: %w", name, model.ErrConflict)
	}
	g.Template, g.Paused = *g.Previous, ""
	return b.putGroup(ctx, g, false)
}

func (b backend) putGroup(ctx context.Context, g model.Group, create bool) (api.Group, error) {
	if err := raftlog.FeatureGroups.Check(b.d.store.Cluster(), b.d.store.Hosts()); err != nil {
		return api.Group{}, err
	}
	out, err := forward(ctx, b.d, mGroupSet, controller.SetGroupRequest{Group: g, Create: create})
	if err != nil {
		return api.Group{}, err
	}
	b.d.waitState(ctx, func() bool {
		cur, ok := model.GroupByName(b.d.store.Cluster().Groups, g.Name)
		return ok && cur.Version >= out.Version && cur.Count == out.Count && cur.Paused == out.Paused &&
			(cur.Autoscale == nil) == (out.Autoscale == nil)
	})
	return b.Group(ctx, g.Name)
}

func (b backend) DeleteGroup(ctx context.Context, name string, keepVMs bool) error {
	g, ok := model.GroupByName(b.d.store.Cluster().Groups, name)
	if !ok || !visible(adminapi.Scope(ctx), g.Project) {
		return fmt.Errorf("group %q: %w", name, model.ErrNotFound)
	}
	if _, err := forward(ctx, b.d, mGroupDelete, controller.DeleteGroupRequest{Name: name, KeepVMs: keepVMs}); err != nil {
		return err
	}
	b.d.waitState(ctx, func() bool {
		_, ok := model.GroupByName(b.d.store.Cluster().Groups, name)
		return !ok
	})
	return nil
}

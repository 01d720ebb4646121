package daemon

import (
	"context"
	"fmt"
	"time"

	"github.com/corralhq/corral/api"
	"github.com/corralhq/corral/daemon/adminapi"
	"github.com/corralhq/corral/model"
	"github.com/corralhq/corral/raftlog"
)

// Projects: every VM, network, image and API token belongs to one (empty
// Project: model.DefaultProject). The state machine enforces quotas when
// it applies a VM's create or resize; the answering host confines a
// client whose token has a project (adminapi.Scope) to it: lists show
// that project's resources (and the default project's images and
// networks, which every project may use), and a resource of another
// project is not found.

// ProjectSetRequest asks the leader to create or update a project.
type ProjectSetRequest struct {
	Project model.Project `json:"project"`
	Create  bool          `json:"create,omitempty"`
}

// ProjectDeleteRequest names a project to remove.
type ProjectDeleteRequest struct {
	Name string `json:"name"`
}

// setProject applies a project (leader only).
func (d *Daemon) setProject(ctx context.Context, req ProjectSetRequest) (struct{}, error) {
	if !d.store.IsLeader() {
		return struct{}{}, fmt.Errorf("ask the leader: %w", model.ErrNotLeader)
	}
	if err := raftlog.FeatureProjects.Check(d.store.Cluster(), d.store.Hosts()); err != nil {
		return struct{}{}, err
	}
	p := req.Project
	p.CreatedAt = time.Now().UTC()
	if _, err := d.store.Apply(ctx, raftlog.SetProject{Project: p, Create: req.Create}); err != nil {
		return struct{}{}, err
	}
	q := p.Quota
	what := "quota set"
	if req.Create {
		what = "created"
	}
	d.event(ctx, "project", "project %s %s: vcpus %d, memory_mib %d, disk_gib %d, vms %d (0: no limit)", p.Name, what, q.VCPUs, q.MemoryMiB, q.DiskGiB, q.VMs)
	return struct{}{}, nil
}

// deleteProject removes a project (leader only).
func (d *Daemon) deleteProject(ctx context.Context, req ProjectDeleteRequest) (struct{}, error) {
	if !d.store.IsLeader() {
		return struct{}{}, fmt.Errorf("ask the leader: %w", model.ErrNotLeader)
	}
	if _, err := d.store.Apply(ctx, raftlog.DeleteProject{Name: req.Name}); err != nil {
		return struct{}{}, err
	}
	d.event(ctx, "project", "project %s removed", req.Name)
	return struct{}{}, nil
}

// visible reports whether a client confined to scope ("" none) may see a
// resource of project.
func visible(scope, project string) bool {
	return scope == "" || model.ProjectOf(project) == scope
}

// shared reports whether it may see or use an image or a network of
// project: its own, or the default project's.
func shared(scope, project string) bool {
	return visible(scope, project) || model.ProjectOf(project) == model.DefaultProject
}

// mayDelete says whether a client confined to scope may delete an image
// or a network of project: its own; the default project's it may use but
// not delete; another project's it does not see.
func mayDelete(scope, kind, name, project string) error {
	switch {
	case visible(scope, project):
		return nil
	case shared(scope, project):
		return fmt.Errorf("%s %q belongs to the default project, which a client of project %s may use but not delete: %w", kind, name, scope, model.ErrForbidden)
	}
	return fmt.Errorf("%s %q: %w", kind, name, model.ErrNotFound)
}

// inProject picks the project of a new resource: the one asked for, or
// the client's; a client confined to a project may ask for no other.
func inProject(ctx context.Context, asked string) (string, error) {
	if err := model.ValidProjectRef(asked); err != nil {
		return "", err
	}
	scope := adminapi.Scope(ctx)
	switch {
	case scope == "":
		if asked == model.DefaultProject {
			return "", nil
		}
		return asked, nil
	case asked == "" || asked == scope:
		if scope == model.DefaultProject {
			return "", nil
		}
		return scope, nil
	}
	return "", fmt.Errorf("this client is confined to project %s, not %s: %w", scope, asked, model.ErrForbidden)
}

// scopedVM checks, for a client confined to a project, that the VM it
// names is in it (another project's VM is not found, as it is not shown).
func (b backend) scopedVM(ctx context.Context, name string) error {
	scope := adminapi.Scope(ctx)
	if scope == "" {
		return nil
	}
	v, err := b.d.store.VM(name)
	if err != nil {
		return err
	}
	if !visible(scope, v.Project) {
		return fmt.Errorf("vm %q: %w", name, model.ErrNotFound)
	}
	return nil
}

func (b backend) projectView(p model.Project) api.Project {
	u := model.Usage{}
	images := map[string]int64{}
	for _, im := range b.d.store.Images() {
		images[im.Name] = (im.VirtualSizeBytes + 1<<20 - 1) >> 20
	}
	for _, v := range b.d.store.VMs() {
		if model.ProjectOf(v.Project) == p.Name {
			u = u.Add(v.Spec, func(n string) int64 { return images[n] })
		}
	}
	out := api.Project{Name: p.Name, Description: p.Description, Quota: api.Quota(p.Quota), Usage: api.Usage(u), CreatedAt: p.CreatedAt}
	projectBackupView(p, &out)
	return out
}

// projects returns every project, the default one first whether set or
// not.
func (b backend) projects() []model.Project {
	c := b.d.store.Cluster()
	out := []model.Project{{Name: model.DefaultProject}}
	for _, p := range c.Projects {
		if p.Name == model.DefaultProject {
			out[0] = p
		} else {
			out = append(out, p)
		}
	}
	return out
}

func (b backend) Projects(ctx context.Context) ([]api.Project, error) {
	scope := adminapi.Scope(ctx)
	out := []api.Project{}
	for _, p := range b.projects() {
		if visible(scope, p.Name) {
			out = append(out, b.projectView(p))
		}
	}
	return out, nil
}

func (b backend) Project(ctx context.Context, name string) (api.Project, error) {
	for _, p := range b.projects() {
		if p.Name == name && visible(adminapi.Scope(ctx), p.Name) {
			return b.projectView(p), nil
		}
	}
	return api.Project{}, fmt.Errorf("project %q: %w", name, model.ErrNotFound)
}

func (b backend) CreateProject(ctx context.Context, req api.ProjectCreateRequest) (api.Project, error) {
	p := model.Project{Name: req.Name, Description: req.Description, Quota: model.Quota(req.Quota)}
	if err := p.Validate(); err != nil {
		return api.Project{}, err
	}
	return b.putProject(ctx, p, true)
}

func (b backend) SetProjectQuota(ctx context.Context, name string, q api.Quota) (api.Project, error) {
	p, err := b.Project(ctx, name)
	if err != nil {
		return api.Project{}, err
	}
	mp := model.Project{Name: name, Description: p.Description, Quota: model.Quota(q)}
	if err := mp.Validate(); err != nil {
		return api.Project{}, err
	}
	return b.putProject(ctx, mp, false)
}

func (b backend) putProject(ctx context.Context, p model.Project, create bool) (api.Project, error) {
	if err := raftlog.FeatureProjects.Check(b.d.store.Cluster(), b.d.store.Hosts()); err != nil {
		return api.Project{}, err
	}
	if _, err := forward(ctx, b.d, mProjectSet, ProjectSetRequest{Project: p, Create: create}); err != nil {
		return api.Project{}, err
	}
	b.d.waitState(ctx, func() bool {
		for _, q := range b.d.store.Cluster().Projects {
			if q.Name == p.Name && q.Quota == p.Quota && q.Description == p.Description {
				return true
			}
		}
		return false
	})
	return b.Project(ctx, p.Name)
}

func (b backend) DeleteProject(ctx context.Context, name string) error {
	if _, err := forward(ctx, b.d, mProjectDelete, ProjectDeleteRequest{Name: name}); err != nil {
		return err
	}
	b.d.waitState(ctx, func() bool {
		for _, q := range b.d.store.Cluster().Projects {
			if q.Name == name {
				return false
			}
		}
		return true
	})
	return nil
}

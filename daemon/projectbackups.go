package daemon

import (
	"context"

	"github.com/corralhq/corral/api"
	"github.com/corralhq/corral/daemon/controller"
	"github.com/corralhq/corral/model"
	"github.com/corralhq/corral/raftlog"
)

// Backup schedules of projects: the leader records one, and the state
// machine gives it, in the same entry, to each VM of the project without
// a schedule of its own (model.BackupPolicy.FromProject), so the VM's
// schedule is what runs.

// SetProjectBackupSchedule sets (or, with an empty schedule, removes) a
// project's backup schedule to a target. A client confined to a project
// may set its own project's only (another is not found).
func (b backend) SetProjectBackupSchedule(ctx context.Context, name string, req api.BackupScheduleRequest) (api.Project, error) {
	if _, err := b.Project(ctx, name); err != nil {
		return api.Project{}, err
	}
	// A protocol 8 leader knows neither the method nor the entry.
	if err := raftlog.FeatureProjectBackups.Check(b.d.store.Cluster(), b.d.store.Hosts()); err != nil {
		return api.Project{}, err
	}
	p, err := forward(ctx, b.d, mProjectBackupSchedule, controller.ProjectBackupScheduleRequest{Project: name, Target: req.Target, Schedule: req.Schedule})
	if err != nil {
		return api.Project{}, err
	}
	b.d.waitState(ctx, func() bool {
		for _, cur := range b.projects() {
			if cur.Name == p.Name {
				c, w := cur.BackupPolicy, p.BackupPolicy
				return c == nil && w == nil || c != nil && w != nil && c.Target == w.Target && c.Schedule == w.Schedule && c.Since.Equal(w.Since)
			}
		}
		return false
	})
	return b.Project(ctx, name)
}

// projectBackupView adds a project's backup schedule to its view.
func projectBackupView(p model.Project, out *api.Project) {
	if bp := p.BackupPolicy; bp != nil {
		out.BackupSchedule, out.BackupTarget = bp.Schedule.String(), bp.Target
	}
}

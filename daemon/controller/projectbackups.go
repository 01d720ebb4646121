package controller

import (
	"context"
	"fmt"

	"github.com/corralhq/corral/model"
	"github.com/corralhq/corral/raftlog"
)

// ProjectBackupScheduleRequest sets the backup schedule of Project to
// Target (model.ParseSchedule); an empty Schedule removes it. Each VM of
// the project without a schedule of its own follows it.
type ProjectBackupScheduleRequest struct {
	Project  string `json:"project"`
	Target   string `json:"target,omitempty"`
	Schedule string `json:"schedule,omitempty"`
}

// SetProjectBackupSchedule sets or removes a project's backup schedule;
// the state machine gives it to the project's VMs in the same entry, so
// runBackupSchedules runs it as theirs.
func (l *Leader) SetProjectBackupSchedule(ctx context.Context, req ProjectBackupScheduleRequest) (model.Project, error) {
	if err := l.ready(); err != nil {
		return model.Project{}, err
	}
	if err := raftlog.FeatureProjectBackups.Check(l.store.Cluster(), l.store.Hosts()); err != nil {
		return model.Project{}, err
	}
	name := model.ProjectOf(req.Project)
	if err := model.ValidateName("project", name); err != nil {
		return model.Project{}, err
	}
	c := raftlog.SetProjectBackupPolicy{Project: name, Time: l.clock.Now().UTC()}
	what := "removed"
	if req.Schedule != "" {
		if err := model.ValidateName("backup target", req.Target); err != nil {
			return model.Project{}, err
		}
		s, err := model.ParseSchedule(req.Schedule)
		if err != nil {
			return model.Project{}, err
		}
		c.Target, c.Schedule = req.Target, &s
		what = fmt.Sprintf("set to %s, to %s", s, req.Target)
	}
	if _, err := l.store.Apply(ctx, c); err != nil {
		return model.Project{}, err
	}
	if c.Schedule != nil {
		n := 0
		for _, v := range l.store.VMs() {
			if model.ProjectOf(v.Project) == name && v.BackupPolicy != nil && v.BackupPolicy.FromProject {
				n++
			}
		}
		if n == 1 {
			what += " (1 VM without its own follows it)"
		} else {
			what += fmt.Sprintf(" (%d VMs without their own follow it)", n)
		}
	}
	l.eventIn(ctx, name, "backup-schedule", "", "", "backup schedule of project %s %s", name, what)
	for _, p := range l.store.Cluster().Projects {
		if p.Name == name {
			return p, nil
		}
	}
	return model.Project{Name: name}, nil
}

package raftstore

import (
	"fmt"
	"strings"
	"time"

	"github.com/corralhq/corral/model"
	"github.com/corralhq/corral/raftlog"
)

// Backup schedules of projects (raftlog.FeatureProjectBackups) are
// materialized on the VMs: each VM of the project without a schedule of
// its own holds a copy (model.BackupPolicy.FromProject), set here in the
// entry that changes the project's, creates the VM or removes its own.

// projectBackupPolicy is the backup schedule of project p ("" is the
// default project), nil when it has none.
func (s *State) projectBackupPolicy(p string) *model.ProjectBackupPolicy {
	proj, _ := s.project(model.ProjectOf(p))
	return proj.BackupPolicy
}

func (s *State) setProjectBackupPolicy(c raftlog.SetProjectBackupPolicy) error {
	if !raftlog.FeatureProjectBackups.Enabled(s.cluster) {
		return fmt.Errorf("backup schedules of projects need cluster protocol %d: %w", raftlog.FeatureProjectBackups.Since, model.ErrConflict)
	}
	name := model.ProjectOf(c.Project)
	p, ok := s.project(name)
	switch {
	case !ok && name != model.DefaultProject:
		return fmt.Errorf("project %q: %w", name, model.ErrNotFound)
	case !ok:
		p = model.Project{Name: model.DefaultProject} // it always exists
	}
	if c.Schedule != nil {
		if _, ok := s.backupTarget(c.Target); !ok {
			return fmt.Errorf("backup target %q: %w", c.Target, model.ErrNotFound)
		}
	}
	if err := p.SetBackupPolicy(c.Target, c.Schedule, c.Time); err != nil {
		return err
	}
	var err error
	if s.cluster.Projects, err = putSorted(s.cluster.Projects, p, func(q model.Project) string { return q.Name }, model.MaxProjects, "projects"); err != nil {
		return err
	}
	s.followProjectBackups(name, p.BackupPolicy, c.Time)
	return nil
}

// followProjectBackups gives every VM of project the project's backup
// schedule pp (nil: none) unless it has its own.
func (s *State) followProjectBackups(project string, pp *model.ProjectBackupPolicy, at time.Time) {
	for _, name := range model.SortedKeys(s.vms) {
		v := s.vms[name]
		if model.ProjectOf(v.Project) != project || v.BackupPolicy != nil && !v.BackupPolicy.FromProject {
			continue
		}
		v = v.Clone()
		v.FollowProjectBackups(pp, at)
		s.vms[name] = v
	}
}

// projectsBackingUpTo names the projects whose backup schedule names
// target, in order.
func (s *State) projectsBackingUpTo(target string) []string {
	var out []string
	for _, p := range s.cluster.Projects { // sorted by name
		if p.BackupPolicy != nil && p.BackupPolicy.Target == target {
			out = append(out, p.Name)
		}
	}
	return out
}

// projectBackupsBlock refuses the removal of target while a project's
// backup schedule names it, unless force, which removes those schedules
// and their VMs' inherited ones.
func (s *State) projectBackupsBlock(target string, force bool) error {
	names := s.projectsBackingUpTo(target)
	if len(names) > 0 && !force {
		return fmt.Errorf("backup target %q: the backup schedule of project %s names it: remove the schedule, or the target with force (the schedule goes with it): %w",
			target, strings.Join(names, ", "), model.ErrConflict)
	}
	return nil
}

// dropProjectBackups removes the backup schedules of projects that name
// target, and their VMs' inherited ones.
func (s *State) dropProjectBackups(target string) {
	for _, name := range s.projectsBackingUpTo(target) {
		p, _ := s.project(name)
		p.BackupPolicy = nil
		s.cluster.Projects, _ = putSorted(s.cluster.Projects, p, func(q model.Project) string { return q.Name }, model.MaxProjects, "projects")
		s.followProjectBackups(name, nil, time.Time{})
	}
}

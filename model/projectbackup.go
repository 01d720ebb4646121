package model

import (
	"fmt"
	"time"
)

// ProjectBackupPolicy backs up, on a schedule, every VM of a project that
// has no backup schedule of its own. It is materialized on those VMs: each
// holds a copy (BackupPolicy.FromProject) with its own Last, so each slot
// is started once per VM, by the code that runs VMs' own schedules.
type ProjectBackupPolicy struct {
	Target   string    `json:"target"`
	Schedule Schedule  `json:"schedule"`
	Since    time.Time `json:"since"`
}

// SetBackupPolicy sets (s nil: removes) p's backup schedule to target.
// Set again to the same target and schedule, the policy is kept as it was.
func (p *Project) SetBackupPolicy(target string, s *Schedule, at time.Time) error {
	if s == nil {
		p.BackupPolicy = nil
		return nil
	}
	if err := s.Validate(); err != nil {
		return err
	}
	if s.Keeps() > maxScheduledBackups {
		return fmt.Errorf("project %q: backup schedule keeps up to %d backups of each VM, at most %d: %w", p.Name, s.Keeps(), maxScheduledBackups, ErrInvalid)
	}
	if old := p.BackupPolicy; old != nil && old.Target == target && old.Schedule == *s {
		return nil
	}
	p.BackupPolicy = &ProjectBackupPolicy{Target: target, Schedule: *s, Since: at.UTC()}
	return nil
}

// FollowProjectBackups gives v its project's backup schedule pp (nil: the
// project has none), from at, unless v has one of its own. An inherited
// schedule to the same target on the same schedule is kept as it is (its
// Last, so no slot is started twice); a VM without disks inherits none.
func (v *VM) FollowProjectBackups(pp *ProjectBackupPolicy, at time.Time) {
	cur := v.BackupPolicy
	switch {
	case cur != nil && !cur.FromProject:
		return
	case pp == nil || len(v.Spec.Disks) == 0:
		v.BackupPolicy = nil
	case cur != nil && cur.Target == pp.Target && cur.Schedule == pp.Schedule:
	default:
		v.BackupPolicy = &BackupPolicy{Target: pp.Target, Schedule: pp.Schedule, Since: at.UTC(), FromProject: true}
	}
}

// DropBackupPolicy removes v's own backup schedule: v then follows its
// project's, pp (nil: none), from at.
func (v *VM) DropBackupPolicy(pp *ProjectBackupPolicy, at time.Time) {
	if v.BackupPolicy != nil && !v.BackupPolicy.FromProject {
		v.BackupPolicy = nil
	}
	v.FollowProjectBackups(pp, at)
}

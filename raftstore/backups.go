package raftstore

import (
	"fmt"
	"slices"
	"strings"

	"github.com/corralhq/corral/model"
	"github.com/corralhq/corral/raftlog"
)

// backupOp is a backup entry's change of state (raftlog.FeatureBackups).
func (s *State) backupOp(fn func() error) error {
	if !raftlog.FeatureBackups.Enabled(s.cluster) {
		return fmt.Errorf("backups need cluster protocol %d: %w", raftlog.FeatureBackups.Since, model.ErrConflict)
	}
	return fn()
}

func (s *State) backupTarget(name string) (model.BackupTarget, bool) {
	i := slices.IndexFunc(s.cluster.BackupTargets, func(t model.BackupTarget) bool { return t.Name == name })
	if i < 0 {
		return model.BackupTarget{}, false
	}
	return s.cluster.BackupTargets[i], true
}

func (s *State) putBackupTarget(c raftlog.PutBackupTarget) error {
	t := c.Target
	if err := t.Validate(); err != nil {
		return err
	}
	if _, ok := s.backupTarget(t.Name); ok {
		return fmt.Errorf("backup target %q already exists: %w", t.Name, model.ErrConflict)
	}
	if len(s.cluster.BackupTargets) >= model.MaxBackupTargets {
		return fmt.Errorf("%d backup targets, at most %d: %w", len(s.cluster.BackupTargets), model.MaxBackupTargets, model.ErrConflict)
	}
	ts := append(slices.Clone(s.cluster.BackupTargets), t)
	slices.SortFunc(ts, func(a, b model.BackupTarget) int { return strings.Compare(a.Name, b.Name) })
	s.cluster.BackupTargets = ts
	return nil
}

func (s *State) deleteBackupTarget(c raftlog.DeleteBackupTarget) error {
	if _, ok := s.backupTarget(c.Name); !ok {
		return fmt.Errorf("backup target %q: %w", c.Name, model.ErrNotFound)
	}
	for _, v := range s.vms {
		if v.Backup != nil && v.Backup.Target == c.Name {
			return fmt.Errorf("backup target %q: vm %q's backup %s is under way to it: %w", c.Name, v.Name, v.Backup.ID, model.ErrConflict)
		}
		if v.Restore != nil && v.Restore.Target == c.Name {
			return fmt.Errorf("backup target %q: vm %q is being restored from it: %w", c.Name, v.Name, model.ErrConflict)
		}
		if v.BackupPolicy != nil && v.BackupPolicy.Target == c.Name && !v.BackupPolicy.FromProject {
			return fmt.Errorf("backup target %q: vm %q's backup schedule names it: %w", c.Name, v.Name, model.ErrConflict)
		}
	}
	if err := s.projectBackupsBlock(c.Name, c.Force); err != nil {
		return err
	}
	n := 0
	for _, b := range s.cluster.Backups {
		if b.Target == c.Name {
			n++
		}
	}
	if n > 0 && !c.Force {
		return fmt.Errorf("backup target %q holds %d backups: remove them, or the target with force (its files stay): %w", c.Name, n, model.ErrConflict)
	}
	s.cluster.BackupTargets = slices.DeleteFunc(slices.Clone(s.cluster.BackupTargets), func(t model.BackupTarget) bool { return t.Name == c.Name })
	s.dropProjectBackups(c.Name)
	for _, b := range s.cluster.Backups {
		if b.Target == c.Name {
			s.dropAnchor(b)
		}
	}
	s.cluster.Backups = slices.DeleteFunc(slices.Clone(s.cluster.Backups), func(b model.Backup) bool { return b.Target == c.Name })
	return nil
}

// dropAnchor removes a backup's anchor snapshot from its VM, if both are
// still there: nothing builds on the backup any more.
func (s *State) dropAnchor(b model.Backup) {
	name, ok := s.vmIDs[b.VMID]
	if !ok {
		return
	}
	v, err := s.vm(name)
	if err != nil {
		return
	}
	anchor := model.BackupSnapshotPrefix + b.ID
	if _, ok := v.Chain.Snapshot(anchor); !ok {
		return
	}
	if v.DeleteSnapshot(anchor) == nil {
		s.vms[name] = v
	}
}

func (s *State) catalogEntry(id string) (model.Backup, bool) {
	i := slices.IndexFunc(s.cluster.Backups, func(b model.Backup) bool { return b.ID == id })
	if i < 0 {
		return model.Backup{}, false
	}
	return s.cluster.Backups[i], true
}

func (s *State) startBackup(c raftlog.StartBackup) error {
	if _, ok := s.backupTarget(c.Job.Target); !ok {
		return fmt.Errorf("backup target %q: %w", c.Job.Target, model.ErrNotFound)
	}
	if _, ok := s.catalogEntry(c.Job.ID); ok {
		return fmt.Errorf("backup %s exists: %w", c.Job.ID, model.ErrConflict)
	}
	if len(s.cluster.Backups) >= model.MaxBackups {
		return fmt.Errorf("the catalog holds %d backups, at most %d: remove some: %w", len(s.cluster.Backups), model.MaxBackups, model.ErrConflict)
	}
	return s.updateVM(c.Name, func(v *model.VM) error {
		if c.Job.Kind == model.BackupIncremental {
			p, ok := s.catalogEntry(c.Job.Parent)
			if !ok || p.VMID != v.ID || p.Target != c.Job.Target {
				return fmt.Errorf("vm %q: backup %q is not one of its backups to %s: %w", v.Name, c.Job.Parent, c.Job.Target, model.ErrConflict)
			}
		}
		return v.StartBackup(c.Job, c.Time, c.Slot)
	})
}

func (s *State) setBackupPolicy(c raftlog.SetBackupPolicy) error {
	if c.Schedule != nil {
		if _, ok := s.backupTarget(c.Target); !ok {
			return fmt.Errorf("backup target %q: %w", c.Target, model.ErrNotFound)
		}
	}
	return s.updateVM(c.Name, func(v *model.VM) error {
		if c.Schedule == nil { // back to the project's, if it has one
			v.DropBackupPolicy(s.projectBackupPolicy(v.Project), c.Time)
			return nil
		}
		return v.SetBackupPolicy(c.Target, c.Schedule, c.Time)
	})
}

// backupJob runs fn on the VM's job id, if it is under way.
func (s *State) backupJob(name, id string, fn func(v *model.VM, j *model.BackupJob) error) error {
	return s.updateVM(name, func(v *model.VM) error {
		if v.Backup == nil || v.Backup.ID != id {
			return fmt.Errorf("vm %q: no backup %s under way: %w", name, id, model.ErrConflict)
		}
		return fn(v, v.Backup)
	})
}

func (s *State) finishBackup(c raftlog.FinishBackup) error {
	var done *model.Backup
	err := s.backupJob(c.Name, c.ID, func(v *model.VM, j *model.BackupJob) error {
		if j.Host != c.Host {
			return fmt.Errorf("vm %q: backup %s runs on %q, not %s: %w", c.Name, c.ID, j.Host, c.Host, model.ErrConflict)
		}
		if c.Error != "" {
			_, err := v.BackupFailed(c.ID, c.Error, c.RetryAt)
			return err
		}
		target := j.Target
		b, err := v.FinishBackup(c.ID, c.Time, c.Stats, func(anchor string) bool {
			e, ok := s.catalogEntry(strings.TrimPrefix(anchor, model.BackupSnapshotPrefix))
			return ok && e.Target == target
		})
		done = &b
		return err
	})
	if err != nil || done == nil {
		return err
	}
	bs := append(slices.Clone(s.cluster.Backups), *done)
	slices.SortFunc(bs, func(a, b model.Backup) int { return strings.Compare(a.ID, b.ID) })
	s.cluster.Backups = bs
	return nil
}

func (s *State) deleteBackup(c raftlog.DeleteBackup) error {
	if _, ok := s.catalogEntry(c.ID); !ok {
		return fmt.Errorf("backup %q: %w", c.ID, model.ErrNotFound)
	}
	for _, b := range s.cluster.Backups {
		if b.Parent == c.ID {
			return fmt.Errorf("backup %s: backup %s builds on it; remove that first: %w", c.ID, b.ID, model.ErrConflict)
		}
	}
	for _, v := range s.vms {
		if v.Backup != nil && v.Backup.Parent == c.ID {
			return fmt.Errorf("backup %s: vm %q's backup %s builds on it: %w", c.ID, v.Name, v.Backup.ID, model.ErrConflict)
		}
		if v.Restore != nil && v.Restore.Backup == c.ID {
			return fmt.Errorf("backup %s: vm %q is being restored from it: %w", c.ID, v.Name, model.ErrConflict)
		}
	}
	b, _ := s.catalogEntry(c.ID)
	s.dropAnchor(b)
	s.cluster.Backups = slices.DeleteFunc(slices.Clone(s.cluster.Backups), func(b model.Backup) bool { return b.ID == c.ID })
	return nil
}

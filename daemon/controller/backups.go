package controller

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/corralhq/corral/model"
	"github.com/corralhq/corral/raftlog"
)

// BackupEngine copies a VM's disk chains into a target and back;
// daemon/backup does it for real.
type BackupEngine interface {
	// Backup copies each disk's chain from w.Tops[i] (down to, not
	// including, w.StopAt[i] for an incremental) into the target, then
	// writes the manifest: the backup is complete once it returns nil.
	Backup(ctx context.Context, t model.BackupTarget, w BackupWork, progress func(done, total int64)) (model.BackupStats, error)
	// Restore writes disk i of backup chain[len-1] (chain: the full
	// first, then the incrementals) into a new qcow2 image at dst, after
	// checking every chunk; dst appears only when complete.
	Restore(ctx context.Context, t model.BackupTarget, chain []string, disk int, dst string, progress func(done, total int64)) error
	// Collect deletes from the target what no backup of keep needs.
	Collect(ctx context.Context, t model.BackupTarget, keep []string) error
}

// BackupWork is one backup job's work.
type BackupWork struct {
	ID, Parent, Kind string
	VM, VMID         string
	Spec             model.VMSpec
	Tops, StopAt     []string
	BytesPerSec      int64
}

// BackupRequest backs a VM up to a target: incremental when an earlier
// backup of it to the target can be built on, unless Full.
type BackupRequest struct {
	Name        string `json:"name"`
	Target      string `json:"target"`
	Full        bool   `json:"full,omitempty"`
	BytesPerSec int64  `json:"bytes_per_s,omitempty"`
}

// BackupResult is how an attempt of a backup job ended on Host.
type BackupResult struct {
	Name  string            `json:"name"`
	ID    string            `json:"id"`
	Host  string            `json:"host"`
	Error string            `json:"error,omitempty"`
	Stats model.BackupStats `json:"stats"`
}

// RestoreRequest restores backup Backup as a new VM As, placed as any new
// VM, or with InPlace over the (stopped) VM it was taken of; Stopped
// leaves the result stopped.
type RestoreRequest struct {
	Backup  string `json:"backup"`
	As      string `json:"as,omitempty"`
	InPlace bool   `json:"in_place,omitempty"`
	Stopped bool   `json:"stopped,omitempty"`
}

func (l *Leader) backupGate() error {
	if err := l.ready(); err != nil {
		return err
	}
	return raftlog.FeatureBackups.Check(l.store.Cluster(), l.store.Hosts())
}

// PutBackupTarget adds a backup target.
func (l *Leader) PutBackupTarget(ctx context.Context, t model.BackupTarget) (model.BackupTarget, error) {
	if err := l.backupGate(); err != nil {
		return t, err
	}
	t.CreatedAt = l.clock.Now().UTC()
	if err := t.Validate(); err != nil {
		return t, err
	}
	if _, err := l.store.Apply(ctx, raftlog.PutBackupTarget{Target: t}); err != nil {
		return t, err
	}
	l.event(ctx, "backup-target", "", "", "backup target %s added (%s)", t.Name, t.Where())
	return t, nil
}

// DeleteBackupTargetRequest removes a backup target.
type DeleteBackupTargetRequest struct {
	Name  string `json:"name"`
	Force bool   `json:"force,omitempty"`
}

// DeleteBackupTarget removes a backup target (its files stay).
func (l *Leader) DeleteBackupTarget(ctx context.Context, req DeleteBackupTargetRequest) (model.BackupTarget, error) {
	if err := l.backupGate(); err != nil {
		return model.BackupTarget{}, err
	}
	if _, err := l.store.Apply(ctx, raftlog.DeleteBackupTarget{Name: req.Name, Force: req.Force}); err != nil {
		return model.BackupTarget{}, err
	}
	l.event(ctx, "backup-target", "", "", "backup target %s removed (its files stay)", req.Name)
	return model.BackupTarget{Name: req.Name}, nil
}

func newBackupID(now time.Time) string {
	var b [3]byte
	rand.Read(b[:])
	return now.UTC().Format("20060102-150405") + "-" + hex.EncodeToString(b[:])
}

// latestBackup is the newest complete backup of v to target that an
// incremental may build on, if any.
func latestBackup(c model.Cluster, v model.VM, target string) (model.Backup, bool) {
	var best model.Backup
	found := false
	for _, b := range c.Backups {
		if b.VMID == v.ID && b.Target == target && v.IncrementalFrom(b.ID) && (!found || b.Finished.After(best.Finished)) {
			best, found = b, true
		}
	}
	return best, found
}

// StartBackup begins a backup of a VM: the leader takes its anchor
// snapshot, and the VM's host (or, with none, this one) copies it.
func (l *Leader) StartBackup(ctx context.Context, req BackupRequest) (model.BackupJob, error) {
	if err := l.backupGate(); err != nil {
		return model.BackupJob{}, err
	}
	return l.startBackup(ctx, req, time.Time{})
}

// maxIncrementals bounds a chain of incrementals: the next backup is a
// full, so that a schedule's old chains can expire whole.
const maxIncrementals = 6

// startBackup starts a backup, the one of a schedule's slot when slot is
// set.
func (l *Leader) startBackup(ctx context.Context, req BackupRequest, slot time.Time) (model.BackupJob, error) {
	v, err := l.store.VM(req.Name)
	if err != nil {
		return model.BackupJob{}, err
	}
	now := l.clock.Now()
	job := model.BackupJob{ID: newBackupID(now), Target: req.Target, Kind: model.BackupFull, BytesPerSec: req.BytesPerSec, Host: l.backupHost(v)}
	c := l.store.Cluster()
	if p, ok := latestBackup(c, v, req.Target); ok && !req.Full {
		if chain, err := model.BackupChain(c.Backups, p.ID); err == nil && len(chain) <= maxIncrementals {
			job.Kind, job.Parent = model.BackupIncremental, p.ID
		}
	}
	if _, err := l.store.Apply(ctx, raftlog.StartBackup{Name: v.Name, Job: job, Time: now.UTC(), Slot: slot}); err != nil {
		return model.BackupJob{}, err
	}
	how := job.Kind
	if job.Parent != "" {
		how += " on " + job.Parent
	}
	if !slot.IsZero() {
		how += ", scheduled"
	}
	l.event(ctx, "backup-started", job.Host, v.Name, "backup %s to %s (%s)", job.ID, job.Target, how)
	v, err = l.store.VM(v.Name)
	if err != nil || v.Backup == nil {
		return job, err
	}
	return *v.Backup, nil
}

// BackupScheduleRequest sets a VM's backup schedule to Target
// (model.ParseSchedule); an empty Schedule removes it.
type BackupScheduleRequest struct {
	Name     string `json:"name"`
	Target   string `json:"target,omitempty"`
	Schedule string `json:"schedule,omitempty"`
}

// SetBackupSchedule sets or removes a VM's backup schedule.
func (l *Leader) SetBackupSchedule(ctx context.Context, req BackupScheduleRequest) (model.VM, error) {
	if err := l.backupGate(); err != nil {
		return model.VM{}, err
	}
	c := raftlog.SetBackupPolicy{Name: req.Name, Target: req.Target, Time: l.clock.Now().UTC()}
	what := "removed"
	if req.Schedule != "" {
		s, err := model.ParseSchedule(req.Schedule)
		if err != nil {
			return model.VM{}, err
		}
		c.Schedule, what = &s, fmt.Sprintf("set to %s, to %s", s, req.Target)
	}
	if _, err := l.store.Apply(ctx, c); err != nil {
		return model.VM{}, err
	}
	v, err := l.store.VM(req.Name)
	if p := v.BackupPolicy; err == nil && c.Schedule == nil && p != nil && p.FromProject {
		what = fmt.Sprintf("removed: it follows project %s's, %s, to %s", model.ProjectOf(v.Project), p.Schedule, p.Target)
	}
	l.event(ctx, "backup-schedule", "", req.Name, "backup schedule %s", what)
	return v, err
}

// backupWaitPrefix keys a VM's wait after a refused scheduled backup in
// snapWait (its snapshot wait is keyed by its bare name).
const backupWaitPrefix = "backup/"

// runBackupSchedules starts the scheduled backups that are due (each
// slot's once) and removes, one a pass for each VM, a scheduled backup the
// schedule no longer keeps.
func (l *Leader) runBackupSchedules(ctx context.Context, now time.Time) {
	for _, v := range vmsWhere(l.store, func(v *model.VM) bool { return v.BackupPolicy != nil && !v.Deleting }) {
		p := v.BackupPolicy
		key := backupWaitPrefix + v.Name
		if now.Before(l.snapWait[key]) {
			continue
		}
		if slot := p.Schedule.Slot(now); slot.After(p.Last) && !slot.Before(p.Since.Truncate(time.Second)) {
			if v.Backup != nil || v.Restore != nil {
				continue // one at a time: the slot waits for the job under way
			}
			if _, err := l.startBackup(ctx, BackupRequest{Name: v.Name, Target: p.Target}, slot); err != nil {
				if l.snapWait == nil {
					l.snapWait = map[string]time.Time{}
				}
				l.snapWait[key] = now.Add(snapWaitAfterRefusal)
				if !errors.Is(err, model.ErrConflict) {
					l.log.Warn("scheduled backup", "vm", v.Name, "err", err)
				}
			}
			continue
		}
		if id := expiredBackup(l.store.Cluster().Backups, v); id != "" {
			if _, err := l.DeleteBackup(ctx, NameRequest{Name: id}); err == nil {
				l.event(ctx, "backup-expired", "", v.Name, "scheduled backup %s expired (%s)", id, p.Schedule)
			}
		}
	}
}

// expiredBackup names the oldest backup v's schedule made that it no
// longer keeps and no kept backup builds on, if any.
func expiredBackup(catalog []model.Backup, v model.VM) string {
	var mine []model.Backup
	for _, b := range catalog {
		if b.VMID == v.ID && b.Target == v.BackupPolicy.Target && b.Scheduled {
			mine = append(mine, b)
		}
	}
	slices.SortStableFunc(mine, func(a, b model.Backup) int { return a.Finished.Compare(b.Finished) })
	times := make([]time.Time, len(mine))
	for i, b := range mine {
		times[i] = b.Finished
	}
	keep := map[string]bool{}
	for i, k := range v.BackupPolicy.Schedule.Retain(times) {
		if !k {
			continue
		}
		chain, _ := model.BackupChain(catalog, mine[i].ID)
		for _, b := range chain {
			keep[b.ID] = true
		}
	}
	if v.Backup != nil && v.Backup.Parent != "" {
		chain, _ := model.BackupChain(catalog, v.Backup.Parent)
		for _, b := range chain {
			keep[b.ID] = true
		}
	}
	for _, b := range mine {
		if keep[b.ID] {
			continue
		}
		if !slices.ContainsFunc(catalog, func(o model.Backup) bool { return o.Parent == b.ID }) {
			return b.ID
		}
	}
	return ""
}

// backupHost is the host that runs a VM's backup: its own, when active,
// else this one (the files are on shared storage).
func (l *Leader) backupHost(v model.VM) string {
	if v.Host != "" {
		if h, err := l.store.Host(v.Host); err == nil && h.Mode == model.ModeActive {
			return v.Host
		}
	}
	return l.cfg.Self
}

// BackupProgressRequest is how far a backup job has come on Host.
type BackupProgressRequest struct {
	Name  string `json:"name"`
	ID    string `json:"id"`
	Host  string `json:"host"`
	Done  int64  `json:"done"`
	Total int64  `json:"total"`
}

// BackupProgress records a job's progress.
func (l *Leader) BackupProgress(ctx context.Context, r BackupProgressRequest) (struct{}, error) {
	if err := l.ready(); err != nil {
		return struct{}{}, err
	}
	_, err := l.store.Apply(ctx, raftlog.BackupProgress{Name: r.Name, ID: r.ID, Host: r.Host, Done: r.Done, Total: r.Total})
	return struct{}{}, err
}

// backupRetry is how long a failed attempt's job waits for the next.
func backupRetry(attempt int) time.Duration { return time.Duration(attempt) * 10 * time.Second }

// BackupDone records how an attempt of a backup job ended.
func (l *Leader) BackupDone(ctx context.Context, r BackupResult) (model.VM, error) {
	if err := l.ready(); err != nil {
		return model.VM{}, err
	}
	v, err := l.store.VM(r.Name)
	if err != nil {
		return v, err
	}
	if v.Backup == nil || v.Backup.ID != r.ID {
		return v, fmt.Errorf("vm %q: no backup %s under way: %w", r.Name, r.ID, model.ErrConflict)
	}
	now := l.clock.Now()
	c := raftlog.FinishBackup{Name: r.Name, ID: r.ID, Host: r.Host, Time: now.UTC(), Error: model.Clip(r.Error, 512), Stats: r.Stats,
		RetryAt: now.Add(backupRetry(v.Backup.Attempts + 1)).UTC()}
	if _, err := l.store.Apply(ctx, c); err != nil {
		return v, err
	}
	job := *v.Backup
	if r.Error == "" {
		l.event(ctx, "backup", r.Host, v.Name, "backup %s to %s complete (%s): read %d MiB, stored %d MiB new, in %v",
			job.ID, job.Target, job.Kind, r.Stats.Read>>20, r.Stats.Stored>>20, now.Sub(job.StartedAt).Round(100*time.Millisecond))
	} else if job.Attempts+1 >= model.MaxBackupAttempts {
		l.event(ctx, "backup-failed", r.Host, v.Name, "backup %s to %s failed %d times, given up: %s", job.ID, job.Target, job.Attempts+1, c.Error)
	} else {
		l.event(ctx, "backup-failed", r.Host, v.Name, "backup %s to %s, attempt %d of %d failed (retried in %v): %s",
			job.ID, job.Target, job.Attempts+1, model.MaxBackupAttempts, backupRetry(job.Attempts+1), c.Error)
	}
	l.poke()
	return l.store.VM(r.Name)
}

// driveBackups gives jobs waiting for a host (after a failed attempt, once
// their retry time has come) one, and fails the attempt of a job whose
// host has failed or left, so that it is retried elsewhere. It also runs
// the target clean-ups that waited for jobs to end.
func (l *Leader) driveBackups(ctx context.Context) {
	if !raftlog.FeatureBackups.Enabled(l.store.Cluster()) {
		return
	}
	now := l.clock.Now()
	l.runBackupSchedules(ctx, now)
	busy := map[string]bool{}
	for _, v := range vmsWhere(l.store, func(v *model.VM) bool { return v.Backup != nil }) {
		j := v.Backup
		busy[j.Target] = true
		if j.Host == "" {
			if now.Before(j.RetryAt) {
				continue
			}
			host := l.backupHost(v)
			if _, err := l.store.Apply(ctx, raftlog.AssignBackup{Name: v.Name, ID: j.ID, Host: host}); err == nil {
				l.event(ctx, "backup-retry", host, v.Name, "backup %s: attempt %d on %s", j.ID, j.Attempts+1, host)
			}
			continue
		}
		if h, err := l.store.Host(j.Host); err != nil || h.Mode == model.ModeFenced || h.Mode == model.ModeStandby {
			why := fmt.Sprintf("host %s running it failed or left", j.Host)
			l.BackupDone(ctx, BackupResult{Name: v.Name, ID: j.ID, Host: j.Host, Error: why})
		}
	}
	l.mu.Lock()
	var due []string
	for target := range l.collect {
		if !busy[target] {
			delete(l.collect, target)
			due = append(due, target)
		}
	}
	l.mu.Unlock()
	for _, target := range due {
		l.collectTarget(target)
	}
}

// DeleteBackup removes a backup from the catalog, then what no other
// backup needs from its target.
func (l *Leader) DeleteBackup(ctx context.Context, req NameRequest) (model.Backup, error) {
	if err := l.backupGate(); err != nil {
		return model.Backup{}, err
	}
	i := slices.IndexFunc(l.store.Cluster().Backups, func(b model.Backup) bool { return b.ID == req.Name })
	if i < 0 {
		return model.Backup{}, fmt.Errorf("backup %q: %w", req.Name, model.ErrNotFound)
	}
	b := l.store.Cluster().Backups[i]
	if _, err := l.store.Apply(ctx, raftlog.DeleteBackup{ID: b.ID}); err != nil {
		return b, err
	}
	l.event(ctx, "backup-removed", "", b.VM, "backup %s removed from %s", b.ID, b.Target)
	l.mu.Lock()
	if l.collect == nil {
		l.collect = map[string]bool{}
	}
	l.collect[b.Target] = true
	l.mu.Unlock()
	l.poke()
	return b, nil
}

// collectTarget deletes, in the background, the files of target that no
// backup in the catalog needs (never while a job writes to it: its chunks
// are not in a manifest yet).
func (l *Leader) collectTarget(target string) {
	if l.cfg.Backups == nil {
		return
	}
	c := l.store.Cluster()
	i := slices.IndexFunc(c.BackupTargets, func(t model.BackupTarget) bool { return t.Name == target })
	if i < 0 {
		return
	}
	var keep []string
	for _, b := range c.Backups {
		if b.Target == target {
			keep = append(keep, b.ID)
		}
	}
	t := c.BackupTargets[i]
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Minute)
		defer cancel()
		if err := l.cfg.Backups.Collect(ctx, t, keep); err != nil {
			l.log.Warn("backup target clean-up", "target", t.Name, "err", err)
		}
	}()
}

// RestoreVM creates a VM from a backup: the spec it had, with blank disks
// of the backed-up sizes (its images are not needed) and new MAC
// addresses; its host restores the disks before the first start.
func (l *Leader) RestoreVM(ctx context.Context, req RestoreRequest) (model.VM, error) {
	if err := l.backupGate(); err != nil {
		return model.VM{}, err
	}
	c := l.store.Cluster()
	chain, err := model.BackupChain(c.Backups, req.Backup)
	if err != nil {
		return model.VM{}, err
	}
	b := chain[len(chain)-1]
	if req.InPlace == (req.As != "") {
		return model.VM{}, fmt.Errorf("restore: name a new VM, or restore in place: %w", model.ErrInvalid)
	}
	spec := b.Spec.Clone()
	if req.InPlace {
		old, err := l.replaceForRestore(ctx, b)
		if err != nil {
			return model.VM{}, err
		}
		spec, req.As = old.Spec.Clone(), old.Name // today's settings and MAC addresses; the backup's disks
		if len(spec.Disks) != len(b.DiskSizes) {
			return model.VM{}, fmt.Errorf("vm %q has %d disks, backup %s %d: %w", old.Name, len(spec.Disks), b.ID, len(b.DiskSizes), model.ErrConflict)
		}
	} else {
		for i := range spec.NICs {
			spec.NICs[i].MAC = ""
		}
	}
	if len(b.DiskSizes) != len(spec.Disks) {
		return model.VM{}, fmt.Errorf("backup %s: %d disk sizes for %d disks: %w", b.ID, len(b.DiskSizes), len(spec.Disks), model.ErrInvalid)
	}
	for i := range spec.Disks {
		spec.Disks[i] = model.DiskSpec{SizeMiB: (b.DiskSizes[i] + 1<<20 - 1) >> 20}
	}
	v, err := l.createVM(ctx, CreateVMRequest{Name: req.As, Spec: spec, Stopped: req.Stopped, Project: b.Project,
		restore: &model.RestoreSource{Backup: b.ID, Target: b.Target}}, "", 0)
	if err != nil {
		return v, err
	}
	l.event(ctx, "restoring", v.Host, v.Name, "from backup %s of %s (%s, %d in its chain)", b.ID, b.VM, b.Target, len(chain))
	return v, nil
}

// restoreReplaceTimeout bounds the wait for a VM's host to delete it
// before it is restored in place.
const restoreReplaceTimeout = 2 * time.Minute

// replaceForRestore deletes the stopped VM backup b was taken of, and
// waits until its host has deleted its domain, disks and snapshots: a
// restore in place is a new incarnation of the VM (same name, settings
// and MAC addresses; the backup's disks; a new ID, so its next backup is
// a full one).
func (l *Leader) replaceForRestore(ctx context.Context, b model.Backup) (model.VM, error) {
	v, err := l.store.VM(b.VM)
	if err != nil {
		return v, fmt.Errorf("restore in place: %w (restore it as a new VM)", err)
	}
	switch {
	case v.ID != b.VMID:
		return v, fmt.Errorf("restore in place: vm %q is not the VM backup %s was taken of (that one is gone): restore it as a new VM: %w", v.Name, b.ID, model.ErrConflict)
	case !v.SnapshotOffline():
		return v, fmt.Errorf("restore in place: vm %q is %s: stop it first: %w", v.Name, v.Actual.State, model.ErrConflict)
	case v.Backup != nil:
		return v, fmt.Errorf("restore in place: vm %q's backup %s is under way: %w", v.Name, v.Backup.ID, model.ErrConflict)
	case v.Group != "":
		return v, fmt.Errorf("restore in place: vm %q is a member of group %s, which keeps its members: %w", v.Name, v.Group, model.ErrConflict)
	}
	if _, err := l.DeleteVM(ctx, DeleteVMRequest{Name: v.Name}); err != nil {
		return v, err
	}
	deadline := l.clock.Now().Add(restoreReplaceTimeout)
	for {
		if _, err := l.store.VM(v.Name); err != nil {
			return v, nil
		}
		if l.clock.Now().After(deadline) {
			return v, fmt.Errorf("restore in place: the host of vm %q has not deleted it within %v (it is being deleted): %w", v.Name, restoreReplaceTimeout, model.ErrUnavailable)
		}
		select {
		case <-ctx.Done():
			return v, ctx.Err()
		case <-l.clock.After(100 * time.Millisecond):
		}
	}
}

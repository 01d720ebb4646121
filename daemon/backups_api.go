package daemon

import (
	"cmp"
	"context"
	"fmt"
	"slices"
	"time"

	"github.com/corralhq/corral/api"
	"github.com/corralhq/corral/daemon/adminapi"
	"github.com/corralhq/corral/daemon/controller"
	"github.com/corralhq/corral/model"
	"github.com/corralhq/corral/raftlog"
)

// Backups of VMs (model/backup.go): targets and the catalog read from this
// host's copy of the state, changes forwarded to the leader. The leader
// records them; the host running a job copies the disks (daemon/backup,
// controller.BackupRunner), and a restored VM's host writes them back.

func backupTargetView(t model.BackupTarget) api.BackupTarget {
	out := api.BackupTarget{Name: t.Name, Dir: t.Dir, Where: t.Where(), CreatedAt: t.CreatedAt}
	if s := t.S3; s != nil { // never the secret key
		out.S3 = &api.S3{Endpoint: s.Endpoint, Bucket: s.Bucket, Prefix: s.Prefix, Region: s.Region, AccessKey: s.AccessKey, Insecure: s.Insecure}
	}
	return out
}

func backupJobView(j model.BackupJob) api.BackupJob {
	return api.BackupJob{ID: j.ID, Target: j.Target, Kind: j.Kind, Parent: j.Parent, Host: j.Host, StartedAt: j.StartedAt,
		Attempts: j.Attempts, RetryAt: j.RetryAt, BytesPerSec: j.BytesPerSec, Done: j.Done, Total: j.Total, Message: j.Message}
}

func backupView(b model.Backup) api.Backup {
	return api.Backup{ID: b.ID, VM: b.VM, VMID: b.VMID, Target: b.Target, Kind: b.Kind, Parent: b.Parent, Project: model.ProjectOf(b.Project),
		StartedAt: b.StartedAt, Finished: b.Finished, Size: b.Size, Read: b.Read, Stored: b.Stored, DiskSizes: slices.Clone(b.DiskSizes),
		Scheduled: b.Scheduled}
}

// backupGate refuses a backup change before it is forwarded while a host
// of an older protocol is in the cluster: its leader would not know the
// methods, its replicas would drop the jobs and the catalog.
func (b backend) backupGate() error {
	return raftlog.FeatureBackups.Check(b.d.store.Cluster(), b.d.store.Hosts())
}

// backupTarget is a target as this host's copy shows it.
func (b backend) backupTarget(name string) (model.BackupTarget, bool) {
	ts := b.d.store.Cluster().BackupTargets
	i := slices.IndexFunc(ts, func(t model.BackupTarget) bool { return t.Name == name })
	if i < 0 {
		return model.BackupTarget{}, false
	}
	return ts[i], true
}

// catalogEntry is a complete backup as this host's copy shows it.
func (b backend) catalogEntry(id string) (model.Backup, bool) {
	bs := b.d.store.Cluster().Backups
	i := slices.IndexFunc(bs, func(e model.Backup) bool { return e.ID == id })
	if i < 0 {
		return model.Backup{}, false
	}
	return bs[i], true
}

func (b backend) BackupTargets(ctx context.Context) ([]api.BackupTarget, error) {
	ts := b.d.store.Cluster().BackupTargets
	out := make([]api.BackupTarget, 0, len(ts))
	for _, t := range ts {
		out = append(out, backupTargetView(t))
	}
	return out, nil
}

func (b backend) CreateBackupTarget(ctx context.Context, req api.BackupTargetCreateRequest) (api.BackupTarget, error) {
	if err := b.backupGate(); err != nil {
		return api.BackupTarget{}, err
	}
	want := model.BackupTarget{Name: req.Name, Dir: req.Dir}
	if s := req.S3; s != nil {
		want.S3 = &model.S3Target{Endpoint: s.Endpoint, Bucket: s.Bucket, Prefix: s.Prefix, Region: s.Region,
			AccessKey: s.AccessKey, SecretKey: s.SecretKey, Insecure: s.Insecure}
	}
	if err := want.Validate(); err != nil {
		return api.BackupTarget{}, err
	}
	// This host reaches it (and the bucket exists) before the cluster
	// records it.
	cctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	err := backupEngine{}.Check(cctx, want)
	cancel()
	if err != nil {
		return api.BackupTarget{}, fmt.Errorf("backup target %s: %w: %w", want.Name, err, model.ErrInvalid)
	}
	t, err := forward(ctx, b.d, mBackupTargetPut, want)
	if err != nil {
		return api.BackupTarget{}, err
	}
	b.d.waitState(ctx, func() bool {
		cur, ok := b.backupTarget(t.Name)
		return ok && cur.CreatedAt.Equal(t.CreatedAt)
	})
	return backupTargetView(t), nil
}

func (b backend) DeleteBackupTarget(ctx context.Context, name string, force bool) (api.BackupTarget, error) {
	if err := b.backupGate(); err != nil {
		return api.BackupTarget{}, err
	}
	before, known := b.backupTarget(name)
	t, err := forward(ctx, b.d, mBackupTargetDelete, controller.DeleteBackupTargetRequest{Name: name, Force: force})
	if err != nil {
		return api.BackupTarget{}, err
	}
	b.d.waitState(ctx, func() bool { _, ok := b.backupTarget(name); return !ok })
	if known {
		return backupTargetView(before), nil
	}
	return backupTargetView(t), nil
}

// BackupVM starts a backup of a VM: it answers with the job as the leader
// recorded it, once this host's copy shows it (or shows it complete).
func (b backend) BackupVM(ctx context.Context, name string, req api.VMBackupRequest) (api.BackupJob, error) {
	if err := b.scopedVM(ctx, name); err != nil {
		return api.BackupJob{}, err
	}
	if err := b.backupGate(); err != nil {
		return api.BackupJob{}, err
	}
	j, err := forward(ctx, b.d, mVMBackup, controller.BackupRequest{Name: name, Target: req.Target, Full: req.Full, BytesPerSec: req.BytesPerSec})
	if err != nil {
		return api.BackupJob{}, err
	}
	b.d.waitState(ctx, func() bool {
		cur, err := b.d.store.VM(name)
		if err != nil {
			return true
		}
		if cur.Backup != nil && cur.Backup.ID == j.ID {
			return true
		}
		_, done := b.catalogEntry(j.ID)
		return done
	})
	if cur, err := b.d.store.VM(name); err == nil && cur.Backup != nil && cur.Backup.ID == j.ID {
		j = *cur.Backup
	}
	return backupJobView(j), nil
}

// Backups lists the catalog, newest first: a VM's (by name) or a target's
// when asked; a client confined to a project sees its project's.
func (b backend) Backups(ctx context.Context, vm, target string) ([]api.Backup, error) {
	scope := adminapi.Scope(ctx)
	bs := slices.Clone(b.d.store.Cluster().Backups)
	slices.SortStableFunc(bs, func(x, y model.Backup) int {
		if c := y.Finished.Compare(x.Finished); c != 0 {
			return c
		}
		return cmp.Compare(y.ID, x.ID)
	})
	out := make([]api.Backup, 0, len(bs))
	for _, e := range bs {
		if (vm == "" || e.VM == vm) && (target == "" || e.Target == target) && visible(scope, e.Project) {
			out = append(out, backupView(e))
		}
	}
	return out, nil
}

// scopedBackup finds a backup in the catalog that the client may see
// (another project's is not found, as it is not shown).
func (b backend) scopedBackup(ctx context.Context, id string) (model.Backup, error) {
	e, ok := b.catalogEntry(id)
	if !ok || !visible(adminapi.Scope(ctx), e.Project) {
		return model.Backup{}, fmt.Errorf("backup %q: %w", id, model.ErrNotFound)
	}
	return e, nil
}

func (b backend) Backup(ctx context.Context, id string) (api.Backup, error) {
	e, err := b.scopedBackup(ctx, id)
	if err != nil {
		return api.Backup{}, err
	}
	return backupView(e), nil
}

// DeleteBackup removes a backup from the catalog; the leader then deletes
// from its target what no other backup needs.
func (b backend) DeleteBackup(ctx context.Context, id string) (api.Backup, error) {
	if adminapi.Scope(ctx) != "" {
		if _, err := b.scopedBackup(ctx, id); err != nil {
			return api.Backup{}, err
		}
	}
	if err := b.backupGate(); err != nil {
		return api.Backup{}, err
	}
	e, err := forward(ctx, b.d, mBackupDelete, controller.NameRequest{Name: id})
	if err != nil {
		return api.Backup{}, err
	}
	b.d.waitState(ctx, func() bool { _, ok := b.catalogEntry(id); return !ok })
	return backupView(e), nil
}

// RestoreBackup creates a new VM, in the backup's project, from a backup;
// its host restores the disks before the first start.
func (b backend) RestoreBackup(ctx context.Context, id string, req api.RestoreRequest) (api.VM, error) {
	if adminapi.Scope(ctx) != "" {
		if _, err := b.scopedBackup(ctx, id); err != nil {
			return api.VM{}, err
		}
	}
	if err := b.backupGate(); err != nil {
		return api.VM{}, err
	}
	v, err := forward(ctx, b.d, mVMRestore, controller.RestoreRequest{Backup: id, As: req.As, InPlace: req.InPlace, Stopped: req.Stopped})
	return b.afterWrite(ctx, v, err)
}

// SetBackupSchedule sets (or, with an empty schedule, removes) a VM's
// backup schedule to a target.
func (b backend) SetBackupSchedule(ctx context.Context, name string, req api.BackupScheduleRequest) (api.VM, error) {
	if err := b.scopedVM(ctx, name); err != nil {
		return api.VM{}, err
	}
	if err := b.backupGate(); err != nil {
		return api.VM{}, err
	}
	v, err := forward(ctx, b.d, mVMBackupSchedule, controller.BackupScheduleRequest{Name: name, Target: req.Target, Schedule: req.Schedule})
	if err != nil {
		return api.VM{}, err
	}
	return b.afterPolicyWrite(ctx, name, func(cur model.VM) bool {
		c, w := cur.BackupPolicy, v.BackupPolicy
		return c == nil && w == nil || c != nil && w != nil && c.Target == w.Target && c.Since.Equal(w.Since) && c.Schedule == w.Schedule
	})
}

// BackupTargetCredentials returns an S3 target's keys (the route is an
// admin's).
func (b backend) BackupTargetCredentials(ctx context.Context, name string) (api.S3Credentials, error) {
	t, ok := b.backupTarget(name)
	if !ok {
		return api.S3Credentials{}, fmt.Errorf("backup target %q: %w", name, model.ErrNotFound)
	}
	if t.S3 == nil {
		return api.S3Credentials{}, fmt.Errorf("backup target %q is a directory; it has no credentials: %w", name, model.ErrInvalid)
	}
	return api.S3Credentials{AccessKey: t.S3.AccessKey, SecretKey: t.S3.SecretKey}, nil
}

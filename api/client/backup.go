package client

import (
	"context"
	"net/http"
	"net/url"

	"github.com/corralhq/corral/api"
)

func backupPath(id string) string { return "/v1/backups/" + url.PathEscape(id) }

// BackupTargets lists the backup targets.
func (c *Client) BackupTargets(ctx context.Context) ([]api.BackupTarget, error) {
	var out []api.BackupTarget
	err := c.Do(ctx, http.MethodGet, "/v1/backup-targets", nil, &out)
	return out, err
}

// CreateBackupTarget adds a backup target (an admin's).
func (c *Client) CreateBackupTarget(ctx context.Context, req api.BackupTargetCreateRequest) (api.BackupTarget, error) {
	var out api.BackupTarget
	err := c.Do(ctx, http.MethodPost, "/v1/backup-targets", req, &out)
	return out, err
}

// BackupTargetCredentials returns an S3 target's keys (admins only).
func (c *Client) BackupTargetCredentials(ctx context.Context, name string) (api.S3Credentials, error) {
	var out api.S3Credentials
	err := c.Do(ctx, http.MethodGet, "/v1/backup-targets/"+url.PathEscape(name)+"/credentials", nil, &out)
	return out, err
}

// DeleteBackupTarget removes a backup target (its files stay); one that
// holds backups only with force, which drops them from the catalog.
func (c *Client) DeleteBackupTarget(ctx context.Context, name string, force bool) (api.BackupTarget, error) {
	var out api.BackupTarget
	p := "/v1/backup-targets/" + url.PathEscape(name)
	if force {
		p += "?force=true"
	}
	err := c.Do(ctx, http.MethodDelete, p, nil, &out)
	return out, err
}

// BackupVM starts a backup of a VM; it returns the job once recorded. The
// VM shows the job (VM.Backup) while it is under way; once complete the
// backup is in the catalog (Backup).
func (c *Client) BackupVM(ctx context.Context, vm string, req api.VMBackupRequest) (api.BackupJob, error) {
	var out api.BackupJob
	err := c.Do(ctx, http.MethodPost, vmPath(vm)+"/backup", req, &out)
	return out, err
}

// Backups lists complete backups, newest first: a VM's and a target's
// only when vm or target is not empty.
func (c *Client) Backups(ctx context.Context, vm, target string) ([]api.Backup, error) {
	q := url.Values{}
	if vm != "" {
		q.Set("vm", vm)
	}
	if target != "" {
		q.Set("target", target)
	}
	p := "/v1/backups"
	if len(q) > 0 {
		p += "?" + q.Encode()
	}
	var out []api.Backup
	err := c.Do(ctx, http.MethodGet, p, nil, &out)
	return out, err
}

// Backup returns one complete backup.
func (c *Client) Backup(ctx context.Context, id string) (api.Backup, error) {
	var out api.Backup
	err := c.Do(ctx, http.MethodGet, backupPath(id), nil, &out)
	return out, err
}

// DeleteBackup removes a backup from the catalog (not one another builds
// on); the leader then deletes from its target what no other needs.
func (c *Client) DeleteBackup(ctx context.Context, id string) (api.Backup, error) {
	var out api.Backup
	err := c.Do(ctx, http.MethodDelete, backupPath(id), nil, &out)
	return out, err
}

// RestoreBackup creates a new VM from a backup; it returns once the VM is
// recorded. Its host restores the disks (the VM's message says how far,
// RestoringFrom is set until they are), then starts it unless stopped.
func (c *Client) RestoreBackup(ctx context.Context, id string, req api.RestoreRequest) (api.VM, error) {
	var out api.VM
	err := c.Do(ctx, http.MethodPost, backupPath(id)+"/restore", req, &out)
	return out, err
}

// SetBackupSchedule sets a VM's backup schedule to a target, e.g. "daily
// 02:00 keep 7 daily 4 weekly" (api.BackupScheduleRequest); an empty
// schedule removes it (target is then not needed). The VM comes back with
// its schedule as the cluster records it (VM.BackupSchedule, BackupTarget).
func (c *Client) SetBackupSchedule(ctx context.Context, vm, target, schedule string) (api.VM, error) {
	var out api.VM
	err := c.Do(ctx, http.MethodPut, vmPath(vm)+"/backup-schedule", api.BackupScheduleRequest{Target: target, Schedule: schedule}, &out)
	return out, err
}

// SetProjectBackupSchedule sets a project's backup schedule to a target
// (as SetBackupSchedule's); an empty schedule removes it. Each VM of the
// project without a schedule of its own follows it (VM.BackupScheduleFrom).
// The project comes back with its schedule as the cluster records it.
func (c *Client) SetProjectBackupSchedule(ctx context.Context, project, target, schedule string) (api.Project, error) {
	var out api.Project
	err := c.Do(ctx, http.MethodPut, "/v1/projects/"+url.PathEscape(project)+"/backup-schedule", api.BackupScheduleRequest{Target: target, Schedule: schedule}, &out)
	return out, err
}

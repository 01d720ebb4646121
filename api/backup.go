package api

import "time"

// Backups copy a VM's disks, while the guest runs, into a backup target as
// content-addressed chunks: the first backup of a VM to a target is full,
// the next ones incremental (only what the guest wrote since the previous
// one), unless a full one is asked for. A backup is restored as a new VM.

// BackupTarget is where backups are stored: a directory with the same
// path on every host (local disk, or NFS shared by the hosts), or a bucket
// of S3-compatible object storage (its secret key is never shown here:
// GET /v1/backup-targets/{name}/credentials, for admins).
type BackupTarget struct {
	Name string `json:"name"`
	Dir  string `json:"dir,omitempty"`
	S3   *S3    `json:"s3,omitempty"`
	// Where says where it stores, in a word (the directory, or the
	// bucket's URL and prefix).
	Where     string    `json:"where"`
	CreatedAt time.Time `json:"created_at"`
}

// S3 is a bucket on S3-compatible object storage.
type S3 struct {
	// Endpoint is host:port of the service.
	Endpoint string `json:"endpoint"`
	Bucket   string `json:"bucket"`
	// Prefix starts every object's key ("" or ending in /).
	Prefix    string `json:"prefix,omitempty"`
	Region    string `json:"region,omitempty"`
	AccessKey string `json:"access_key"`
	// SecretKey is sent when a target is added, and shown to admins only
	// (S3Credentials).
	SecretKey string `json:"secret_key,omitempty"`
	// Insecure speaks plain HTTP; the default is HTTPS.
	Insecure bool `json:"insecure,omitempty"`
}

// S3Credentials are an S3 target's keys (admins only).
type S3Credentials struct {
	AccessKey string `json:"access_key"`
	SecretKey string `json:"secret_key"`
}

// BackupTargetCreateRequest is the body of POST /v1/backup-targets: a
// directory or an S3 bucket (which must exist).
type BackupTargetCreateRequest struct {
	Name string `json:"name"`
	// Dir is an absolute, clean path other than /.
	Dir string `json:"dir,omitempty"`
	S3  *S3    `json:"s3,omitempty"`
}

// BackupJob is a backup of a VM under way (VM.Backup, and the answer to
// POST /v1/vms/{name}/backup). Once it is complete the job is gone from
// the VM and the backup is in the catalog (GET /v1/backups/{id}); a job
// that failed MaxAttempts times is gone too, and a backup-failed event
// says why.
type BackupJob struct {
	ID     string `json:"id"`
	Target string `json:"target"`
	Kind   string `json:"kind"` // full or incremental
	// Parent is the backup an incremental builds on.
	Parent string `json:"parent,omitempty"`
	// Host runs the job; empty while it waits for one (after a failed
	// attempt, until RetryAt).
	Host      string    `json:"host,omitempty"`
	StartedAt time.Time `json:"started_at"`
	// Attempts are the attempts that failed so far (3 give it up).
	Attempts int       `json:"attempts"`
	RetryAt  time.Time `json:"retry_at,omitzero"`
	// BytesPerSec limits how fast the job reads the disks (0: no limit).
	BytesPerSec int64 `json:"bytes_per_s,omitempty"`
	// Done and Total are the job's progress, in bytes of the disks'
	// virtual size.
	Done  int64 `json:"done,omitempty"`
	Total int64 `json:"total,omitempty"`
	// Message says why the last attempt failed.
	Message string `json:"message,omitempty"`
}

// Backup is a complete backup in the catalog.
type Backup struct {
	ID string `json:"id"`
	// VM and VMID are the VM backed up (it may be gone since).
	VM     string `json:"vm"`
	VMID   string `json:"vm_id"`
	Target string `json:"target"`
	Kind   string `json:"kind"` // full or incremental
	// Parent is the backup an incremental builds on (a restore needs its
	// whole chain, down to the full one).
	Parent string `json:"parent,omitempty"`
	// Project is the VM's when it was backed up; a restore creates the
	// new VM in it.
	Project   string    `json:"project"`
	StartedAt time.Time `json:"started_at"`
	Finished  time.Time `json:"finished"`
	// Size is the disks' virtual size; Read what the backup read of them;
	// Stored the bytes of new chunks the target got.
	Size   int64 `json:"size"`
	Read   int64 `json:"read"`
	Stored int64 `json:"stored"`
	// DiskSizes are each disk's virtual size in bytes.
	DiskSizes []int64 `json:"disk_sizes"`
	// Scheduled: the VM's backup schedule made it (and removes it once
	// the schedule no longer keeps it).
	Scheduled bool `json:"scheduled,omitempty"`
}

// VMBackupRequest is the body of POST /v1/vms/{name}/backup: a backup to
// Target, incremental when an earlier backup of the VM to it can be built
// on, unless Full.
type VMBackupRequest struct {
	Target string `json:"target"`
	Full   bool   `json:"full,omitempty"`
	// BytesPerSec limits how fast the disks are read (0: no limit).
	BytesPerSec int64 `json:"bytes_per_s,omitempty"`
}

// BackupScheduleRequest is the body of PUT /v1/vms/{name}/backup-schedule:
// back the VM up to Target on Schedule (as SnapshotScheduleRequest's, e.g.
// "daily 02:00 keep 7 daily 4 weekly"), incremental where the chain allows;
// the backups the schedule made and no longer keeps are removed (never one
// a kept backup builds on, never the newest, never one made otherwise).
// An empty Schedule removes the schedule (Target is then not needed).
// PUT /v1/projects/{name}/backup-schedule takes it too: the project's
// schedule, which each of its VMs without one of its own follows.
type BackupScheduleRequest struct {
	Target   string `json:"target,omitempty"`
	Schedule string `json:"schedule"`
}

// RestoreRequest is the body of POST /v1/backups/{id}/restore: the backup
// restored as a new VM As (in the backup's project, placed as any new VM),
// started once its disks are restored unless Stopped.
type RestoreRequest struct {
	// As names a new VM; or InPlace restores over the stopped VM the
	// backup was taken of (a new incarnation: its name, settings and MAC
	// addresses, the backup's disks; its snapshots are gone).
	As      string `json:"as,omitempty"`
	InPlace bool   `json:"in_place,omitempty"`
	Stopped bool   `json:"stopped,omitempty"`
}

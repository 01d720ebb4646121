package model

import (
	"fmt"
	"net"
	"path/filepath"
	"slices"
	"strings"
	"time"
)

// Backups (raftlog.FeatureBackups): a VM's disks are copied, while the
// guest runs, into a backup target as content-addressed chunks and a
// manifest (daemon/backup). A backup reads a frozen layer of the VM's disk
// chain: the leader takes a snapshot named BackupSnapshotPrefix and the
// backup's ID (the anchor), and the VM's host reads its layer. A full backup
// reads the whole chain under it; an incremental only the layers above the
// previous backup's anchor, which hold exactly what the guest wrote since
// (merges only ever commit a layer into the one under it, and never into
// an anchor, which a snapshot holds). Once a backup is complete the
// previous anchor is removed; the latest stays, for the next incremental.

// BackupTarget is where backups are stored: a directory, or a bucket of
// S3-compatible object storage (exactly one).
type BackupTarget struct {
	Name string `json:"name"`
	// Dir is a directory with the same path on every host (local disk,
	// or NFS shared by the hosts).
	Dir       string    `json:"dir,omitempty"`
	S3        *S3Target `json:"s3,omitempty"`
	CreatedAt time.Time `json:"created_at"`
}

// S3Target is a bucket on S3-compatible object storage.
type S3Target struct {
	// Endpoint is host:port of the service.
	Endpoint string `json:"endpoint"`
	Bucket   string `json:"bucket"`
	// Prefix starts every object's key ("" or a key ending in "/").
	Prefix    string `json:"prefix,omitempty"`
	Region    string `json:"region,omitempty"`
	AccessKey string `json:"access_key"`
	// SecretKey is a secret: the admin API shows it to admins only, and
	// events and logs never carry it.
	SecretKey string `json:"secret_key"`
	// Insecure speaks plain HTTP (a server on loopback or a private
	// network); the default is HTTPS.
	Insecure bool `json:"insecure,omitempty"`
}

// Limits of backups.
const (
	MaxBackupTargets = 16
	// MaxBackups bounds the catalog of complete backups in state.
	MaxBackups = 4096
	// MaxBackupAttempts is how many times a backup job runs before it
	// fails for good.
	MaxBackupAttempts = 3
	// BackupSnapshotPrefix starts the names of backups' anchor snapshots.
	BackupSnapshotPrefix = "backup-"
	maxBackupMessage     = 512
	maxS3Field           = 256
)

// Validate checks a target.
func (t BackupTarget) Validate() error {
	if err := ValidateName("backup target", t.Name); err != nil {
		return err
	}
	bad := func(format string, args ...any) error {
		return fmt.Errorf("backup target %q: %s: %w", t.Name, fmt.Sprintf(format, args...), ErrInvalid)
	}
	switch {
	case (t.Dir == "") == (t.S3 == nil):
		return bad("give a directory or an S3 bucket")
	case t.S3 != nil:
		return t.S3.validate(bad)
	case !filepath.IsAbs(t.Dir) || filepath.Clean(t.Dir) != t.Dir || t.Dir == "/" || len(t.Dir) > maxPathLen || strings.ContainsAny(t.Dir, "\x00\n"):
		return bad("directory %q must be a clean absolute path other than /", t.Dir)
	}
	return nil
}

func (s S3Target) validate(bad func(string, ...any) error) error {
	host, port, err := net.SplitHostPort(s.Endpoint)
	if err != nil || host == "" || port == "" || len(s.Endpoint) > maxS3Field || strings.ContainsAny(s.Endpoint, "/ \x00") {
		return bad("s3 endpoint %q is not host:port", s.Endpoint)
	}
	if n := len(s.Bucket); n < 3 || n > 63 {
		return bad("s3 bucket %q: 3 to 63 characters", s.Bucket)
	}
	for i, r := range s.Bucket {
		if !(r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || i > 0 && i < len(s.Bucket)-1 && (r == '-' || r == '.')) {
			return bad("s3 bucket %q: a-z, 0-9, and - . inside", s.Bucket)
		}
	}
	if s.Prefix != "" {
		if len(s.Prefix) > maxS3Field || !strings.HasSuffix(s.Prefix, "/") || strings.HasPrefix(s.Prefix, "/") || strings.Contains(s.Prefix, "//") || strings.ContainsAny(s.Prefix, "\x00\n ") {
			return bad("s3 prefix %q: a relative key ending in /", s.Prefix)
		}
	}
	for _, f := range []struct{ what, v string }{{"region", s.Region}, {"access key", s.AccessKey}, {"secret key", s.SecretKey}} {
		if len(f.v) > maxS3Field || strings.ContainsAny(f.v, "\x00\n") {
			return bad("s3 %s: at most %d characters on one line", f.what, maxS3Field)
		}
	}
	if s.AccessKey == "" || s.SecretKey == "" {
		return bad("s3 needs an access key and a secret key")
	}
	return nil
}

// Where says where a target stores, without credentials (events, lists).
func (t BackupTarget) Where() string {
	if t.S3 != nil {
		scheme := "https"
		if t.S3.Insecure {
			scheme = "http"
		}
		return fmt.Sprintf("s3 %s://%s/%s/%s", scheme, t.S3.Endpoint, t.S3.Bucket, t.S3.Prefix)
	}
	return t.Dir
}

// Backup kinds.
const (
	BackupFull        = "full"
	BackupIncremental = "incremental"
)

// BackupJob is a backup of a VM under way.
type BackupJob struct {
	ID     string `json:"id"`
	Target string `json:"target"`
	Kind   string `json:"kind"`
	// Parent is the backup an incremental builds on.
	Parent string `json:"parent,omitempty"`
	// Host runs the job; empty while it waits for one.
	Host      string    `json:"host,omitempty"`
	StartedAt time.Time `json:"started_at"`
	Attempts  int       `json:"attempts"`
	// RetryAt: after a failed attempt, the next waits until then.
	RetryAt time.Time `json:"retry_at,omitzero"`
	// Scheduled: the VM's backup schedule started it (only those are
	// removed by it).
	Scheduled bool `json:"scheduled,omitempty"`
	// BytesPerSec limits how fast the job reads the disks (0: no limit).
	BytesPerSec int64 `json:"bytes_per_s,omitempty"`
	// Done and Total are the job's progress in bytes of the disks' size.
	Done    int64  `json:"done,omitempty"`
	Total   int64  `json:"total,omitempty"`
	Message string `json:"message,omitempty"`
}

// Snapshot names the job's anchor snapshot.
func (j BackupJob) Snapshot() string { return BackupSnapshotPrefix + j.ID }

// Backup is a complete backup in the catalog.
type Backup struct {
	ID     string `json:"id"`
	VM     string `json:"vm"`
	VMID   string `json:"vm_id"`
	Target string `json:"target"`
	Kind   string `json:"kind"`
	Parent string `json:"parent,omitempty"`
	// Project of the VM when it was backed up.
	Project   string    `json:"project,omitempty"`
	StartedAt time.Time `json:"started_at"`
	Finished  time.Time `json:"finished"`
	// Size is the disks' virtual size; Read what was read of them, Stored
	// the bytes of new chunks the target got.
	Size   int64 `json:"size"`
	Read   int64 `json:"read"`
	Stored int64 `json:"stored"`
	// DiskSizes are each disk's virtual size.
	DiskSizes []int64 `json:"disk_sizes"`
	// Scheduled: the VM's backup schedule made it.
	Scheduled bool `json:"scheduled,omitempty"`
	// Spec is the VM's spec at the time (a restore as a new VM uses it).
	Spec VMSpec `json:"spec"`
}

// BackupStats are what a backup job read and stored.
type BackupStats struct {
	Read      int64   `json:"read"`
	Stored    int64   `json:"stored"`
	DiskSizes []int64 `json:"disk_sizes"`
}

// ValidateBackupID checks a backup's ID: it names files on targets.
func ValidateBackupID(id string) error {
	if len(id) == 0 || len(id) > 40 {
		return fmt.Errorf("backup id %q: 1 to 40 characters: %w", id, ErrInvalid)
	}
	for _, r := range id {
		if !(r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r == '-') {
			return fmt.Errorf("backup id %q: only a-z, 0-9 and -: %w", id, ErrInvalid)
		}
	}
	return nil
}

// BackupChain returns the backups id builds on, oldest (the full) first, and
// id's own entry last.
func BackupChain(catalog []Backup, id string) ([]Backup, error) {
	var out []Backup
	for id != "" {
		i := slices.IndexFunc(catalog, func(b Backup) bool { return b.ID == id })
		if i < 0 {
			return nil, fmt.Errorf("backup %q: %w", id, ErrNotFound)
		}
		if len(out) > MaxBackups {
			return nil, fmt.Errorf("backup %q: its chain loops: %w", id, ErrInvalid)
		}
		out = append(out, catalog[i])
		id = catalog[i].Parent
	}
	slices.Reverse(out)
	if out[0].Kind != BackupFull {
		return nil, fmt.Errorf("backup %q: its chain does not start with a full backup: %w", out[len(out)-1].ID, ErrInvalid)
	}
	return out, nil
}

// StartBackup begins job on v: it takes the anchor snapshot, and an
// incremental checks that its parent's anchor is still under the disks'
// active layer (else only a full backup can follow). With slot set, the
// job is the one of that slot of v's backup schedule.
func (v *VM) StartBackup(job BackupJob, at, slot time.Time) error {
	if v.Backup != nil {
		return fmt.Errorf("vm %q: backup %s is under way: %w", v.Name, v.Backup.ID, ErrConflict)
	}
	if v.Restore != nil {
		return fmt.Errorf("vm %q: its disks are not restored yet (it restores them at its first start): %w", v.Name, ErrConflict)
	}
	if err := ValidateBackupID(job.ID); err != nil {
		return err
	}
	switch job.Kind {
	case BackupFull:
		job.Parent = ""
	case BackupIncremental:
		if !v.IncrementalFrom(job.Parent) {
			return fmt.Errorf("vm %q: backup %s's snapshot is gone or not under the disks any more; take a full backup: %w", v.Name, job.Parent, ErrConflict)
		}
	default:
		return fmt.Errorf("vm %q: backup kind %q: %w", v.Name, job.Kind, ErrInvalid)
	}
	if job.BytesPerSec < 0 {
		return fmt.Errorf("vm %q: negative bandwidth limit: %w", v.Name, ErrInvalid)
	}
	job.Scheduled = !slot.IsZero()
	if job.Scheduled {
		if err := v.startScheduled(job.Target, slot); err != nil {
			return err
		}
	}
	if err := v.TakeSnapshot(job.Snapshot(), at); err != nil {
		return err
	}
	job.StartedAt, job.Attempts, job.Done, job.Total, job.Message = at.UTC(), 0, 0, 0, ""
	v.Backup = &job
	return nil
}

// IncrementalFrom reports whether an incremental backup may build on
// backup parent: its anchor snapshot is there and under the active layer.
func (v VM) IncrementalFrom(parent string) bool {
	s, ok := v.Chain.Snapshot(BackupSnapshotPrefix + parent)
	if !ok || s.State != SnapshotReady {
		return false
	}
	for id := v.Chain.Active; ; {
		if id == s.Layer {
			return true
		}
		p, ok := v.Chain.Parent(id)
		if !ok {
			return false
		}
		id = p
	}
}

// BackupFailed records a failed attempt of v's job: it is retried at
// retryAt, or given up after MaxBackupAttempts (its anchor goes). It
// returns whether the job was given up.
func (v *VM) BackupFailed(id, why string, retryAt time.Time) (gaveUp bool, err error) {
	j := v.Backup
	if j == nil || j.ID != id {
		return false, fmt.Errorf("vm %q: no backup %s under way: %w", v.Name, id, ErrConflict)
	}
	j.Attempts++
	j.Message, j.Host, j.RetryAt = Clip(why, maxBackupMessage), "", retryAt.UTC()
	if j.Attempts < MaxBackupAttempts {
		return false, nil
	}
	v.Backup = nil
	if _, ok := v.Chain.Snapshot(j.Snapshot()); ok {
		return true, v.DeleteSnapshot(j.Snapshot())
	}
	return true, nil
}

// FinishBackup ends v's job: it returns the catalog entry, and removes the
// anchors of v's earlier backups that stale says are to the same target
// (the new one is what the next incremental builds on).
func (v *VM) FinishBackup(id string, at time.Time, st BackupStats, stale func(anchor string) bool) (Backup, error) {
	j := v.Backup
	if j == nil || j.ID != id {
		return Backup{}, fmt.Errorf("vm %q: no backup %s under way: %w", v.Name, id, ErrConflict)
	}
	if s, ok := v.Chain.Snapshot(j.Snapshot()); !ok || s.State != SnapshotReady {
		return Backup{}, fmt.Errorf("vm %q: backup %s's snapshot is not ready: %w", v.Name, id, ErrConflict)
	}
	if len(st.DiskSizes) != len(v.Spec.Disks) || st.Read < 0 || st.Stored < 0 {
		return Backup{}, fmt.Errorf("vm %q: backup %s: %d disk sizes for %d disks, or negative sizes: %w", v.Name, id, len(st.DiskSizes), len(v.Spec.Disks), ErrInvalid)
	}
	var size int64
	for _, d := range st.DiskSizes {
		if d < 0 || d > MaxDiskMiB<<20 {
			return Backup{}, fmt.Errorf("vm %q: backup %s: disk size %d: %w", v.Name, id, d, ErrInvalid)
		}
		size += d
	}
	b := Backup{ID: j.ID, VM: v.Name, VMID: v.ID, Target: j.Target, Kind: j.Kind, Parent: j.Parent, Project: v.Project,
		StartedAt: j.StartedAt, Finished: at.UTC(), Size: size, Read: st.Read, Stored: st.Stored,
		DiskSizes: slices.Clone(st.DiskSizes), Spec: v.Spec.Clone(), Scheduled: j.Scheduled}
	v.Backup = nil
	for _, s := range slices.Clone(v.Chain.Snapshots) {
		if s.Name == j.Snapshot() || !strings.HasPrefix(s.Name, BackupSnapshotPrefix) || !stale(s.Name) {
			continue
		}
		if err := v.DeleteSnapshot(s.Name); err != nil {
			return Backup{}, err
		}
	}
	return b, nil
}

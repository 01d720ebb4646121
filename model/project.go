package model

import (
	"fmt"
	"time"
)

// DefaultProject holds every VM, network and image created without a
// project, and all those from before projects existed (their Project is
// empty). It always exists and cannot be removed.
const DefaultProject = "default"

// MaxProjects bounds the projects the cluster keeps.
const MaxProjects = 256

// ProjectOf names the project of a resource whose Project field is p.
func ProjectOf(p string) string {
	if p == "" {
		return DefaultProject
	}
	return p
}

// Project groups VMs, networks and images, and bounds what its VMs may
// take.
type Project struct {
	Name        string    `json:"name"`
	Description string    `json:"description,omitempty"`
	Quota       Quota     `json:"quota"`
	CreatedAt   time.Time `json:"created_at"`
	// BackupPolicy backs up each of the project's VMs that has no backup
	// schedule of its own (raftlog.FeatureProjectBackups).
	BackupPolicy *ProjectBackupPolicy `json:"backup_policy,omitempty"`
}

// Quota bounds a project's VMs, all of them counted whatever their power
// state (a stopped VM keeps its disks and may start again). 0: no limit.
type Quota struct {
	VCPUs     int   `json:"vcpus,omitempty"`
	MemoryMiB int64 `json:"memory_mib,omitempty"`
	DiskGiB   int64 `json:"disk_gib,omitempty"`
	VMs       int   `json:"vms,omitempty"`
}

// Validate checks a project's fields.
func (p Project) Validate() error {
	if err := ValidateName("project", p.Name); err != nil {
		return err
	}
	if len(p.Description) > 256 {
		return fmt.Errorf("project %q: description of %d bytes, at most 256: %w", p.Name, len(p.Description), ErrInvalid)
	}
	return p.Quota.Validate()
}

// Validate refuses negative limits.
func (q Quota) Validate() error {
	if q.VCPUs < 0 || q.MemoryMiB < 0 || q.DiskGiB < 0 || q.VMs < 0 {
		return fmt.Errorf("quota %+v: limits are 0 (none) or more: %w", q, ErrInvalid)
	}
	return nil
}

// Usage is what a project's VMs take, in the units of Quota (disk in MiB,
// summed exactly, and rounded up to GiB only when compared).
type Usage struct {
	VCPUs     int   `json:"vcpus"`
	MemoryMiB int64 `json:"memory_mib"`
	DiskMiB   int64 `json:"disk_mib"`
	VMs       int   `json:"vms"`
}

// DiskMiB is what a VM's disks take: a blank disk or an overlay its
// size, an overlay without one its image's virtual size (imageMiB; an
// unknown image counts 0).
func (s VMSpec) DiskMiB(imageMiB func(name string) int64) int64 {
	var total int64
	for _, d := range s.Disks {
		switch {
		case d.SizeMiB > 0:
			total += d.SizeMiB
		case d.Image != "":
			total += imageMiB(d.Image)
		}
	}
	return total
}

// Add counts one more VM of spec.
func (u Usage) Add(spec VMSpec, imageMiB func(string) int64) Usage {
	u.VCPUs += spec.VCPUs
	u.MemoryMiB += spec.MemoryMiB
	u.DiskMiB += spec.DiskMiB(imageMiB)
	u.VMs++
	return u
}

// Limited reports whether the quota limits anything (a zero limit is none).
func (q Quota) Limited() bool {
	return q.VCPUs > 0 || q.MemoryMiB > 0 || q.DiskGiB > 0 || q.VMs > 0
}

// Exceeds returns an error (ErrQuota) naming the first limit that after
// exceeds where before did not, with the limit and the use it would
// reach; nil when none does. A use already above a limit that was lowered
// later does not refuse a change that does not grow it.
func (q Quota) Exceeds(project string, before, after Usage) error {
	gib := func(mib int64) int64 { return (mib + 1023) / 1024 }
	for _, c := range []struct {
		name           string
		limit, was, is int64
	}{
		{"vcpus", int64(q.VCPUs), int64(before.VCPUs), int64(after.VCPUs)},
		{"memory_mib", q.MemoryMiB, before.MemoryMiB, after.MemoryMiB},
		{"disk_gib", q.DiskGiB, gib(before.DiskMiB), gib(after.DiskMiB)},
		{"vms", int64(q.VMs), int64(before.VMs), int64(after.VMs)},
	} {
		if c.limit > 0 && c.is > c.limit && c.is > c.was {
			return &QuotaError{Project: project, Quota: c.name, Limit: c.limit, Used: c.was, Wanted: c.is}
		}
	}
	return nil
}

// QuotaError says which quota a change would exceed.
type QuotaError struct {
	Project string `json:"project"`
	Quota   string `json:"quota"`
	Limit   int64  `json:"limit"`
	Used    int64  `json:"used"`   // before the change
	Wanted  int64  `json:"wanted"` // after it
}

func (e *QuotaError) Error() string {
	return fmt.Sprintf("project %s: quota %s exceeded: limit %d, in use %d, this would make %d", e.Project, e.Quota, e.Limit, e.Used, e.Wanted)
}

// Is makes errors.Is(err, ErrQuota) hold.
func (e *QuotaError) Is(target error) bool { return target == ErrQuota }

// ErrorDetails gives the API the quota's name, limit and use.
func (e *QuotaError) ErrorDetails() any { return *e }

// ValidProjectRef checks a project named in a request: empty (default) or
// a valid name.
func ValidProjectRef(p string) error {
	if p == "" || p == DefaultProject {
		return nil
	}
	return ValidateName("project", p)
}

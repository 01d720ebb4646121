package model

import (
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Schedule is when a recurring job runs (scheduled snapshots) and which of
// its results it keeps. Its text form:
//
//	WHEN keep RETENTION
//
// WHEN is "hourly" (on the hour), "daily [HH:MM]" (UTC, 00:00 by default)
// or "every DURATION" (a Go duration from 10s to 30 days, slots aligned on
// multiples of it since the Unix epoch). RETENTION is one or more counts,
// each followed by "last" (the default), "daily" or "weekly": "keep 24"
// keeps the 24 newest; "keep 7 daily 4 weekly" keeps the newest of each of
// the last 7 days and of each of the last 4 weeks (ISO weeks, UTC); "keep
// 3 last 7 daily" both. The newest result is always kept.
type Schedule struct {
	EverySec int64 `json:"every_s"`
	// AtSec offsets the slots from the multiples of EverySec.
	AtSec      int64 `json:"at_s,omitempty"`
	KeepLast   int   `json:"keep_last,omitempty"`
	KeepDaily  int   `json:"keep_daily,omitempty"`
	KeepWeekly int   `json:"keep_weekly,omitempty"`
}

// Limits of schedules.
const (
	minScheduleSec = 10
	maxScheduleSec = 30 * 24 * 3600
	maxKeep        = 1000
)

// ParseSchedule reads a schedule's text form.
func ParseSchedule(text string) (Schedule, error) {
	bad := func(format string, args ...any) (Schedule, error) {
		return Schedule{}, fmt.Errorf("schedule %q: %s (want e.g. \"hourly keep 24\", \"daily 02:00 keep 7 daily 4 weekly\", \"every 15m keep 4\"): %w",
			text, fmt.Sprintf(format, args...), ErrInvalid)
	}
	f := strings.Fields(strings.ToLower(text))
	var s Schedule
	i := 0
	next := func() string {
		if i < len(f) {
			i++
			return f[i-1]
		}
		return ""
	}
	switch w := next(); w {
	case "hourly":
		s.EverySec = 3600
	case "daily":
		s.EverySec = 24 * 3600
		if i < len(f) && strings.Contains(f[i], ":") {
			at, err := time.Parse("15:04", next())
			if err != nil {
				return bad("time of day %q is not HH:MM", f[i-1])
			}
			s.AtSec = int64(at.Hour()*3600 + at.Minute()*60)
		}
	case "every":
		d, err := time.ParseDuration(next())
		if err != nil || d%time.Second != 0 {
			return bad("%q is not a duration in whole seconds", f[i-1])
		}
		s.EverySec = int64(d / time.Second)
	default:
		return bad("starts with %q, not hourly, daily or every", w)
	}
	if next() != "keep" || i >= len(f) {
		return bad("no keep")
	}
	for i < len(f) {
		n, err := strconv.Atoi(next())
		if err != nil || n < 1 || n > maxKeep {
			return bad("%q is not a count from 1 to %d", f[i-1], maxKeep)
		}
		unit := "last"
		if i < len(f) {
			if _, err := strconv.Atoi(f[i]); err != nil {
				unit = next()
			}
		}
		var p *int
		switch unit {
		case "last":
			p = &s.KeepLast
		case "daily":
			p = &s.KeepDaily
		case "weekly":
			p = &s.KeepWeekly
		default:
			return bad("keep %d %q: the unit is last, daily or weekly", n, unit)
		}
		if *p != 0 {
			return bad("keep ... %s given twice", unit)
		}
		*p = n
	}
	return s, s.Validate()
}

// Validate checks a schedule's ranges.
func (s Schedule) Validate() error {
	switch {
	case s.EverySec < minScheduleSec || s.EverySec > maxScheduleSec:
		return fmt.Errorf("schedule: every %ds out of range %d..%d: %w", s.EverySec, minScheduleSec, maxScheduleSec, ErrInvalid)
	case s.AtSec < 0 || s.AtSec >= s.EverySec:
		return fmt.Errorf("schedule: offset %ds out of range 0..%d: %w", s.AtSec, s.EverySec-1, ErrInvalid)
	case s.KeepLast < 0 || s.KeepDaily < 0 || s.KeepWeekly < 0 || s.KeepLast > maxKeep || s.KeepDaily > maxKeep || s.KeepWeekly > maxKeep:
		return fmt.Errorf("schedule: keep counts out of range 0..%d: %w", maxKeep, ErrInvalid)
	case s.KeepLast+s.KeepDaily+s.KeepWeekly == 0:
		return fmt.Errorf("schedule: keeps nothing: %w", ErrInvalid)
	}
	return nil
}

// Keeps is the most results the schedule keeps.
func (s Schedule) Keeps() int { return max(s.KeepLast, 1) + s.KeepDaily + s.KeepWeekly }

// String is the schedule's text form.
func (s Schedule) String() string {
	var b strings.Builder
	switch {
	case s.EverySec == 3600 && s.AtSec == 0:
		b.WriteString("hourly")
	case s.EverySec == 24*3600:
		fmt.Fprintf(&b, "daily %02d:%02d", s.AtSec/3600, s.AtSec%3600/60)
	default:
		fmt.Fprintf(&b, "every %s", shortDuration(time.Duration(s.EverySec)*time.Second))
		if s.AtSec != 0 {
			fmt.Fprintf(&b, " (+%ds)", s.AtSec)
		}
	}
	b.WriteString(" keep")
	for _, k := range []struct {
		n    int
		unit string
	}{{s.KeepLast, ""}, {s.KeepDaily, " daily"}, {s.KeepWeekly, " weekly"}} {
		if k.n > 0 {
			fmt.Fprintf(&b, " %d%s", k.n, k.unit)
		}
	}
	return b.String()
}

// shortDuration writes d as time.ParseDuration reads it, without the
// zero units time.Duration.String adds ("15m", not "15m0s").
func shortDuration(d time.Duration) string {
	out := d.String()
	if strings.HasSuffix(out, "m0s") {
		out = strings.TrimSuffix(out, "0s")
	}
	if strings.HasSuffix(out, "h0m") {
		out = strings.TrimSuffix(out, "0m")
	}
	return out
}

// Slot is the start of the latest slot at or before now.
func (s Schedule) Slot(now time.Time) time.Time {
	t := now.Unix() - s.AtSec
	slot := t - ((t%s.EverySec)+s.EverySec)%s.EverySec
	return time.Unix(slot+s.AtSec, 0).UTC()
}

// Retain says which of the results made at times (oldest first) the
// schedule keeps.
func (s Schedule) Retain(times []time.Time) []bool {
	keep := make([]bool, len(times))
	if len(times) == 0 {
		return keep
	}
	keep[len(times)-1] = true
	for i := len(times) - 1; i >= 0 && i >= len(times)-s.KeepLast; i-- {
		keep[i] = true
	}
	bucket := func(n int, key func(time.Time) string) {
		var seen []string
		for i := len(times) - 1; i >= 0 && len(seen) <= n; i-- {
			k := key(times[i])
			if slices.Contains(seen, k) {
				continue
			}
			seen = append(seen, k)
			if len(seen) <= n {
				keep[i] = true
			}
		}
	}
	bucket(s.KeepDaily, func(t time.Time) string { return t.UTC().Format(time.DateOnly) })
	bucket(s.KeepWeekly, func(t time.Time) string {
		y, w := t.UTC().ISOWeek()
		return fmt.Sprintf("%d-%d", y, w)
	})
	return keep
}

// SnapshotPolicy takes a VM's snapshots on a schedule and removes those
// the schedule no longer keeps. Its snapshots are named AutoSnapshotPrefix
// and their slot's time; others are left alone.
type SnapshotPolicy struct {
	Schedule Schedule `json:"schedule"`
	// Since is when the policy was set: no slot before it is taken.
	Since time.Time `json:"since"`
	// Last is the latest slot taken, so each slot is taken once even
	// across leader changes.
	Last time.Time `json:"last,omitzero"`
}

// AutoSnapshotPrefix starts the names of scheduled snapshots.
const AutoSnapshotPrefix = "auto-"

// AutoSnapshotName names the scheduled snapshot of slot.
func AutoSnapshotName(slot time.Time) string {
	return AutoSnapshotPrefix + slot.UTC().Format("20060102-150405")
}

// maxScheduledSnapshots leaves room for an operator's own snapshots.
const maxScheduledSnapshots = MaxSnapshots - 16

// SetSnapshotPolicy sets (nil: removes) v's snapshot schedule.
func (v *VM) SetSnapshotPolicy(s *Schedule, at time.Time) error {
	if s == nil {
		v.SnapshotPolicy = nil
		return nil
	}
	if err := s.Validate(); err != nil {
		return err
	}
	if s.Keeps() > maxScheduledSnapshots {
		return fmt.Errorf("vm %q: schedule keeps up to %d snapshots, at most %d (a VM holds %d): %w", v.Name, s.Keeps(), maxScheduledSnapshots, MaxSnapshots, ErrInvalid)
	}
	if len(v.Spec.Disks) == 0 {
		return fmt.Errorf("vm %q has no disks to snapshot: %w", v.Name, ErrInvalid)
	}
	v.SnapshotPolicy = &SnapshotPolicy{Schedule: *s, Since: at.UTC()}
	return nil
}

// TakeScheduledSnapshot takes the snapshot of slot, once.
func (v *VM) TakeScheduledSnapshot(slot, at time.Time) error {
	p := v.SnapshotPolicy
	if p == nil {
		return fmt.Errorf("vm %q has no snapshot schedule: %w", v.Name, ErrConflict)
	}
	if !slot.After(p.Last) || slot.Before(p.Since.Truncate(time.Second)) || !p.Schedule.Slot(slot).Equal(slot) {
		return fmt.Errorf("vm %q: slot %s is taken or not one of its schedule's: %w", v.Name, slot.Format(time.RFC3339), ErrConflict)
	}
	if err := v.TakeSnapshot(AutoSnapshotName(slot), at); err != nil {
		return err
	}
	p.Last = slot.UTC()
	return nil
}

// BackupPolicy backs a VM up to a target on a schedule, and removes the
// backups it made that the schedule no longer keeps (never one a kept
// backup builds on, and never the newest).
type BackupPolicy struct {
	Target   string    `json:"target"`
	Schedule Schedule  `json:"schedule"`
	Since    time.Time `json:"since"`
	// Last is the latest slot started, so each is started once.
	Last time.Time `json:"last,omitzero"`
	// FromProject: the policy is the VM's project's (ProjectBackupPolicy),
	// not one of its own (raftlog.FeatureProjectBackups).
	FromProject bool `json:"from_project,omitempty"`
}

// maxScheduledBackups bounds what a backup schedule keeps.
const maxScheduledBackups = 400

// SetBackupPolicy sets (s nil: removes) v's backup schedule to target.
func (v *VM) SetBackupPolicy(target string, s *Schedule, at time.Time) error {
	if s == nil {
		v.BackupPolicy = nil
		return nil
	}
	if err := s.Validate(); err != nil {
		return err
	}
	if s.Keeps() > maxScheduledBackups {
		return fmt.Errorf("vm %q: backup schedule keeps up to %d backups, at most %d: %w", v.Name, s.Keeps(), maxScheduledBackups, ErrInvalid)
	}
	if len(v.Spec.Disks) == 0 {
		return fmt.Errorf("vm %q has no disks to back up: %w", v.Name, ErrInvalid)
	}
	v.BackupPolicy = &BackupPolicy{Target: target, Schedule: *s, Since: at.UTC()}
	return nil
}

// startScheduled checks that slot is a slot of v's backup schedule not
// started yet, for target, and records it.
func (v *VM) startScheduled(target string, slot time.Time) error {
	p := v.BackupPolicy
	if p == nil || p.Target != target {
		return fmt.Errorf("vm %q has no backup schedule to %s: %w", v.Name, target, ErrConflict)
	}
	if !slot.After(p.Last) || slot.Before(p.Since.Truncate(time.Second)) || !p.Schedule.Slot(slot).Equal(slot) {
		return fmt.Errorf("vm %q: backup slot %s is started or not one of its schedule's: %w", v.Name, slot.Format(time.RFC3339), ErrConflict)
	}
	p.Last = slot.UTC()
	return nil
}

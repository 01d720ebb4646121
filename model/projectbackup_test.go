package model

import (
	"errors"
	"testing"
	"time"
)

// A project's backup schedule: validated as a VM's, kept as it was when
// set again alike, replaced otherwise, removed with nil.
func TestProjectSetBackupPolicy(t *testing.T) {
	t0 := time.Date(2026, 12, 1, 10, 0, 0, 0, time.Local)
	daily, _ := ParseSchedule("daily 02:00 keep 7 daily 4 weekly")
	hourly, _ := ParseSchedule("hourly keep 24")
	p := Project{Name: "p1"}
	for _, s := range []Schedule{{EverySec: 5, KeepLast: 1}, {EverySec: 3600}, {EverySec: 3600, KeepLast: maxScheduledBackups, KeepDaily: 1}} {
		if err := p.SetBackupPolicy("t1", &s, t0); !errors.Is(err, ErrInvalid) || p.BackupPolicy != nil {
			t.Fatalf("schedule %+v: %v, policy %+v", s, err, p.BackupPolicy)
		}
	}
	if err := p.SetBackupPolicy("t1", &daily, t0); err != nil {
		t.Fatal(err)
	}
	first := p.BackupPolicy
	if first == nil || first.Target != "t1" || first.Schedule != daily || !first.Since.Equal(t0) || first.Since.Location() != time.UTC {
		t.Fatalf("set: %+v", first)
	}
	if err := p.SetBackupPolicy("t1", &daily, t0.Add(time.Hour)); err != nil || p.BackupPolicy != first {
		t.Fatalf("set again alike: %+v %v, want it kept", p.BackupPolicy, err)
	}
	for _, c := range []struct {
		target string
		s      Schedule
	}{{"t2", daily}, {"t1", hourly}} {
		if err := p.SetBackupPolicy(c.target, &c.s, t0.Add(2*time.Hour)); err != nil || p.BackupPolicy.Target != c.target ||
			p.BackupPolicy.Schedule != c.s || !p.BackupPolicy.Since.Equal(t0.Add(2*time.Hour)) {
			t.Fatalf("set to %s %s: %+v %v", c.target, c.s, p.BackupPolicy, err)
		}
	}
	if err := p.SetBackupPolicy("", nil, t0); err != nil || p.BackupPolicy != nil {
		t.Fatalf("remove: %+v %v", p.BackupPolicy, err)
	}
}

// A VM follows its project's schedule unless it has its own; dropping its
// own falls back to the project's; an inherited one set again alike keeps
// its Last.
func TestVMFollowsProjectBackups(t *testing.T) {
	t0 := time.Date(2026, 12, 1, 10, 0, 0, 0, time.UTC)
	daily, _ := ParseSchedule("daily 02:00 keep 7")
	hourly, _ := ParseSchedule("hourly keep 24")
	pp := &ProjectBackupPolicy{Target: "t1", Schedule: daily, Since: t0}
	v := VM{Name: "v1", Spec: VMSpec{Disks: []DiskSpec{{SizeMiB: 64}}}}

	v.FollowProjectBackups(pp, t0.Add(time.Minute))
	want := BackupPolicy{Target: "t1", Schedule: daily, Since: t0.Add(time.Minute), FromProject: true}
	if v.BackupPolicy == nil || *v.BackupPolicy != want {
		t.Fatalf("inherited: %+v", v.BackupPolicy)
	}
	v.BackupPolicy.Last = t0.Add(time.Hour)
	v.FollowProjectBackups(&ProjectBackupPolicy{Target: "t1", Schedule: daily, Since: t0.Add(time.Hour)}, t0.Add(2*time.Hour))
	if want.Last = t0.Add(time.Hour); *v.BackupPolicy != want {
		t.Fatalf("inherited again alike: %+v, want %+v", v.BackupPolicy, want)
	}
	v.FollowProjectBackups(&ProjectBackupPolicy{Target: "t1", Schedule: hourly}, t0.Add(3*time.Hour))
	if p := v.BackupPolicy; p.Schedule != hourly || !p.Last.IsZero() || !p.Since.Equal(t0.Add(3*time.Hour)) || !p.FromProject {
		t.Fatalf("inherited another schedule: %+v", p)
	}
	v.FollowProjectBackups(nil, t0)
	if v.BackupPolicy != nil {
		t.Fatalf("project's removed: %+v", v.BackupPolicy)
	}

	// Its own schedule stays whatever the project's does.
	if err := v.SetBackupPolicy("t2", &hourly, t0); err != nil || v.BackupPolicy.FromProject {
		t.Fatalf("own: %+v %v", v.BackupPolicy, err)
	}
	own := *v.BackupPolicy
	v.FollowProjectBackups(pp, t0.Add(time.Hour))
	v.FollowProjectBackups(nil, t0.Add(time.Hour))
	if *v.BackupPolicy != own {
		t.Fatalf("own after the project's changes: %+v, want %+v", v.BackupPolicy, own)
	}
	// Dropped, it falls back to the project's, or to none.
	v.DropBackupPolicy(pp, t0.Add(4*time.Hour))
	if p := v.BackupPolicy; p == nil || !p.FromProject || p.Target != "t1" || !p.Since.Equal(t0.Add(4*time.Hour)) {
		t.Fatalf("own dropped: %+v", p)
	}
	v.BackupPolicy.Last = t0.Add(5 * time.Hour)
	v.DropBackupPolicy(pp, t0.Add(6*time.Hour)) // --off of an inherited one changes nothing
	if p := v.BackupPolicy; p == nil || !p.Last.Equal(t0.Add(5*time.Hour)) || !p.Since.Equal(t0.Add(4*time.Hour)) {
		t.Fatalf("inherited dropped: %+v", p)
	}
	v.SetBackupPolicy("t2", &hourly, t0)
	v.DropBackupPolicy(nil, t0)
	if v.BackupPolicy != nil {
		t.Fatalf("own dropped, no project's: %+v", v.BackupPolicy)
	}

	// A VM without disks has nothing to back up.
	bare := VM{Name: "k1"}
	bare.FollowProjectBackups(pp, t0)
	if bare.BackupPolicy != nil {
		t.Fatalf("diskless VM inherited %+v", bare.BackupPolicy)
	}
	// An inherited schedule's slots are started once, as an own one's.
	v.FollowProjectBackups(pp, t0)
	slot := time.Date(2026, 12, 2, 2, 0, 0, 0, time.UTC)
	if err := v.startScheduled("t1", slot); err != nil {
		t.Fatal(err)
	}
	if err := v.startScheduled("t1", slot); !errors.Is(err, ErrConflict) {
		t.Fatalf("slot started twice: %v", err)
	}
}

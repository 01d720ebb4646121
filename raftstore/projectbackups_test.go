package raftstore

import (
	"bytes"
	"errors"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/corralhq/corral/model"
	"github.com/corralhq/corral/raftlog"
)

// A project's backup schedule in the state machine: set, it is
// materialized on each VM of the project without one of its own, and on
// each VM created or restored there; a VM's own schedule replaces it and,
// removed, gives it back; set again alike it keeps the VMs' last slots;
// removed, the inherited ones go. A target a project's schedule names is
// removed only with force, which removes the schedule. Two replicas fed
// the same entries hold the same state, and a snapshot carries it.
func TestProjectBackupSchedules(t *testing.T) {
	f := newFSM(nil)
	t0 := time.Date(2026, 12, 1, 10, 0, 0, 0, time.UTC)
	at := func(h int) time.Time { return t0.Add(time.Duration(h) * time.Hour) }
	daily := model.Schedule{EverySec: 24 * 3600, AtSec: 2 * 3600, KeepLast: 7}
	hourly := model.Schedule{EverySec: 3600, KeepLast: 24}
	vm := func(name, project string, created time.Time) model.VM {
		v := inProject(testVM(name), project)
		v.Desired, v.CreatedAt = model.PowerStopped, created
		return v
	}
	set := func(project, target string, s *model.Schedule, t time.Time) raftlog.SetProjectBackupPolicy {
		return raftlog.SetProjectBackupPolicy{Project: project, Target: target, Schedule: s, Time: t}
	}
	own := func(name, target string, s *model.Schedule, t time.Time) raftlog.SetBackupPolicy {
		return raftlog.SetBackupPolicy{Name: name, Target: target, Schedule: s, Time: t}
	}
	var entries []raftlog.Command
	apply := func(want error, c raftlog.Command) error {
		t.Helper()
		entries = append(entries, c)
		err, _ := applyAll(t, f, c)[0].(error)
		if !errors.Is(err, want) || want == nil && err != nil {
			t.Fatalf("%T %+v: %v, want %v", c, c, err, want)
		}
		return err
	}
	policy := func(vm string) *model.BackupPolicy { return f.state.vms[vm].BackupPolicy }
	inherited := func(vm string, s model.Schedule, since, last time.Time) {
		t.Helper()
		want := model.BackupPolicy{Target: "t1", Schedule: s, Since: since, Last: last, FromProject: true}
		if p := policy(vm); p == nil || *p != want {
			t.Fatalf("vm %s: backup policy %+v, want %+v", vm, p, want)
		}
	}
	none := func(vms ...string) {
		t.Helper()
		for _, vm := range vms {
			if p := policy(vm); p != nil {
				t.Fatalf("vm %s: backup policy %+v, want none", vm, p)
			}
		}
	}
	projectPolicy := func(name string) *model.ProjectBackupPolicy { p, _ := f.state.project(name); return p.BackupPolicy }

	// Below protocol 9 refused, as the backup entries below 8.
	apply(model.ErrConflict, set("p1", "t1", &daily, at(0)))
	apply(nil, raftlog.SetProtocol{Protocol: raftlog.FeatureProjectBackups.Since})
	apply(nil, raftlog.RegisterHost{Host: testHost("h1")})
	apply(nil, raftlog.PutBackupTarget{Target: model.BackupTarget{Name: "t1", Dir: "/srv/t1"}})
	apply(nil, raftlog.PutBackupTarget{Target: model.BackupTarget{Name: "t2", Dir: "/srv/t2"}})
	apply(nil, projectWith("p1", model.Quota{}))
	apply(nil, raftlog.CreateVM{VM: vm("a1", "p1", at(0))})
	apply(nil, raftlog.CreateVM{VM: vm("a2", "p1", at(0))})
	apply(nil, raftlog.CreateVM{VM: vm("d1", "", at(0))})
	bare := vm("k1", "p1", at(0))
	bare.Spec.Disks, bare.Spec.Kernel = nil, &model.KernelBoot{Kernel: "/boot/vmlinuz"}
	apply(nil, raftlog.CreateVM{VM: bare})
	apply(nil, own("a2", "t2", &hourly, at(0)))

	// Validated: the project and the target exist, the keep limit.
	apply(model.ErrNotFound, set("nope", "t1", &daily, at(1)))
	if err := apply(model.ErrNotFound, set("p1", "t9", &daily, at(1))); !strings.Contains(err.Error(), `backup target "t9"`) {
		t.Fatalf("no target: %v", err)
	}
	apply(model.ErrInvalid, set("p1", "t1", &model.Schedule{EverySec: 3600, KeepLast: 1000}, at(1)))
	apply(model.ErrInvalid, set("p1", "t1", &model.Schedule{EverySec: 1, KeepLast: 1}, at(1)))
	if p := projectPolicy("p1"); p != nil {
		t.Fatalf("refused entries left a policy: %+v", p)
	}

	// Set: the VMs without their own inherit it, from the entry's time.
	apply(nil, set("p1", "t1", &daily, at(1)))
	if p := projectPolicy("p1"); p == nil || *p != (model.ProjectBackupPolicy{Target: "t1", Schedule: daily, Since: at(1)}) {
		t.Fatalf("project p1's policy: %+v", p)
	}
	inherited("a1", daily, at(1), time.Time{})
	if p := policy("a2"); p == nil || p.FromProject || p.Target != "t2" || p.Schedule != hourly {
		t.Fatalf("a2's own policy: %+v", p)
	}
	none("d1", "k1")

	// A VM created, or restored as a new VM, in the project inherits it
	// in the entry that creates it, from its creation; elsewhere not.
	apply(nil, raftlog.CreateVM{VM: vm("a3", "p1", at(2))})
	restored := vm("r1", "p1", at(2))
	restored.Restore = &model.RestoreSource{Backup: "b0", Target: "t2"}
	apply(nil, raftlog.CreateVM{VM: restored})
	stray := vm("d2", "", at(2))
	stray.BackupPolicy = &model.BackupPolicy{Target: "t1", Schedule: daily, Since: at(2), FromProject: true}
	apply(nil, raftlog.CreateVM{VM: stray})
	inherited("a3", daily, at(2), time.Time{})
	inherited("r1", daily, at(2), time.Time{})
	none("d2")

	// A slot started on a1; the same schedule set again keeps it (and
	// the project's since).
	slot := time.Date(2026, 12, 2, 2, 0, 0, 0, time.UTC)
	apply(nil, raftlog.StartBackup{Name: "a1", Time: slot, Slot: slot, Job: model.BackupJob{ID: "b1", Target: "t1", Kind: model.BackupFull, Host: "h1"}})
	apply(nil, raftlog.FinishBackup{Name: "a1", ID: "b1", Host: "h1", Time: slot.Add(time.Minute), Stats: model.BackupStats{DiskSizes: []int64{64 << 20}}})
	inherited("a1", daily, at(1), slot)
	apply(nil, set("p1", "t1", &daily, at(20)))
	inherited("a1", daily, at(1), slot)
	if p := projectPolicy("p1"); !p.Since.Equal(at(1)) {
		t.Fatalf("set again alike: since %v, want %v", p.Since, at(1))
	}
	// A quota change keeps it.
	apply(nil, raftlog.SetProject{Project: model.Project{Name: "p1", Quota: model.Quota{VMs: 10}}})
	if p := projectPolicy("p1"); p == nil || p.Target != "t1" {
		t.Fatalf("after a quota change: %+v", p)
	}

	// A VM's own schedule replaces the inherited one; --off gives it back
	// (from then, no last slot); --off of an inherited one changes nothing.
	apply(nil, own("a1", "t2", &hourly, at(21)))
	if p := policy("a1"); p == nil || p.FromProject || p.Target != "t2" || !p.Last.IsZero() {
		t.Fatalf("a1's own: %+v", p)
	}
	apply(nil, own("a1", "", nil, at(22)))
	inherited("a1", daily, at(22), time.Time{})
	apply(nil, own("a2", "", nil, at(22)))
	inherited("a2", daily, at(22), time.Time{})
	apply(nil, own("a3", "", nil, at(23)))
	inherited("a3", daily, at(2), time.Time{})
	apply(nil, own("d1", "", nil, at(23)))
	none("d1")
	apply(model.ErrNotFound, own("a1", "t9", &hourly, at(23)))
	inherited("a1", daily, at(22), time.Time{})

	// Another schedule: inherited anew; removed: the inherited ones go,
	// the VMs' own stay.
	apply(nil, own("a2", "t2", &hourly, at(24)))
	apply(nil, set("p1", "t1", &hourly, at(25)))
	inherited("a1", hourly, at(25), time.Time{})
	inherited("r1", hourly, at(25), time.Time{})
	apply(nil, set("p1", "", nil, at(26)))
	none("a1", "a3", "r1", "k1")
	if p := policy("a2"); p == nil || p.FromProject {
		t.Fatalf("a2's own after the project's removal: %+v", p)
	}
	apply(nil, own("a2", "", nil, at(26)))
	none("a2")
	apply(nil, raftlog.DeleteVM{Name: "r1"}) // its restore would hold t2

	// The default project ("" or its name) has one too.
	apply(nil, set("", "t2", &daily, at(27)))
	if p := projectPolicy(model.DefaultProject); p == nil || p.Target != "t2" {
		t.Fatalf("default project's policy: %+v (projects %+v)", p, f.state.cluster.Projects)
	}
	for _, name := range []string{"d1", "d2"} {
		if p := policy(name); p == nil || !p.FromProject || p.Target != "t2" {
			t.Fatalf("vm %s in the default project: %+v", name, p)
		}
	}
	none("a1", "a2")

	// Removing a target a project's schedule names: refused, unless
	// forced, which removes the schedule and the inherited ones; a VM's
	// own schedule refuses it even then.
	apply(nil, set("p1", "t1", &daily, at(28)))
	if err := apply(model.ErrConflict, raftlog.DeleteBackupTarget{Name: "t2"}); !strings.Contains(err.Error(), "project default") {
		t.Fatalf("target of the default project's schedule: %v", err)
	}
	apply(nil, raftlog.DeleteBackupTarget{Name: "t2", Force: true})
	if p := projectPolicy(model.DefaultProject); p != nil {
		t.Fatalf("default project's policy after its target's removal: %+v", p)
	}
	none("d1", "d2")
	inherited("a2", daily, at(28), time.Time{})
	apply(nil, own("a3", "t1", &hourly, at(29)))
	if err := apply(model.ErrConflict, raftlog.DeleteBackupTarget{Name: "t1", Force: true}); !strings.Contains(err.Error(), `vm "a3"`) {
		t.Fatalf("target of a VM's own schedule: %v", err)
	}
	apply(nil, own("a3", "", nil, at(30)))
	if err := apply(model.ErrConflict, raftlog.DeleteBackupTarget{Name: "t1"}); !strings.Contains(err.Error(), "project p1") {
		t.Fatalf("target of p1's schedule: %v", err)
	}
	apply(nil, raftlog.DeleteBackupTarget{Name: "t1", Force: true})
	if p := projectPolicy("p1"); p != nil {
		t.Fatalf("p1's policy after its target's removal: %+v", p)
	}
	none("a1", "a2", "a3", "d1", "d2", "k1")

	// Deterministic: another replica fed the same entries holds the same
	// state, and so does one restored from a snapshot.
	g := newFSM(nil)
	applyAll(t, g, entries...)
	if !bytes.Equal(snapshotBytes(t, f), snapshotBytes(t, g)) {
		t.Fatal("two replicas differ")
	}
	var buf bytes.Buffer
	if err := writeSnapshot(&buf, f.state, 0); err != nil {
		t.Fatal(err)
	}
	h := newFSM(nil)
	if err := h.Restore(nopCloser{&buf}); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(snapshotBytes(t, f), snapshotBytes(t, h)) {
		t.Fatal("restored state differs")
	}
}

// A replica and its snapshot agree on the policies while they are set,
// the VMs' inherited ones included.
func TestProjectBackupScheduleSnapshot(t *testing.T) {
	f := newFSM(nil)
	t0 := time.Date(2026, 12, 1, 10, 0, 0, 0, time.UTC)
	daily := model.Schedule{EverySec: 24 * 3600, KeepLast: 7}
	for i, r := range applyAll(t, f,
		raftlog.SetProtocol{Protocol: raftlog.FeatureProjectBackups.Since},
		raftlog.PutBackupTarget{Target: model.BackupTarget{Name: "t1", Dir: "/srv/t1"}},
		projectWith("p1", model.Quota{}),
		raftlog.CreateVM{VM: inProject(testVM("a1"), "p1")},
		raftlog.SetProjectBackupPolicy{Project: "p1", Target: "t1", Schedule: &daily, Time: t0},
	) {
		if r != nil {
			t.Fatalf("entry %d: %v", i, r)
		}
	}
	var buf bytes.Buffer
	if err := writeSnapshot(&buf, f.state, 0); err != nil {
		t.Fatal(err)
	}
	g := newFSM(nil)
	if err := g.Restore(nopCloser{&buf}); err != nil {
		t.Fatal(err)
	}
	p, _ := g.state.project("p1")
	if v := g.state.vms["a1"]; p.BackupPolicy == nil || p.BackupPolicy.Schedule != daily || v.BackupPolicy == nil || !v.BackupPolicy.FromProject {
		t.Fatalf("restored: project %+v, vm %+v", p.BackupPolicy, v.BackupPolicy)
	}
	// The restored replica applies the next entries alike.
	next := []raftlog.Command{
		raftlog.CreateVM{VM: inProject(testVM("a2"), "p1")},
		raftlog.SetProjectBackupPolicy{Project: "p1", Time: t0.Add(time.Hour)},
	}
	applyAll(t, f, next...)
	applyAll(t, g, next...)
	if !reflect.DeepEqual(canonical(f.state), canonical(g.state)) {
		t.Fatal("replicas differ after the snapshot")
	}
}

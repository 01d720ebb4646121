package raftstore

import (
	"errors"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/corralhq/corral/model"
	"github.com/corralhq/corral/raftlog"
)

func testGroup(name string, count int) model.Group {
	return model.Group{Name: name, Count: count, Template: testVM("x").Spec, CreatedAt: time.Unix(1, 0)}
}

func member(g model.Group, i int) raftlog.CreateVM {
	v := testVM(model.MemberName(g.Name, i))
	v.Spec, v.Group, v.Project = g.MemberSpec(i), g.Name, g.Project
	return raftlog.CreateVM{VM: v}
}

// Groups: created once, updated in place keeping project and creation
// time; members are VMs that name an existing group and carry a member
// name of it; deleting the group deletes them, or keeps them outside it.
func TestGroups(t *testing.T) {
	f := newFSM(nil)
	web := testGroup("web", 2)
	changed := testGroup("web", 5)
	changed.CreatedAt = time.Unix(99, 0)
	stray := testVM("db-1")
	stray.Group = "db"
	misnamed := testVM("other-1")
	misnamed.Group = "web"
	res := applyAll(t, f,
		raftlog.SetGroup{Group: web, Create: true},
		raftlog.SetGroup{Group: web, Create: true},    // taken
		raftlog.SetGroup{Group: testGroup("nope", 1)}, // no such group
		raftlog.SetGroup{Group: model.Group{Name: "bad", Count: model.MaxGroupCount + 1, Template: web.Template}, Create: true},
		member(web, 1), member(web, 2),
		raftlog.CreateVM{VM: stray},    // no group db
		raftlog.CreateVM{VM: misnamed}, // not a member name of web
		raftlog.SetGroup{Group: changed, CountOnly: true},
	)
	for i, want := range []error{nil, model.ErrConflict, model.ErrNotFound, model.ErrInvalid, nil, nil, model.ErrNotFound, model.ErrInvalid, nil} {
		err, _ := res[i].(error)
		if !errors.Is(err, want) || want == nil && err != nil {
			t.Fatalf("command %d: %v, want %v", i, err, want)
		}
	}
	g, _ := model.GroupByName(f.state.cluster.Groups, "web")
	if g.Count != 5 || !g.CreatedAt.Equal(time.Unix(1, 0)) || g.Version != 1 || g.Previous != nil {
		t.Fatalf("group after a count change: %+v", g)
	}
	// A new template bumps the version and keeps the one before; the
	// count of an update is not taken (only CountOnly changes it); an
	// update read before another template change is refused.
	bigger := g
	bigger.Template.MemoryMiB = 512
	bigger.Count, bigger.Previous = 1, nil
	stale := bigger
	stale.Version = 7
	res = applyAll(t, f, raftlog.SetGroup{Group: stale}, raftlog.SetGroup{Group: bigger})
	if err, _ := res[0].(error); !errors.Is(err, model.ErrConflict) {
		t.Fatalf("stale update: %v", res[0])
	}
	g, _ = model.GroupByName(f.state.cluster.Groups, "web")
	if g.Version != 2 || g.Previous == nil || g.Previous.MemoryMiB != 256 || g.Template.MemoryMiB != 512 || g.Count != 5 {
		t.Fatalf("group after a template change: %+v", g)
	}
	if v := f.state.vms["web-2"]; v.Group != "web" || v.Spec.Spread != "web" {
		t.Fatalf("member: %+v", v)
	}

	// A project with a group cannot be removed; a group cannot change
	// project.
	p := testGroup("api", 1)
	p.Project = "a"
	moved := p
	moved.Project = ""
	res = applyAll(t, f, projectWith("a", model.Quota{}), raftlog.SetGroup{Group: p, Create: true},
		raftlog.DeleteProject{Name: "a"}, raftlog.SetGroup{Group: moved})
	for i, want := range []error{nil, nil, model.ErrConflict, model.ErrInvalid} {
		err, _ := res[i].(error)
		if !errors.Is(err, want) || want == nil && err != nil {
			t.Fatalf("project command %d: %v, want %v", i, err, want)
		}
	}

	// Delete with keep: members stay, in no group. Delete: members go.
	res = applyAll(t, f, raftlog.DeleteGroup{Name: "api", KeepVMs: true}, raftlog.DeleteGroup{Name: "web"}, raftlog.DeleteGroup{Name: "web"})
	if err, _ := res[2].(error); !errors.Is(err, model.ErrNotFound) {
		t.Fatalf("second delete: %v", res[2])
	}
	for _, n := range []string{"web-1", "web-2"} {
		if v := f.state.vms[n]; !v.Deleting || v.Desired != model.PowerStopped {
			t.Fatalf("%s after its group's removal: %+v", n, v)
		}
	}
	if len(f.state.cluster.Groups) != 0 {
		t.Fatalf("groups left: %+v", f.state.cluster.Groups)
	}
}

func TestMemberNames(t *testing.T) {
	for _, c := range []struct {
		vm string
		i  int
		ok bool
	}{{"web-1", 1, true}, {"web-12", 12, true}, {"web-0", 0, false}, {"web-01", 0, false}, {"web-", 0, false},
		{"web-1001", 0, false}, {"web-a", 0, false}, {"webx-1", 0, false}, {"web-1-2", 0, false}} {
		i, ok := model.MemberIndex("web", c.vm)
		if i != c.i || ok != c.ok {
			t.Errorf("MemberIndex(web, %s) = %d %v, want %d %v", c.vm, i, ok, c.i, c.ok)
		}
	}
	g := testGroup("web", 1)
	g.Template.UserData = "#cloud-config\nhostname: {{name}}\nindex: {{index}}\n"
	if got := g.MemberSpec(7).UserData; got != "#cloud-config\nhostname: web-7\nindex: 7\n" {
		t.Fatalf("user data: %q", got)
	}
}

// Health checks: refused in VM specs and group templates below protocol
// 6; from then on reports carry the guest's health (a known state, its
// detail clipped), kept only for VMs whose spec has a check.
func TestHealthChecks(t *testing.T) {
	f := newFSM(nil)
	checked := testVM("web")
	checked.Host = "a"
	checked.Spec.Health = &model.HealthCheck{Exec: "true"}
	plain := testVM("db")
	plain.Host = "a"
	g := testGroup("grp", 1)
	g.Template.Health = &model.HealthCheck{TCPPort: 80}
	report := func(name, health, detail string) raftlog.ReportVMs {
		return raftlog.ReportVMs{Host: "a", Reports: []raftlog.VMReport{{Name: name, Generation: 1, State: model.StateRunning, Health: health, HealthDetail: detail}}}
	}
	long := strings.Repeat("é", model.MaxHealthDetail)
	res := applyAll(t, f,
		raftlog.RegisterHost{Host: testHost("a")},
		raftlog.SetProtocol{Protocol: 5},
		raftlog.CreateVM{VM: checked},            // 2: below protocol 6
		raftlog.SetGroup{Group: g, Create: true}, // 3: below protocol 6
		raftlog.SetProtocol{Protocol: 6},
		raftlog.CreateVM{VM: checked},
		raftlog.SetGroup{Group: g, Create: true},
		raftlog.CreateVM{VM: plain},
		report("web", "great", ""),                   // 8: unknown health
		report("web", model.HealthUnhealthy, long),   // 9
		report("db", model.HealthHealthy, "ignored"), // 10: no check
	)
	for i, want := range map[int]error{2: model.ErrConflict, 3: model.ErrConflict, 5: nil, 6: nil, 7: nil, 8: model.ErrInvalid} {
		if err, _ := res[i].(error); !errors.Is(err, want) && !(want == nil && err == nil) {
			t.Errorf("entry %d: %v, want %v", i, res[i], want)
		}
	}
	v := f.state.vms["web"]
	if v.Actual.Health != model.HealthUnhealthy || len(v.Actual.HealthDetail) > model.MaxHealthDetail || !utf8.ValidString(v.Actual.HealthDetail) {
		t.Fatalf("web: health %q, detail of %d bytes", v.Actual.Health, len(v.Actual.HealthDetail))
	}
	if d := f.state.vms["db"]; d.Actual.State != model.StateRunning || d.Actual.Health != "" {
		t.Fatalf("db: %+v", d.Actual)
	}
}

// Soft placement rules: refused in VM specs and group templates below
// protocol 7, kept from then on, and invalid ones refused.
func TestSoftRulesNeedProtocol7(t *testing.T) {
	f := newFSM(nil)
	v := testVM("web")
	v.Spec.Prefer = []model.SoftRule{{Kind: model.SoftHost, Key: "ssd", Value: "yes", Weight: 40}}
	bad := testVM("bad")
	bad.Spec.Avoid = []model.SoftRule{{Kind: "rack", Key: "r", Value: "1", Weight: 40}}
	g := testGroup("grp", 1)
	g.Template.Avoid = []model.SoftRule{{Kind: model.SoftVM, Key: "role", Value: "db", Weight: 100}}
	res := applyAll(t, f,
		raftlog.SetProtocol{Protocol: 6},
		raftlog.CreateVM{VM: v},                  // 1: below protocol 7
		raftlog.SetGroup{Group: g, Create: true}, // 2: below protocol 7
		raftlog.SetProtocol{Protocol: 7},
		raftlog.CreateVM{VM: v},
		raftlog.SetGroup{Group: g, Create: true},
		raftlog.CreateVM{VM: bad}, // 6: kind rack
	)
	for i, want := range map[int]error{1: model.ErrConflict, 2: model.ErrConflict, 4: nil, 5: nil, 6: model.ErrInvalid} {
		if err, _ := res[i].(error); !errors.Is(err, want) && !(want == nil && err == nil) {
			t.Errorf("entry %d: %v, want %v", i, res[i], want)
		}
	}
	if got := f.state.vms["web"].Spec.Prefer; len(got) != 1 || got[0].Weight != 40 {
		t.Fatalf("web's prefer rules: %+v", got)
	}
}

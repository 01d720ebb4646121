package raftstore

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/corralhq/corral/model"
	"github.com/corralhq/corral/raftlog"
)

func inProject(v model.VM, p string) model.VM { v.Project = p; return v }

func projectWith(name string, q model.Quota) raftlog.SetProject {
	return raftlog.SetProject{Project: model.Project{Name: name, Quota: q, CreatedAt: time.Unix(1, 0)}, Create: true}
}

// Quotas hold in the apply, the same on every replica: a create or a
// resize past one fails naming it, its limit and its use, and changes
// nothing; a lowered quota refuses growth only.
func TestProjectQuotas(t *testing.T) {
	f := newFSM(nil)
	img := raftlog.PutImage{Image: model.Image{Name: "base", Format: "qcow2", Volume: "image-base", VirtualSizeBytes: 3 << 30}}
	res := applyAll(t, f,
		projectWith("a", model.Quota{VCPUs: 3, MemoryMiB: 1024, DiskGiB: 4, VMs: 3}),
		img,
		raftlog.CreateVM{VM: inProject(testVM("a1"), "a")},                                                        // 1 vCPU, 256 MiB, 64 MiB disk
		raftlog.CreateVM{VM: inProject(testVM("a2"), "a")},                                                        // 2 vCPUs in all
		raftlog.CreateVM{VM: func() model.VM { v := inProject(testVM("a3"), "a"); v.Spec.VCPUs = 2; return v }()}, // 4 > 3
		raftlog.CreateVM{VM: func() model.VM { // 64 MiB + 64 MiB + 3 GiB image + 1 GiB > 4 GiB
			v := inProject(testVM("a4"), "a")
			v.Spec.Disks = []model.DiskSpec{{Image: "base"}, {SizeMiB: 1024}}
			return v
		}()},
		raftlog.CreateVM{VM: testVM("d1")}, // the default project has no quota
		raftlog.CreateVM{VM: inProject(testVM("x1"), "nope")},
	)
	for i, want := range []error{nil, nil, nil, nil, model.ErrQuota, model.ErrQuota, nil, model.ErrNotFound} {
		err, _ := res[i].(error)
		if !errors.Is(err, want) || want == nil && err != nil {
			t.Fatalf("command %d: %v, want %v", i, err, want)
		}
	}
	var qe *model.QuotaError
	if err := res[4].(error); !errors.As(err, &qe) || qe.Quota != "vcpus" || qe.Limit != 3 || qe.Used != 2 || qe.Wanted != 4 {
		t.Fatalf("vcpus refusal: %v (%+v)", err, qe)
	}
	if err := res[5].(error); !errors.As(err, &qe) || qe.Quota != "disk_gib" || qe.Limit != 4 || qe.Wanted != 5 {
		t.Fatalf("disk refusal: %v (%+v)", err, qe)
	}
	if _, ok := f.state.vms["a3"]; ok {
		t.Fatal("a refused create left its VM")
	}
	if f.state.vms["a1"].Project != "a" || f.state.vms["d1"].Project != "" {
		t.Fatalf("projects: %q %q", f.state.vms["a1"].Project, f.state.vms["d1"].Project)
	}

	// Resize: growth past the quota refused; lower the quota below the
	// use, and a shrink still passes while a growth does not.
	res = applyAll(t, f,
		raftlog.ResizeVM{Name: "a1", VCPUs: 3, MemoryMiB: 256}, // 3 + 1 > 3
		raftlog.SetProject{Project: model.Project{Name: "a", Quota: model.Quota{VCPUs: 1}}},
		raftlog.ResizeVM{Name: "a2", VCPUs: 1, MemoryMiB: 128},
		raftlog.ResizeVM{Name: "a2", VCPUs: 1, MemoryMiB: 512},
	)
	for i, want := range []error{model.ErrQuota, nil, nil, nil} {
		err, _ := res[i].(error)
		if !errors.Is(err, want) || want == nil && err != nil {
			t.Fatalf("resize step %d: %v, want %v", i, err, want)
		}
	}
	if f.state.vms["a1"].Spec.VCPUs != 1 {
		t.Fatal("a refused resize changed the VM")
	}
	if p, _ := f.state.project("a"); !p.CreatedAt.Equal(time.Unix(1, 0)) || p.Quota.VCPUs != 1 {
		t.Fatalf("after set: %+v", p)
	}

	// Events of a VM carry its project; a project holding anything stays.
	res = applyAll(t, f,
		raftlog.SetProtocol{Protocol: raftlog.Protocol},
		raftlog.AddEvents{Events: []model.Event{{Kind: "started", VM: "a1"}, {Kind: "started", VM: "d1"}, {Kind: "deleted", VM: "gone", Project: "a"}}},
		raftlog.DeleteProject{Name: "a"},
		raftlog.DeleteProject{Name: model.DefaultProject},
		projectWith("a", model.Quota{}),
		projectWith(model.DefaultProject, model.Quota{}),
		raftlog.SetProject{Project: model.Project{Name: "b"}},
	)
	for i, want := range []error{nil, nil, model.ErrConflict, model.ErrInvalid, model.ErrConflict, model.ErrConflict, model.ErrNotFound} {
		err, _ := res[i].(error)
		if !errors.Is(err, want) || want == nil && err != nil {
			t.Fatalf("step %d: %v, want %v", i, err, want)
		}
	}
	evs := f.state.events[len(f.state.events)-3:]
	if evs[0].Project != "a" || evs[1].Project != "" || evs[2].Project != "a" {
		t.Fatalf("event projects: %+v", evs)
	}
}

// A VNI taken in another project is refused without naming that
// project's network; in the same project the network is named.
func TestNetworkClashHidesOtherProjectsNames(t *testing.T) {
	f := newFSM(nil)
	vx := func(name, project string) raftlog.CreateNetwork {
		return raftlog.CreateNetwork{Network: model.Network{Name: name, Kind: model.NetVXLAN, VNI: 100, CreatedAt: time.Unix(1, 0), Project: project}}
	}
	res := applyAll(t, f, projectWith("a", model.Quota{}), projectWith("b", model.Quota{}),
		vx("secret-net", "a"), vx("mine", "b"), vx("mine-too", "a"))
	other, _ := res[3].(error)
	if !errors.Is(other, model.ErrConflict) || strings.Contains(other.Error(), "secret-net") {
		t.Fatalf("clash across projects: %v", other)
	}
	same, _ := res[4].(error)
	if !errors.Is(same, model.ErrConflict) || !strings.Contains(same.Error(), "secret-net") {
		t.Fatalf("clash within a project: %v", same)
	}
}

package raftstore

import (
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/corralhq/corral/model"
	"github.com/corralhq/corral/raftlog"
)

// Memory snapshots in the state machine: refused below protocol 9 and on
// a schedule's slot; a revert to one asks for a resume, which a report of
// the guest running on another layer leaves and one from the resumed
// layer ends; the removed snapshot's image is forgotten once its host
// deleted it.
func TestMemorySnapshotEntries(t *testing.T) {
	f := newFSM(nil)
	at := time.Unix(1000, 0).UTC()
	report := func(state model.VMState, layer uint64) raftlog.ReportVMs {
		return raftlog.ReportVMs{Host: "h1", Time: at, Reports: []raftlog.VMReport{{Name: "web", Generation: 1, State: state, Layer: layer}}}
	}
	vm := testVM("web")
	vm.Host, vm.Generation, vm.Desired = "h1", 1, model.PowerRunning
	res := applyAll(t, f,
		raftlog.SetProtocol{Protocol: 8},
		raftlog.RegisterHost{Host: testHost("h1")},
		raftlog.CreateVM{VM: vm},
		report(model.StateRunning, 0),
		raftlog.TakeSnapshot{Name: "web", Snapshot: "m1", Time: at, Memory: true}, // 4: protocol 8
		raftlog.SetProtocol{Protocol: raftlog.Protocol},
		raftlog.TakeSnapshot{Name: "web", Time: at, Slot: at, Memory: true}, // 6: scheduled
		raftlog.TakeSnapshot{Name: "web", Snapshot: "m1", Time: at, Memory: true},
		raftlog.FinishSnapshot{Name: "web", Host: "h1", Generation: 1, Snapshot: "m1", Consistency: model.ConsistencyMemory},
		raftlog.RevertSnapshot{Name: "web", Snapshot: "m1"},
		report(model.StateRunning, 1), // 10: still on the layer before the revert
	)
	for i, want := range []error{nil, nil, nil, nil, model.ErrConflict, nil, model.ErrInvalid, nil, nil, nil, nil} {
		err, _ := res[i].(error)
		if !errors.Is(err, want) || want == nil && err != nil {
			t.Fatalf("command %d: %v, want %v", i, err, want)
		}
	}
	v := f.state.vms["web"]
	want := model.ResumeFrom{Layer: 2, Snapshot: "m1", Memory: 1}
	if r := v.Chain.Resume; r == nil || *r != want {
		t.Fatalf("resume %+v, want %+v (chain %+v)", r, want, v.Chain)
	}
	applyAll(t, f, report(model.StateStarting, 2), report(model.StateRunning, 2))
	if v = f.state.vms["web"]; v.Chain.Resume != nil {
		t.Fatalf("the guest runs on layer 2, resume %+v", v.Chain.Resume)
	}

	// Removed: the image is the host's to delete, then forgotten.
	res = applyAll(t, f,
		raftlog.DeleteSnapshot{Name: "web", Snapshot: "m1"},
		raftlog.ForgetLayers{Name: "web", Memory: []uint64{1}},
	)
	for i, r := range res {
		if err, _ := r.(error); err != nil {
			t.Fatalf("command %d: %v", i, err)
		}
	}
	if v = f.state.vms["web"]; len(v.Chain.DeadMemory) != 0 || len(v.Chain.Snapshots) != 0 || !slices.Equal(v.Chain.Dead, []uint64{1}) {
		t.Fatalf("chain %+v: want the image forgotten, layer 1 still to delete", v.Chain)
	}
}

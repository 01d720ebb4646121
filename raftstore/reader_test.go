package raftstore

import (
	"slices"
	"testing"

	"github.com/corralhq/corral/model"
	"github.com/corralhq/corral/raftlog"
)

// TestEachVMVisitsEveryVMOnceWithoutSharing: EachVM sees every VM in
// state exactly once, and a change a careless caller makes to the
// top-level fields of what it is given does not reach the state.
func TestEachVMVisitsEveryVMOnceWithoutSharing(t *testing.T) {
	f := newFSM(nil)
	cmds := []raftlog.Command{raftlog.RegisterHost{Host: testHost("h1")}}
	for _, n := range []string{"a", "b", "c"} {
		v := testVM(n)
		v.Host = "h1"
		cmds = append(cmds, raftlog.CreateVM{VM: v})
	}
	for i, res := range applyAll(t, f, cmds...) {
		if err, _ := res.(error); err != nil {
			t.Fatalf("command %d: %v", i, err)
		}
	}
	r := reader{f}
	var seen []string
	r.EachVM(func(v *model.VM) {
		seen = append(seen, v.Name)
		v.Host = "elsewhere"
	})
	slices.Sort(seen)
	if !slices.Equal(seen, []string{"a", "b", "c"}) {
		t.Fatalf("EachVM saw %v", seen)
	}
	for _, v := range r.VMs() {
		if v.Host != "h1" {
			t.Fatalf("%s: host %q after EachVM, want h1", v.Name, v.Host)
		}
	}
}

package controller

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/corralhq/corral/daemon/hypervisor"
	"github.com/corralhq/corral/internal/testutil"
	"github.com/corralhq/corral/model"
	"github.com/corralhq/corral/raftlog"
)

// TestHostLoopInRecoveredCluster: after corrald recover, the host loop
// sends its inventory and touches nothing until no host is waited for;
// then it starts what runs nowhere, keeps unknown guests until the
// recovery ends, and removes them after.
func TestHostLoopInRecoveredCluster(t *testing.T) {
	e := newHostEnv(t)
	ctx := context.Background()
	e.create(t, "a", "h1", nil)
	stop := e.run(t)
	e.waitState(t, "a", model.StateRunning)
	stop()
	// Guests this host runs that the state (an older backup) places
	// elsewhere or does not know, and a VM it places here that runs
	// nowhere.
	e.create(t, "b", "h2", nil)
	e.create(t, "c", "h1", nil)
	for _, g := range []struct{ name, id string }{{"b", "id-b"}, {"z", "id-z"}} {
		if err := e.drv.Define(ctx, hypervisor.DomainSpec{VMID: g.id, Name: g.name, VCPUs: 1, MemoryMiB: 128}); err != nil {
			t.Fatal(err)
		}
		if err := e.drv.Start(ctx, g.name, hypervisor.RunInfo{StartedAt: e.clock.Now()}); err != nil {
			t.Fatal(err)
		}
	}
	rec := e.store.Recover("h1", e.clock.Now())
	if !slices.Equal(rec.Waiting, []string{"h1", "h2"}) {
		t.Fatalf("waiting %v", rec.Waiting)
	}
	e.loop = e.newLoop()
	e.run(t)
	testutil.Eventually(t, 5*time.Second, func() error {
		r := e.store.Cluster().Recovery
		if r.Waits("h1") {
			return errors.New("no inventory yet")
		}
		if r.Adopted != 2 || r.Moved != 1 || !r.Keeps("h1", "id-z") {
			return fmt.Errorf("recovery %+v", r)
		}
		return nil
	})
	if b, _ := e.store.VM("b"); b.Host != "h1" {
		t.Fatalf("b adopted on %q", b.Host)
	}
	// h2 is still waited for: c may run there, so it is not started here.
	lists := e.drv.Calls("List")
	testutil.Eventually(t, 5*time.Second, func() error {
		if e.drv.Calls("List") < lists+3 {
			return errors.New("the loop has not passed three times")
		}
		return nil
	})
	if d, ok := e.domain("c"); ok && d.State.Active() {
		t.Fatal("c started while h2 was waited for")
	}
	// h2 tells it runs nothing: c starts here, z runs on.
	if _, err := e.store.Apply(ctx, raftlog.AdoptGuests{Host: "h2"}); err != nil {
		t.Fatal(err)
	}
	e.waitState(t, "c", model.StateRunning)
	if d, ok := e.domain("z"); !ok || !d.State.Active() || e.drv.Calls("Destroy") != 0 {
		t.Fatalf("unknown guest z touched before the recovery ended: %+v %v, %d destroys", d, ok, e.drv.Calls("Destroy"))
	}
	if _, err := e.store.Apply(ctx, raftlog.EndRecovery{Time: e.clock.Now()}); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, 5*time.Second, func() error {
		if _, ok := e.domain("z"); ok {
			return errors.New("z still defined")
		}
		return nil
	})
	for _, n := range []string{"a", "b", "c"} {
		if d, ok := e.domain(n); !ok || !d.State.Active() {
			t.Fatalf("%s not running after the recovery: %+v", n, d)
		}
	}
}

// domain returns the named domain as the fake hypervisor lists it.
func (e *hostEnv) domain(name string) (hypervisor.Domain, bool) {
	doms, _ := e.drv.List(context.Background())
	for _, d := range doms {
		if d.Name == name {
			return d, true
		}
	}
	return hypervisor.Domain{}, false
}

package controller

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/corralhq/corral/daemon/placement"
	"github.com/corralhq/corral/model"
	"github.com/corralhq/corral/raftlog"
)

// The leader's balancer: a plan moves nothing; apply starts at most
// AtOnce live migrations, each an event with its reason; nothing moves
// while HA is disarmed or migrations are in flight; a VM is not moved more
// than PerVMDay times a day; automatic rounds wait an interval.
func TestBalancerRoundsAndBudgets(t *testing.T) {
	e := newLiveEnv(t, nil)
	ctx := context.Background()
	e.l.cfg.Balance = BalanceConfig{Goal: placement.Balance, Interval: 5 * time.Minute, AtOnce: 2, PerHour: 20, PerVMDay: 1}
	for i := range 6 {
		name := fmt.Sprintf("b%d", i)
		e.vm(t, name, "h1", 0, true)
		e.r.store.Apply(ctx, raftlog.SetVMPower{Name: name, Desired: model.PowerRunning})
		e.r.store.Apply(ctx, raftlog.ReportVMs{Host: "h1", Reports: []raftlog.VMReport{{Name: name, Generation: 1, State: model.StateRunning}}})
	}
	migrating := func() (n int) {
		for _, v := range e.r.store.VMs() {
			if v.Migration != nil {
				n++
			}
		}
		return n
	}
	plan, err := e.l.Balance(ctx, BalanceRequest{})
	if err != nil || len(plan.Plan.Moves) != 2 || plan.Blocked != "" || migrating() != 0 {
		t.Fatalf("plan: %+v %v; %d migrating", plan, err, migrating())
	}
	// HA disarmed: it plans, and says why it would not move.
	e.r.store.Apply(ctx, raftlog.SetHA{Disarmed: true})
	if r, _ := e.l.Balance(ctx, BalanceRequest{Apply: true}); r.Blocked != "HA is disarmed" || len(r.Started) != 0 {
		t.Fatalf("disarmed: %+v", r)
	}
	e.r.store.Apply(ctx, raftlog.SetHA{Disarmed: false})
	r, err := e.l.Balance(ctx, BalanceRequest{Apply: true})
	if err != nil || len(r.Started) != 2 || migrating() != 2 || len(e.events("balance")) != 2 {
		t.Fatalf("apply: %+v %v; %d migrating", r, err, migrating())
	}
	if ev := e.events("balance")[0]; !strings.Contains(ev.Message, "memory use") {
		t.Fatalf("event: %s", ev.Message)
	}
	// While they migrate, nothing more starts.
	if r, _ := e.l.Balance(ctx, BalanceRequest{Apply: true}); !strings.Contains(r.Blocked, "2 migrations are under way") || len(r.Started) != 0 {
		t.Fatalf("in flight: %+v", r)
	}
	// They land; a VM moved today is not moved again (PerVMDay 1): a
	// spread plan toward h1 takes the others.
	var moved []string
	for _, v := range e.r.store.VMs() {
		if v.Migration != nil {
			moved = append(moved, v.Name)
			e.l.MigrationDone(ctx, MigrationResult{Name: v.Name, Generation: v.Generation, Target: v.Migration.Target})
			e.r.store.Apply(ctx, raftlog.ReportVMs{Host: v.Migration.Target, Reports: []raftlog.VMReport{{Name: v.Name, Generation: v.Generation + 1, State: model.StateRunning}}})
		}
	}
	r, _ = e.l.Balance(ctx, BalanceRequest{Goal: "consolidate"})
	for _, m := range r.Plan.Moves {
		for _, n := range moved {
			if m.VM == n {
				t.Fatalf("moved %s twice in a day: %+v", n, r.Plan)
			}
		}
	}
	// Automatic rounds: the first one an interval after leading.
	e.l.bal.mu.Lock()
	e.l.bal.lastRound = time.Time{}
	e.l.bal.mu.Unlock()
	before := len(e.events("balance"))
	e.l.maybeBalance(ctx)
	if len(e.events("balance")) != before {
		t.Fatal("a new leader balanced at once")
	}
	if _, err := e.l.Balance(ctx, BalanceRequest{Goal: "sideways"}); err == nil {
		t.Fatal("an unknown goal accepted")
	}
}

package controller

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/corralhq/corral/daemon/placement"
	"github.com/corralhq/corral/internal/testutil"
	"github.com/corralhq/corral/model"
	"github.com/corralhq/corral/raftlog"
)

// Consolidation empties the host that is not a Raft voter, which then goes
// to standby and is powered off; its silence fences nothing. When another
// host fails, the standby host is powered on, and once it renews its lease
// it is active again.
func TestConsolidationPowersHostsOffAndOn(t *testing.T) {
	e := newLiveEnv(t, nil)
	ctx := context.Background()
	dir := t.TempDir()
	logf := filepath.Join(dir, "power.log")
	script := filepath.Join(dir, "power")
	if err := os.WriteFile(script, []byte("#!/bin/sh\necho \"$CORRAL_POWER $CORRAL_POWER_HOST $*\" >> "+logf+"\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	e.l.cfg.Balance = BalanceConfig{Goal: placement.Consolidate, PowerOn: []string{script}, PowerOff: []string{script}, PowerTimeout: 10 * time.Second}
	e.r.mu.Lock()
	e.r.servers["h1"] = raftlog.Server{ID: "h1", Voter: true}
	e.r.servers["h2"] = raftlog.Server{ID: "h2", Voter: true}
	e.r.servers["h3"] = raftlog.Server{ID: "h3"}
	e.r.mu.Unlock()
	for _, v := range []struct{ name, host string }{{"v1", "h1"}, {"v2", "h2"}, {"v3", "h3"}} {
		e.vm(t, v.name, v.host, 0, true)
		e.r.store.Apply(ctx, raftlog.ReportVMs{Host: v.host, Reports: []raftlog.VMReport{{Name: v.name, Generation: 1, State: model.StateRunning}}})
	}
	e.step(500 * time.Millisecond)
	powered := func(want string) {
		t.Helper()
		testutil.Eventually(t, 10*time.Second, func() error {
			b, _ := os.ReadFile(logf)
			if !strings.Contains(string(b), want) {
				return errors.New("power log: " + string(b))
			}
			return nil
		})
	}

	r, err := e.l.Balance(ctx, BalanceRequest{Apply: true})
	if err != nil || len(r.Started) != 1 || r.Started[0] != "v3" || strings.Join(r.Plan.Freed, ",") != "h3" {
		t.Fatalf("consolidation: %+v %v", r, err)
	}
	v3, _ := e.r.store.VM("v3")
	e.l.MigrationDone(ctx, MigrationResult{Name: "v3", Generation: v3.Generation, Target: v3.Migration.Target})
	e.l.managePower(ctx)
	if h, _ := e.r.store.Host("h3"); h.Mode != model.ModeStandby {
		t.Fatalf("h3 after consolidation: %s", h.Mode)
	}
	powered("off h3 -- h3 ")
	// Powered off: no renewals, and no fencing.
	for range 20 {
		e.step(500*time.Millisecond, "h3")
		e.l.managePower(ctx)
	}
	if h, _ := e.r.store.Host("h3"); h.Mode != model.ModeStandby || len(e.events("fenced")) != 0 {
		t.Fatalf("a standby host was fenced: %+v; events %v", h, e.events("fenced"))
	}
	// Nothing goes to a standby host.
	if _, err := e.r.store.Apply(ctx, raftlog.PlaceVM{Name: "v1", Host: "h3", Generation: 1}); !errors.Is(err, model.ErrConflict) {
		t.Fatalf("placed on a standby host: %v", err)
	}

	// h2 dies: it is fenced, and h3 is powered on.
	for range 20 {
		e.step(500*time.Millisecond, "h2", "h3")
		e.l.managePower(ctx)
	}
	if h, _ := e.r.store.Host("h2"); h.Mode != model.ModeFenced {
		t.Fatalf("h2: %s", h.Mode)
	}
	powered("on h3 -- h3 ")
	if len(e.events("powering-on")) != 1 {
		t.Fatalf("powering-on events: %v", e.events("powering-on"))
	}
	// h3 renews: back in service.
	e.step(500*time.Millisecond, "h2")
	if h, _ := e.r.store.Host("h3"); h.Mode != model.ModeActive || len(e.events("powered-on")) != 1 {
		t.Fatalf("h3 after its power-on: %s; events %v", h.Mode, e.events("powered-on"))
	}
}

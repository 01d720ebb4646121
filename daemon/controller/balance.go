package controller

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/corralhq/corral/daemon/placement"
	"github.com/corralhq/corral/model"
	"github.com/corralhq/corral/raftlog"
)

// The balancer: the leader plans live migrations toward its goal
// (placement.PlanBalance) and starts them within a budget. It runs a round
// every BalanceConfig.Interval when a goal is configured, and on request
// (corralctl cluster balance plan|apply); never while HA is disarmed, a
// recovery or a drain is under way, or migrations are in flight.

// BalanceConfig tunes the balancer.
type BalanceConfig struct {
	// Goal is what automatic rounds work toward (placement.Off: none).
	Goal placement.Goal
	// Interval is the time between automatic rounds.
	Interval time.Duration
	// MinGain: see placement.BalanceOptions (0.10 when zero).
	MinGain float64
	// AtOnce bounds the balancer's migrations in flight (2 when zero),
	// PerHour those started in an hour (20), PerVMDay one VM's moves in
	// 24 hours (2).
	AtOnce, PerHour, PerVMDay int
	// PowerOn and PowerOff are the commands that power a host on and off
	// (its name and address follow "--"); PowerTimeout bounds each (2m).
	PowerOn, PowerOff []string
	PowerTimeout      time.Duration
}

func (c BalanceConfig) powerTimeout() time.Duration {
	if c.PowerTimeout <= 0 {
		return 2 * time.Minute
	}
	return c.PowerTimeout
}

func (c BalanceConfig) withDefaults() BalanceConfig {
	if c.Goal == "" {
		c.Goal = placement.Off
	}
	if c.Interval <= 0 {
		c.Interval = 5 * time.Minute
	}
	if c.MinGain <= 0 {
		c.MinGain = 0.10
	}
	if c.AtOnce <= 0 {
		c.AtOnce = 2
	}
	if c.PerHour <= 0 {
		c.PerHour = 20
	}
	if c.PerVMDay <= 0 {
		c.PerVMDay = 2
	}
	return c
}

// BalanceRequest asks for a round toward Goal ("": the configured one);
// Apply starts its first moves, else it is only a plan.
type BalanceRequest struct {
	Goal  string `json:"goal,omitempty"`
	Apply bool   `json:"apply,omitempty"`
}

// BalanceResult is a round: its plan, why the balancer would not act now
// (Blocked), and the moves it started.
type BalanceResult struct {
	Plan    placement.BalancePlan `json:"plan"`
	Blocked string                `json:"blocked,omitempty"`
	Started []string              `json:"started,omitempty"`
}

// balancer is the leader's memory of its moves (budgets) and rounds.
type balancer struct {
	mu        sync.Mutex
	power     powerState
	started   []time.Time            // moves started in the last hour
	perVM     map[string][]time.Time // vm -> its moves in the last 24 h
	lastRound time.Time
}

func (b *balancer) prune(now time.Time, vms map[string]bool) {
	b.started = after(b.started, now.Add(-time.Hour))
	for vm, ts := range b.perVM {
		if ts = after(ts, now.Add(-24*time.Hour)); len(ts) == 0 || !vms[vm] {
			delete(b.perVM, vm)
		} else {
			b.perVM[vm] = ts
		}
	}
}

func after(ts []time.Time, t time.Time) []time.Time {
	i := 0
	for i < len(ts) && !ts[i].After(t) {
		i++
	}
	return ts[i:]
}

// Balance runs one round (leader only).
func (l *Leader) Balance(ctx context.Context, req BalanceRequest) (BalanceResult, error) {
	if err := l.ready(); err != nil {
		return BalanceResult{}, err
	}
	cfg := l.cfg.Balance.withDefaults()
	goal := cfg.Goal
	if req.Goal != "" {
		g, err := placement.ParseGoal(req.Goal)
		if err != nil {
			return BalanceResult{}, err
		}
		goal = g
	}
	return l.balanceRound(ctx, goal, req.Apply), nil
}

func (l *Leader) balanceRound(ctx context.Context, goal placement.Goal, apply bool) BalanceResult {
	cfg := l.cfg.Balance.withDefaults()
	now := l.clock.Now()
	vms := l.store.VMs()
	names := map[string]bool{}
	inflight := 0
	for _, v := range vms {
		names[v.Name] = true
		if v.Migration != nil {
			inflight++
		}
	}
	b := &l.bal
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.perVM == nil {
		b.perVM = map[string][]time.Time{}
	}
	b.prune(now, names)
	b.lastRound = now
	left := cfg.PerHour - len(b.started)
	res := BalanceResult{}
	cands := l.candidates(false)
	if goal == placement.Consolidate {
		keep := l.keepOn()
		for i := range cands {
			cands[i].KeepOn = keep[cands[i].Host.Name]
		}
	}
	res.Plan = placement.PlanBalance(cands, vms, l.cfg.Placement, placement.BalanceOptions{
		Goal: goal, MinGain: cfg.MinGain, MaxMoves: max(left, 1),
		Movable: func(v model.VM) string {
			switch {
			case v.Deleting:
				return "being deleted"
			case v.Migration != nil:
				return "migrating"
			case v.Desired != model.PowerRunning || v.Actual.State != model.StateRunning:
				return "not running"
			case len(b.perVM[v.Name]) >= cfg.PerVMDay:
				return fmt.Sprintf("moved %d times in 24 h, the most a VM may", len(b.perVM[v.Name]))
			}
			return ""
		},
	})
	res.Blocked = l.balanceBlocked(inflight, left)
	if !apply || res.Blocked != "" || goal == placement.Off {
		return res
	}
	b.power.init()
	for _, h := range res.Plan.Freed {
		b.power.freed[h] = true // powered off once empty (managePower)
	}
	for _, m := range res.Plan.Moves {
		if inflight >= cfg.AtOnce {
			break
		}
		v, err := l.store.VM(m.VM)
		if err != nil || v.Host != m.From || v.Migration != nil {
			continue // moved on since the plan
		}
		if m.Cold {
			if _, err := l.store.Apply(ctx, raftlog.PlaceVM{Name: v.Name, Host: m.To, Generation: v.Generation}); err == nil {
				l.event(ctx, "moved", m.To, v.Name, "stopped VM moved from %s by the balancer (%s): %s", m.From, goal, m.Why)
				res.Started = append(res.Started, v.Name)
			}
			continue
		}
		if err := l.startMigration(ctx, v, m.To, "balance", nil); err != nil {
			l.event(ctx, "migration-failed", m.From, v.Name, "balancer (%s): %v", goal, err)
			continue
		}
		l.event(ctx, "balance", m.From, v.Name, "to %s (%s): %s", m.To, goal, m.Why)
		inflight++
		b.started = append(b.started, now)
		b.perVM[v.Name] = append(b.perVM[v.Name], now)
		res.Started = append(res.Started, v.Name)
	}
	return res
}

// balanceBlocked says why the balancer may not move VMs now, or "".
func (l *Leader) balanceBlocked(inflight, left int) string {
	if l.store.Cluster().HADisarmed {
		return "HA is disarmed"
	}
	l.live.mu.Lock()
	recovering := len(l.live.recovering)
	l.live.mu.Unlock()
	if recovering > 0 {
		return fmt.Sprintf("a recovery is under way (%d VMs)", recovering)
	}
	for _, h := range l.store.Hosts() {
		switch {
		case h.Draining:
			return "host " + h.Name + " is draining"
		case h.Mode == model.ModeFenced:
			return "host " + h.Name + " is fenced"
		}
	}
	if inflight > 0 {
		return fmt.Sprintf("%d migrations are under way", inflight)
	}
	if left <= 0 {
		return "this hour's budget of moves is spent"
	}
	return ""
}

// maybeBalance runs an automatic round when one is due (leader loop).
func (l *Leader) maybeBalance(ctx context.Context) {
	cfg := l.cfg.Balance.withDefaults()
	if cfg.Goal == placement.Off {
		return
	}
	l.bal.mu.Lock()
	if l.bal.lastRound.IsZero() {
		l.bal.lastRound = l.clock.Now() // a new leader waits one interval
	}
	due := l.clock.Now().Sub(l.bal.lastRound) >= cfg.Interval
	l.bal.mu.Unlock()
	if due {
		l.balanceRound(ctx, cfg.Goal, true)
	}
}

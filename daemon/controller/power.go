package controller

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"sort"
	"time"

	"github.com/corralhq/corral/daemon/placement"
	"github.com/corralhq/corral/model"
	"github.com/corralhq/corral/raftlog"
)

// Host power management: a host the balancer's consolidation emptied goes
// to standby (a mode in state: no VM is placed there, its silence is no
// failure) and is powered off with power_off_command; a standby host is
// powered on with power_on_command when capacity runs short (VMs waiting
// for a host, N+1 lost) or a host failed, and becomes active again once it
// renews its lease. Only hosts that are not Raft voters go to standby, so
// powering hosts off never costs the cluster its quorum.

// powerAfterOn is how long a host powered on stays on before the balancer
// may power it off again (no flapping).
const powerAfterOn = time.Hour

// powerState is the leader's memory of power actions (under bal.mu).
type powerState struct {
	freed      map[string]bool      // hosts a consolidation emptied, to power off
	poweringOn map[string]time.Time // host -> when power_on_command started
	onAt       map[string]time.Time // host -> when it came back after a power-on
	running    map[string]bool      // a power command is running for the host
}

func (p *powerState) init() {
	if p.freed == nil {
		p.freed, p.poweringOn, p.onAt, p.running = map[string]bool{}, map[string]time.Time{}, map[string]time.Time{}, map[string]bool{}
	}
}

// keepOn says which hosts consolidation must not empty: Raft voters, when
// emptied hosts are powered off.
func (l *Leader) keepOn() map[string]bool {
	keep := map[string]bool{}
	if len(l.cfg.Balance.PowerOff) == 0 {
		return keep
	}
	servers, err := l.raft.Servers()
	if err != nil {
		for _, h := range l.store.Hosts() {
			keep[h.Name] = true // cannot tell: keep every host
		}
		return keep
	}
	for _, s := range servers {
		if s.Voter {
			keep[s.ID] = true
		}
	}
	return keep
}

// powerNeed says why a standby host should be powered on, or "".
func (l *Leader) powerNeed(hosts []model.Host, vms []model.VM) string {
	for _, h := range hosts {
		if h.Mode == model.ModeFenced {
			return "host " + h.Name + " failed"
		}
	}
	waiting := 0
	for _, v := range vms {
		if v.Host == "" && v.Desired == model.PowerRunning && !v.Deleting {
			waiting++
		}
	}
	if waiting > 0 {
		return fmt.Sprintf("%d VMs wait for a host", waiting)
	}
	if why := placement.Headroom(l.candidates(false), vms, l.cfg.Placement); why != "" {
		return "N+1 lost: " + why
	}
	return ""
}

// managePower powers standby hosts on when needed and emptied hosts off
// (leader loop).
func (l *Leader) managePower(ctx context.Context) {
	cfg := l.cfg.Balance
	if !raftlog.FeatureBalance.Enabled(l.store.Cluster()) || len(cfg.PowerOn) == 0 && len(cfg.PowerOff) == 0 {
		return
	}
	hosts, vms := l.store.Hosts(), l.store.VMs()
	need := l.powerNeed(hosts, vms)
	now := l.clock.Now()
	b := &l.bal
	b.mu.Lock()
	b.power.init()
	var standby []model.Host
	poweringOn := false
	for _, h := range hosts {
		if h.Mode != model.ModeStandby {
			delete(b.power.poweringOn, h.Name)
			continue
		}
		standby = append(standby, h)
		if at, ok := b.power.poweringOn[h.Name]; ok && now.Sub(at) < cfg.powerTimeout()*2 {
			poweringOn = true
		}
	}
	b.mu.Unlock()
	if need != "" && len(standby) > 0 && !poweringOn && len(cfg.PowerOn) > 0 {
		sort.Slice(standby, func(i, j int) bool { return standby[i].Capacity.MemoryMiB > standby[j].Capacity.MemoryMiB })
		l.powerOn(ctx, standby[0], need)
	}
	if need != "" || poweringOn || len(cfg.PowerOff) == 0 || l.store.Cluster().HADisarmed {
		return
	}
	keep := l.keepOn()
	for _, h := range hosts {
		b.mu.Lock()
		freed, recent := b.power.freed[h.Name], now.Sub(b.power.onAt[h.Name]) < powerAfterOn
		b.mu.Unlock()
		if !freed || recent || h.Mode != model.ModeActive || h.Draining || keep[h.Name] || h.Name == l.cfg.Self {
			continue
		}
		// Empty? The FSM checks again, in Raft order.
		empty := true
		for _, v := range vms {
			if v.Host == h.Name || v.Migration != nil && v.Migration.Target == h.Name {
				empty = false
			}
		}
		if !empty {
			continue // its moves are still under way
		}
		b.mu.Lock()
		delete(b.power.freed, h.Name)
		b.mu.Unlock()
		if _, err := l.store.Apply(ctx, raftlog.SetHostMode{Name: h.Name, Mode: model.ModeStandby}); err != nil {
			l.log.Warn("standby", "host", h.Name, "err", err)
			continue
		}
		l.event(ctx, "standby", h.Name, "", "emptied by the balancer's consolidation: standby, powering it off")
		l.runPower(ctx, "off", h, cfg.PowerOff)
	}
}

// powerOn runs power_on_command for a standby host; it becomes active once
// it renews its lease (checkLiveness).
func (l *Leader) powerOn(ctx context.Context, h model.Host, why string) {
	l.bal.mu.Lock()
	l.bal.power.init()
	l.bal.power.poweringOn[h.Name] = l.clock.Now()
	l.bal.mu.Unlock()
	renewed := l.live.renewedAt(h.Name)
	if l.clock.Now().Sub(renewed) < 2*l.cfg.Liveness.Interval {
		// It runs already (its power-off failed, or it was booted by
		// hand): back in service without a power command.
		l.event(ctx, "powering-on", h.Name, "", "%s; it is up already", why)
		l.activate(ctx, h)
		return
	}
	l.event(ctx, "powering-on", h.Name, "", "%s", why)
	l.runPower(ctx, "on", h, l.cfg.Balance.PowerOn)
}

// standbyBack makes a standby host that renews again after a power-on
// active (checkLiveness).
func (l *Leader) standbyBack(ctx context.Context, h model.Host, renewed time.Time) {
	l.bal.mu.Lock()
	l.bal.power.init()
	at, asked := l.bal.power.poweringOn[h.Name]
	l.bal.mu.Unlock()
	if !asked || !renewed.After(at) {
		return
	}
	l.activate(ctx, h)
}

// activate returns a standby host to service.
func (l *Leader) activate(ctx context.Context, h model.Host) {
	if _, err := l.store.Apply(ctx, raftlog.SetHostMode{Name: h.Name, Mode: model.ModeActive}); err != nil {
		l.log.Warn("power on", "host", h.Name, "err", err)
		return
	}
	l.bal.mu.Lock()
	at := l.bal.power.poweringOn[h.Name]
	delete(l.bal.power.poweringOn, h.Name)
	l.bal.power.onAt[h.Name] = l.clock.Now()
	l.bal.mu.Unlock()
	l.event(ctx, "powered-on", h.Name, "", "back in service %v after its power-on was asked for", l.clock.Now().Sub(at).Round(time.Second))
}

// runPower runs a power command in the background with the host's name
// and address after "--" (and in the environment), as fence_command runs.
func (l *Leader) runPower(ctx context.Context, what string, h model.Host, command []string) {
	if len(command) == 0 {
		return
	}
	l.bal.mu.Lock()
	if l.bal.power.running[h.Name] {
		l.bal.mu.Unlock()
		return
	}
	l.bal.power.running[h.Name] = true
	l.bal.mu.Unlock()
	go func() {
		defer func() {
			l.bal.mu.Lock()
			delete(l.bal.power.running, h.Name)
			l.bal.mu.Unlock()
			l.poke()
		}()
		cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), l.cfg.Balance.powerTimeout())
		defer cancel()
		args := append(append([]string(nil), command[1:]...), "--", h.Name, h.Addr)
		cmd := exec.CommandContext(cctx, command[0], args...)
		cmd.Env = append(os.Environ(), "CORRAL_POWER_HOST="+h.Name, "CORRAL_POWER_ADDR="+h.Addr, "CORRAL_POWER="+what)
		start := l.clock.Now()
		out, err := cmd.CombinedOutput()
		took := l.clock.Now().Sub(start).Round(time.Millisecond)
		if err != nil {
			l.event(context.Background(), "power-failed", h.Name, "", "power_%s_command failed after %v: %v: %s", what, took, err, capText(string(out), 1024))
			return
		}
		l.event(context.Background(), "power-"+what, h.Name, "", "power_%s_command done in %v", what, took)
	}()
}

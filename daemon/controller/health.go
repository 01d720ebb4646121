package controller

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/corralhq/corral/daemon/hypervisor"
	"github.com/corralhq/corral/model"
)

// Health checks (model.HealthCheck): the host that runs a guest whose spec
// has one probes it, every interval, by a command through the guest agent
// or a TCP connection to the address the agent reports. The result is
// part of the VM's report, so only a change of health (starting, healthy,
// unhealthy) costs a Raft entry, not every probe. A guest's health starts
// over ("starting") with every start of it, and on every host it arrives
// on (a restarted corrald carries on from what it reported); failures
// within its start period count only once it was healthy.
// At most healthParallel probes run at a time, outside the operations'
// cap: a hung agent must not hold up starts and stops, and probes must
// not take all of libvirt's slots (libvirt/limit.go).
//
// The guest says which address a TCP check dials, and a guest may lie:
// the host would then connect wherever the guest likes, its management
// network included, and the check's result would tell the guest's owner
// what answers there. So the connection is bound to the bridges of the
// guest's own NICs (SO_BINDTODEVICE): it reaches only the guest's network
// segments, and only where the host has an address on them.

const healthParallel = 2

// healthTrack is what the loop knows about one guest's health.
type healthTrack struct {
	check   *model.HealthCheck // nil: nothing to probe (no check, or not running here)
	bridges []string           // the host bridges of the guest's NICs (TCP checks dial through them)
	started time.Time          // the run of the guest the state is about
	state   string
	detail  string
	fails   int
	next    time.Time
	probing bool
}

// healthReport sets t's health for a guest of v running since started
// (decide, h.mu held) and returns what the report says of it.
func (h *HostLoop) healthReport(t *vmTrack, v model.VM, started, now time.Time) (state, detail string) {
	if v.Spec.Health == nil {
		t.health = healthTrack{}
		return "", ""
	}
	ht := &t.health
	if ht.state == "" || !ht.started.Equal(started) {
		*ht = healthTrack{started: started, state: model.HealthStarting, next: now}
		// A restarted corrald carries on from what this host reported
		// about this run of the guest, rather than flap to starting.
		if a := v.Actual; a.Host == h.cfg.Self && a.Generation == v.Generation && a.State == model.StateRunning &&
			a.Since.Equal(started.UTC()) && a.Health != "" {
			ht.state, ht.detail = a.Health, a.HealthDetail
		}
	}
	c := *v.Spec.Health
	ht.check = &c
	select {
	case h.probeKick <- struct{}{}:
	default:
	}
	ht.bridges = ht.bridges[:0]
	for _, n := range v.Spec.NICs {
		ht.bridges = append(ht.bridges, h.cfg.Bridge(n.Network))
	}
	return ht.state, ht.detail
}

// probeLoop probes the due guests every tick until ctx ends. While no
// guest here has a check it parks, its ticker stopped, until healthReport
// kicks it: an idle corrald's every wake costs it CPU
// (docs/architecture.md, Measured).
func (h *HostLoop) probeLoop(ctx context.Context, wg *sync.WaitGroup) {
	tick := h.clock.NewTicker(h.cfg.ProbeTick)
	defer tick.Stop()
	sem := make(chan struct{}, healthParallel)
	for {
		if !h.anyCheck() {
			tick.Stop()
			select {
			case <-ctx.Done():
				return
			case <-h.probeKick:
			}
			tick.Reset(h.cfg.ProbeTick)
		}
		select {
		case <-ctx.Done():
			return
		case <-tick.C():
		}
		h.probeDue(ctx, wg, sem)
	}
}

// anyCheck says whether a guest here has a health check to probe.
func (h *HostLoop) anyCheck() bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, t := range h.track {
		if t.health.check != nil {
			return true
		}
	}
	return false
}

// probeDue starts the probes that are due, as many as sem lets run.
func (h *HostLoop) probeDue(ctx context.Context, wg *sync.WaitGroup, sem chan struct{}) {
	now := h.clock.Now()
	h.mu.Lock()
	defer h.mu.Unlock()
	for name, t := range h.track {
		ht := &t.health
		if ht.check == nil || ht.probing || now.Before(ht.next) || t.busy {
			continue
		}
		select {
		case sem <- struct{}{}:
		default:
			return // the rest at the next tick
		}
		ht.probing = true
		c, started, bridges := *ht.check, ht.started, slices.Clone(ht.bridges)
		wg.Add(1)
		go func() {
			defer wg.Done()
			ok, detail := h.probe(ctx, name, c, bridges)
			<-sem
			if h.probed(name, t, started, ok, detail) {
				h.wake() // report the change
			}
		}()
	}
}

// probe runs one check of the named guest, whose NICs are on bridges.
func (h *HostLoop) probe(ctx context.Context, name string, c model.HealthCheck, bridges []string) (ok bool, detail string) {
	ctx, cancel := context.WithTimeout(ctx, c.Timeout())
	defer cancel()
	if c.Exec != "" {
		res, err := h.drv.AgentExec(ctx, name, []string{"/bin/sh", "-c", c.Exec}, c.Timeout())
		switch {
		case errors.Is(err, hypervisor.ErrNoAgent):
			return false, "the guest agent does not answer"
		case err != nil:
			return false, "guest agent: " + err.Error()
		case res.Signal != 0:
			return false, fmt.Sprintf("%q killed by signal %d", c.Exec, res.Signal)
		case res.ExitCode != 0:
			return false, fmt.Sprintf("%q exited %d: %s", c.Exec, res.ExitCode, strings.TrimSpace(res.Output))
		}
		return true, ""
	}
	if len(bridges) == 0 {
		return false, "no NIC to reach the guest through"
	}
	addrs, err := h.drv.GuestAddrs(ctx, name)
	switch {
	case errors.Is(err, hypervisor.ErrNoAgent):
		return false, "no address: the guest agent does not answer"
	case err != nil:
		return false, "guest addresses: " + err.Error()
	case len(addrs) == 0:
		return false, "no address: the guest agent reports none"
	}
	// IPv4 first, and at most a few: each may take the whole timeout.
	slices.SortStableFunc(addrs, func(a, b netip.Addr) int {
		if a.Is4() != b.Is4() {
			if a.Is4() {
				return -1
			}
			return 1
		}
		return 0
	})
	var errs []string
	for _, a := range addrs[:min(len(addrs), 4)] {
		for _, br := range bridges {
			conn, err := dialVia(ctx, br, netip.AddrPortFrom(a, uint16(c.TCPPort)))
			if err == nil {
				conn.Close()
				return true, ""
			}
			errs = append(errs, err.Error())
		}
	}
	return false, "tcp: " + strings.Join(errs, "; ")
}

// dialVia connects to addr through the network device dev only.
func dialVia(ctx context.Context, dev string, addr netip.AddrPort) (net.Conn, error) {
	d := net.Dialer{Control: func(_, _ string, c syscall.RawConn) error {
		var serr error
		if err := c.Control(func(fd uintptr) {
			serr = unix.SetsockoptString(int(fd), unix.SOL_SOCKET, unix.SO_BINDTODEVICE, dev)
		}); err != nil {
			return err
		}
		if serr != nil {
			return fmt.Errorf("bind to %s: %w", dev, serr)
		}
		return nil
	}}
	return d.DialContext(ctx, "tcp", addr.String())
}

// probed records a probe's result and says whether the guest's health
// changed. A result about an earlier run of the guest, or a VM this loop
// tracks anew, is dropped.
func (h *HostLoop) probed(name string, t *vmTrack, started time.Time, ok bool, detail string) bool {
	now := h.clock.Now()
	h.mu.Lock()
	defer h.mu.Unlock()
	ht := &t.health
	ht.probing = false
	if h.track[name] != t || ht.check == nil || !ht.started.Equal(started) {
		return false
	}
	c := *ht.check
	ht.next = now.Add(c.Interval())
	was := ht.state
	switch {
	case ok:
		ht.fails, ht.state, ht.detail = 0, model.HealthHealthy, ""
	case ht.state == model.HealthStarting && now.Sub(started) < c.Start():
		// Booting: not a failure yet.
	default:
		ht.fails++
		if ht.fails >= c.Tries() && ht.state != model.HealthUnhealthy {
			ht.state = model.HealthUnhealthy
			ht.detail = model.Clip(fmt.Sprintf("%d checks failed in a row; last: %s", ht.fails, detail), model.MaxHealthDetail)
			h.log.Warn("guest unhealthy", "vm", name, "detail", ht.detail)
		}
	}
	if ht.state != was && ht.state == model.HealthHealthy {
		h.log.Info("guest healthy", "vm", name)
	}
	return ht.state != was
}

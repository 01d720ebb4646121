package soak

import (
	"context"
	"fmt"
	"time"

	"github.com/corralhq/corral/internal/lab"
)

// FaultKind is a fault the soak injects.
type FaultKind string

// The faults, in the order they rotate through; the hosts rotate too, so
// with three hosts every host meets every fault over fifteen of them.
const (
	CorraldKill     FaultKind = "corrald-kill"     // SIGKILL, started again at once
	CorraldTerm     FaultKind = "corrald-term"     // SIGTERM (a clean stop), started again
	LibvirtdRestart FaultKind = "libvirtd-restart" // libvirtd stopped cleanly and started
	LinkBlip        FaultKind = "link-blip"        // the host cut from its peers for 2 s
	DrainRestore    FaultKind = "drain"            // drained by live migration, then restored
)

var faultKinds = []FaultKind{CorraldKill, CorraldTerm, LibvirtdRestart, LinkBlip, DrainRestore}

// Fault is one injected fault and how it went.
type Fault struct {
	Index    int       `json:"index"`
	Kind     FaultKind `json:"kind"`
	Host     string    `json:"host"`
	Injected time.Time `json:"injected"`
	// Healed is when the fault was undone, Healthy when the cluster was
	// healthy again after (the end of its window).
	Healed  time.Time `json:"healed,omitzero"`
	Healthy time.Time `json:"healthy,omitzero"`
	// LeaderChanges are the elections within its window and grace.
	LeaderChanges int    `json:"leader_changes"`
	Error         string `json:"error,omitempty"`
}

func (f Fault) window() Window { return Window{From: f.Injected, To: f.Healthy} }

// faultWindows are the windows in which a leader change is excused: every
// fault's but a drain's. A drain is an operation, not a fault: leadership
// moving during one (as it did under migration load on a 2-core machine)
// is what the fault-free count must catch.
func faultWindows(faults []Fault) []Window {
	var ws []Window
	for _, f := range faults {
		if f.Kind != DrainRestore {
			ws = append(ws, f.window())
		}
	}
	return ws
}

// String is the fault in one line.
func (f Fault) String() string {
	s := fmt.Sprintf("fault %d %s on %s at %s", f.Index+1, f.Kind, f.Host, f.Injected.Format("15:04:05"))
	if !f.Healed.IsZero() {
		s += fmt.Sprintf(": healed after %.1fs", f.Healed.Sub(f.Injected).Seconds())
	}
	if !f.Healthy.IsZero() {
		s += fmt.Sprintf(", healthy after %.1fs", f.Healthy.Sub(f.Injected).Seconds())
	}
	s += fmt.Sprintf(", leader changes %d", f.LeaderChanges)
	if f.Error != "" {
		s += "; error: " + f.Error
	}
	return s
}

// inject does fault f to h and undoes it; it returns when the fault is
// healed (not yet when the cluster is healthy again).
func (r *Runner) inject(ctx context.Context, kind FaultKind, h *lab.Host) error {
	switch kind {
	case CorraldKill, CorraldTerm:
		if err := h.StopDaemon(ctx, "corrald", kind == CorraldKill); err != nil {
			return err
		}
		return h.StartDaemon(ctx, "corrald")
	case LibvirtdRestart:
		return h.RestartDaemon(ctx, "libvirtd")
	case LinkBlip:
		var peers []*lab.Host
		for _, p := range r.cfg.Lab.Hosts {
			if p != h {
				peers = append(peers, p)
			}
		}
		if err := h.Cut(ctx, peers, lab.Both); err != nil {
			return err
		}
		err := lab.Pause(ctx, 2*time.Second)
		if uerr := h.Uncut(context.WithoutCancel(ctx)); uerr != nil {
			return uerr
		}
		return err
	case DrainRestore:
		return r.drainRestore(ctx, h.Name)
	}
	return fmt.Errorf("unknown fault %q", kind)
}

// drainRestore drains a host, waits until its guests have left, and
// returns it to service.
func (r *Runner) drainRestore(ctx context.Context, name string) error {
	c, err := r.admin.Leader(ctx)
	if err != nil {
		return err
	}
	cctx, cancel := context.WithTimeout(ctx, callTimeout)
	_, err = c.DrainHost(cctx, name)
	cancel()
	if err != nil {
		return fmt.Errorf("drain %s: %w", name, err)
	}
	deadline := time.Now().Add(5 * time.Minute)
	restoreTried := false
	for {
		c, err := r.admin.Leader(ctx)
		if err == nil {
			cctx, cancel := context.WithTimeout(ctx, callTimeout)
			hs, herr := c.Host(cctx, name)
			switch {
			case herr != nil:
				err = herr
			case hs.Mode == "maintenance" && !hs.Draining:
				restoreTried = true
				_, err = c.RestoreHost(cctx, name, false)
			case hs.Mode == "active" && !hs.Draining && restoreTried:
				err = nil // restored by a call whose answer was lost
			default:
				// Also active before this host has applied the drain.
				err = fmt.Errorf("%s is %s (draining %v)", name, hs.Mode, hs.Draining)
			}
			cancel()
			if err == nil {
				return nil
			}
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("restore %s: %w", name, err)
		}
		if err := lab.Pause(ctx, time.Second); err != nil {
			return err
		}
	}
}

// faults injects a fault every FaultEvery from start, rotating kinds and
// hosts, one at a time: each is healed and the cluster healthy again
// before the next is due. None starts in the last half period before end.
func (r *Runner) faults(ctx context.Context, start, end time.Time) {
	if r.cfg.FaultEvery < 0 {
		return
	}
	hosts := r.cfg.Lab.Hosts
	for i := 0; ; i++ {
		at := start.Add(time.Duration(i+1) * r.cfg.FaultEvery)
		if at.Before(time.Now()) {
			at = time.Now() // the previous one took longer than a period
		}
		if at.Add(r.cfg.FaultEvery / 2).After(end) {
			return
		}
		if lab.Pause(ctx, time.Until(at)) != nil {
			return
		}
		f := Fault{Index: i, Kind: faultKinds[i%len(faultKinds)], Host: hosts[i%len(hosts)].Name, Injected: time.Now()}
		r.mu.Lock()
		r.faultLog = append(r.faultLog, f)
		r.mu.Unlock()
		r.logf("fault %d: %s on %s", i+1, f.Kind, f.Host)
		err := r.inject(ctx, f.Kind, hosts[i%len(hosts)])
		f.Healed = time.Now()
		if err == nil {
			err = r.admin.WaitHealthy(ctx, 3*time.Minute)
		} else {
			// Still wait, so the next fault finds a whole cluster.
			r.admin.WaitHealthy(ctx, 3*time.Minute)
		}
		f.Healthy = time.Now()
		if err != nil {
			f.Error = err.Error()
		}
		r.mu.Lock()
		r.faultLog[len(r.faultLog)-1] = f
		r.mu.Unlock()
		r.logf("%s", f)
		if ctx.Err() != nil {
			return
		}
	}
}

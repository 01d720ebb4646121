package soak

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/corralhq/corral/api"
	"github.com/corralhq/corral/internal/lab"
)

// ChurnStats are what the churn did.
type ChurnStats struct {
	// Ops counts successful operations by kind (create, delete, stop,
	// start), Errors the failed ones.
	Ops    map[string]int `json:"ops"`
	Errors map[string]int `json:"errors"`
	// Recent are the last errors, with their times.
	Recent []string `json:"recent_errors,omitempty"`
	// LongestFailing is the longest time operations kept failing with
	// none succeeding; Persistent says it reached Config.FailingFor.
	LongestFailing time.Duration `json:"longest_failing_ns"`
	Persistent     bool          `json:"persistent"`
	// Kept are the churn VMs at the end; Unsettled says how the cluster
	// still differed from them two minutes after the end (empty: none).
	Kept      []string `json:"kept"`
	Unsettled string   `json:"unsettled,omitempty"`
}

func (s ChurnStats) total(m map[string]int) int {
	n := 0
	for _, v := range m {
		n += v
	}
	return n
}

// churner keeps a working set of small test guests changing through the
// admin API.
type churner struct {
	r       *Runner
	next    int
	live    []string // oldest first
	stopped string   // stopped by the churn, to start again
	ticks   int
	// failingSince is the first error after the last success (zero: the
	// last operation succeeded).
	failingSince time.Time
}

const churnImage = "soak-base"

// callTimeout bounds every admin call of the soak: a corrald that does
// not answer must not stop the churn or the faults.
const callTimeout = 30 * time.Second

// op runs one admin call and counts it.
func (ch *churner) op(ctx context.Context, kind, vm string, call func(context.Context) error) error {
	cctx, cancel := context.WithTimeout(ctx, callTimeout)
	err := call(cctx)
	cancel()
	now := time.Now()
	ch.r.mu.Lock()
	defer ch.r.mu.Unlock()
	st := &ch.r.churn
	if err == nil {
		st.Ops[kind]++
		ch.failingSince = time.Time{}
		return nil
	}
	st.Errors[kind]++
	st.Recent = append(st.Recent, fmt.Sprintf("%s %s %s: %v", now.Format("15:04:05"), kind, vm, err))
	if len(st.Recent) > 20 {
		st.Recent = st.Recent[len(st.Recent)-20:]
	}
	if ch.failingSince.IsZero() {
		ch.failingSince = now
	}
	st.LongestFailing = max(st.LongestFailing, now.Sub(ch.failingSince))
	if st.LongestFailing >= ch.r.cfg.FailingFor {
		st.Persistent = true
	}
	ch.r.logf("churn: %s %s: %v", kind, vm, err)
	return err
}

// tick starts the VM the churn stopped once it is down (or stops one, every
// StopEvery-th tick), creates one, and deletes the oldest beyond the
// working set.
func (ch *churner) tick(ctx context.Context) {
	ch.ticks++
	c, err := ch.r.admin.Leader(ctx)
	if err != nil {
		ch.op(ctx, "connect", "", func(context.Context) error { return err })
		return
	}
	switch {
	case ch.stopped != "":
		cctx, cancel := context.WithTimeout(ctx, callTimeout)
		vm, err := c.VM(cctx, ch.stopped)
		cancel()
		if errors.Is(err, api.ErrNotFound) {
			ch.stopped = ""
		} else if err == nil && vm.State == "stopped" {
			name := ch.stopped
			if ch.op(ctx, "start", name, func(ctx context.Context) error { _, err := c.StartVM(ctx, name); return err }) == nil {
				ch.stopped = ""
			}
		}
	case ch.ticks%ch.r.cfg.StopEvery == 0 && len(ch.live) > 0:
		name := ch.live[len(ch.live)-1]
		if ch.op(ctx, "stop", name, func(ctx context.Context) error { _, err := c.StopVM(ctx, name); return err }) == nil {
			ch.stopped = name
		}
	}
	name := fmt.Sprintf("s%d", ch.next)
	ch.next++
	shared := filepath.Join(ch.r.cfg.Lab.SharedDir(), "guest")
	req := api.VMCreateRequest{Name: name, Spec: api.VMSpec{VCPUs: 1, MemoryMiB: 96,
		Disks:  []api.Disk{{Image: churnImage}},
		Kernel: &api.Kernel{Kernel: filepath.Join(shared, "vmlinuz"), Initrd: filepath.Join(shared, "initrd.img"), Cmdline: "console=ttyS0 quiet corral.name=" + name}}}
	err = ch.op(ctx, "create", name, func(ctx context.Context) error { _, err := c.CreateVM(ctx, req); return err })
	if err == nil {
		ch.live = append(ch.live, name)
	} else {
		cctx, cancel := context.WithTimeout(ctx, callTimeout)
		if _, gerr := c.VM(cctx, name); gerr == nil {
			ch.live = append(ch.live, name) // it was created all the same (a timeout after the commit)
		}
		cancel()
	}
	for len(ch.live) > ch.r.cfg.WorkingSet {
		old := ch.live[0]
		err := ch.op(ctx, "delete", old, func(ctx context.Context) error { _, err := c.DeleteVM(ctx, old, false); return err })
		if err != nil && !errors.Is(err, api.ErrNotFound) {
			break // again next tick
		}
		ch.live = ch.live[1:]
		if ch.stopped == old {
			ch.stopped = ""
		}
	}
}

// run ticks every ChurnEvery until end (or ctx ends); a tick under way
// when end comes finishes.
func (ch *churner) run(ctx context.Context, end time.Time) {
	for next := time.Now(); next.Before(end); next = next.Add(ch.r.cfg.ChurnEvery) {
		if lab.Pause(ctx, time.Until(next)) != nil {
			return
		}
		ch.tick(ctx)
	}
}

// settle waits up to timeout for the cluster's VMs to be exactly the
// churn's: each in its desired state, none of those it deleted left. It
// returns how they still differed, or "".
func (ch *churner) settle(ctx context.Context, timeout time.Duration) string {
	deadline := time.Now().Add(timeout)
	why := ""
	for {
		why = ch.differences(ctx)
		if why == "" || time.Now().After(deadline) {
			return why
		}
		if lab.Pause(ctx, 2*time.Second) != nil {
			return why
		}
	}
}

func (ch *churner) differences(ctx context.Context) string {
	c, err := ch.r.admin.Leader(ctx)
	if err != nil {
		return err.Error()
	}
	cctx, cancel := context.WithTimeout(ctx, callTimeout)
	vms, err := c.VMs(cctx)
	cancel()
	if err != nil {
		return "vm ls: " + err.Error()
	}
	var diffs []string
	seen := map[string]bool{}
	for _, v := range vms {
		seen[v.Name] = true
		switch {
		case !slices.Contains(ch.live, v.Name):
			diffs = append(diffs, fmt.Sprintf("%s deleted but still there (%s on %s)", v.Name, v.State, v.Host))
		case v.State != v.Desired:
			diffs = append(diffs, fmt.Sprintf("%s %s on %s, desired %s %s", v.Name, v.State, v.Host, v.Desired, v.Message))
		}
	}
	for _, n := range ch.live {
		if !seen[n] {
			diffs = append(diffs, n+" missing")
		}
	}
	return strings.Join(diffs, "; ")
}

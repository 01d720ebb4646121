package soak

import (
	"context"
	"fmt"
	"io"
	"maps"
	"slices"
	"strings"
	"text/tabwriter"
	"time"
)

// Report is a soak's outcome; it is the JSON report.
type Report struct {
	Started     time.Time     `json:"started"`
	Ended       time.Time     `json:"ended"`
	Duration    time.Duration `json:"duration_ns"`
	Hosts       []string      `json:"hosts"`
	SampleEvery time.Duration `json:"sample_every_ns"`
	FaultEvery  time.Duration `json:"fault_every_ns"`
	Thresholds  Thresholds    `json:"thresholds"`
	Verdicts    []HostVerdict `json:"verdicts"`
	Churn       ChurnStats    `json:"churn"`
	Faults      []Fault       `json:"faults"`
	// LeaderChanges are every election in the run; Quiet of them came
	// with no fault injected (outside every fault's window and grace).
	LeaderChanges []LeaderChange `json:"leader_changes"`
	QuietLeaders  int            `json:"leader_changes_fault_free"`
	FaultLeaders  int            `json:"leader_changes_around_faults"`
	// Terms are the first and last Raft terms seen.
	Terms [2]uint64 `json:"raft_terms"`
	Notes []string  `json:"notes,omitempty"`
	// Failures say why the soak did not pass; none is a pass.
	Failures []string `json:"failures,omitempty"`
	Pass     bool     `json:"pass"`
	// Series are the samples, per host.
	Series map[string][]Sample `json:"series"`
}

// report judges what the run recorded; r.mu is held.
func (r *Runner) report(ctx context.Context, start, ended time.Time) Report {
	rep := Report{Started: start, Ended: ended, Duration: r.cfg.Duration, Hosts: hostsOf(r.cfg.Lab),
		SampleEvery: r.cfg.SampleEvery, FaultEvery: r.cfg.FaultEvery, Thresholds: r.cfg.Thresholds,
		Churn: r.churn, Faults: slices.Clone(r.faultLog), LeaderChanges: slices.Clone(r.leaders),
		Notes: slices.Clone(r.notes), Series: map[string][]Sample{}, Terms: r.terms}
	fail := func(format string, args ...any) { rep.Failures = append(rep.Failures, fmt.Sprintf(format, args...)) }
	if ctx.Err() != nil {
		fail("interrupted after %v", ended.Sub(start).Round(time.Second))
	}
	for _, h := range rep.Hosts {
		rep.Series[h] = slices.Clone(r.series[h])
		v := Judge(h, r.series[h], r.cfg.Thresholds)
		rep.Verdicts = append(rep.Verdicts, v)
		if !v.OK {
			fail("%s: %s", h, v.Verdict)
		}
	}
	ws := faultWindows(rep.Faults)
	rep.QuietLeaders, rep.FaultLeaders = ClassifyLeaderChanges(rep.LeaderChanges, ws, r.cfg.LeaderGrace, ended)
	for i := range rep.Faults {
		f := &rep.Faults[i]
		for _, l := range rep.LeaderChanges {
			to := f.Healthy
			if to.IsZero() {
				to = ended
			}
			if !l.At.Before(f.Injected) && !l.At.After(to.Add(r.cfg.LeaderGrace)) {
				f.LeaderChanges++
			}
		}
		if f.Error != "" {
			fail("fault %d %s on %s: %s", f.Index+1, f.Kind, f.Host, f.Error)
		}
	}
	if rep.QuietLeaders > 0 {
		var at []string
		for _, l := range rep.LeaderChanges {
			if !l.Fault {
				at = append(at, l.At.Format("15:04:05")+" "+l.Leader)
			}
		}
		fail("%d leader changes with no fault injected (%s)", rep.QuietLeaders, strings.Join(at, ", "))
	}
	if rep.Churn.Persistent {
		fail("churn operations kept failing for %v (last errors: %s)", rep.Churn.LongestFailing.Round(time.Second), strings.Join(rep.Churn.Recent, "; "))
	}
	if rep.Churn.Unsettled != "" {
		fail("churn not settled 2 minutes after the end: %s", rep.Churn.Unsettled)
	}
	if rep.Churn.total(rep.Churn.Ops) == 0 && ctx.Err() == nil {
		fail("no churn operation succeeded")
	}
	rep.Pass = len(rep.Failures) == 0
	return rep
}

// raftTotals adds up the Raft timer figures of every corrald process in
// samples (each process's last reading: its counters start at zero).
func raftTotals(samples []Sample) (RaftTimers, int) {
	var t RaftTimers
	procs := 0
	for _, seg := range Segments(samples) {
		for i := len(seg.Samples) - 1; i >= 0; i-- {
			if rt := seg.Samples[i].Raft; rt != nil {
				t.Contacts += rt.Contacts
				t.Over100ms += rt.Over100ms
				t.Over450ms += rt.Over450ms
				t.MaxMs = max(t.MaxMs, rt.MaxMs)
				t.HeartbeatTimeouts += rt.HeartbeatTimeouts
				t.LeaseTimeouts += rt.LeaseTimeouts
				procs++
				break
			}
		}
	}
	return t, procs
}

// Table writes the report for people: a row per host (start → end
// medians of the judged segment), then churn, faults, leader changes and
// the verdict.
func (rep Report) Table(w io.Writer) {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "HOST\tRSS MiB\tGOROUTINES\tFDS\tCONNS\tSEGMENT\tVERDICT")
	arrow := func(a, b float64, prec int) string {
		if a < 0 || b < 0 {
			return "-"
		}
		return fmt.Sprintf("%.*f→%.*f", prec, a, prec, b)
	}
	for _, v := range rep.Verdicts {
		seg := "-"
		if v.Segments > 0 {
			as := ""
			if v.Role != "" {
				as = " as " + v.Role
			}
			seg = fmt.Sprintf("%v, %d samples%s (longest of %d)", v.Span.Round(time.Second), v.Judged, as, v.Segments)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", v.Host,
			arrow(v.Start.RSSKiB/1024, v.End.RSSKiB/1024, 1), arrow(v.Start.Goroutines, v.End.Goroutines, 0),
			arrow(v.Start.FDs, v.End.FDs, 0), arrow(v.Start.Conns, v.End.Conns, 0), seg, v.Verdict)
	}
	tw.Flush()
	for _, v := range rep.Verdicts {
		if line := connsBy(v.Start.ConnsBy, v.End.ConnsBy); line != "" {
			fmt.Fprintf(w, "conns %s: %s\n", v.Host, line)
		}
	}
	for _, h := range rep.Hosts {
		if rt, procs := raftTotals(rep.Series[h]); procs > 0 {
			fmt.Fprintf(w, "raft %s: %d leader contact samples, %d over 100 ms, %d over 450 ms (the lease), max %.0f ms; %d heartbeat timeouts, %d lease timeouts (%d corrald processes)\n",
				h, rt.Contacts, rt.Over100ms, rt.Over450ms, rt.MaxMs, rt.HeartbeatTimeouts, rt.LeaseTimeouts, procs)
		}
	}
	c := rep.Churn
	var ops []string
	for _, k := range []string{"create", "delete", "stop", "start"} {
		ops = append(ops, fmt.Sprintf("%s %d", k, c.Ops[k]))
	}
	settled := "settled"
	if c.Unsettled != "" {
		settled = "NOT settled: " + c.Unsettled
	}
	fmt.Fprintf(w, "churn: %d ops (%s), %d errors, longest failing stretch %v; %d VMs kept, %s\n",
		c.total(c.Ops), strings.Join(ops, ", "), c.total(c.Errors), c.LongestFailing.Round(time.Second), len(c.Kept), settled)
	for _, e := range c.Recent {
		fmt.Fprintln(w, "  churn error:", e)
	}
	fmt.Fprintf(w, "faults: %d\n", len(rep.Faults))
	for _, f := range rep.Faults {
		fmt.Fprintln(w, " ", f)
	}
	fmt.Fprintf(w, "leader changes: %d fault-free, %d around faults (raft term %d→%d)\n", rep.QuietLeaders, rep.FaultLeaders, rep.Terms[0], rep.Terms[1])
	for _, n := range rep.Notes {
		fmt.Fprintln(w, "note:", n)
	}
	if rep.Pass {
		fmt.Fprintf(w, "verdict: PASS (%v soak, %d hosts)\n", rep.Duration, len(rep.Hosts))
		return
	}
	fmt.Fprintf(w, "verdict: FAIL\n")
	for _, f := range rep.Failures {
		fmt.Fprintln(w, "  -", f)
	}
}

// connsBy is "raft-out 2→6, rpc-in 1→1, ...": every service and side seen
// at the start or the end, medians, a missing one counting 0.
func connsBy(start, end map[string]float64) string {
	keys := map[string]bool{}
	for k := range start {
		keys[k] = true
	}
	for k := range end {
		keys[k] = true
	}
	var parts []string
	for _, k := range slices.Sorted(maps.Keys(keys)) {
		parts = append(parts, fmt.Sprintf("%s %g→%g", k, start[k], end[k]))
	}
	return strings.Join(parts, ", ")
}

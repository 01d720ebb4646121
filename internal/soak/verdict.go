package soak

import (
	"fmt"
	"slices"
	"strings"
	"time"
)

// Sample is one reading of one host's corrald.
type Sample struct {
	At  time.Time `json:"at"`
	PID int       `json:"pid"`
	// RSSKiB is VmRSS from /proc/PID/status.
	RSSKiB int64 `json:"rss_kib"`
	// FDs counts /proc/PID/fd.
	FDs int `json:"fds"`
	// Goroutines is go_goroutines from corrald's metrics; -1 when the
	// scrape failed.
	Goroutines int `json:"goroutines"`
	// Conns counts the process's established TCP connections; -1 when
	// they could not be read.
	Conns int `json:"conns"`
	// ConnsBy splits them by corrald service and side (raft-out: this
	// corrald dialled a peer's raft port; raft-in: a peer dialled it).
	ConnsBy map[string]int `json:"conns_by,omitempty"`
	// Role is the process's Raft state (leader, follower, candidate) from
	// corral_raft_state; empty when the scrape failed.
	Role string `json:"role,omitempty"`
	// Raft holds corrald's Raft timer figures since it started (nil when
	// the scrape failed).
	Raft *RaftTimers `json:"raft,omitempty"`
}

// RaftTimers are the corral_raft_* timer metrics of one scrape: the
// contact ages the process sampled while leading (count, how many passed
// 100 ms and 250 ms, the largest) and its election and step-down counts.
type RaftTimers struct {
	Contacts          uint64  `json:"contacts"`
	Over100ms         uint64  `json:"contacts_over_100ms"`
	Over450ms         uint64  `json:"contacts_over_450ms"`
	MaxMs             float64 `json:"contact_max_ms"`
	HeartbeatTimeouts uint64  `json:"heartbeat_timeouts"`
	LeaseTimeouts     uint64  `json:"lease_timeouts"`
}

// Segment is the samples of one corrald process: a restart (the faults
// kill or stop corrald) starts a new one.
type Segment struct {
	PID     int      `json:"pid"`
	Samples []Sample `json:"samples"`
}

// Span is the time from the segment's first sample to its last.
func (s Segment) Span() time.Duration {
	if len(s.Samples) < 2 {
		return 0
	}
	return s.Samples[len(s.Samples)-1].At.Sub(s.Samples[0].At)
}

// Segments splits a host's samples, in time order, at every change of
// corrald's PID. Samples without a process (PID 0) end a segment and
// belong to none.
func Segments(samples []Sample) []Segment {
	var out []Segment
	var cur *Segment
	for _, s := range samples {
		if s.PID == 0 {
			cur = nil
			continue
		}
		if cur == nil || cur.PID != s.PID {
			out = append(out, Segment{PID: s.PID})
			cur = &out[len(out)-1]
		}
		cur.Samples = append(cur.Samples, s)
	}
	return out
}

// Longest is the segment spanning the most time (the one with more
// samples on a tie); ok is false when there is none.
func Longest(segs []Segment) (Segment, bool) {
	best, ok := Segment{}, false
	for _, s := range segs {
		if !ok || s.Span() > best.Span() || s.Span() == best.Span() && len(s.Samples) > len(best.Samples) {
			best, ok = s, true
		}
	}
	return best, ok
}

// Thresholds decide whether a series is flat.
type Thresholds struct {
	// Warmup is left out at the start of the judged segment: a new
	// corrald allocates and connects for a while.
	Warmup time.Duration `json:"warmup_ns"`
	// MinSamples: a judged segment with fewer samples after the warm-up
	// gets no verdict (insufficient samples), which is not a pass.
	MinSamples int `json:"min_samples"`
	// The end level may reach start*Ratio + Slack (goroutines, RSS) or
	// start + Slack (file descriptors).
	GoroutineRatio float64 `json:"goroutine_ratio"`
	GoroutineSlack float64 `json:"goroutine_slack"`
	RSSRatio       float64 `json:"rss_ratio"`
	RSSSlackKiB    float64 `json:"rss_slack_kib"`
	FDSlack        float64 `json:"fd_slack"`
}

// DefaultThresholds are those of the reliability issue, with the warm-up
// min(5 min, a tenth of the run).
func DefaultThresholds(run time.Duration) Thresholds {
	return Thresholds{
		Warmup: min(5*time.Minute, run/10), MinSamples: 20,
		GoroutineRatio: 1.10, GoroutineSlack: 5,
		RSSRatio: 1.25, RSSSlackKiB: 8 << 10,
		FDSlack: 5,
	}
}

// Levels are medians over a window of samples; a field is -1 when the
// window has no reading of it.
type Levels struct {
	RSSKiB     float64 `json:"rss_kib"`
	Goroutines float64 `json:"goroutines"`
	FDs        float64 `json:"fds"`
	Conns      float64 `json:"conns"`
	// ConnsBy are the medians of Sample.ConnsBy, per key.
	ConnsBy map[string]float64 `json:"conns_by,omitempty"`
}

// HostVerdict is the judgement of one host's corrald.
type HostVerdict struct {
	Host string `json:"host"`
	// Segments is how many corrald processes the host ran during the
	// soak; the longest is judged.
	Segments int `json:"segments"`
	PID      int `json:"pid"`
	// Span is the judged segment's length, Judged its samples after the
	// warm-up in Role, Window how many of those each median takes.
	Span   time.Duration `json:"span_ns"`
	Role   string        `json:"role,omitempty"`
	Judged int           `json:"judged"`
	Window int           `json:"window"`
	Start  Levels        `json:"start"`
	End    Levels        `json:"end"`
	// Verdict is flat, insufficient samples (...), or what grew.
	Verdict string `json:"verdict"`
	OK      bool   `json:"ok"`
}

// Judge decides whether host's corrald stayed flat. It takes the longest
// segment, drops the warm-up from its start, keeps the samples of the
// Raft role the process held longest (a leader runs replication to each
// follower and the leader's loops, and keeps more connections: a host
// that is a follower at the start and the leader at the end would show a
// step that is no leak, and a leak could hide behind the opposite step),
// and compares the median of the first tenth of those (at least three)
// with that of the last tenth: goroutines and RSS may grow by their ratio
// and slack, file descriptors by their slack. Connections are reported,
// not judged.
func Judge(host string, samples []Sample, th Thresholds) HostVerdict {
	segs := Segments(samples)
	v := HostVerdict{Host: host, Segments: len(segs), Start: none(), End: none()}
	seg, ok := Longest(segs)
	if !ok {
		v.Verdict = fmt.Sprintf("insufficient samples (corrald never seen; need %d)", th.MinSamples)
		return v
	}
	v.PID, v.Span = seg.PID, seg.Span()
	from := seg.Samples[0].At.Add(th.Warmup)
	var warm []Sample
	for _, s := range seg.Samples {
		if !s.At.Before(from) {
			warm = append(warm, s)
		}
	}
	v.Role = mainRole(warm)
	var judged []Sample
	for _, s := range warm {
		if s.Role == v.Role {
			judged = append(judged, s)
		}
	}
	v.Judged = len(judged)
	if len(judged) < th.MinSamples || len(judged) < 2 {
		in := ""
		if v.Role != "" {
			in = " as " + v.Role
		}
		v.Verdict = fmt.Sprintf("insufficient samples (%d%s after the %v warm-up, need %d)", len(judged), in, th.Warmup, th.MinSamples)
		return v
	}
	w := max(3, (len(judged)+9)/10)
	w = min(w, len(judged)/2)
	v.Window = w
	v.Start, v.End = levels(judged[:w]), levels(judged[len(judged)-w:])
	if v.Start.Goroutines < 0 || v.End.Goroutines < 0 {
		v.Verdict = "insufficient samples (no goroutine count in a window: metrics unreachable)"
		return v
	}
	var grew []string
	check := func(what string, start, end, limit float64, unit string) {
		if end > limit {
			grew = append(grew, fmt.Sprintf("%s %.0f→%.0f%s (limit %.0f)", what, start, end, unit, limit))
		}
	}
	check("goroutines", v.Start.Goroutines, v.End.Goroutines, v.Start.Goroutines*th.GoroutineRatio+th.GoroutineSlack, "")
	check("RSS", v.Start.RSSKiB/1024, v.End.RSSKiB/1024, (v.Start.RSSKiB*th.RSSRatio+th.RSSSlackKiB)/1024, " MiB")
	check("fds", v.Start.FDs, v.End.FDs, v.Start.FDs+th.FDSlack, "")
	if len(grew) > 0 {
		v.Verdict = "grows: " + strings.Join(grew, ", ")
		return v
	}
	v.Verdict, v.OK = "flat", true
	return v
}

// mainRole is the role most samples of ss have ("" when none has one).
// Samples without a role (a failed scrape) count for none.
func mainRole(ss []Sample) string {
	n := map[string]int{}
	best := ""
	for _, s := range ss {
		if s.Role == "" {
			continue
		}
		n[s.Role]++
		if n[s.Role] > n[best] || n[s.Role] == n[best] && s.Role < best {
			best = s.Role
		}
	}
	return best
}

func none() Levels { return Levels{RSSKiB: -1, Goroutines: -1, FDs: -1, Conns: -1} }

// levels are the medians of the readings present in ss.
func levels(ss []Sample) Levels {
	var rss, gr, fds, conns []float64
	for _, s := range ss {
		rss = append(rss, float64(s.RSSKiB))
		fds = append(fds, float64(s.FDs))
		if s.Goroutines >= 0 {
			gr = append(gr, float64(s.Goroutines))
		}
		if s.Conns >= 0 {
			conns = append(conns, float64(s.Conns))
		}
	}
	by := map[string]float64{}
	for k := range keysOf(ss) {
		var xs []float64
		for _, s := range ss {
			if s.Conns >= 0 {
				xs = append(xs, float64(s.ConnsBy[k]))
			}
		}
		by[k] = median(xs)
	}
	return Levels{RSSKiB: median(rss), Goroutines: median(gr), FDs: median(fds), Conns: median(conns), ConnsBy: by}
}

// keysOf are the ConnsBy keys in ss.
func keysOf(ss []Sample) map[string]bool {
	keys := map[string]bool{}
	for _, s := range ss {
		for k := range s.ConnsBy {
			keys[k] = true
		}
	}
	return keys
}

// median of xs, -1 for none.
func median(xs []float64) float64 {
	if len(xs) == 0 {
		return -1
	}
	xs = slices.Clone(xs)
	slices.Sort(xs)
	n := len(xs)
	if n%2 == 1 {
		return xs[n/2]
	}
	return (xs[n/2-1] + xs[n/2]) / 2
}

// Window is a fault's time: from its injection to the cluster healthy
// again after its heal.
type Window struct {
	From time.Time `json:"from"`
	// To is zero while the fault is not over.
	To time.Time `json:"to,omitzero"`
}

// LeaderChange is a leader election recorded in the cluster's events.
type LeaderChange struct {
	At     time.Time `json:"at"`
	Leader string    `json:"leader"`
	// Fault is true when it happened within a fault's window or its
	// grace after.
	Fault bool `json:"around_fault"`
}

// ClassifyLeaderChanges marks each change that falls within a window,
// extended by grace at its end (an open window reaches now), as around a
// fault, and returns how many fell outside every window (fault-free) and
// how many within.
func ClassifyLeaderChanges(changes []LeaderChange, windows []Window, grace time.Duration, now time.Time) (quiet, around int) {
	for i := range changes {
		at := changes[i].At
		changes[i].Fault = false
		for _, w := range windows {
			to := w.To
			if to.IsZero() {
				to = now
			}
			if !at.Before(w.From) && !at.After(to.Add(grace)) {
				changes[i].Fault = true
				break
			}
		}
		if changes[i].Fault {
			around++
		} else {
			quiet++
		}
	}
	return quiet, around
}

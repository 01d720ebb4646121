package soak

import (
	"strings"
	"testing"
	"time"

	"github.com/corralhq/corral/internal/lab"
)

var t0 = time.Date(2026, 12, 3, 6, 0, 0, 0, time.UTC)

// series makes n samples of pid, every 30 s from start, with f giving
// RSS (KiB), goroutines and fds for sample i.
func series(start time.Time, pid, n int, f func(i int) (int64, int, int)) []Sample {
	var out []Sample
	for i := range n {
		rss, gr, fds := f(i)
		out = append(out, Sample{At: start.Add(time.Duration(i) * 30 * time.Second), PID: pid, RSSKiB: rss, Goroutines: gr, FDs: fds, Conns: 6})
	}
	return out
}

func flat(int) (int64, int, int) { return 60 << 10, 150, 40 }

func TestSegments(t *testing.T) {
	s := series(t0, 10, 4, flat)
	s = append(s, Sample{At: t0.Add(2 * time.Minute)}) // corrald down
	s = append(s, series(t0.Add(150*time.Second), 11, 6, flat)...)
	s = append(s, series(t0.Add(6*time.Minute), 12, 2, flat)...)
	segs := Segments(s)
	if len(segs) != 3 || segs[0].PID != 10 || len(segs[0].Samples) != 4 || segs[1].PID != 11 || len(segs[1].Samples) != 6 {
		t.Fatalf("segments %+v", segs)
	}
	long, ok := Longest(segs)
	if !ok || long.PID != 11 || long.Span() != 150*time.Second {
		t.Fatalf("longest %d span %v", long.PID, long.Span())
	}
	if _, ok := Longest(nil); ok {
		t.Fatal("a longest segment of none")
	}
}

func TestJudge(t *testing.T) {
	th := DefaultThresholds(time.Hour) // 5 min warm-up, 20 samples
	cases := []struct {
		name    string
		samples []Sample
		ok      bool
		verdict string
	}{
		{"flat", series(t0, 1, 120, flat), true, "flat"},
		{"noisy but flat", series(t0, 1, 120, func(i int) (int64, int, int) {
			return int64(60<<10 + (i%7)*900), 150 + i%9, 40 + i%4
		}), true, "flat"},
		{"warm-up growth is left out", series(t0, 1, 120, func(i int) (int64, int, int) {
			if i < 10 { // first 5 min: growing
				return int64(20<<10 + i*4<<10), 50 + 10*i, 20 + i*2
			}
			return flat(i)
		}), true, "flat"},
		{"goroutine leak", series(t0, 1, 120, func(i int) (int64, int, int) {
			return 60 << 10, 150 + i, 40
		}), false, "grows: goroutines"},
		{"RSS leak", series(t0, 1, 120, func(i int) (int64, int, int) {
			return int64(60<<10 + i*300), 150, 40 // +35 MiB over the hour
		}), false, "grows: RSS"},
		{"fd leak", series(t0, 1, 120, func(i int) (int64, int, int) {
			return 60 << 10, 150, 40 + i/10
		}), false, "grows: fds"},
		{"too short", series(t0, 1, 25, flat), false, "insufficient samples (15 after"},
		{"no corrald", nil, false, "insufficient samples (corrald never seen"},
		{"no metrics", series(t0, 1, 120, func(int) (int64, int, int) { return 60 << 10, -1, 40 }), false, "insufficient samples (no goroutine count"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			v := Judge("h1", c.samples, th)
			if v.OK != c.ok || !strings.HasPrefix(v.Verdict, c.verdict) {
				t.Fatalf("verdict %q ok=%v, want %q ok=%v (%+v)", v.Verdict, v.OK, c.verdict, c.ok, v)
			}
		})
	}
}

// A restart starts a new segment: the leak of a process that ran only
// briefly is not judged, the longest process is, from its own start.
func TestJudgeLongestSegment(t *testing.T) {
	th := DefaultThresholds(time.Hour)
	s := series(t0, 1, 10, func(i int) (int64, int, int) { return 60 << 10, 150 + 50*i, 40 })
	s = append(s, series(t0.Add(5*time.Minute), 2, 100, func(i int) (int64, int, int) {
		if i < 10 {
			return 20 << 10, 80, 20 // its own warm-up
		}
		return flat(i)
	})...)
	v := Judge("h2", s, th)
	if !v.OK || v.PID != 2 || v.Segments != 2 || v.Judged != 90 || v.Window != 9 {
		t.Fatalf("%+v", v)
	}
	if v.Start.Goroutines != 150 || v.End.RSSKiB != 60<<10 {
		t.Fatalf("levels %+v %+v", v.Start, v.End)
	}
}

// A 6 minute smoke: warm-up 36 s, samples every 3 s.
func TestJudgeShortRun(t *testing.T) {
	th := DefaultThresholds(6 * time.Minute)
	if th.Warmup != 36*time.Second {
		t.Fatalf("warm-up %v", th.Warmup)
	}
	var s []Sample
	for i := range 120 {
		s = append(s, Sample{At: t0.Add(time.Duration(i) * 3 * time.Second), PID: 7, RSSKiB: 50 << 10, Goroutines: 140, FDs: 30})
	}
	if v := Judge("h1", s, th); !v.OK || v.Judged != 108 {
		t.Fatalf("%+v", v)
	}
}

func TestMedian(t *testing.T) {
	for _, c := range []struct {
		in   []float64
		want float64
	}{{nil, -1}, {[]float64{3}, 3}, {[]float64{5, 1, 3}, 3}, {[]float64{4, 1, 3, 2}, 2.5}} {
		if got := median(c.in); got != c.want {
			t.Errorf("median(%v) = %v, want %v", c.in, got, c.want)
		}
	}
}

func TestClassifyLeaderChanges(t *testing.T) {
	at := func(s int) time.Time { return t0.Add(time.Duration(s) * time.Second) }
	windows := []Window{{From: at(100), To: at(130)}, {From: at(400)}} // the second still open
	changes := []LeaderChange{
		{At: at(50)},  // before any fault
		{At: at(100)}, // at the injection
		{At: at(155)}, // within the grace after the heal
		{At: at(161)}, // after the grace
		{At: at(420)}, // in the open window
	}
	quiet, around := ClassifyLeaderChanges(changes, windows, 30*time.Second, at(430))
	if quiet != 2 || around != 3 {
		t.Fatalf("quiet %d around %d", quiet, around)
	}
	for i, want := range []bool{false, true, true, false, true} {
		if changes[i].Fault != want {
			t.Errorf("change %d around a fault: %v, want %v", i, changes[i].Fault, want)
		}
	}
}

func TestDefaultsScaleWithDuration(t *testing.T) {
	l := &lab.Lab{Hosts: []*lab.Host{{Name: "h1"}}}
	for _, c := range []struct {
		run, sample, fault, warmup time.Duration
	}{
		{time.Hour, 30 * time.Second, 5 * time.Minute, 5 * time.Minute},
		{6 * time.Minute, 3 * time.Second, 30 * time.Second, 36 * time.Second},
		{2 * time.Hour, 30 * time.Second, 5 * time.Minute, 5 * time.Minute},
	} {
		cfg, err := Config{Lab: l, Duration: c.run}.withDefaults()
		if err != nil {
			t.Fatal(err)
		}
		if cfg.SampleEvery != c.sample || cfg.FaultEvery != c.fault || cfg.Thresholds.Warmup != c.warmup {
			t.Errorf("%v: sample %v fault %v warm-up %v", c.run, cfg.SampleEvery, cfg.FaultEvery, cfg.Thresholds.Warmup)
		}
	}
	if _, err := (Config{Lab: l}).withDefaults(); err == nil {
		t.Error("no duration accepted")
	}
}

func TestReportTable(t *testing.T) {
	th := DefaultThresholds(time.Hour)
	h1 := series(t0, 1, 120, flat)
	for i := range h1 {
		h1[i].ConnsBy = map[string]int{"raft-out": 2, "raft-in": 2 + i/60, "rpc-out": 2}
	}
	rep := Report{Duration: time.Hour, Hosts: []string{"h1", "h2"},
		Verdicts: []HostVerdict{Judge("h1", h1, th), Judge("h2", series(t0, 2, 10, flat), th)},
		Churn:    ChurnStats{Ops: map[string]int{"create": 180, "delete": 177}, Errors: map[string]int{}},
		Faults:   []Fault{{Index: 0, Kind: CorraldKill, Host: "h1", Injected: t0, Healed: t0.Add(time.Second), Healthy: t0.Add(4 * time.Second), LeaderChanges: 1}},
		Failures: []string{"h2: insufficient samples"}}
	var b strings.Builder
	rep.Table(&b)
	out := b.String()
	for _, want := range []string{"h1    60.0→60.0", "150→150", "40→40", "6→6", "longest of 1", "flat",
		"conns h1: raft-in 2→3, raft-out 2→2, rpc-out 2→2\n", "churn: 357 ops (create 180, delete 177, stop 0, start 0), 0 errors", "fault 1 corrald-kill on h1", "healthy after 4.0s, leader changes 1", "verdict: FAIL", "- h2: insufficient"} {
		if !strings.Contains(out, want) {
			t.Errorf("no %q in\n%s", want, out)
		}
	}
}

// A host that turns leader halfway is judged over the samples of the
// role it held longest: the leader's extra replication goroutines and
// connections are no leak, but a leak within that role still shows.
func TestJudgeOneRole(t *testing.T) {
	th := DefaultThresholds(time.Hour)
	roles := func(leak bool) []Sample {
		s := series(t0, 1, 120, func(i int) (int64, int, int) {
			gr, fds := 150, 40
			if i >= 70 {
				gr, fds = 170, 48 // the leader's
			}
			if leak {
				fds += i / 8
			}
			return 60 << 10, gr, fds
		})
		for i := range s {
			s[i].Role = "follower"
			if i >= 70 {
				s[i].Role = "leader"
			}
		}
		s[20].Role = "" // a failed scrape
		return s
	}
	v := Judge("h3", roles(false), th)
	if !v.OK || v.Role != "follower" || v.Judged != 59 {
		t.Fatalf("%+v", v)
	}
	if all := Judge("h3", series(t0, 1, 120, func(i int) (int64, int, int) {
		if i >= 70 {
			return 60 << 10, 170, 48
		}
		return flat(i)
	}), th); all.OK {
		t.Fatal("without roles, the step is growth")
	}
	if v := Judge("h3", roles(true), th); v.OK || !strings.Contains(v.Verdict, "fds") {
		t.Fatalf("a leak as follower: %+v", v)
	}
}

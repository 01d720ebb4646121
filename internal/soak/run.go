package soak

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/corralhq/corral/internal/lab"
)

// Runner runs one soak on one lab.
type Runner struct {
	cfg Config
	// admin holds one client per host for the whole run, so that the
	// soak's own connections to corrald stay few and steady and do not
	// read as descriptor growth.
	admin *lab.Admin

	mu       sync.Mutex
	series   map[string][]Sample
	faultLog []Fault
	leaders  []LeaderChange
	notes    []string
	churn    ChurnStats
	lastSeq  uint64
	// terms are the first and highest Raft terms seen: an election that
	// left no leader event (its leader lost office at once) still shows.
	terms [2]uint64
}

// NewRunner checks cfg and fills in its defaults.
func NewRunner(cfg Config) (*Runner, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	r := &Runner{cfg: cfg, admin: cfg.Lab.Admin(), series: map[string][]Sample{},
		churn: ChurnStats{Ops: map[string]int{}, Errors: map[string]int{}}}
	return r, nil
}

// Config is the runner's configuration with its defaults.
func (r *Runner) Config() Config { return r.cfg }

func (r *Runner) logf(format string, args ...any) {
	fmt.Fprintf(r.cfg.Log, "%s "+format+"\n", append([]any{time.Now().Format("15:04:05.000")}, args...)...)
}

// Setup copies the test guest into the shared storage, waits for a
// healthy cluster and imports the guest's disk as the churn's image.
func (r *Runner) Setup(ctx context.Context) error {
	_, _, err := r.admin.Prepare(ctx, r.cfg.GuestDir, churnImage)
	return err
}

// Run soaks the lab for Duration: churn, faults and sampling at once;
// then it waits for the churn to settle and judges. The report is
// complete also when Run is interrupted (ctx) or a fault fails; it passes
// only when every host is flat, no leader changed outside the faults, the
// churn did not keep failing and settled, and every fault healed.
func (r *Runner) Run(ctx context.Context) Report {
	if c, err := r.admin.Leader(ctx); err == nil {
		r.lastSeq = lab.LastEvent(ctx, c)
	}
	start := time.Now()
	end := start.Add(r.cfg.Duration)
	ch := &churner{r: r}
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); ch.run(ctx, end) }()
	go func() { defer wg.Done(); r.faults(ctx, start, end) }()
	lastPrint := time.Time{}
	for t := start; t.Before(end); t = t.Add(r.cfg.SampleEvery) {
		if lab.Pause(ctx, time.Until(t)) != nil {
			break
		}
		r.sample(ctx)
		r.pollEvents(ctx)
		if time.Since(lastPrint) >= r.cfg.PrintEvery-r.cfg.SampleEvery/2 {
			lastPrint = time.Now()
			fmt.Fprintln(r.cfg.Out, r.progress(start))
		}
	}
	wg.Wait()
	ended := time.Now()
	unsettled := ""
	if ctx.Err() == nil {
		unsettled = ch.settle(ctx, 2*time.Minute)
	}
	r.pollEvents(ctx)
	r.mu.Lock()
	defer r.mu.Unlock()
	r.churn.Kept = ch.live
	r.churn.Unsettled = unsettled
	return r.report(ctx, start, ended)
}

// sample reads every host's corrald once.
func (r *Runner) sample(ctx context.Context) {
	want := map[uint64]bool{}
	for _, h := range r.cfg.Lab.Hosts {
		want[h.NetIno] = true
	}
	found := findProcs("corrald", want)
	for _, h := range r.cfg.Lab.Hosts {
		s := Sample{At: time.Now(), Goroutines: -1, Conns: -1}
		pids := found[h.NetIno]
		if len(pids) > 1 {
			r.note(fmt.Sprintf("%s: %d corrald processes at %s: %v", h.Name, len(pids), s.At.Format("15:04:05"), pids))
		}
		if len(pids) > 0 {
			if got, err := read(ctx, pids[0], fmt.Sprintf("http://%s:%d/metrics", h.IP, MetricsPort)); err == nil {
				s = got
			}
		}
		r.mu.Lock()
		r.series[h.Name] = append(r.series[h.Name], s)
		r.mu.Unlock()
	}
}

func (r *Runner) note(s string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.notes) < 50 {
		r.notes = append(r.notes, s)
	}
}

// pollEvents records the leader elections the cluster logged since the
// last poll. The event log is a ring (2000 in state): a gap in sequence
// numbers means elections may have been missed, which is noted.
func (r *Runner) pollEvents(ctx context.Context) {
	c, err := r.admin.Leader(ctx)
	if err != nil {
		return
	}
	cctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	if s, err := c.Status(cctx); err == nil {
		r.mu.Lock()
		if r.terms[0] == 0 {
			r.terms[0] = s.Raft.Term
		}
		r.terms[1] = max(r.terms[1], s.Raft.Term)
		r.mu.Unlock()
	}
	cancel()
	cctx, cancel = context.WithTimeout(ctx, 5*time.Second)
	evs, err := lab.EventsAfter(cctx, c, r.lastSeq)
	cancel()
	if err != nil || len(evs) == 0 {
		return
	}
	if r.lastSeq > 0 && evs[0].Seq > r.lastSeq+1 {
		r.note(fmt.Sprintf("events %d-%d rolled out of the log before they were read: leader changes among them are not counted", r.lastSeq+1, evs[0].Seq-1))
	}
	r.mu.Lock()
	for _, e := range evs {
		if e.Kind == "leader" {
			r.leaders = append(r.leaders, LeaderChange{At: e.Time, Leader: e.Host})
		}
		r.lastSeq = e.Seq
	}
	r.mu.Unlock()
}

// progress is one line: each host's latest reading, the churn, faults and
// leader changes so far.
func (r *Runner) progress(start time.Time) string {
	r.mu.Lock()
	defer r.mu.Unlock()
	var b strings.Builder
	fmt.Fprintf(&b, "+%-8s", time.Since(start).Round(time.Second))
	for _, h := range r.cfg.Lab.Hosts {
		ss := r.series[h.Name]
		if len(ss) == 0 || ss[len(ss)-1].PID == 0 {
			fmt.Fprintf(&b, " | %s down", h.Name)
			continue
		}
		s := ss[len(ss)-1]
		lead := ""
		if s.Role == "leader" {
			lead = "*"
		}
		fmt.Fprintf(&b, " | %s%s %.1fMiB %dg %dfd %dc", h.Name, lead, float64(s.RSSKiB)/1024, s.Goroutines, s.FDs, s.Conns)
	}
	ws := faultWindows(r.faultLog)
	leaders := append([]LeaderChange(nil), r.leaders...)
	quiet, around := ClassifyLeaderChanges(leaders, ws, r.cfg.LeaderGrace, time.Now())
	fmt.Fprintf(&b, " | churn %d ops %d err | faults %d | leader changes %d quiet, %d around faults",
		r.churn.total(r.churn.Ops), r.churn.total(r.churn.Errors), len(r.faultLog), quiet, around)
	return b.String()
}

// hostsOf lists the lab's host names.
func hostsOf(l *lab.Lab) []string {
	var out []string
	for _, h := range l.Hosts {
		out = append(out, h.Name)
	}
	return out
}

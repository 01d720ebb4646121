package chaos

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/corralhq/corral/api"
	"github.com/corralhq/corral/api/client"
	"github.com/corralhq/corral/internal/lab"
)

// LabConfig is appended to every chaos lab host's corral.toml: the lab's
// hosts share the machine's cores, and the load of all of them would mark
// every host degraded (no placements, so drains could not move guests).
const LabConfig = "health_load_per_cpu_degraded = 0\n"

// Config sets a chaos run up on a lab that is up.
type Config struct {
	Lab *lab.Lab
	// Guests is how many HA guests run through the schedules.
	Guests int
	// GuestDir holds the test guest (vmlinuz, initrd.img, disk.qcow2;
	// scripts/build-test-guest.sh).
	GuestDir string
	// Budget: once the faults have healed, every guest must run again (a
	// single QEMU, printing new counter values) within it.
	Budget time.Duration
	// Quiet is the fault-free time after each schedule in which no leader
	// change may happen.
	Quiet time.Duration
	Log   io.Writer
}

// Result is what one schedule did and what the checker found.
type Result struct {
	Schedule Schedule  `json:"schedule"`
	Started  time.Time `json:"started"`
	// Actions are the faults as injected, with their times.
	Actions []string `json:"actions"`
	// Findings break the promise; a schedule with any failed.
	DoubleRuns  []string `json:"double_runs,omitempty"`
	Lost        []string `json:"lost,omitempty"` // not running again within 3x the budget
	Late        []string `json:"late,omitempty"` // running again, after the budget
	Regressions []string `json:"counter_regressions,omitempty"`
	Diverged    []string `json:"diverged,omitempty"`
	Churn       []string `json:"churn,omitempty"` // leader changes with no fault
	// Error: the run itself failed (a fault could not be injected or
	// healed, the cluster never came back).
	Error string `json:"error,omitempty"`
	// Recovered is the slowest guest's time from the heal to running again.
	Recovered     time.Duration `json:"recovered_ns"`
	LeaderChanges int           `json:"leader_changes"`
	Migrations    int           `json:"migration_overlaps"`
	Notes         []string      `json:"notes,omitempty"`
	// Events are the cluster's events of the schedule that tell its
	// story (suspected, fenced, recovering, leader, ...).
	Events []string `json:"events,omitempty"`
}

// OK reports whether the schedule found nothing.
func (r Result) OK() bool {
	return r.Error == "" && len(r.DoubleRuns)+len(r.Lost)+len(r.Late)+len(r.Regressions)+len(r.Diverged)+len(r.Churn) == 0
}

// Summary is the result in one line.
func (r Result) Summary() string {
	verdict := "ok"
	if !r.OK() {
		verdict = "FAIL"
	}
	s := fmt.Sprintf("schedule %d seed=%d %s: double=%d lost=%d late=%d regress=%d diverged=%d churn=%d recovered=%.1fs leaders=%d migrations=%d [%s]",
		r.Schedule.Index, r.Schedule.Seed, verdict, len(r.DoubleRuns), len(r.Lost), len(r.Late), len(r.Regressions), len(r.Diverged), len(r.Churn),
		r.Recovered.Seconds(), r.LeaderChanges, r.Migrations, r.Schedule)
	if r.Error != "" {
		s += " error: " + r.Error
	}
	return s
}

// Runner runs schedules one after the other on one lab.
type Runner struct {
	cfg    Config
	watch  *lab.GuestWatch
	guests []string
	seen   map[string]bool // findings already reported (they are cumulative)
	admin  *lab.Admin
}

// NewRunner starts the guest watch; Setup must run before the schedules.
func NewRunner(cfg Config) (*Runner, error) {
	if cfg.Budget <= 0 {
		cfg.Budget = 60 * time.Second
	}
	if cfg.Log == nil {
		cfg.Log = io.Discard
	}
	w, err := cfg.Lab.WatchGuests()
	if err != nil {
		return nil, err
	}
	return &Runner{cfg: cfg, watch: w, seen: map[string]bool{}, admin: cfg.Lab.Admin()}, nil
}

// Close stops the guest watch.
func (r *Runner) Close() { r.watch.Stop() }

func (r *Runner) logf(format string, args ...any) {
	fmt.Fprintf(r.cfg.Log, "%s "+format+"\n", append([]any{time.Now().Format("15:04:05.000")}, args...)...)
}

// Setup waits for a healthy cluster, imports the test guest's disk and
// creates the guests (HA, placed by the cluster), and waits until each
// prints counter values.
func (r *Runner) Setup(ctx context.Context) error {
	shared, c, err := r.admin.Prepare(ctx, r.cfg.GuestDir, "chaos-base")
	if err != nil {
		return err
	}
	for i := range r.cfg.Guests {
		name := fmt.Sprintf("g%d", i)
		r.guests = append(r.guests, name)
		_, err := c.CreateVM(ctx, api.VMCreateRequest{Name: name, Spec: api.VMSpec{VCPUs: 1, MemoryMiB: 96,
			Disks:  []api.Disk{{Image: "chaos-base"}},
			Kernel: &api.Kernel{Kernel: filepath.Join(shared, "vmlinuz"), Initrd: filepath.Join(shared, "initrd.img"), Cmdline: "console=ttyS0 quiet corral.name=" + name}}})
		if err != nil && !errors.Is(err, api.ErrConflict) {
			return fmt.Errorf("create %s: %w", name, err)
		}
	}
	start := r.counters()
	deadline := time.Now().Add(3 * time.Minute)
	for {
		now := r.counters()
		waiting := 0
		for _, g := range r.guests {
			if now[g] <= start[g] {
				waiting++
			}
		}
		if waiting == 0 {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%d guests print no counter 3 minutes after their creation", waiting)
		}
		if err := lab.Pause(ctx, 500*time.Millisecond); err != nil {
			return err
		}
	}
}

// consoles returns every host's console log pieces of guest vm.
func (r *Runner) pieces(vm string) []Piece {
	var out []Piece
	for _, h := range r.cfg.Lab.Hosts {
		b, err := os.ReadFile(h.LibvirtPath("/var/log/libvirt/qemu/" + vm + "-console.log"))
		if err != nil {
			continue
		}
		out = append(out, Pieces(h.Name, b)...)
	}
	return out
}

// counters returns each guest's highest counter value printed so far.
func (r *Runner) counters() map[string]int64 {
	out := map[string]int64{}
	for _, g := range r.guests {
		out[g] = MaxCounter(r.pieces(g))
	}
	return out
}

// Run runs one schedule: it injects and heals its faults on time, heals
// everything once more, then checks.
func (r *Runner) Run(ctx context.Context, s Schedule) Result {
	res := Result{Schedule: s, Started: time.Now()}
	c, err := r.admin.Leader(ctx)
	if err != nil {
		res.Error = err.Error()
		return res
	}
	lastSeq := lab.LastEvent(ctx, c)
	type action struct {
		at   time.Duration
		name string
		do   func(context.Context) error
	}
	var acts []action
	in := &injection{r: r, res: &res}
	for _, st := range s.Steps {
		do, undo := in.fault(st)
		acts = append(acts, action{st.At, "inject " + st.String(), do})
		if undo != nil {
			acts = append(acts, action{st.At + st.For, "heal " + st.String(), undo})
		}
	}
	sort.SliceStable(acts, func(i, j int) bool { return acts[i].at < acts[j].at })
	t0 := time.Now()
	for _, a := range acts {
		if err := lab.Pause(ctx, time.Until(t0.Add(a.at))); err != nil {
			res.Error = err.Error()
			return res
		}
		err := a.do(ctx)
		line := fmt.Sprintf("%6.1fs %s", time.Since(t0).Seconds(), a.name)
		if err != nil {
			line += ": " + err.Error()
		}
		res.Actions = append(res.Actions, line)
		r.logf("schedule %d: %s", s.Index, line)
	}
	if err := in.healAll(ctx); err != nil {
		res.Error = "heal: " + err.Error()
	}
	healed := time.Now()
	r.checkRecovery(ctx, &res, healed)
	if err := r.admin.WaitHealthy(ctx, 3*time.Minute); err != nil && res.Error == "" {
		res.Error = err.Error()
	}
	r.checkConvergence(ctx, &res)
	if c, err := r.admin.Leader(ctx); err == nil {
		res.LeaderChanges = r.leaderEvents(ctx, c, lastSeq)
		res.Events = r.story(ctx, c, lastSeq)
		quietFrom := lab.LastEvent(ctx, c)
		if err := lab.Pause(ctx, r.cfg.Quiet); err == nil {
			if n := r.leaderEvents(ctx, c, quietFrom); n > 0 {
				res.Churn = append(res.Churn, fmt.Sprintf("%d leader changes in %v without a fault", n, r.cfg.Quiet))
			}
		}
	}
	r.checkHistory(&res)
	return res
}

// leaderEvents counts elections recorded after seq.
func (r *Runner) leaderEvents(ctx context.Context, c *client.Client, after uint64) int {
	n := 0
	evs, _ := lab.EventsAfter(ctx, c, after)
	for _, e := range evs {
		if e.Kind == "leader" {
			n++
		}
	}
	return n
}

// storyKinds are the event kinds a schedule's report keeps.
var storyKinds = map[string]bool{"leader": true, "suspected": true, "reachable": true, "fencing": true, "fenced": true,
	"fence-failed": true, "not-fenced": true, "recovering": true, "recovered": true, "not-recovered": true, "returned": true,
	"crashed": true, "relocated": true, "failed": true, "migrating": true, "migrated": true, "migration-failed": true,
	"draining": true, "drained": true, "evacuating": true, "daemon-stopped": true, "daemon-back": true, "health": true}

// story returns the telling events after seq, at most 200.
func (r *Runner) story(ctx context.Context, c *client.Client, after uint64) []string {
	var out []string
	evs, _ := lab.EventsAfter(ctx, c, after)
	for _, e := range evs {
		if storyKinds[e.Kind] && len(out) < 200 {
			out = append(out, fmt.Sprintf("%s %s %s %s %s", e.Time.Format("15:04:05.000"), e.Kind, e.Host, e.VM, e.Message))
		}
	}
	return out
}

// checkRecovery waits until every guest runs again: one QEMU of it alive
// (or two while a live migration hands it over to an -incoming one) and a
// counter value above what it had printed at the heal. Within Budget is on
// time, within 3x late, later lost.
func (r *Runner) checkRecovery(ctx context.Context, res *Result, healed time.Time) {
	atHeal := r.counters()
	done := map[string]time.Duration{}
	for time.Since(healed) < 3*r.cfg.Budget {
		rep, _ := r.watch.Report()
		alive, incoming := map[string]int{}, map[string]int{}
		for _, l := range rep.Lives {
			if l.End == 0 {
				alive[l.VM]++
				if l.Incoming {
					incoming[l.VM]++
				}
			}
		}
		now := r.counters()
		for _, g := range r.guests {
			one := alive[g] == 1 || alive[g] == 2 && incoming[g] == 1
			if _, ok := done[g]; !ok && one && now[g] > atHeal[g] {
				done[g] = time.Since(healed)
			}
		}
		if len(done) == len(r.guests) {
			break
		}
		if lab.Pause(ctx, 250*time.Millisecond) != nil {
			return
		}
	}
	for _, g := range r.guests {
		d, ok := done[g]
		switch {
		case !ok:
			res.Lost = append(res.Lost, fmt.Sprintf("%s not running %v after the heal", g, 3*r.cfg.Budget))
		case d > r.cfg.Budget:
			res.Late = append(res.Late, fmt.Sprintf("%s running again %.1fs after the heal (budget %v)", g, d.Seconds(), r.cfg.Budget))
		}
		res.Recovered = max(res.Recovered, d)
	}
}

// checkConvergence compares every host's view of the VMs (host,
// generation, desired power) until they agree, for up to a minute.
func (r *Runner) checkConvergence(ctx context.Context, res *Result) {
	deadline := time.Now().Add(time.Minute)
	var last string
	for {
		views := map[string][]string{}
		for _, h := range r.cfg.Lab.Hosts {
			cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
			vms, err := r.admin.Client(h).VMs(cctx)
			cancel()
			if err != nil {
				views["error"] = append(views["error"], h.Name+": "+err.Error())
				continue
			}
			var rows []string
			for _, v := range vms {
				rows = append(rows, fmt.Sprintf("%s@%s/%d/%s", v.Name, v.Host, v.Generation, v.Desired))
			}
			slices.Sort(rows)
			key := strings.Join(rows, " ")
			views[key] = append(views[key], h.Name)
		}
		if len(views) == 1 {
			return
		}
		var parts []string
		for k, hs := range views {
			parts = append(parts, fmt.Sprintf("%s: %s", strings.Join(hs, ","), k))
		}
		slices.Sort(parts)
		last = strings.Join(parts, " | ")
		if time.Now().After(deadline) || lab.Pause(ctx, time.Second) != nil {
			break
		}
	}
	res.Diverged = append(res.Diverged, "hosts disagree a minute after the heal: "+last)
}

// checkHistory looks at everything seen so far for double runs and
// counter regressions, reporting each once.
func (r *Runner) checkHistory(res *Result) {
	rep, err := r.watch.Report()
	if err != nil {
		res.Error = strings.TrimPrefix(res.Error+"; guest watch: "+err.Error(), "; ")
	}
	for _, o := range rep.Overlaps {
		key := fmt.Sprintf("overlap %d %d", o.A.PID, o.B.PID)
		if r.seen[key] {
			continue
		}
		r.seen[key] = true
		if o.Migration() {
			res.Migrations++
			continue
		}
		res.DoubleRuns = append(res.DoubleRuns, fmt.Sprintf("%s ran on %s (pid %d) and %s (pid %d) at once for %v",
			o.VM, o.A.Host, o.A.PID, o.B.Host, o.B.PID, o.For))
	}
	for _, g := range r.guests {
		for _, f := range CounterOverlaps(g, r.pieces(g)) {
			if !r.seen[f] {
				r.seen[f] = true
				res.Regressions = append(res.Regressions, f)
			}
		}
	}
}

package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/corralhq/corral/internal/chaos"
	"github.com/corralhq/corral/internal/lab"
)

// chaosReport is the JSON report of a chaos run.
type chaosReport struct {
	Seed      uint64         `json:"seed"`
	Hosts     int            `json:"hosts"`
	Guests    int            `json:"guests"`
	Budget    string         `json:"budget"`
	Schedules int            `json:"schedules"`
	Failed    []int          `json:"failed"`
	Results   []chaos.Result `json:"results"`
	Summary   string         `json:"summary"`
}

// runChaos brings a lab up, runs random fault schedules on it one after
// the other, and checks each (internal/chaos). A failing schedule replays
// with the same --seed and --only N.
func runChaos(ctx context.Context, dir string, args []string) error {
	fs := flag.NewFlagSet("chaos", flag.ContinueOnError)
	hosts := fs.Int("hosts", 5, "hosts in the lab")
	n := fs.Int("schedules", 10, "schedules to run")
	seed := fs.Uint64("seed", 1, "seed of the run; schedule i has seed chaos.ScheduleSeed(seed, i)")
	only := fs.Int("only", -1, "run only schedule N of the seed (replay)")
	from := fs.Int("from", 0, "first schedule index (a long run in parts: --from 25 --schedules 25)")
	duration := fs.Duration("duration", 30*time.Second, "window in which a schedule's faults start")
	guests := fs.Int("guests", 6, "HA guests")
	budget := fs.Duration("budget", 60*time.Second, "after the heal, every guest runs again within this")
	quiet := fs.Duration("quiet", 10*time.Second, "fault-free time after each schedule that must see no leader change")
	report := fs.String("report", "", "JSON report (default DIR/chaos-report.json)")
	guestDir := fs.String("guest", "_build/guest", "test guest (scripts/build-test-guest.sh)")
	corrald := fs.String("corrald", "", "corrald binary (default: next to corral-lab, then $PATH)")
	keep := fs.Bool("keep", false, "leave the lab up afterwards")
	if err := fs.Parse(args); err != nil {
		return err
	}
	bin, err := corraldBinary(*corrald)
	if err != nil {
		return err
	}
	l, err := lab.Up(ctx, lab.Config{Dir: dir, ID: 9, Hosts: *hosts, Corrald: bin, CorraldConfig: chaos.LabConfig, DataDirMiB: 512})
	if err != nil {
		return err
	}
	if !*keep {
		defer l.Down(context.Background())
	}
	if *report == "" {
		*report = filepath.Join(dir, "chaos-report.json")
	}
	r, err := chaos.NewRunner(chaos.Config{Lab: l, Guests: *guests, GuestDir: *guestDir, Budget: *budget, Quiet: *quiet, Log: os.Stderr})
	if err != nil {
		return err
	}
	defer r.Close()
	if err := r.Setup(ctx); err != nil {
		return fmt.Errorf("setup: %w", err)
	}
	rep := chaosReport{Seed: *seed, Hosts: *hosts, Guests: *guests, Budget: budget.String()}
	opts := chaos.Options{Hosts: *hosts, Guests: *guests, Duration: *duration, DiskFull: true}
	first, last := *from, *from+*n
	if *only >= 0 {
		first, last = *only, *only+1
	}
	var worst time.Duration
	counts := map[string]int{}
	for i := first; i < last && ctx.Err() == nil; i++ {
		s := chaos.Generate(i, chaos.ScheduleSeed(*seed, i), opts)
		res := r.Run(ctx, s)
		if ctx.Err() != nil {
			break // interrupted: the schedule's result means nothing
		}
		rep.Results = append(rep.Results, res)
		rep.Schedules++
		if !res.OK() {
			rep.Failed = append(rep.Failed, i)
		}
		worst = max(worst, res.Recovered)
		counts["double"] += len(res.DoubleRuns)
		counts["lost"] += len(res.Lost)
		counts["late"] += len(res.Late)
		counts["regress"] += len(res.Regressions)
		counts["diverged"] += len(res.Diverged)
		counts["churn"] += len(res.Churn)
		counts["leaders"] += res.LeaderChanges
		counts["migrations"] += res.Migrations
		fmt.Println(res.Summary())
		rep.Summary = fmt.Sprintf("chaos seed=%d: %d schedules on %d hosts, %d failed %v; double runs %d, lost %d, late %d, counter regressions %d, diverged %d, churn %d; slowest recovery %.1fs; leader changes %d; migration overlaps %d",
			*seed, rep.Schedules, *hosts, len(rep.Failed), rep.Failed, counts["double"], counts["lost"], counts["late"], counts["regress"],
			counts["diverged"], counts["churn"], worst.Seconds(), counts["leaders"], counts["migrations"])
		if b, err := json.MarshalIndent(rep, "", "  "); err == nil {
			os.WriteFile(*report, b, 0o644)
		}
	}
	fmt.Println(rep.Summary)
	fmt.Println("report:", *report)
	if len(rep.Failed) > 0 {
		return fmt.Errorf("%d of %d schedules failed; replay one with: corral-lab chaos --seed %d --only %d", len(rep.Failed), rep.Schedules, *seed, rep.Failed[0])
	}
	return ctx.Err()
}

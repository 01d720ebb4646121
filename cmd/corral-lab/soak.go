package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/corralhq/corral/internal/lab"
	"github.com/corralhq/corral/internal/soak"
)

// soakLabID keeps the soak's lab apart from chaos (9) and bench (7) labs.
const soakLabID = 11

// runSoak brings a lab up, soaks it under churn and faults
// (internal/soak), prints a table and writes a JSON report; it fails
// unless every corrald stayed flat and nothing else went wrong.
func runSoak(ctx context.Context, dir string, args []string) error {
	fs := flag.NewFlagSet("soak", flag.ContinueOnError)
	hosts := fs.Int("hosts", 3, "hosts in the lab")
	duration := fs.Duration("duration", time.Hour, "length of the soak, after the set-up")
	sampleEvery := fs.Duration("sample-every", 0, "sampling period (0: duration/120 within 1s..30s)")
	faultEvery := fs.Duration("fault-every", 0, "fault period (0: duration/12 within 30s..5m; negative: no faults)")
	warmup := fs.Duration("warmup", 0, "left out at the start of each judged segment (0: min(5m, duration/10))")
	minSamples := fs.Int("min-samples", 20, "samples a judged segment needs after its warm-up")
	workingSet := fs.Int("working-set", 3, "churn VMs kept")
	churnEvery := fs.Duration("churn-every", 20*time.Second, "a VM created (and the oldest beyond the working set deleted) this often")
	report := fs.String("report", "", "JSON report (default DIR-report.json: DIR goes with the lab)")
	guestDir := fs.String("guest", "_build/guest", "test guest (scripts/build-test-guest.sh)")
	corrald := fs.String("corrald", "", "corrald binary (default: next to corral-lab, then $PATH)")
	keep := fs.Bool("keep", false, "leave the lab up afterwards")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *hosts < 3 {
		return errors.New("soak: --hosts must be at least 3 (a quorum must survive each fault)")
	}
	bin, err := corraldBinary(*corrald)
	if err != nil {
		return err
	}
	th := soak.DefaultThresholds(*duration)
	th.MinSamples = *minSamples
	if *warmup > 0 {
		th.Warmup = *warmup
	}
	if *report == "" {
		*report = filepath.Clean(dir) + "-report.json"
	}
	l, err := lab.Up(ctx, lab.Config{Dir: dir, ID: soakLabID, Hosts: *hosts, Corrald: bin, CorraldConfig: soak.LabConfig})
	if err != nil {
		return err
	}
	if !*keep {
		defer l.Down(context.Background())
	}
	r, err := soak.NewRunner(soak.Config{Lab: l, GuestDir: *guestDir, Duration: *duration, SampleEvery: *sampleEvery,
		FaultEvery: *faultEvery, Thresholds: th, WorkingSet: *workingSet, ChurnEvery: *churnEvery, Out: os.Stdout, Log: os.Stderr})
	if err != nil {
		return err
	}
	if err := r.Setup(ctx); err != nil {
		return fmt.Errorf("setup: %w", err)
	}
	cfg := r.Config()
	fmt.Printf("soak: %d hosts for %v, a sample every %v, a fault every %v, warm-up %v, churn every %v (working set %d)\n",
		*hosts, *duration, cfg.SampleEvery, cfg.FaultEvery, cfg.Thresholds.Warmup, cfg.ChurnEvery, cfg.WorkingSet)
	rep := r.Run(ctx)
	fmt.Println()
	rep.Table(os.Stdout)
	b, err := json.MarshalIndent(rep, "", "  ")
	if err != nil {
		return err
	}
	if err := os.WriteFile(*report, b, 0o644); err != nil {
		return err
	}
	fmt.Println("report:", *report)
	if !rep.Pass {
		return fmt.Errorf("soak failed: %d findings", len(rep.Failures))
	}
	return nil
}

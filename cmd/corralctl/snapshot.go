package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/corralhq/corral/api"
)

// snapshotWait is how long snapshot create waits for the VM's host by
// default (--timeout sets it).
const snapshotWait = 2 * time.Minute

func (c *cli) vmSnapshotCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "snapshot", Aliases: []string{"snap"}, Short: "Take, list, revert and remove snapshots of a VM's disks, and schedule them"}
	cmd.AddCommand(c.snapshotCreate(), c.snapshotLs(), c.snapshotRevert(), c.snapshotRm(), c.snapshotSchedule())
	return cmd
}

func (c *cli) snapshotCreate() *cobra.Command {
	var noWait, memory bool
	cmd := &cobra.Command{
		Use:   "create VM NAME",
		Short: "Snapshot all of a VM's disks (and, with --memory, the running guest's RAM)",
		Long: `Snapshot all of a VM's disks at once. A stopped VM's snapshot is ready at
once. A running guest's is taken by its host: the guest agent freezes the
guest's file systems if one answers (frozen), else the disks are taken as
they are, as after a power cut (crash-consistent). The command waits until
the snapshot is ready, or the host failed to take it, for --timeout (here 2m
unless given); --no-wait returns once it is recorded.

With --memory (a running guest only) the guest's RAM is saved too, into a
file of the shared storage pool as large as the guest's memory: the guest
is paused while its RAM is written, then its disks move, and it runs on.
Reverting to such a snapshot resumes the guest where it was, processes and
all, instead of booting it. Schedules take disk snapshots only.

A VM that is starting, stopping or migrating cannot be snapshotted: try
again once it runs or is stopped.`,
		Example: `  corralctl vm snapshot create web1 before-upgrade
  corralctl vm snapshot create web1 nightly --no-wait
  corralctl vm snapshot create web1 warm --memory`,
		Args: cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			vm, name := args[0], args[1]
			wait := snapshotWait
			if cmd.Flags().Changed("timeout") {
				wait = c.timeout
			}
			ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
			defer stop()
			ctx, cancel := context.WithTimeout(ctx, wait)
			defer cancel()
			start := time.Now()
			cl := c.client()
			s, err := cl.TakeSnapshot(ctx, vm, api.SnapshotCreateRequest{Name: name, Memory: memory})
			if err != nil {
				return err
			}
			if s.State != "ready" && !noWait {
				if s, err = c.waitSnapshot(ctx, vm, s, wait); err != nil {
					return err
				}
			}
			return c.print(s, func(w *tabwriter.Writer) {
				if s.State != "ready" {
					fmt.Fprintf(w, "snapshot %s of %s is being taken by the VM's host (see corralctl vm snapshot ls %s)\n", s.Name, vm, vm)
					return
				}
				fmt.Fprintf(w, "snapshot %s of %s taken in %.1fs (%s)\n", s.Name, vm, time.Since(start).Seconds(), snapshotHow(s))
			})
		},
	}
	cmd.Flags().BoolVar(&noWait, "no-wait", false, "return once the snapshot is recorded, before the VM's host has taken it")
	cmd.Flags().BoolVar(&memory, "memory", false, "save the running guest's RAM too: a revert resumes the guest instead of booting it")
	return cmd
}

// snapshotHow says how consistent a ready snapshot is.
func snapshotHow(s api.Snapshot) string {
	switch s.Consistency {
	case "frozen":
		return "frozen: the guest agent froze its file systems"
	case "crash":
		msg := s.Message
		if msg == "" {
			msg = "no guest agent froze its file systems"
		}
		return "crash-consistent: " + msg
	case "stopped":
		return "the VM was stopped"
	case "memory":
		return "with the guest's memory: a revert resumes the guest where it was"
	}
	return s.Consistency
}

// waitSnapshot polls the VM until snapshot s is ready, or gone: its host
// failed to take it (the snapshot-failed event says why).
func (c *cli) waitSnapshot(ctx context.Context, vm string, s api.Snapshot, wait time.Duration) (api.Snapshot, error) {
	cl := c.client()
	tick := time.NewTicker(200 * time.Millisecond)
	defer tick.Stop()
	for {
		v, err := cl.VM(ctx, vm)
		switch {
		case errors.Is(err, api.ErrNotFound):
			return s, fmt.Errorf("vm %s was deleted while its snapshot %s was being taken", vm, s.Name)
		case err != nil && ctx.Err() != nil:
			return s, fmt.Errorf("snapshot %s of %s is still being taken after %v; its host may yet finish it (see corralctl vm snapshot ls %s)", s.Name, vm, wait, vm)
		case err != nil:
			return s, err
		}
		cur, ok := findSnapshot(v.Snapshots, s)
		if !ok {
			reason := c.snapshotFailure(ctx, vm, s)
			if reason == "" {
				reason = "its host could not take it"
			}
			return s, fmt.Errorf("snapshot %s of %s failed: %s (see corralctl events --vm %s)", s.Name, vm, reason, vm)
		}
		if cur.State == "ready" {
			return cur, nil
		}
		select {
		case <-ctx.Done():
			return cur, fmt.Errorf("snapshot %s of %s is still being taken after %v; its host may yet finish it (see corralctl vm snapshot ls %s)", s.Name, vm, wait, vm)
		case <-tick.C:
		}
	}
}

// snapshotNamed finds a VM's snapshot by name.
func snapshotNamed(list []api.Snapshot, name string) (api.Snapshot, bool) {
	for _, s := range list {
		if s.Name == name {
			return s, true
		}
	}
	return api.Snapshot{}, false
}

// findSnapshot finds s (by name, and made when s was) among a VM's.
func findSnapshot(list []api.Snapshot, s api.Snapshot) (api.Snapshot, bool) {
	for _, o := range list {
		if o.Name == s.Name && o.CreatedAt.Equal(s.CreatedAt) {
			return o, true
		}
	}
	return api.Snapshot{}, false
}

// snapshotFailure returns why the VM's host failed to take snapshot s, from
// its snapshot-failed event ("" when there is none to be found: the leader
// records it just after it drops the snapshot, so it is looked for for a
// second or two).
func (c *cli) snapshotFailure(ctx context.Context, vm string, s api.Snapshot) string {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	prefix := fmt.Sprintf("snapshot %q: ", s.Name)
	for {
		evs, err := c.client().Events(ctx, 0, 0, 0)
		if err != nil {
			return ""
		}
		for i := len(evs) - 1; i >= 0; i-- {
			e := evs[i]
			if e.Kind == "snapshot-failed" && e.VM == vm && !e.Time.Before(s.CreatedAt) && strings.HasPrefix(e.Message, prefix) {
				return strings.TrimPrefix(e.Message, prefix)
			}
		}
		select {
		case <-ctx.Done():
			return ""
		case <-time.After(250 * time.Millisecond):
		}
	}
}

func (c *cli) snapshotLs() *cobra.Command {
	return &cobra.Command{
		Use: "ls VM", Aliases: []string{"list"}, Short: "List a VM's snapshots, oldest first", Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx, cancel := c.ctx()
			defer cancel()
			cl := c.client()
			snaps, err := cl.Snapshots(ctx, args[0])
			if err != nil {
				return err
			}
			if snaps == nil {
				snaps = []api.Snapshot{}
			}
			// The table says the VM's schedule too (the list has none).
			var v api.VM
			if c.output != "json" {
				if v, err = cl.VM(ctx, args[0]); err != nil {
					return err
				}
			}
			return c.print(snaps, func(w *tabwriter.Writer) {
				if v.SnapshotSchedule != "" {
					fmt.Fprintf(w, "Schedule: %s\n", fmtSchedule(v.SnapshotSchedule, v.SnapshotScheduleLast))
				}
				fmt.Fprintln(w, "NAME\tCREATED\tSTATE\tCONSISTENCY\tMESSAGE")
				for _, s := range snaps {
					fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\n", s.Name, s.CreatedAt.Local().Format(time.RFC3339), s.State, orDash(s.Consistency), truncate(s.Message, 60))
				}
			})
		},
	}
}

func (c *cli) snapshotRevert() *cobra.Command {
	return &cobra.Command{
		Use:   "revert VM NAME",
		Short: "Put a VM's disks back to a snapshot (a running guest is powered off and started again)",
		Long: `Put all of a VM's disks back to a snapshot. What the guest wrote since the
snapshot is gone (snapshots taken after it keep theirs). A running guest is
powered off, not shut down, and started again on the snapshot's disks; a
stopped VM starts on them next time.

A memory snapshot's guest is resumed from its RAM instead, running or
stopped before: it goes on from the instant of the snapshot. Its host
does so only while no guest has written to the reverted disks; once one
has (the resumed guest crashed, or its host failed and the VM was
recovered elsewhere), the guest boots from them and the VM's message says
so.`,
		Example: `  corralctl vm snapshot revert web1 before-upgrade`,
		Args:    cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx, cancel := c.ctx()
			defer cancel()
			v, err := c.client().RevertSnapshot(ctx, args[0], args[1])
			if err != nil {
				return err
			}
			return c.print(v, func(w *tabwriter.Writer) {
				if s, ok := snapshotNamed(v.Snapshots, args[1]); ok && s.Memory {
					fmt.Fprintf(w, "vm %s reverted to snapshot %s: the guest resumes from the snapshot's memory; what it did since is gone\n", v.Name, args[1])
					return
				}
				if v.Desired == "running" {
					fmt.Fprintf(w, "vm %s reverted to snapshot %s: the guest is powered off and started again on the snapshot's disks; its writes since the snapshot are gone\n", v.Name, args[1])
				} else {
					fmt.Fprintf(w, "vm %s reverted to snapshot %s: it starts on the snapshot's disks next time; writes since the snapshot are gone\n", v.Name, args[1])
				}
			})
		},
	}
}

func (c *cli) snapshotRm() *cobra.Command {
	return &cobra.Command{
		Use: "rm VM NAME", Aliases: []string{"delete"}, Short: "Remove a snapshot; the VM's host deletes the disk layers nothing uses any more", Args: cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx, cancel := c.ctx()
			defer cancel()
			v, err := c.client().DeleteSnapshot(ctx, args[0], args[1])
			if err != nil {
				return err
			}
			return c.print(v, func(w *tabwriter.Writer) {
				fmt.Fprintf(w, "snapshot %s of %s removed (%s left)\n", args[1], v.Name, plural(len(v.Snapshots), "snapshot"))
			})
		},
	}
}

func (c *cli) snapshotSchedule() *cobra.Command {
	var off bool
	cmd := &cobra.Command{
		Use:   "schedule VM (SCHEDULE | --off)",
		Short: "Take a VM's snapshots on a schedule, and remove those it no longer keeps",
		Long: `Set a VM's snapshot schedule, or remove it with --off. A schedule is
"WHEN keep RETENTION":

  WHEN       hourly (on the hour), daily [HH:MM] (UTC; 00:00 by default), or
             every DURATION (10s to 30 days, e.g. 15m, 6h)
  RETENTION  one or more counts, each followed by last (the default), daily
             or weekly: "keep 24" keeps the 24 newest, "keep 7 daily 4 weekly"
             the newest of each of the last 7 days and of the last 4 weeks

At each slot the leader takes a snapshot named auto-YYYYMMDD-HHMMSS (as
snapshot create does: a running guest's frozen by its guest agent if one
answers), then removes the scheduled snapshots the schedule no longer keeps;
the newest is always kept, and the VM's other snapshots are never touched.
Removing the schedule leaves its snapshots. Setting one replaces the last.`,
		Example: `  corralctl vm snapshot schedule web1 "hourly keep 24"
  corralctl vm snapshot schedule db1 "daily 02:00 keep 7 daily 4 weekly"
  corralctl vm snapshot schedule web1 --off`,
		Args: cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			vm, schedule, err := scheduleArgs(args, off)
			if err != nil {
				return err
			}
			ctx, cancel := c.ctx()
			defer cancel()
			v, err := c.client().SetSnapshotSchedule(ctx, vm, schedule)
			if err != nil {
				return err
			}
			return c.print(v, func(w *tabwriter.Writer) {
				if v.SnapshotSchedule == "" {
					fmt.Fprintf(w, "snapshot schedule of %s removed\n", v.Name)
					return
				}
				fmt.Fprintf(w, "snapshot schedule of %s: %s\n", v.Name, v.SnapshotSchedule)
			})
		},
	}
	cmd.Flags().BoolVar(&off, "off", false, "remove the schedule (its snapshots stay)")
	return cmd
}

// scheduleArgs reads a schedule command's VM and schedule (the words
// after the VM, quoted or not), or --off: exactly one of the two.
func scheduleArgs(args []string, off bool) (vm, schedule string, err error) {
	vm, schedule = args[0], strings.Join(args[1:], " ")
	switch {
	case off && strings.TrimSpace(schedule) != "":
		return "", "", errors.New("give a schedule or --off, not both")
	case !off && strings.TrimSpace(schedule) == "":
		return "", "", errors.New(`give a schedule, e.g. "hourly keep 24" (see --help), or --off to remove it`)
	}
	return vm, schedule, nil
}

// fmtSchedule is a schedule with the latest slot it took, if any.
func fmtSchedule(schedule string, last time.Time) string {
	if last.IsZero() {
		return schedule
	}
	return schedule + " (last: " + last.Local().Format(time.RFC3339) + ")"
}

func plural(n int, what string) string {
	if n == 1 {
		return "1 " + what
	}
	return fmt.Sprintf("%d %ss", n, what)
}

// fmtSnapshots is vm show's line: how many, and their names (with the
// state of one not ready, and which hold the guest's memory).
func fmtSnapshots(list []api.Snapshot) string {
	names := make([]string, len(list))
	for i, s := range list {
		names[i] = s.Name
		if s.Memory {
			names[i] += " (memory)"
		}
		if s.State != "ready" {
			names[i] += " (" + s.State + ")"
		}
	}
	return fmt.Sprintf("%d: %s", len(list), strings.Join(names, ", "))
}

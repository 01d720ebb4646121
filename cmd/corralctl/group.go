package main

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/corralhq/corral/api"
)

func (c *cli) groupCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "group", Short: "VM groups: N alike VMs from one template, kept at their count by the leader"}
	var (
		sf            specFlags
		af            autoscaleFlags
		count         int
		stopped, wait bool
	)
	create := &cobra.Command{
		Use:   "create NAME --count N",
		Short: "Create a group; the leader creates NAME-1 ... NAME-N and keeps that many",
		Long: `Create a group of alike VMs. Members are ordinary VMs named NAME-1, NAME-2, ...
with the spec the flags give (those of vm create). The leader creates the
missing members, lowest index first, and deletes the surplus, highest index
first, so the group keeps its count: a member deleted by hand is replaced.
Members spread over the hosts: a host gets a second member only when every
host that fits has one. In the user data and the kernel command line,
{{index}} and {{name}} become the member's index and name. HA recovers
members like any VM. With a health check (--health-exec or --health-tcp), a
member counts as ready only once healthy.`,
		Example: `  corralctl group create web --count 4 --image debian12 --memory 1G --wait
  corralctl group scale web 6 --wait`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			spec, ha, err := sf.spec()
			if err != nil {
				return err
			}
			ctx, cancel := c.waitCtx(wait)
			defer cancel()
			start := time.Now()
			req := api.GroupCreateRequest{Name: args[0], Count: count, Spec: spec, HA: ha, Stopped: stopped, Project: c.project}
			if cmd.Flags().Changed("autoscale-max") {
				req.Autoscale = af.autoscale()
			}
			g, err := c.client().CreateGroup(ctx, req)
			if err != nil {
				return err
			}
			if wait && !stopped {
				if g, err = c.followGroup(ctx, g.Name, start); err != nil {
					return err
				}
			}
			return c.print(g, func(w *tabwriter.Writer) {
				fmt.Fprintf(w, "group %s: %d of %d members running\n", g.Name, g.Running, g.Count)
			})
		},
	}
	f := create.Flags()
	sf.register(f)
	f.IntVar(&count, "count", 1, "members to keep")
	f.BoolVar(&stopped, "stopped", false, "create the members without starting them")
	f.BoolVar(&wait, "wait", false, "wait until every member runs, showing progress")
	create.MarkFlagRequired("count")
	f.IntVar(&af.min, "autoscale-min", 1, "with --autoscale-max: the fewest members autoscaling keeps")
	f.IntVar(&af.max, "autoscale-max", 0, "autoscale the count up to this many members with their CPU use")
	f.IntVar(&af.cpu, "autoscale-cpu", 60, "with --autoscale-max: the members' mean CPU use to aim at, percent of their vCPUs")
	f.DurationVar(&af.up, "autoscale-up-cooldown", time.Minute, "with --autoscale-max: wait after any change before growing")
	f.DurationVar(&af.down, "autoscale-down-cooldown", 5*time.Minute, "with --autoscale-max: wait after any change before shrinking")

	var (
		as  autoscaleFlags
		off bool
	)
	autoscale := &cobra.Command{
		Use:   "autoscale NAME --min N --max N [--cpu PCT] | --off",
		Short: "Let the leader move a group's count with its members' CPU use",
		Long: `Autoscale a group: every 15 s the leader samples its running members' CPU
use and moves the count toward the one that puts their mean at --cpu percent
of their vCPUs (as Kubernetes' HPA: ceil(count x mean / target), nothing
within 10 % of the target), within --min..--max. It grows no sooner than
--up-cooldown after any change of the count and shrinks no sooner than
--down-cooldown, to the highest count recommended within that time, so a
dip does not remove members. Each change is a group event with its reason.`,
		Example: `  corralctl group autoscale web --min 2 --max 10 --cpu 60
  corralctl group autoscale web --off`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			var a *api.Autoscale
			if !off {
				if !cmd.Flags().Changed("max") {
					return fmt.Errorf("give --max (and --min, --cpu), or --off")
				}
				a = as.autoscale()
			}
			ctx, cancel := c.ctx()
			defer cancel()
			g, err := c.client().SetGroupAutoscale(ctx, args[0], a)
			if err != nil {
				return err
			}
			return c.print(g, func(w *tabwriter.Writer) {
				fmt.Fprintf(w, "group %s: autoscale %s\n", g.Name, fmtAutoscale(g.Autoscale))
			})
		},
	}
	af2 := autoscale.Flags()
	af2.IntVar(&as.min, "min", 1, "the fewest members")
	af2.IntVar(&as.max, "max", 0, "the most members")
	af2.IntVar(&as.cpu, "cpu", 60, "the members' mean CPU use to aim at, percent of their vCPUs")
	af2.DurationVar(&as.up, "up-cooldown", time.Minute, "wait after any change before growing")
	af2.DurationVar(&as.down, "down-cooldown", 5*time.Minute, "wait after any change before shrinking")
	af2.BoolVar(&off, "off", false, "stop autoscaling (the count stays where it is)")

	ls := &cobra.Command{
		Use: "ls", Aliases: []string{"list"}, Short: "List groups: count, members running", Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx, cancel := c.ctx()
			defer cancel()
			gs, err := c.client().Groups(ctx)
			if err != nil {
				return err
			}
			return c.print(gs, func(w *tabwriter.Writer) {
				fmt.Fprintln(w, "NAME\tPROJECT\tCOUNT\tMEMBERS\tRUNNING\tVCPUS\tMEMORY")
				for _, g := range gs {
					if !c.inProject(g.Project) {
						continue
					}
					fmt.Fprintf(w, "%s\t%s\t%d\t%d\t%d\t%d\t%s\n", g.Name, g.Project, g.Count, len(g.Members), g.Running, g.Template.VCPUs, fmtMiB(g.Template.MemoryMiB))
				}
			})
		},
	}
	show := &cobra.Command{
		Use: "show NAME", Short: "A group: its template and members", Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx, cancel := c.ctx()
			defer cancel()
			g, err := c.client().Group(ctx, args[0])
			if err != nil {
				return err
			}
			return c.print(g, func(w *tabwriter.Writer) {
				fmt.Fprintf(w, "Group:\t%s\n", g.Name)
				fmt.Fprintf(w, "Project:\t%s\n", g.Project)
				count := fmt.Sprintf("%d (%d members, %d running", g.Count, len(g.Members), g.Running)
				if g.Template.Health != nil {
					count += fmt.Sprintf(", %d healthy", g.Ready)
				}
				fmt.Fprintf(w, "Count:\t%s)\n", count)
				fmt.Fprintf(w, "Member size:\t%d vCPU, %s memory\n", g.Template.VCPUs, fmtMiB(g.Template.MemoryMiB))
				tmpl := fmt.Sprintf("%d (%d of %d members on it; roll-outs replace %d at a time)", g.Version, g.Current, len(g.Members), g.Batch)
				if g.Paused != "" {
					tmpl += "; roll-out paused: " + g.Paused
				}
				fmt.Fprintf(w, "Template:\t%s\n", tmpl)
				fmt.Fprintf(w, "Autoscale:\t%s\n", fmtAutoscale(g.Autoscale))
				fmt.Fprintf(w, "Health check:\t%s\n", fmtHealth(g.Template.Health))
				fmt.Fprintf(w, "Created:\t%s\n", g.CreatedAt.Local().Format(time.RFC3339))
				fmt.Fprintln(w, "MEMBER\tHOST\tSTATE\tHEALTH\tTEMPLATE\tMESSAGE")
				for _, m := range g.Members {
					fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%d\t%s\n", m.Name, orDash(m.Host), m.State, orDash(m.Health), m.Version, truncate(m.Message, 60))
				}
			})
		},
	}
	var scaleWait bool
	scale := &cobra.Command{
		Use: "scale NAME COUNT", Short: "Set a group's count: members are created lowest index first, or deleted highest first", Args: cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			n, err := strconv.Atoi(args[1])
			if err != nil {
				return fmt.Errorf("count %q: %w", args[1], err)
			}
			ctx, cancel := c.waitCtx(scaleWait)
			defer cancel()
			start := time.Now()
			g, err := c.client().ScaleGroup(ctx, args[0], n)
			if err != nil {
				return err
			}
			if scaleWait && !g.Stopped {
				if g, err = c.followGroup(ctx, g.Name, start); err != nil {
					return err
				}
			}
			return c.print(g, func(w *tabwriter.Writer) {
				fmt.Fprintf(w, "group %s: count %d, %d members, %d running\n", g.Name, g.Count, len(g.Members), g.Running)
			})
		},
	}
	scale.Flags().BoolVar(&scaleWait, "wait", false, "wait until the group has exactly its count of members, all running")
	var (
		uf                   specFlags
		batch                int
		updateWait, rollWait bool
	)
	update := &cobra.Command{
		Use:   "update NAME [flags of create]",
		Short: "Change the members' template and roll it out: new members start before as many old ones go",
		Long: `Change a group's template: the flags given (and only those) change the
current template (--image, --disk-size and --disk replace the disks, --nic the
NICs). The leader rolls the new template out --batch members at a time: it
starts that many new members beside the old ones, and deletes as many old
members only once the new ones are ready (running and, with a health check,
healthy), so the group never has fewer ready members than its count. A new
member that fails, turns unhealthy, or is not ready after 5 minutes pauses
the roll-out, leaving the old members running; group update (a fixed
template) or group rollback resumes it.`,
		Example: `  corralctl group update web --image debian13 --batch 2 --wait
  corralctl group update web --health-tcp 80 --health-start 2m --wait
  corralctl group rollback web --wait`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx, cancel := c.waitCtx(updateWait)
			defer cancel()
			cur, err := c.client().Group(ctx, args[0])
			if err != nil {
				return err
			}
			spec, ha, err := uf.update(cur.Template, cmd.Flags())
			if err != nil {
				return err
			}
			if !cmd.Flags().Changed("batch") {
				batch = cur.Batch
			}
			start := time.Now()
			g, err := c.client().UpdateGroup(ctx, args[0], api.GroupUpdateRequest{Spec: spec, HA: ha, Batch: batch})
			if err != nil {
				return err
			}
			return c.afterRollout(ctx, g, updateWait, start)
		},
	}
	uf.register(update.Flags())
	update.Flags().IntVar(&batch, "batch", 1, "members replaced at a time")
	update.Flags().BoolVar(&uf.noHealth, "no-health", false, "remove the health check")
	update.Flags().BoolVar(&updateWait, "wait", false, "wait until every member runs the new template, showing progress")
	rollback := &cobra.Command{
		Use: "rollback NAME", Short: "Roll the template before the last change out again", Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx, cancel := c.waitCtx(rollWait)
			defer cancel()
			start := time.Now()
			g, err := c.client().RollbackGroup(ctx, args[0])
			if err != nil {
				return err
			}
			return c.afterRollout(ctx, g, rollWait, start)
		},
	}
	rollback.Flags().BoolVar(&rollWait, "wait", false, "wait until every member runs the template rolled back to")
	var keep bool
	rm := &cobra.Command{
		Use: "rm NAME", Aliases: []string{"delete"}, Short: "Remove a group and delete its members (--keep-vms: they stay, in no group)", Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx, cancel := c.ctx()
			defer cancel()
			if err := c.client().DeleteGroup(ctx, args[0], keep); err != nil {
				return err
			}
			what := "its members are being deleted"
			if keep {
				what = "its members stay as VMs of no group"
			}
			return c.print(struct{}{}, func(w *tabwriter.Writer) { fmt.Fprintf(w, "group %s removed; %s\n", args[0], what) })
		},
	}
	rm.Flags().BoolVar(&keep, "keep-vms", false, "keep the members as VMs of no group")
	cmd.AddCommand(create, ls, show, scale, update, rollback, autoscale, rm)
	return cmd
}

type autoscaleFlags struct {
	min, max, cpu int
	up, down      time.Duration
}

func (a autoscaleFlags) autoscale() *api.Autoscale {
	return &api.Autoscale{Min: a.min, Max: a.max, TargetCPU: a.cpu, UpCooldownSec: int(a.up.Seconds()), DownCooldownSec: int(a.down.Seconds())}
}

func fmtAutoscale(a *api.Autoscale) string {
	if a == nil {
		return "off"
	}
	up, down := a.UpCooldownSec, a.DownCooldownSec
	if up == 0 {
		up = 60
	}
	if down == 0 {
		down = 300
	}
	return fmt.Sprintf("%d..%d members at %d%% CPU (cooldowns %ds up, %ds down)", a.Min, a.Max, a.TargetCPU, up, down)
}

// fmtHealth describes a health check.
func fmtHealth(h *api.HealthCheck) string {
	if h == nil {
		return "-"
	}
	what := fmt.Sprintf("TCP port %d", h.TCPPort)
	if h.Exec != "" {
		what = fmt.Sprintf("command %q", h.Exec)
	}
	or := func(v, def int) int {
		if v > 0 {
			return v
		}
		return def
	}
	return fmt.Sprintf("%s every %ds, %ds timeout, unhealthy after %d failures, %ds start period",
		what, or(h.IntervalSec, 10), or(h.TimeoutSec, 5), or(h.Retries, 3), or(h.StartSec, 60))
}

// afterRollout follows a roll-out with wait, then prints the group.
func (c *cli) afterRollout(ctx context.Context, g api.Group, wait bool, start time.Time) error {
	if wait && !g.Stopped {
		var err error
		if g, err = c.followGroup(ctx, g.Name, start); err != nil {
			return err
		}
	}
	return c.print(g, func(w *tabwriter.Writer) {
		fmt.Fprintf(w, "group %s: template %d, %d of %d members on it, %d running\n", g.Name, g.Version, g.Current, g.Count, g.Running)
	})
}

// groupWait is how long --wait waits at least (--timeout if longer).
const groupWait = 10 * time.Minute

func (c *cli) waitCtx(wait bool) (context.Context, context.CancelFunc) {
	if wait {
		return c.ctxFor(groupWait)
	}
	return c.ctx()
}

// followGroup prints a group's progress to stderr until it has exactly its
// count of members and all run.
func (c *cli) followGroup(ctx context.Context, name string, start time.Time) (api.Group, error) {
	last := ""
	tick := time.NewTicker(500 * time.Millisecond)
	defer tick.Stop()
	for {
		g, err := c.client().Group(ctx, name)
		if err != nil {
			return g, err
		}
		line := fmt.Sprintf("%d members, %d of %d running, %d on template %d", len(g.Members), g.Running, g.Count, g.Current, g.Version)
		if g.Template.Health != nil {
			line = fmt.Sprintf("%d members, %d of %d running, %d healthy, %d on template %d", len(g.Members), g.Running, g.Count, g.Ready, g.Current, g.Version)
		}
		if line != last {
			fmt.Fprintf(os.Stderr, "[%5.1fs] group %s: %s\n", time.Since(start).Seconds(), g.Name, line)
			last = line
		}
		if len(g.Members) == g.Count && g.Ready == g.Count && g.Current == g.Count {
			return g, nil
		}
		if g.Paused != "" {
			return g, fmt.Errorf("group %s: roll-out paused: %s (the old members keep running; group update with a fixed template, or group rollback)", g.Name, g.Paused)
		}
		select {
		case <-ctx.Done():
			return g, fmt.Errorf("group %s: %s: %w", g.Name, line, ctx.Err())
		case <-tick.C:
		}
	}
}

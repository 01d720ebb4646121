package main

import (
	"fmt"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/corralhq/corral/api"
)

// quotaFlags are the limits of project create and set-quota.
type quotaFlags struct {
	vcpus, vms  int
	memory      string
	diskGiB     int64
	description string
}

func (q *quotaFlags) add(cmd *cobra.Command) {
	cmd.Flags().IntVar(&q.vcpus, "vcpus", 0, "vCPUs of all the project's VMs (0: no limit)")
	cmd.Flags().StringVar(&q.memory, "memory", "0", "memory of all its VMs, e.g. 64G (0: no limit)")
	cmd.Flags().Int64Var(&q.diskGiB, "disk-gib", 0, "GiB of all its VMs' disks (0: no limit)")
	cmd.Flags().IntVar(&q.vms, "vms", 0, "number of VMs (0: no limit)")
}

func (q *quotaFlags) quota() (api.Quota, error) {
	mem := int64(0)
	if q.memory != "0" && q.memory != "" {
		var err error
		if mem, err = parseSize(q.memory); err != nil {
			return api.Quota{}, fmt.Errorf("--memory: %w", err)
		}
	}
	return api.Quota{VCPUs: q.vcpus, MemoryMiB: mem, DiskGiB: q.diskGiB, VMs: q.vms}, nil
}

func limit(n int64, unit string) string {
	if n == 0 {
		return "-"
	}
	return fmt.Sprintf("%d%s", n, unit)
}

func (c *cli) projectCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "project", Short: "Projects: VMs, networks and images under quotas; tokens confined to one"}
	var cq, sq quotaFlags
	create := &cobra.Command{
		Use: "create NAME", Short: "Create a project (with quotas)", Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			q, err := cq.quota()
			if err != nil {
				return err
			}
			ctx, cancel := c.ctx()
			defer cancel()
			p, err := c.client().CreateProject(ctx, api.ProjectCreateRequest{Name: args[0], Description: cq.description, Quota: q})
			if err != nil {
				return err
			}
			return c.print(p, func(w *tabwriter.Writer) { fmt.Fprintf(w, "project %s created\n", p.Name) })
		},
	}
	cq.add(create)
	create.Flags().StringVar(&cq.description, "description", "", "what the project is for")
	ls := &cobra.Command{
		Use: "ls", Short: "List projects with their quotas and use", Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx, cancel := c.ctx()
			defer cancel()
			ps, err := c.client().Projects(ctx)
			if err != nil {
				return err
			}
			return c.print(ps, func(w *tabwriter.Writer) {
				fmt.Fprintln(w, "NAME\tVMS\tVCPUS\tMEMORY\tDISK\tDESCRIPTION")
				for _, p := range ps {
					fmt.Fprintf(w, "%s\t%d/%s\t%d/%s\t%s/%s\t%s/%s\t%s\n", p.Name,
						p.Usage.VMs, limit(int64(p.Quota.VMs), ""), p.Usage.VCPUs, limit(int64(p.Quota.VCPUs), ""),
						fmtMiB(p.Usage.MemoryMiB), limitMiB(p.Quota.MemoryMiB), fmtMiB(p.Usage.DiskMiB), limit(p.Quota.DiskGiB, "G"), orDash(p.Description))
				}
			})
		},
	}
	show := &cobra.Command{
		Use: "show NAME", Short: "A project: quota, use and when it was made", Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx, cancel := c.ctx()
			defer cancel()
			p, err := c.client().Project(ctx, args[0])
			if err != nil {
				return err
			}
			return c.print(p, func(w *tabwriter.Writer) {
				fmt.Fprintf(w, "Project:\t%s\n", p.Name)
				if p.Description != "" {
					fmt.Fprintf(w, "Description:\t%s\n", p.Description)
				}
				if !p.CreatedAt.IsZero() {
					fmt.Fprintf(w, "Created:\t%s\n", p.CreatedAt.Local().Format(time.RFC3339))
				}
				if p.BackupSchedule != "" {
					fmt.Fprintf(w, "Backup schedule:\t%s, to %s\n", p.BackupSchedule, p.BackupTarget)
				}
				fmt.Fprintln(w, "\tUSED\tLIMIT")
				fmt.Fprintf(w, "VMs\t%d\t%s\n", p.Usage.VMs, limit(int64(p.Quota.VMs), ""))
				fmt.Fprintf(w, "vCPUs\t%d\t%s\n", p.Usage.VCPUs, limit(int64(p.Quota.VCPUs), ""))
				fmt.Fprintf(w, "Memory\t%s\t%s\n", fmtMiB(p.Usage.MemoryMiB), limitMiB(p.Quota.MemoryMiB))
				fmt.Fprintf(w, "Disk\t%s\t%s\n", fmtMiB(p.Usage.DiskMiB), limit(p.Quota.DiskGiB, "G"))
			})
		},
	}
	setQuota := &cobra.Command{
		Use: "set-quota NAME", Short: "Replace a project's quotas (flags left out: no limit); a lower one refuses growth, not what runs", Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			q, err := sq.quota()
			if err != nil {
				return err
			}
			ctx, cancel := c.ctx()
			defer cancel()
			p, err := c.client().SetProjectQuota(ctx, args[0], q)
			if err != nil {
				return err
			}
			return c.print(p, func(w *tabwriter.Writer) { fmt.Fprintf(w, "project %s: quota set\n", p.Name) })
		},
	}
	sq.add(setQuota)
	rm := &cobra.Command{
		Use: "rm NAME", Short: "Remove a project that holds no VM, network, image or token", Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx, cancel := c.ctx()
			defer cancel()
			if err := c.client().DeleteProject(ctx, args[0]); err != nil {
				return err
			}
			return c.print(struct{}{}, func(w *tabwriter.Writer) { fmt.Fprintf(w, "project %s removed\n", args[0]) })
		},
	}
	cmd.AddCommand(create, ls, show, setQuota, rm, c.projectBackupSchedule())
	return cmd
}

// projectBackupSchedule is "project backup-schedule", as "vm
// backup-schedule" for every VM of the project without its own.
func (c *cli) projectBackupSchedule() *cobra.Command {
	var (
		target string
		off    bool
	)
	cmd := &cobra.Command{
		Use:   "backup-schedule PROJECT (--target TARGET SCHEDULE | --off)",
		Short: "Back up every VM of a project without a schedule of its own to a target on a schedule",
		Long: `Set a project's backup schedule to a target, or remove it with --off. The
schedule is written as a VM's (see corralctl vm backup-schedule --help):
"WHEN keep RETENTION", e.g. "daily 02:00 keep 7 daily 4 weekly" (times
in UTC).

Every VM of the project without a backup schedule of its own follows it,
those created or restored into the project later too, exactly as if it
were the VM's own: a backup of each VM at each slot, and each VM's
scheduled backups the schedule no longer keeps removed. vm show says
"from project P". A VM's own schedule (vm backup-schedule) replaces the
project's for that VM; removing the VM's own gives it the project's back.
Removing the project's leaves the VMs that followed it without one (their
backups stay). Setting it again with the same target and schedule changes
nothing (no slot is backed up twice).`,
		Example: `  corralctl project backup-schedule team-a --target nfs1 "daily 02:00 keep 7 daily 4 weekly"
  corralctl project backup-schedule default --target nfs1 "every 6h keep 4"
  corralctl project backup-schedule team-a --off`,
		Args: cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			project, schedule, err := backupScheduleArgs(args, off, target)
			if err != nil {
				return err
			}
			ctx, cancel := c.ctx()
			defer cancel()
			p, err := c.client().SetProjectBackupSchedule(ctx, project, target, schedule)
			if err != nil {
				return err
			}
			return c.print(p, func(w *tabwriter.Writer) {
				if p.BackupSchedule == "" {
					fmt.Fprintf(w, "backup schedule of project %s removed\n", p.Name)
					return
				}
				fmt.Fprintf(w, "backup schedule of project %s: %s, to %s\n", p.Name, p.BackupSchedule, p.BackupTarget)
			})
		},
	}
	cmd.Flags().StringVar(&target, "target", "", "the backup target")
	cmd.Flags().BoolVar(&off, "off", false, "remove the schedule (the VMs that followed it have none; their backups stay)")
	return cmd
}

func limitMiB(mib int64) string {
	if mib == 0 {
		return "-"
	}
	return fmtMiB(mib)
}

package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/corralhq/corral/api"
)

const (
	// backupWait bounds vm backup --wait and vm restore --wait unless
	// --timeout is given: a backup of large disks takes hours.
	backupWait = 6 * time.Hour
	// backupAttempts is how many attempts a backup job gets
	// (model.MaxBackupAttempts).
	backupAttempts = 3
)

// backupPoll is how often --wait reads the VM.
var backupPoll = 500 * time.Millisecond

func (c *cli) backupCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "backup", Short: "List and remove VM backups, and manage backup targets",
		Long: `Backups copy a VM's disks, while the guest runs, into a backup target:
corralctl vm backup starts one, corralctl vm restore restores one as a new VM.
The first backup of a VM to a target is full; the next ones are incremental
(only what the guest wrote since the previous one) unless --full is given.`}
	cmd.AddCommand(c.backupTargetCmd(), c.backupLs(), c.backupShow(), c.backupRm())
	return cmd
}

func (c *cli) backupTargetCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "target", Short: "Add, list and remove backup targets (adding and removing is an admin's)"}
	var dir, secretFile string
	var s3 api.S3
	add := &cobra.Command{
		Use:   "add NAME (--dir DIR | --s3-endpoint HOST:PORT --bucket B --access-key K --secret-key-file F)",
		Short: "Add a backup target: a directory on every host, or an S3 bucket",
		Long: `Add a backup target: a directory with the same path on every host, on local
disk or (so that any host can restore any backup) on NFS shared by the hosts;
or a bucket of S3-compatible object storage, which must exist. The secret key
is read from a file (- for standard input), never from the command line;
only admins can read it back (backup target show NAME --credentials). The host
you ask checks that it can write there before the target is added.`,
		Example: `  corralctl backup target add nfs1 --dir /mnt/backups
  corralctl backup target add s3 --s3-endpoint s3.example.com:443 --bucket corral --prefix rack1/ \
      --access-key AKIA... --secret-key-file /root/s3-secret`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			req := api.BackupTargetCreateRequest{Name: args[0], Dir: dir}
			if s3.Endpoint != "" {
				if secretFile == "" {
					return errors.New("--secret-key-file is required with --s3-endpoint (- reads standard input)")
				}
				key, err := readSecret(cmd.InOrStdin(), secretFile)
				if err != nil {
					return err
				}
				x := s3
				x.SecretKey = key
				req.S3 = &x
			}
			if (req.Dir == "") == (req.S3 == nil) {
				return errors.New("give --dir DIR, or --s3-endpoint HOST:PORT with --bucket, --access-key and --secret-key-file")
			}
			ctx, cancel := c.ctx()
			defer cancel()
			t, err := c.client().CreateBackupTarget(ctx, req)
			if err != nil {
				return err
			}
			return c.print(t, func(w *tabwriter.Writer) { fmt.Fprintf(w, "backup target %s added (%s)\n", t.Name, t.Where) })
		},
	}
	add.Flags().StringVar(&dir, "dir", "", "the target's directory (an absolute path, the same on every host)")
	add.Flags().StringVar(&s3.Endpoint, "s3-endpoint", "", "an S3 service's host:port")
	add.Flags().StringVar(&s3.Bucket, "bucket", "", "the S3 bucket (it must exist)")
	add.Flags().StringVar(&s3.Prefix, "prefix", "", "a key prefix in the bucket, ending in / (default: none)")
	add.Flags().StringVar(&s3.Region, "region", "", "the S3 region (default: the service's)")
	add.Flags().StringVar(&s3.AccessKey, "access-key", "", "the S3 access key")
	add.Flags().StringVar(&secretFile, "secret-key-file", "", "a file holding the S3 secret key (- : standard input)")
	add.Flags().BoolVar(&s3.Insecure, "insecure", false, "plain HTTP to the S3 service (a private network); the default is HTTPS")
	var creds bool
	show := &cobra.Command{
		Use: "show NAME", Short: "Show a backup target (--credentials: an S3 target's keys, for admins)", Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx, cancel := c.ctx()
			defer cancel()
			if creds {
				k, err := c.client().BackupTargetCredentials(ctx, args[0])
				if err != nil {
					return err
				}
				return c.print(k, func(w *tabwriter.Writer) {
					fmt.Fprintf(w, "Access key:\t%s\nSecret key:\t%s\n", k.AccessKey, k.SecretKey)
				})
			}
			ts, err := c.client().BackupTargets(ctx)
			if err != nil {
				return err
			}
			for _, t := range ts {
				if t.Name == args[0] {
					return c.print(t, func(w *tabwriter.Writer) {
						fmt.Fprintf(w, "Name:\t%s\nWhere:\t%s\nCreated:\t%s\n", t.Name, t.Where, t.CreatedAt.Local().Format(time.RFC3339))
						if s := t.S3; s != nil {
							fmt.Fprintf(w, "Access key:\t%s\nRegion:\t%s\n", s.AccessKey, s.Region)
						}
					})
				}
			}
			return fmt.Errorf("backup target %q: %w", args[0], api.ErrNotFound)
		},
	}
	show.Flags().BoolVar(&creds, "credentials", false, "print an S3 target's access and secret keys (admins only)")
	ls := &cobra.Command{
		Use: "ls", Aliases: []string{"list"}, Short: "List backup targets", Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx, cancel := c.ctx()
			defer cancel()
			ts, err := c.client().BackupTargets(ctx)
			if err != nil {
				return err
			}
			if ts == nil {
				ts = []api.BackupTarget{}
			}
			return c.print(ts, func(w *tabwriter.Writer) {
				fmt.Fprintln(w, "NAME\tWHERE\tCREATED")
				for _, t := range ts {
					fmt.Fprintf(w, "%s\t%s\t%s\n", t.Name, t.Where, t.CreatedAt.Local().Format(time.RFC3339))
				}
			})
		},
	}
	var force bool
	rm := &cobra.Command{
		Use: "rm NAME", Aliases: []string{"delete"}, Short: "Remove a backup target (its files stay)",
		Long: `Remove a backup target from the cluster; its files stay in its directory.
A target that a backup or a restore uses is not removed. One that holds
backups is removed only with --force, which drops them from the catalog.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx, cancel := c.ctx()
			defer cancel()
			t, err := c.client().DeleteBackupTarget(ctx, args[0], force)
			if err != nil {
				return err
			}
			return c.print(t, func(w *tabwriter.Writer) { fmt.Fprintf(w, "backup target %s removed (its files stay)\n", t.Name) })
		},
	}
	rm.Flags().BoolVar(&force, "force", false, "remove a target that holds backups too (they leave the catalog; their files stay)")
	cmd.AddCommand(add, ls, show, rm)
	return cmd
}

func (c *cli) backupLs() *cobra.Command {
	var vm, target string
	cmd := &cobra.Command{
		Use: "ls", Aliases: []string{"list"}, Short: "List complete backups, newest first", Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx, cancel := c.ctx()
			defer cancel()
			bs, err := c.client().Backups(ctx, vm, target)
			if err != nil {
				return err
			}
			out := []api.Backup{}
			for _, b := range bs {
				if c.inProject(b.Project) {
					out = append(out, b)
				}
			}
			return c.print(out, func(w *tabwriter.Writer) {
				fmt.Fprintln(w, "ID\tVM\tTARGET\tKIND\tPARENT\tFINISHED\tSIZE\tREAD\tSTORED\tSCHEDULED")
				for _, b := range out {
					fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", b.ID, b.VM, b.Target, b.Kind, orDash(b.Parent),
						b.Finished.Local().Format(time.RFC3339), fmtBytes(b.Size), fmtBytes(b.Read), fmtBytes(b.Stored), yesOrDash(b.Scheduled))
				}
			})
		},
	}
	cmd.Flags().StringVar(&vm, "vm", "", "only this VM's backups")
	cmd.Flags().StringVar(&target, "target", "", "only the backups on this target")
	return cmd
}

func (c *cli) backupShow() *cobra.Command {
	return &cobra.Command{
		Use: "show ID", Short: "Show one backup", Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx, cancel := c.ctx()
			defer cancel()
			b, err := c.client().Backup(ctx, args[0])
			if err != nil {
				return err
			}
			return c.print(b, func(w *tabwriter.Writer) {
				fmt.Fprintf(w, "ID:\t%s\n", b.ID)
				fmt.Fprintf(w, "VM:\t%s (id %s)\n", b.VM, b.VMID)
				fmt.Fprintf(w, "Project:\t%s\n", orDash(b.Project))
				fmt.Fprintf(w, "Target:\t%s\n", b.Target)
				fmt.Fprintf(w, "Kind:\t%s\n", backupKind(b.Kind, b.Parent))
				if b.Scheduled {
					fmt.Fprintf(w, "Scheduled:\tyes (the VM's backup schedule made it, and removes it once it no longer keeps it)\n")
				}
				fmt.Fprintf(w, "Started:\t%s\n", b.StartedAt.Local().Format(time.RFC3339))
				fmt.Fprintf(w, "Finished:\t%s (took %s)\n", b.Finished.Local().Format(time.RFC3339), fmtTook(b.Finished.Sub(b.StartedAt)))
				fmt.Fprintf(w, "Size:\t%s\n", fmtBytes(b.Size))
				for i, d := range b.DiskSizes {
					fmt.Fprintf(w, "Disk %d:\t%s\n", i, fmtBytes(d))
				}
				fmt.Fprintf(w, "Read:\t%s\n", fmtBytes(b.Read))
				fmt.Fprintf(w, "Stored:\t%s new\n", fmtBytes(b.Stored))
			})
		},
	}
}

func (c *cli) backupRm() *cobra.Command {
	return &cobra.Command{
		Use: "rm ID", Aliases: []string{"delete"}, Short: "Remove a backup (not one another builds on); what no other backup needs leaves its target",
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx, cancel := c.ctx()
			defer cancel()
			b, err := c.client().DeleteBackup(ctx, args[0])
			if err != nil {
				return err
			}
			return c.print(b, func(w *tabwriter.Writer) {
				fmt.Fprintf(w, "backup %s of %s removed from %s\n", b.ID, b.VM, b.Target)
			})
		},
	}
}

func yesOrDash(b bool) string {
	if b {
		return "yes"
	}
	return "-"
}

// vmBackupSchedule is "vm backup-schedule", not "vm backup schedule": vm
// backup takes the VM as its argument, so a subcommand there would make a
// VM called schedule impossible to back up.
func (c *cli) vmBackupSchedule() *cobra.Command {
	var (
		target string
		off    bool
	)
	cmd := &cobra.Command{
		Use:   "backup-schedule VM (--target TARGET SCHEDULE | --off)",
		Short: "Back a VM up to a target on a schedule, and remove the backups it no longer keeps",
		Long: `Set a VM's backup schedule to a target, or remove it with --off. The
schedule is written as a snapshot schedule (see corralctl vm snapshot
schedule --help): "WHEN keep RETENTION", e.g. "daily 02:00 keep 7 daily 4
weekly" (times in UTC).

At each slot the leader starts a backup of the VM to the target, as vm
backup does (incremental when it can build on an earlier one; a slot waits
while another backup or a restore of the VM is under way), then removes the
backups the schedule made that it no longer keeps: never the newest, never
one a kept backup builds on, never one made otherwise. corralctl backup ls
marks the scheduled ones. Removing the schedule leaves its backups. Setting
one replaces the last.

A VM of a project that has a backup schedule (corralctl project
backup-schedule) follows the project's unless it has its own: setting one
here replaces the project's for this VM, and --off gives the VM the
project's schedule back (vm show says "from project P"); in a project
without one, --off leaves the VM none.`,
		Example: `  corralctl vm backup-schedule db1 --target nfs1 "daily 02:00 keep 7 daily 4 weekly"
  corralctl vm backup-schedule web1 --target nfs1 "every 6h keep 4"
  corralctl vm backup-schedule db1 --off`,
		Args: cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			vm, schedule, err := backupScheduleArgs(args, off, target)
			if err != nil {
				return err
			}
			ctx, cancel := c.ctx()
			defer cancel()
			v, err := c.client().SetBackupSchedule(ctx, vm, target, schedule)
			if err != nil {
				return err
			}
			return c.print(v, func(w *tabwriter.Writer) {
				if v.BackupSchedule == "" {
					fmt.Fprintf(w, "backup schedule of %s removed\n", v.Name)
					return
				}
				fmt.Fprintf(w, "backup schedule of %s: %s\n", v.Name, fmtBackupSchedule(v))
			})
		},
	}
	cmd.Flags().StringVar(&target, "target", "", "the backup target")
	cmd.Flags().BoolVar(&off, "off", false, "remove the schedule (its backups stay); the VM then follows its project's, if it has one")
	return cmd
}

// fmtBackupSchedule is a VM's backup schedule and target, and the project
// whose schedule it is when the VM has none of its own.
func fmtBackupSchedule(v api.VM) string {
	s := v.BackupSchedule + ", to " + v.BackupTarget
	if v.BackupScheduleFrom != "" {
		s += " (from project " + v.BackupScheduleFrom + ")"
	}
	return s
}

// backupKind is "full", or "incremental on PARENT".
func backupKind(kind, parent string) string {
	if parent != "" {
		return kind + " on " + parent
	}
	return kind
}

func fmtTook(d time.Duration) string { return fmt.Sprintf("%.1fs", d.Seconds()) }

// parseRate reads a bandwidth in bytes a second: a number, optionally
// followed by B, K/KiB, M/MiB or G/GiB (powers of 1024) and "/s".
func parseRate(s string) (int64, error) {
	bad := fmt.Errorf("rate %q: use bytes a second, as a number with an optional suffix KiB, MiB or GiB (50MiB, 1.5GiB, 200000)", s)
	num := strings.TrimSuffix(strings.TrimSpace(s), "/s")
	i := strings.IndexFunc(num, func(r rune) bool { return (r < '0' || r > '9') && r != '.' })
	unit := ""
	if i >= 0 {
		num, unit = num[:i], num[i:]
	}
	mult, ok := map[string]float64{"": 1, "b": 1, "k": 1 << 10, "kib": 1 << 10, "m": 1 << 20, "mib": 1 << 20, "g": 1 << 30, "gib": 1 << 30}[strings.ToLower(unit)]
	if !ok || num == "" || strings.Count(num, ".") > 1 || num == "." {
		return 0, bad
	}
	f, err := strconv.ParseFloat(num, 64)
	if err != nil || f < 0 {
		return 0, bad
	}
	n := math.Round(f * mult)
	if n >= math.MaxInt64 {
		return 0, fmt.Errorf("rate %q is too large", s)
	}
	if n == 0 && f > 0 {
		return 0, fmt.Errorf("rate %q is less than a byte a second", s)
	}
	return int64(n), nil
}

// backupWaitCtx is the context of a --wait: --timeout when given, else
// backupWait; Ctrl-C ends it.
func (c *cli) backupWaitCtx(cmd *cobra.Command) (context.Context, context.CancelFunc) {
	wait := backupWait
	if cmd.Flags().Changed("timeout") {
		wait = c.timeout
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	ctx, cancel := context.WithTimeout(ctx, wait)
	return ctx, func() { cancel(); stop() }
}

func (c *cli) vmBackup() *cobra.Command {
	var (
		target, limit string
		full, wait    bool
	)
	cmd := &cobra.Command{
		Use:   "backup VM --target TARGET",
		Short: "Back a VM up to a target while it runs",
		Long: `Back a VM's disks up to a target while the guest runs: the leader takes a
snapshot of them and the VM's host copies that frozen state into the target
as content-addressed chunks. The first backup of a VM to a target is full;
the next ones incremental (only what the guest wrote since), unless --full.
--limit caps how fast the disks are read (50MiB: 50 MiB a second).

A failed attempt is retried twice (backup-failed events say why). With
--wait the command shows the progress until the backup is complete or has
failed for good, for --timeout if given (else up to 6h); without it, it
returns once the backup is recorded (see corralctl vm show VM).`,
		Example: `  corralctl vm backup web1 --target nfs1 --wait
  corralctl vm backup db1 --target nfs1 --full --limit 50MiB`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			vm := args[0]
			if target == "" {
				return errors.New("--target is required (see corralctl backup target ls)")
			}
			req := api.VMBackupRequest{Target: target, Full: full}
			if limit != "" {
				var err error
				if req.BytesPerSec, err = parseRate(limit); err != nil {
					return fmt.Errorf("--limit: %w", err)
				}
			}
			ctx, cancel := c.ctx()
			if wait {
				cancel()
				ctx, cancel = c.backupWaitCtx(cmd)
			}
			defer cancel()
			j, err := c.client().BackupVM(ctx, vm, req)
			if err != nil {
				return err
			}
			if !wait {
				return c.print(j, func(w *tabwriter.Writer) {
					fmt.Fprintf(w, "backup %s of %s to %s started (%s)\n", j.ID, vm, j.Target, backupKind(j.Kind, j.Parent))
				})
			}
			b, err := c.waitBackup(ctx, cmd.ErrOrStderr(), vm, j)
			if err != nil {
				return err
			}
			return c.print(b, func(w *tabwriter.Writer) {
				fmt.Fprintf(w, "backup %s of %s to %s complete: %s, read %s, stored %s new, in %s\n", b.ID, vm, b.Target,
					backupKind(b.Kind, b.Parent), fmtBytes(b.Read), fmtBytes(b.Stored), fmtTook(b.Finished.Sub(b.StartedAt)))
			})
		},
	}
	cmd.Flags().StringVar(&target, "target", "", "the backup target")
	cmd.Flags().BoolVar(&full, "full", false, "a full backup, even when an incremental could be taken")
	cmd.Flags().StringVar(&limit, "limit", "", "read the disks at most this fast, in bytes a second (50MiB, 1GiB; default: no limit)")
	cmd.Flags().BoolVar(&wait, "wait", false, "wait until the backup is complete, showing progress")
	return cmd
}

// backupStatus is a job's progress line, as --wait shows it.
func backupStatus(j api.BackupJob) string {
	s := "backup " + j.ID + ": "
	switch {
	case j.Host == "" && j.Attempts > 0:
		s += fmt.Sprintf("attempt %d of %d failed: %s", j.Attempts, backupAttempts, orDash(j.Message))
		if !j.RetryAt.IsZero() {
			s += "; retried at " + j.RetryAt.Local().Format("15:04:05")
		}
		return s
	case j.Host == "":
		return s + "waiting for a host"
	case j.Total > 0:
		s += fmt.Sprintf("%d%% of %s", j.Done*100/j.Total, fmtBytes(j.Total))
	default:
		s += "starting on " + j.Host
	}
	if j.Attempts > 0 {
		s += fmt.Sprintf(" (attempt %d of %d)", j.Attempts+1, backupAttempts)
	}
	return s
}

// waitBackup polls the VM, printing the job's progress to errw when it
// changes, until the job is gone: complete (in the catalog), or failed for
// good (the newest backup-failed event of it says why).
func (c *cli) waitBackup(ctx context.Context, errw io.Writer, vm string, j api.BackupJob) (api.Backup, error) {
	cl := c.client()
	still := func() error {
		return fmt.Errorf("backup %s of %s is still under way; it goes on (see corralctl vm show %s)", j.ID, vm, vm)
	}
	last := ""
	for {
		v, err := cl.VM(ctx, vm)
		switch {
		case err != nil && ctx.Err() != nil:
			return api.Backup{}, still()
		case err != nil && !errors.Is(err, api.ErrNotFound):
			return api.Backup{}, err
		}
		if err == nil && v.Backup != nil && v.Backup.ID == j.ID {
			if s := backupStatus(*v.Backup); s != last {
				fmt.Fprintln(errw, s)
				last = s
			}
		} else {
			// The job is gone: complete, or given up (or its VM gone).
			b, err := cl.Backup(ctx, j.ID)
			if err == nil {
				return b, nil
			}
			if !errors.Is(err, api.ErrNotFound) {
				return api.Backup{}, err
			}
			why := c.backupFailure(ctx, vm, j.ID)
			if why == "" {
				why = fmt.Sprintf("backup %s of %s ended without completing", j.ID, vm)
			}
			return api.Backup{}, fmt.Errorf("%s (see corralctl events --vm %s)", why, vm)
		}
		select {
		case <-ctx.Done():
			return api.Backup{}, still()
		case <-time.After(backupPoll):
		}
	}
}

// backupFailure returns the message of the newest backup-failed event of
// backup id ("" when there is none to be found: the leader records it just
// after the job ends, so it is looked for for a second or two).
func (c *cli) backupFailure(ctx context.Context, vm, id string) string {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	prefix := "backup " + id + " "
	for {
		evs, err := c.client().Events(ctx, 0, 0, 0)
		if err != nil {
			return ""
		}
		for i := len(evs) - 1; i >= 0; i-- {
			e := evs[i]
			if e.Kind == "backup-failed" && e.VM == vm && strings.HasPrefix(e.Message, prefix) {
				return e.Message
			}
		}
		select {
		case <-ctx.Done():
			return ""
		case <-time.After(250 * time.Millisecond):
		}
	}
}

func (c *cli) vmRestore() *cobra.Command {
	var (
		backup, as             string
		inPlace, stopped, wait bool
	)
	cmd := &cobra.Command{
		Use:   "restore --backup ID (--as NEW | --in-place)",
		Short: "Restore a backup as a new VM, or over the stopped VM it was taken of",
		Long: `Restore a backup as a new VM, in the backup's project, with the backed-up
VM's spec (new MAC addresses, blank disks of the backed-up sizes). The
leader places it as any new VM; its host writes the disks from the backup
(the VM's message says how far), then starts it unless --stopped.

With --in-place the VM the backup was taken of, stopped, is replaced: it is
deleted (its disks and snapshots go) and made again with its name, settings
and MAC addresses and the backup's disks (a new incarnation, whose next
backup is a full one).

With --wait the command shows the progress until the VM runs (with
--stopped: until its disks are restored), for --timeout if given (else up
to 6h).`,
		Example: `  corralctl vm restore --backup 20250101-020000-a1b2c3 --as web1-restored --wait`,
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if backup == "" || (as == "") == !inPlace {
				return errors.New("--backup is required, with --as NEW or --in-place")
			}
			ctx, cancel := c.ctx()
			if wait {
				cancel()
				ctx, cancel = c.backupWaitCtx(cmd)
			}
			defer cancel()
			start := time.Now()
			v, err := c.client().RestoreBackup(ctx, backup, api.RestoreRequest{As: as, InPlace: inPlace, Stopped: stopped})
			if err != nil {
				return explainNoFit(err)
			}
			if !wait {
				return c.print(v, func(w *tabwriter.Writer) {
					fmt.Fprintf(w, "vm %s created on %s from backup %s; its host restores the disks (see corralctl vm show %s)\n", v.Name, orDash(v.Host), backup, v.Name)
				})
			}
			if v, err = c.waitRestore(ctx, cmd.ErrOrStderr(), v.Name, backup, stopped); err != nil {
				return err
			}
			return c.print(v, func(w *tabwriter.Writer) {
				fmt.Fprintf(w, "vm %s restored from backup %s on %s in %s\n", v.Name, backup, orDash(v.Host), fmtTook(time.Since(start)))
			})
		},
	}
	cmd.Flags().StringVar(&backup, "backup", "", "the backup to restore (corralctl backup ls)")
	cmd.Flags().StringVar(&as, "as", "", "the new VM's name")
	cmd.Flags().BoolVar(&inPlace, "in-place", false, "replace the stopped VM the backup was taken of")
	cmd.Flags().BoolVar(&stopped, "stopped", false, "leave the new VM stopped")
	cmd.Flags().BoolVar(&wait, "wait", false, "wait until the VM runs (with --stopped: until its disks are restored), showing progress")
	return cmd
}

// waitRestore polls a restored VM, printing its message (how far the
// restore is) to errw when it changes, until it runs, or with stopped
// until it is stopped with its disks restored; a failed VM ends it.
func (c *cli) waitRestore(ctx context.Context, errw io.Writer, name, backup string, stopped bool) (api.VM, error) {
	cl := c.client()
	last := ""
	hinted := false
	for {
		v, err := cl.VM(ctx, name)
		switch {
		case err != nil && ctx.Err() != nil:
			return v, fmt.Errorf("vm %s is still being restored from backup %s; it goes on (see corralctl vm show %s)", name, backup, name)
		case err != nil:
			return v, err
		}
		if m := vmMessage(v); m != "" && m != last {
			fmt.Fprintf(errw, "vm %s: %s\n", name, m)
			last = m
		}
		switch {
		case !stopped && v.State == "running":
			return v, nil
		case stopped && v.State == "stopped" && v.RestoringFrom == "":
			return v, nil
		case stopped && v.State == "stopped" && !hinted:
			fmt.Fprintf(errw, "vm %s: stopped; its disks are not restored yet\n", name)
			hinted = true
		case v.State == "failed" || v.State == "error" && v.Message != "":
			return v, fmt.Errorf("vm %s is %s: %s (see corralctl events --vm %s)", v.Name, v.State, vmMessage(v), v.Name)
		}
		select {
		case <-ctx.Done():
			return v, fmt.Errorf("vm %s is still being restored from backup %s; it goes on (see corralctl vm show %s)", name, backup, name)
		case <-time.After(backupPoll):
		}
	}
}

// fmtBackupJob is vm show's line about a backup under way.
func fmtBackupJob(j api.BackupJob) string {
	s := fmt.Sprintf("%s (%s) to %s", j.ID, backupKind(j.Kind, j.Parent), j.Target)
	if j.Host != "" {
		s += " on " + j.Host
	} else {
		s += ", waiting for a host"
	}
	if j.Host != "" && j.Total > 0 {
		s += fmt.Sprintf(": %d%% of %s", j.Done*100/j.Total, fmtBytes(j.Total))
	}
	if j.BytesPerSec > 0 {
		s += fmt.Sprintf(", limited to %s/s", fmtBytes(j.BytesPerSec))
	}
	if j.Attempts > 0 {
		s += fmt.Sprintf("; %d of %d attempts failed", j.Attempts, backupAttempts)
		if j.Message != "" {
			s += ", last: " + j.Message
		}
		if j.Host == "" && !j.RetryAt.IsZero() {
			s += "; retried at " + j.RetryAt.Local().Format("15:04:05")
		}
	}
	return s
}

// readSecret reads a secret from a file, or from r for "-": its first
// line, without the line end.
func readSecret(r io.Reader, file string) (string, error) {
	var b []byte
	var err error
	if file == "-" {
		b, err = io.ReadAll(io.LimitReader(r, 4096))
	} else {
		b, err = os.ReadFile(file)
	}
	if err != nil {
		return "", fmt.Errorf("secret key: %w", err)
	}
	key, _, _ := strings.Cut(string(b), "\n")
	if key = strings.TrimRight(key, "\r"); key == "" {
		return "", fmt.Errorf("secret key: %s is empty", file)
	}
	return key, nil
}

// backupScheduleArgs reads NAME SCHEDULE (or NAME with --off) and checks
// --target against --off.
func backupScheduleArgs(args []string, off bool, target string) (name, schedule string, err error) {
	if name, schedule, err = scheduleArgs(args, off); err != nil {
		return "", "", err
	}
	switch {
	case off && target != "":
		return "", "", errors.New("--off removes the schedule, whatever its target: give no --target")
	case !off && target == "":
		return "", "", errors.New("--target is required (see corralctl backup target ls)")
	}
	return name, schedule, nil
}

package main

import (
	"fmt"
	"os"
	"sort"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/corralhq/corral/api"
)

func (c *cli) hostCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "host", Short: "Inspect and label hosts"}
	cmd.AddCommand(c.hostDrain(), c.hostRestore(), c.hostRemove(),
		&cobra.Command{
			Use: "ls", Aliases: []string{"list"}, Short: "List hosts", Args: cobra.NoArgs,
			RunE: func(cmd *cobra.Command, args []string) error {
				ctx, cancel := c.ctx()
				defer cancel()
				hosts, err := c.client().Hosts(ctx)
				if err != nil {
					return err
				}
				return c.print(hosts, func(w *tabwriter.Writer) {
					fmt.Fprintln(w, "NAME\tADDRESS\tGOSSIP\tLEASE\tRAFT\tMODE\tHEALTH\tVMS\tVCPUS\tMEMORY\tLABELS\tVERSION\tPROTO")
					for _, h := range hosts {
						mode := orDash(h.Mode)
						if h.Draining {
							mode += " (draining)"
						}
						fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%d\t%d/%d\t%s/%s\t%s\t%s\t%s\n", h.Name, orDash(h.Addresses.Advertise), h.Gossip, leaseText(h),
							h.RaftRole, mode, orDash(h.Health), h.VMs, h.Allocated.VCPUs, h.Allocatable.VCPUs,
							fmtMiB(h.Allocated.MemoryMiB), fmtMiB(h.Allocatable.MemoryMiB), fmtLabels(h.Labels), orDash(h.Version), protoText(h.Protocol))
					}
				})
			},
		},
		&cobra.Command{
			Use: "show NAME", Short: "Show one host", Args: cobra.ExactArgs(1),
			RunE: func(cmd *cobra.Command, args []string) error {
				ctx, cancel := c.ctx()
				defer cancel()
				h, err := c.client().Host(ctx, args[0])
				if err != nil {
					return err
				}
				return c.print(h, func(w *tabwriter.Writer) { printHost(w, h) })
			},
		},
		&cobra.Command{
			Use:   "label NAME key=value... key-...",
			Short: "Set labels (key=value) and remove them (key-) on a host",
			Args:  cobra.MinimumNArgs(2),
			RunE: func(cmd *cobra.Command, args []string) error {
				req, err := parseLabelArgs(args[1:])
				if err != nil {
					return err
				}
				ctx, cancel := c.ctx()
				defer cancel()
				h, err := c.client().SetHostLabels(ctx, args[0], req)
				if err != nil {
					return err
				}
				return c.print(h, func(w *tabwriter.Writer) { fmt.Fprintf(w, "%s\t%s\n", h.Name, fmtLabels(h.Labels)) })
			},
		},
	)
	return cmd
}

func leaseText(h api.Host) string {
	switch h.Lease {
	case "ok", "late":
		return fmt.Sprintf("%s (%.1fs)", h.Lease, float64(h.LeaseAgeMs)/1000)
	}
	return orDash(h.Lease)
}

func (c *cli) hostDrain() *cobra.Command {
	var noWait bool
	cmd := &cobra.Command{
		Use:   "drain NAME",
		Short: "Put a host in maintenance and live-migrate every guest away, showing progress per VM",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx, cancel := c.ctx()
			defer cancel()
			cl := c.client()
			start := time.Now()
			if _, err := cl.DrainHost(ctx, args[0]); err != nil {
				return err
			}
			if noWait {
				return c.print(map[string]string{"host": args[0], "state": "draining"}, func(w *tabwriter.Writer) { fmt.Fprintf(w, "draining %s\n", args[0]) })
			}
			seen := map[string]string{}
			for {
				h, err := cl.Host(ctx, args[0])
				if err != nil {
					return err
				}
				vms, err := cl.VMs(ctx)
				if err != nil {
					return err
				}
				left := 0
				for _, v := range vms {
					line := ""
					switch {
					case v.Host == args[0] && v.MigratingTo != "" && v.Message != "":
						line = "migrating " + v.Message
					case v.Host == args[0] && v.MigratingTo != "":
						line = "migrating to " + v.MigratingTo
					case v.Host == args[0]:
						line = fmt.Sprintf("waiting (%s)", v.State)
					case v.Home == args[0]:
						line = fmt.Sprintf("on %s, %s", v.Host, v.State)
					default:
						continue
					}
					if v.Host == args[0] {
						left++
					}
					if seen[v.Name] != line {
						seen[v.Name] = line
						fmt.Fprintf(os.Stderr, "[%5.1fs] %s: %s\n", time.Since(start).Seconds(), v.Name, line)
					}
				}
				if !h.Draining {
					return c.print(h, func(w *tabwriter.Writer) {
						if left == 0 {
							fmt.Fprintf(w, "%s drained in %.1fs: in maintenance with no guests (corralctl host restore %s to return it)\n", h.Name, time.Since(start).Seconds(), h.Name)
						} else {
							fmt.Fprintf(w, "%s: %d guests could not be migrated and keep running there; see corralctl events\n", h.Name, left)
						}
					})
				}
				select {
				case <-ctx.Done():
					return ctx.Err()
				case <-time.After(300 * time.Millisecond):
				}
			}
		},
	}
	cmd.Flags().BoolVar(&noWait, "no-wait", false, "return once the drain has started")
	return cmd
}

func (c *cli) hostRestore() *cobra.Command {
	var failback bool
	cmd := &cobra.Command{
		Use: "restore NAME", Short: "Return a host in maintenance to service", Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx, cancel := c.ctx()
			defer cancel()
			h, err := c.client().RestoreHost(ctx, args[0], failback)
			if err != nil {
				return err
			}
			return c.print(h, func(w *tabwriter.Writer) { fmt.Fprintf(w, "%s is %s\n", h.Name, h.Mode) })
		},
	}
	cmd.Flags().BoolVar(&failback, "failback", false, "live-migrate the guests the drain moved away back to it")
	return cmd
}

func (c *cli) hostRemove() *cobra.Command {
	var force bool
	cmd := &cobra.Command{
		Use:   "rm NAME",
		Short: "Remove a host for good: out of state and Raft, its certificate revoked (drain it and stop its corrald first)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx, cancel := c.ctx()
			defer cancel()
			if err := c.client().RemoveHost(ctx, args[0], force); err != nil {
				return err
			}
			return c.print(map[string]string{"host": args[0], "state": "removed"}, func(w *tabwriter.Writer) {
				fmt.Fprintf(w, "%s removed; its certificate is revoked. To bring it back, delete its data_dir/identity and join it again with a new token.\n", args[0])
			})
		},
	}
	cmd.Flags().BoolVar(&force, "force", false, "the host is dead (fenced) and still has VMs: move them to other hosts, stopped")
	return cmd
}

func parseLabelArgs(args []string) (api.HostLabelsRequest, error) {
	req := api.HostLabelsRequest{Set: map[string]string{}}
	for _, a := range args {
		if k, v, ok := strings.Cut(a, "="); ok {
			if k == "" {
				return req, fmt.Errorf("label %q: empty key", a)
			}
			req.Set[k] = v
		} else if k, ok := strings.CutSuffix(a, "-"); ok && k != "" {
			req.Remove = append(req.Remove, k)
		} else {
			return req, fmt.Errorf("label %q: use key=value to set or key- to remove", a)
		}
	}
	return req, nil
}

func printHost(w *tabwriter.Writer, h api.Host) {
	fmt.Fprintf(w, "Name:\t%s\n", h.Name)
	fmt.Fprintf(w, "Mode:\t%s\n", orDash(h.Mode))
	fmt.Fprintf(w, "Gossip:\t%s%s\n", h.Gossip, since(h.GossipSince))
	fmt.Fprintf(w, "Lease:\t%s\n", leaseText(h))
	if h.FenceReason != "" {
		fmt.Fprintf(w, "Fenced:\t%s (%s)\n", h.FencedAt.Local().Format(time.RFC3339), h.FenceReason)
	}
	if !h.StoppedAt.IsZero() {
		fmt.Fprintf(w, "Stopped:\tcorrald stopped cleanly at %s; its guests keep running there\n", h.StoppedAt.Local().Format(time.RFC3339))
	}
	if h.Draining {
		fmt.Fprintf(w, "Draining:\tyes\n")
	}
	fmt.Fprintf(w, "Raft role:\t%s\n", h.RaftRole)
	fmt.Fprintf(w, "Version:\t%s\n", orDash(h.Version))
	fmt.Fprintf(w, "Protocol:\t%s\n", protoText(h.Protocol))
	fmt.Fprintf(w, "Address:\t%s\n", orDash(h.Addresses.Advertise))
	fmt.Fprintf(w, "Gossip addr:\t%s\n", orDash(h.Addresses.Gossip))
	fmt.Fprintf(w, "Raft addr:\t%s\n", orDash(h.Addresses.Raft))
	fmt.Fprintf(w, "RPC addr:\t%s\n", orDash(h.Addresses.RPC))
	fmt.Fprintf(w, "Capacity:\t%d CPUs, %s memory\n", h.Capacity.VCPUs, fmtMiB(h.Capacity.MemoryMiB))
	fmt.Fprintf(w, "Allocatable:\t%d vCPUs, %s (after reserve and overcommit)\n", h.Allocatable.VCPUs, fmtMiB(h.Allocatable.MemoryMiB))
	fmt.Fprintf(w, "Allocated:\t%d vCPUs, %s to %d VMs\n", h.Allocated.VCPUs, fmtMiB(h.Allocated.MemoryMiB), h.VMs)
	fmt.Fprintf(w, "Usage:\t%d%% CPU, %s memory available\n", h.CPUPercent, fmtMiB(h.MemoryAvailableMiB))
	if h.PowerSource != "" {
		how := map[string]string{"sensor": "measured by a power sensor", "rapl": "CPU packages, measured by RAPL", "estimate": "estimated from CPU use"}[h.PowerSource]
		fmt.Fprintf(w, "Power:\t%d W (%s)\n", h.PowerWatts, how)
	}
	health := orDash(h.Health)
	if len(h.HealthReasons) > 0 {
		health += ": " + strings.Join(h.HealthReasons, "; ")
	}
	fmt.Fprintf(w, "Health:\t%s\n", health)
	fmt.Fprintf(w, "Labels:\t%s\n", fmtLabels(h.Labels))
	if !h.RegisteredAt.IsZero() {
		fmt.Fprintf(w, "Registered:\t%s\n", h.RegisteredAt.Format(time.RFC3339))
	}
}

func since(t time.Time) string {
	if t.IsZero() {
		return ""
	}
	return fmt.Sprintf(" (since %s, %s ago)", t.Format(time.RFC3339), time.Since(t).Round(time.Second))
}

func sortStrings(s []string) { sort.Strings(s) }

// protoText is a host's cluster protocol; 0 from a corrald that predates
// them.
func protoText(p int) string {
	if p == 0 {
		return "-"
	}
	return strconv.Itoa(p)
}

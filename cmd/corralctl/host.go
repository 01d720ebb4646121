package main

import (
	"fmt"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/corralhq/corral/api"
)

func (c *cli) hostCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "host", Short: "Inspect and label hosts"}
	cmd.AddCommand(
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
					fmt.Fprintln(w, "NAME\tADDRESS\tGOSSIP\tRAFT\tMODE\tVCPUS\tMEMORY\tLABELS\tVERSION")
					for _, h := range hosts {
						fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\t%d\t%s\t%s\t%s\n", h.Name, orDash(h.Addresses.Advertise), h.Gossip,
							h.RaftRole, orDash(h.Mode), h.Capacity.VCPUs, fmtMiB(h.Capacity.MemoryMiB), fmtLabels(h.Labels), orDash(h.Version))
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
	fmt.Fprintf(w, "Raft role:\t%s\n", h.RaftRole)
	fmt.Fprintf(w, "Version:\t%s\n", orDash(h.Version))
	fmt.Fprintf(w, "Address:\t%s\n", orDash(h.Addresses.Advertise))
	fmt.Fprintf(w, "Gossip addr:\t%s\n", orDash(h.Addresses.Gossip))
	fmt.Fprintf(w, "Raft addr:\t%s\n", orDash(h.Addresses.Raft))
	fmt.Fprintf(w, "RPC addr:\t%s\n", orDash(h.Addresses.RPC))
	fmt.Fprintf(w, "Capacity:\t%d vCPUs, %s memory\n", h.Capacity.VCPUs, fmtMiB(h.Capacity.MemoryMiB))
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

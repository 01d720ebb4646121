package main

import (
	"fmt"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/corralhq/corral/api"
	"github.com/corralhq/corral/internal/atomicfile"
)

func (c *cli) clusterCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "cluster", Short: "Cluster-wide settings"}
	ha := &cobra.Command{Use: "ha", Short: "Arm or disarm fencing and recovery"}
	for _, armed := range []bool{true, false} {
		use, short := "arm", "Resume fencing and recovery"
		if !armed {
			use, short = "disarm", "Pause fencing and recovery (hosts that lose the leader keep their guests; nothing is recovered) for cluster-wide network work"
		}
		ha.AddCommand(&cobra.Command{
			Use: use, Short: short, Args: cobra.NoArgs,
			RunE: func(cmd *cobra.Command, args []string) error {
				ctx, cancel := c.ctx()
				defer cancel()
				s, err := c.client().SetHA(ctx, armed)
				if err != nil {
					return err
				}
				return c.print(s, func(w *tabwriter.Writer) {
					state := "armed"
					if !s.HAArmed {
						state = "DISARMED: no host will be fenced or recovered"
					}
					fmt.Fprintf(w, "HA:\t%s\n", state)
				})
			},
		})
	}
	gk := &cobra.Command{Use: "gossip-key", Short: "The gossip encryption key"}
	gk.AddCommand(&cobra.Command{
		Use: "rotate", Short: "Replace the gossip key on every live host (install, use, remove; no downtime)", Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx, cancel := c.ctxFor(5 * time.Minute)
			defer cancel()
			r, err := c.client().RotateGossipKey(ctx)
			if err != nil {
				return err
			}
			return c.print(r, func(w *tabwriter.Writer) {
				fmt.Fprintf(w, "gossip key rotated to %s in %.1fs on %s\n", r.Key, r.Seconds, strings.Join(r.Hosts, ", "))
			})
		},
	})
	cmd.AddCommand(ha, c.tokenCmd(), gk, c.balanceCmd(), c.clusterBackupCmd(), c.recoveryCmd())
	return cmd
}

// clusterBackupCmd is cluster backup -o FILE.
func (c *cli) clusterBackupCmd() *cobra.Command {
	var out string
	cmd := &cobra.Command{
		Use:   "backup -o FILE",
		Short: "Save a consistent copy of the cluster's state, for corrald recover --from FILE",
		Long: `Save a consistent copy of the cluster's state (hosts, VMs and where they run,
their disk chains and snapshots, networks, images, projects, tokens, backup
targets and the backup catalog) to FILE, mode 0600. It holds the secret keys
of S3 backup targets: keep it as you keep a password. It holds no private key
of the cluster: a recovered cluster makes a new identity.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if out == "" {
				return fmt.Errorf("-o FILE is required")
			}
			ctx, cancel := c.ctxFor(2 * time.Minute)
			defer cancel()
			b, err := c.client().ClusterBackup(ctx)
			if err != nil {
				return err
			}
			if err := atomicfile.Write(out, b.Data, 0o600); err != nil {
				return err
			}
			n := len(b.Data)
			b.Data = nil // not on the terminal
			return c.print(b, func(w *tabwriter.Writer) {
				fmt.Fprintf(w, "cluster state saved to %s: %d bytes, taken on %s at index %d (%d hosts, %d VMs), sha256 %s\n",
					out, n, b.Host, b.Applied, b.Hosts, b.VMs, b.SHA256)
			})
		},
	}
	cmd.Flags().StringVarP(&out, "output", "o", "", "file to write (mode 0600)")
	return cmd
}

// recoveryCmd is cluster recovery [end [--force]].
func (c *cli) recoveryCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "recovery",
		Short: "Progress of a cluster recovered from a backup of its state (corrald recover)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx, cancel := c.ctx()
			defer cancel()
			r, err := c.client().Recovery(ctx)
			if err != nil {
				return err
			}
			return c.print(r, func(w *tabwriter.Writer) {
				if r == nil {
					fmt.Fprintln(w, "no recovery under way")
					return
				}
				fmt.Fprintf(w, "recovered:\t%s on %s, from the backup of %s (index %d)\n", r.At.Format(time.RFC3339), r.By, r.BackupAt.Format(time.RFC3339), r.BackupIndex)
				waiting := "none: guests start and stop again"
				if len(r.Waiting) > 0 {
					waiting = strings.Join(r.Waiting, ", ") + " (until none is, no host starts, stops or removes a guest)"
				}
				fmt.Fprintf(w, "waiting for:\t%s\n", waiting)
				fmt.Fprintf(w, "adopted:\t%d running guests (%d found elsewhere than the backup said; %d disk chains newer than the backup's)\n", r.Adopted, r.Moved, r.Rechained)
				if r.HAWasArmed {
					fmt.Fprintf(w, "HA:\tdisarmed until the recovery ends, then armed again\n")
				}
				for _, g := range r.Unknown {
					fmt.Fprintf(w, "unknown guest:\t%s (%s) on %s: %s; runs on until the recovery ends, then its host removes it\n", g.Name, g.VMID, g.Host, g.Why)
				}
			})
		},
	}
	var force bool
	end := &cobra.Command{
		Use:   "end",
		Short: "End the recovery: unknown guests are then removed by their hosts (their disks stay in the pool)",
		Long: `End the recovery. It ends by itself once every host has told what it runs and
no guest was unknown. With unknown guests (created after the backup), first
save what you need of them. --force ends it while hosts are still waited for:
only when they run no guest (powered off), since nothing would stop their
guests from being started a second time elsewhere.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx, cancel := c.ctx()
			defer cancel()
			if err := c.client().EndRecovery(ctx, force); err != nil {
				return err
			}
			return c.print(struct{}{}, func(w *tabwriter.Writer) { fmt.Fprintln(w, "recovery ended") })
		},
	}
	end.Flags().BoolVar(&force, "force", false, "end while hosts are waited for (they must run no guest)")
	cmd.AddCommand(end)
	return cmd
}

func (c *cli) balanceCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "balance", Short: "The leader's balancer: plan or apply live migrations toward a goal"}
	for _, apply := range []bool{false, true} {
		var goal string
		use, short := "plan", "Print the moves a balancer round would make and why, and why nothing else moves"
		if apply {
			use, short = "apply", "Run one balancer round: start its first moves (at most 2 at once, 20 an hour, 2 per VM a day)"
		}
		sub := &cobra.Command{
			Use: use, Short: short, Args: cobra.NoArgs,
			RunE: func(cmd *cobra.Command, args []string) error {
				ctx, cancel := c.ctx()
				defer cancel()
				r, err := c.client().Balance(ctx, api.BalanceRequest{Goal: goal, Apply: apply})
				if err != nil {
					return err
				}
				return c.print(r, func(w *tabwriter.Writer) {
					fmt.Fprintf(w, "Goal:\t%s\n", r.Goal)
					if r.Blocked != "" {
						fmt.Fprintf(w, "Not now:\t%s\n", r.Blocked)
					}
					for _, m := range r.Moves {
						how := "live"
						if m.Cold {
							how = "cold (stopped)"
						}
						fmt.Fprintf(w, "Move:\t%s %s -> %s, %s: %s\n", m.VM, m.From, m.To, how, m.Why)
					}
					if len(r.Moves) == 0 {
						fmt.Fprintf(w, "Move:\tnothing\n")
					}
					if len(r.Freed) > 0 {
						fmt.Fprintf(w, "Emptied:\t%s\n", strings.Join(r.Freed, ", "))
					}
					for _, n := range r.Notes {
						fmt.Fprintf(w, "Note:\t%s\n", n)
					}
					if apply {
						started := "none"
						if len(r.Started) > 0 {
							started = strings.Join(r.Started, ", ")
						}
						fmt.Fprintf(w, "Started:\t%s\n", started)
					}
				})
			},
		}
		sub.Flags().StringVar(&goal, "goal", "", "spread (even memory use) or consolidate (empty the least used hosts, keeping N+1); default: the balance setting of the leader's corrald")
		cmd.AddCommand(sub)
	}
	return cmd
}

func (c *cli) tokenCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "token", Short: "Join tokens: what a new host presents to join (join_token in its corral.toml)"}
	var ttl, desc string
	create := &cobra.Command{
		Use: "create", Short: "Make a join token; its text is shown once", Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx, cancel := c.ctx()
			defer cancel()
			t, err := c.client().CreateJoinToken(ctx, api.JoinTokenCreateRequest{TTL: ttl, Description: desc})
			if err != nil {
				return err
			}
			return c.print(t, func(w *tabwriter.Writer) {
				fmt.Fprintf(w, "token %s, valid until %s\n\n%s\n\n", t.ID, t.Expires.Local().Format(time.RFC3339), t.Token)
				fmt.Fprintln(w, "Put it in join_token of the new host's corral.toml (mode 0600). Anyone who holds it can join a host: treat it as a root password.")
			})
		},
	}
	create.Flags().StringVar(&ttl, "ttl", "24h", "how long the token admits hosts (at most 720h)")
	create.Flags().StringVar(&desc, "description", "", "what the token is for")
	ls := &cobra.Command{
		Use: "ls", Short: "List join tokens (never their secrets)", Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx, cancel := c.ctx()
			defer cancel()
			ts, err := c.client().JoinTokens(ctx)
			if err != nil {
				return err
			}
			return c.print(ts, func(w *tabwriter.Writer) {
				fmt.Fprintln(w, "ID\tEXPIRES\tSTATE\tDESCRIPTION")
				for _, t := range ts {
					state := "valid"
					if t.Expired {
						state = "expired"
					}
					fmt.Fprintf(w, "%s\t%s\t%s\t%s\n", t.ID, t.Expires.Local().Format(time.RFC3339), state, t.Description)
				}
			})
		},
	}
	revoke := &cobra.Command{
		Use: "revoke ID", Short: "Make a join token admit no more hosts (hosts that joined with it stay)", Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx, cancel := c.ctx()
			defer cancel()
			if err := c.client().RevokeJoinToken(ctx, args[0]); err != nil {
				return err
			}
			return c.print(struct{}{}, func(w *tabwriter.Writer) { fmt.Fprintf(w, "token %s revoked\n", args[0]) })
		},
	}
	cmd.AddCommand(create, ls, revoke)
	return cmd
}

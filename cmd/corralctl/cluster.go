package main

import (
	"fmt"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/corralhq/corral/api"
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
	cmd.AddCommand(ha, c.tokenCmd(), gk, c.balanceCmd())
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

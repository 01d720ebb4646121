package main

import (
	"fmt"
	"text/tabwriter"

	"github.com/spf13/cobra"
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
	cmd.AddCommand(ha)
	return cmd
}

package main

import (
	"errors"
	"fmt"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/corralhq/corral/api"
)

func (c *cli) netCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "net", Short: "Manage corral networks (a bridge on every host, over VXLAN or a VLAN)"}
	var (
		vni, vlan, mtu int
		uplink         string
	)
	create := &cobra.Command{
		Use:   "create NAME (--vxlan VNI | --vlan ID --uplink IFACE) [--mtu N]",
		Short: "Create a network; every host builds its bridge",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			req := api.NetworkCreateRequest{Name: args[0], MTU: mtu, Project: c.project}
			switch {
			case vni != 0 && vlan != 0:
				return errors.New("give --vxlan or --vlan, not both")
			case vni != 0:
				req.Kind, req.VNI = "vxlan", vni
			case vlan != 0:
				req.Kind, req.VLAN, req.Uplink = "vlan", vlan, uplink
			default:
				return errors.New("give --vxlan VNI or --vlan ID --uplink IFACE")
			}
			ctx, cancel := c.ctx()
			defer cancel()
			n, err := c.client().CreateNetwork(ctx, req)
			if err != nil {
				return err
			}
			return c.print(n, func(w *tabwriter.Writer) {
				fmt.Fprintf(w, "network %s created: bridge %s on every host\n", n.Name, n.Bridge)
			})
		},
	}
	create.Flags().IntVar(&vni, "vxlan", 0, "VXLAN network identifier (1-16777215)")
	create.Flags().IntVar(&vlan, "vlan", 0, "VLAN ID (1-4094)")
	create.Flags().StringVar(&uplink, "uplink", "", "interface carrying the VLAN on every host")
	create.Flags().IntVar(&mtu, "mtu", 0, "bridge MTU (default: the largest the uplink allows)")
	cmd.AddCommand(create,
		&cobra.Command{
			Use: "ls", Aliases: []string{"list"}, Short: "List networks", Args: cobra.NoArgs,
			RunE: func(cmd *cobra.Command, args []string) error {
				ctx, cancel := c.ctx()
				defer cancel()
				nets, err := c.client().Networks(ctx)
				if err != nil {
					return err
				}
				return c.print(nets, func(w *tabwriter.Writer) {
					fmt.Fprintln(w, "NAME\tKIND\tID\tUPLINK\tMTU\tBRIDGE\tON THIS HOST\tCREATED")
					for _, n := range nets {
						if !c.inProject(n.Project) {
							continue
						}
						id := fmt.Sprint(n.VNI)
						if n.Kind == "vlan" {
							id = fmt.Sprint(n.VLAN)
						}
						mtu := "auto"
						if n.MTU > 0 {
							mtu = fmt.Sprint(n.MTU)
						}
						local := "ok"
						if !n.LocalOK {
							local = "not ready: " + orDash(n.LocalError)
						}
						fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", n.Name, n.Kind, id, orDash(n.Uplink), mtu, n.Bridge, local, n.CreatedAt.Local().Format(time.RFC3339))
					}
				})
			},
		},
		&cobra.Command{
			Use: "rm NAME", Short: "Delete a network no VM uses", Args: cobra.ExactArgs(1),
			RunE: func(cmd *cobra.Command, args []string) error {
				ctx, cancel := c.ctx()
				defer cancel()
				if err := c.client().DeleteNetwork(ctx, args[0]); err != nil {
					return err
				}
				return c.print(map[string]string{"name": args[0], "state": "deleted"}, func(w *tabwriter.Writer) { fmt.Fprintf(w, "network %s deleted\n", args[0]) })
			},
		},
	)
	return cmd
}

package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"sort"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/corralhq/corral/api"
)

func (c *cli) topCmd() *cobra.Command {
	var (
		interval time.Duration
		once     bool
	)
	cmd := &cobra.Command{
		Use:   "top",
		Short: "Live view of hosts and VMs: health, lease, CPU and memory",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
			defer stop()
			prev := map[string]uint64{} // vm -> CPU ns at the previous frame
			var prevAt time.Time
			for {
				fctx, cancel := context.WithTimeout(ctx, c.timeout)
				hosts, err := c.client().Hosts(fctx)
				if err != nil {
					cancel()
					return err
				}
				vms, err := c.client().VMs(fctx)
				if err != nil {
					cancel()
					return err
				}
				stats := map[string]api.VMStats{}
				for _, v := range vms {
					if v.State == "running" {
						if s, err := c.client().VMStats(fctx, v.Name); err == nil {
							stats[v.Name] = s
						}
					}
				}
				cancel()
				now := time.Now()
				if c.output == "json" {
					return c.print(map[string]any{"hosts": hosts, "vms": vms, "stats": stats}, nil)
				}
				if !once {
					fmt.Fprint(c.out, "\033[H\033[2J")
				}
				fmt.Fprintf(c.out, "corral top — %s (every %v, Ctrl-C to quit)\n\n", now.Format("15:04:05"), interval)
				w := tabwriter.NewWriter(c.out, 0, 4, 2, ' ', 0)
				fmt.Fprintln(w, "HOST\tMODE\tHEALTH\tLEASE\tCPU\tMEM AVAIL\tVMS\tVCPUS\tMEMORY")
				for _, h := range hosts {
					fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%d%%\t%s\t%d\t%d/%d\t%s/%s\n", h.Name, orDash(h.Mode), orDash(h.Health), leaseText(h),
						h.CPUPercent, fmtMiB(h.MemoryAvailableMiB), h.VMs, h.Allocated.VCPUs, h.Allocatable.VCPUs,
						fmtMiB(h.Allocated.MemoryMiB), fmtMiB(h.Allocatable.MemoryMiB))
				}
				w.Flush()
				fmt.Fprintln(c.out)
				sort.Slice(vms, func(i, j int) bool { return vms[i].Name < vms[j].Name })
				w = tabwriter.NewWriter(c.out, 0, 4, 2, ' ', 0)
				fmt.Fprintln(w, "VM\tHOST\tSTATE\tUPTIME\tCPU\tVCPUS\tMEMORY\tDISK R/W\tNET RX/TX")
				for _, v := range vms {
					s, ok := stats[v.Name]
					cpu, disk, netio := "-", "-", "-"
					if ok {
						if p, seen := prev[v.Name]; seen && !prevAt.IsZero() && s.CPUTimeNs >= p {
							cpu = fmt.Sprintf("%.0f%%", float64(s.CPUTimeNs-p)*100/float64(now.Sub(prevAt).Nanoseconds()))
						}
						prev[v.Name] = s.CPUTimeNs
						var r, wr, rx, tx int64
						for _, d := range s.Disks {
							r, wr = r+d.ReadBytes, wr+d.WriteBytes
						}
						for _, n := range s.NICs {
							rx, tx = rx+n.RxBytes, tx+n.TxBytes
						}
						disk = fmtBytes(r) + "/" + fmtBytes(wr)
						netio = fmtBytes(rx) + "/" + fmtBytes(tx)
					}
					fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\t%d\t%s\t%s\t%s\n", v.Name, orDash(v.Host), v.State, uptime(v), cpu,
						v.Spec.VCPUs, fmtMiB(v.Spec.MemoryMiB), disk, netio)
				}
				w.Flush()
				prevAt = now
				if once {
					return nil
				}
				select {
				case <-ctx.Done():
					return nil
				case <-time.After(interval):
				}
			}
		},
	}
	cmd.Flags().DurationVar(&interval, "interval", 2*time.Second, "refresh period")
	cmd.Flags().BoolVar(&once, "once", false, "print one frame and exit")
	return cmd
}

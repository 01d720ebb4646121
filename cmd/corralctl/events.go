package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/corralhq/corral/api"
)

func (c *cli) eventsCmd() *cobra.Command {
	var (
		follow bool
		limit  int
		vm     string
		actor  string
	)
	cmd := &cobra.Command{
		Use: "events", Short: "Show the cluster's event log (-f to follow)", Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx, cancel := c.ctx()
			if follow {
				cancel()
				ctx, cancel = signal.NotifyContext(context.Background(), os.Interrupt)
			}
			defer cancel()
			cl := c.client()
			match := func(e api.Event) bool { return (vm == "" || e.VM == vm) && (actor == "" || e.Actor == actor) }
			fetch := limit
			if vm != "" || actor != "" {
				fetch = 0 // filter all that is kept, then keep the last --limit
			}
			evs, err := cl.Events(ctx, 0, fetch, 0)
			if err != nil {
				return err
			}
			var matched []api.Event
			for _, e := range evs {
				if match(e) {
					matched = append(matched, e)
				}
			}
			if limit > 0 && len(matched) > limit {
				matched = matched[len(matched)-limit:]
			}
			show := func(evs []api.Event) {
				var keep []api.Event
				for _, e := range evs {
					if match(e) {
						keep = append(keep, e)
					}
				}
				if c.output == "json" {
					for _, e := range keep {
						c.print(e, nil)
					}
					return
				}
				w := tabwriter.NewWriter(c.out, 0, 4, 2, ' ', 0)
				for _, e := range keep {
					msg := e.Message
					if e.Actor != "" {
						msg += fmt.Sprintf(" [by %s via %s, request %s]", e.Actor, e.Source, e.RequestID)
					}
					fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\n", e.Time.Local().Format("2006-01-02 15:04:05.000"), e.Kind, orDash(e.VM), orDash(e.Host), msg)
				}
				w.Flush()
			}
			show(matched)
			if !follow {
				return nil
			}
			var last uint64
			if len(evs) > 0 {
				last = evs[len(evs)-1].Seq
			}
			for {
				evs, err := cl.Events(ctx, last, 0, 30*time.Second)
				if ctx.Err() != nil {
					return nil
				}
				if err != nil {
					if errors.Is(err, api.ErrUnavailable) {
						time.Sleep(time.Second)
						continue
					}
					return err
				}
				show(evs)
				if len(evs) > 0 {
					last = evs[len(evs)-1].Seq
				}
			}
		},
	}
	cmd.Flags().BoolVarP(&follow, "follow", "f", false, "keep printing new events")
	cmd.Flags().IntVar(&limit, "limit", 50, "how many past events to show (0: all kept)")
	cmd.Flags().StringVar(&vm, "vm", "", "only events of this VM")
	cmd.Flags().StringVar(&actor, "actor", "", `only events of operations this actor asked for (as shown: "uid 1000")`)
	return cmd
}

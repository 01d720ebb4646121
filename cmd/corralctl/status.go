package main

import (
	"fmt"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/corralhq/corral/api"
)

func (c *cli) statusCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "status",
		Short: "Show this host, the leader and the Raft state",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx, cancel := c.ctx()
			defer cancel()
			s, err := c.client().Status(ctx)
			if err != nil {
				return err
			}
			return c.print(s, func(w *tabwriter.Writer) {
				fmt.Fprintf(w, "Host:\t%s (corrald %s)\n", s.Host, s.Version)
				fmt.Fprintf(w, "Leader:\t%s\n", orDash(s.Leader))
				fmt.Fprintf(w, "Raft:\t%s, term %d, commit %d, applied %d\n", s.Raft.State, s.Raft.Term, s.Raft.CommitIndex, s.Raft.AppliedIndex)
				fmt.Fprintf(w, "Voters:\t%s\n", joinOrDash(s.Voters))
				fmt.Fprintf(w, "Non-voters:\t%s\n", joinOrDash(s.Nonvoters))
				fmt.Fprintf(w, "Members:\t%d alive, %d dead, %d left\n", s.Members["alive"], s.Members["dead"], s.Members["left"])
				ha := "armed"
				if !s.HAArmed {
					ha = "DISARMED (no fencing, no recovery)"
				}
				fmt.Fprintf(w, "HA:\t%s\n", ha)
				fmt.Fprintf(w, "Protocol:\t%s\n", protocolText(s))
				lease := s.Lease
				if s.Lease == "held" {
					lease = fmt.Sprintf("held, %.1fs left", float64(s.LeaseRemainingMs)/1000)
				}
				fmt.Fprintf(w, "Lease:\t%s\n", lease)
				fencer := s.Fencer
				switch s.Fencer {
				case "none":
					fencer = "none (guests outlive a crashed corrald)"
				case "unreachable":
					fencer = "UNREACHABLE (no guests start; running ones outlive a crashed corrald)"
				}
				fmt.Fprintf(w, "Fencer:\t%s\n", fencer)
				if s.API != "" {
					fmt.Fprintf(w, "HTTPS API:\t%s, certificate SHA-256 %s\n", s.API, s.APIFingerprint)
				}
				for _, e := range s.Exposures {
					fmt.Fprintf(w, "INSECURE:\t%s\n", e)
				}
				if !s.Joined {
					fmt.Fprintf(w, "Joined:\tno (still looking for seeds)\n")
				}
				if s.Recovery != "" {
					fmt.Fprintf(w, "RECOVERING:\t%s\n", s.Recovery)
				}
			})
		},
	}
}

// protocolText says which cluster protocol the cluster is at, and why it is
// not higher yet.
func protocolText(s api.Status) string {
	if s.Protocol == 0 {
		return "- (this corrald predates cluster protocols)"
	}
	text := fmt.Sprintf("%d (lowest host %d, this corrald %d)", s.Protocol, s.HostsProtocol, s.ThisProtocol)
	if s.HostsProtocol > s.Protocol {
		text += "; the leader raises it to every host's"
	}
	return text
}

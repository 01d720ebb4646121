package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/corralhq/corral/api/client"
	"github.com/corralhq/corral/internal/version"
)

// cli holds the global flags and the client they configure.
type cli struct {
	socket  string
	remote  string
	project string
	cl      *client.Client // chosen before each command runs (pickClient)
	output  string
	timeout time.Duration
	out     io.Writer
}

func newRoot() *cobra.Command { return newRootTo(os.Stdout) }

// newRootTo is newRoot printing to out.
func newRootTo(out io.Writer) *cobra.Command {
	c := &cli{out: out}
	root := &cobra.Command{
		Use:           "corralctl",
		Short:         "Operate a corral VM cluster through the local corrald",
		SilenceUsage:  true,
		SilenceErrors: true,
		Version:       version.Version,
		PersistentPreRunE: func(cmd *cobra.Command, args []string) error {
			if c.output != "table" && c.output != "json" {
				return fmt.Errorf("--output %q: use table or json", c.output)
			}
			if cmd.HasParent() && cmd.Parent().Name() == "remote" {
				return nil // managing remotes needs none chosen
			}
			cl, err := c.pickClient(cmd)
			c.cl = cl
			return err
		},
	}
	def := os.Getenv("CORRAL_SOCKET")
	if def == "" {
		def = client.DefaultSocket
	}
	root.PersistentFlags().StringVar(&c.socket, "socket", def, "admin socket of the local corrald ($CORRAL_SOCKET)")
	root.PersistentFlags().StringVar(&c.remote, "remote", "", "talk to this remote's HTTPS API instead of the socket ($CORRAL_REMOTE; corralctl remote)")
	root.PersistentFlags().StringVar(&c.project, "project", os.Getenv("CORRAL_PROJECT"), "project to create VMs, networks, images and tokens in, and to list ($CORRAL_PROJECT; default: the token's, else default)")
	root.PersistentFlags().StringVarP(&c.output, "output", "o", "table", "output format: table or json")
	root.PersistentFlags().DurationVar(&c.timeout, "timeout", 30*time.Second, "give up after this long")
	root.AddCommand(c.statusCmd(), c.hostCmd(), c.vmCmd(), c.imageCmd(), c.netCmd(), c.eventsCmd(), c.clusterCmd(), c.topCmd(), c.apiTokenCmd(), c.certCmd(), c.remoteCmd(), c.projectCmd(), c.groupCmd(), c.backupCmd())
	return root
}

func (c *cli) client() *client.Client {
	if c.cl == nil {
		c.cl = client.New(c.socket)
	}
	return c.cl
}

// ctx returns a context bounded by --timeout and cancelled by Ctrl-C.
func (c *cli) ctx() (context.Context, context.CancelFunc) {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	ctx, cancel := context.WithTimeout(ctx, c.timeout)
	return ctx, func() { cancel(); stop() }
}

// ctxFor is ctx for a long operation: at least d, or --timeout if longer.
func (c *cli) ctxFor(d time.Duration) (context.Context, context.CancelFunc) {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	ctx, cancel := context.WithTimeout(ctx, max(d, c.timeout))
	return ctx, func() { cancel(); stop() }
}

// print writes v as indented JSON with -o json, else calls table.
func (c *cli) print(v any, table func(w *tabwriter.Writer)) error {
	if c.output == "json" || table == nil {
		enc := json.NewEncoder(c.out)
		enc.SetIndent("", "  ")
		return enc.Encode(v)
	}
	w := tabwriter.NewWriter(c.out, 0, 4, 2, ' ', 0)
	table(w)
	return w.Flush()
}

// inProject filters a list by --project (all when it is not given).
func (c *cli) inProject(project string) bool {
	return c.project == "" || c.project == project
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func joinOrDash(list []string) string {
	if len(list) == 0 {
		return "-"
	}
	return strings.Join(list, ", ")
}

func fmtLabels(labels map[string]string) string {
	if len(labels) == 0 {
		return "-"
	}
	keys := make([]string, 0, len(labels))
	for k := range labels {
		keys = append(keys, k)
	}
	sortStrings(keys)
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = k + "=" + labels[k]
	}
	return strings.Join(parts, ",")
}

func fmtMiB(mib int64) string {
	if mib >= 1024 && mib%1024 == 0 || mib >= 10240 {
		return fmt.Sprintf("%.0fG", float64(mib)/1024)
	}
	if mib >= 1024 {
		return fmt.Sprintf("%.1fG", float64(mib)/1024)
	}
	return fmt.Sprintf("%dM", mib)
}

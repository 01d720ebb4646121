package main

import (
	"fmt"
	"io"
	"os"
	"sync/atomic"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
)

func (c *cli) imageCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "image", Short: "Manage base images in the shared storage pool"}
	cmd.AddCommand(
		&cobra.Command{
			Use: "ls", Aliases: []string{"list"}, Short: "List images", Args: cobra.NoArgs,
			RunE: func(cmd *cobra.Command, args []string) error {
				ctx, cancel := c.ctx()
				defer cancel()
				ims, err := c.client().Images(ctx)
				if err != nil {
					return err
				}
				return c.print(ims, func(w *tabwriter.Writer) {
					fmt.Fprintln(w, "NAME\tPROJECT\tFORMAT\tSIZE\tVIRTUAL SIZE\tSHA256\tCREATED")
					for _, im := range ims {
						if !c.inProject(im.Project) {
							continue
						}
						fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\t%.12s\t%s\n", im.Name, orDash(im.Project), im.Format, fmtBytes(im.SizeBytes), fmtBytes(im.VirtualSizeBytes), im.SHA256, im.CreatedAt.Local().Format(time.RFC3339))
					}
				})
			},
		},
		&cobra.Command{
			Use: "import NAME FILE", Short: "Upload a qcow2 or raw image into the pool, showing progress", Args: cobra.ExactArgs(2),
			RunE: func(cmd *cobra.Command, args []string) error {
				f, err := os.Open(args[1])
				if err != nil {
					return err
				}
				defer f.Close()
				fi, err := f.Stat()
				if err != nil {
					return err
				}
				ctx, cancel := c.ctx()
				defer cancel()
				pr := &progressReader{r: f, total: fi.Size()}
				stop := pr.report(args[0])
				im, err := c.client().ImportImageTo(ctx, args[0], c.project, pr, fi.Size())
				stop()
				if err != nil {
					return err
				}
				return c.print(im, func(w *tabwriter.Writer) {
					fmt.Fprintf(w, "image %s imported: %s, %s (virtual %s), sha256 %s\n", im.Name, im.Format, fmtBytes(im.SizeBytes), fmtBytes(im.VirtualSizeBytes), im.SHA256)
				})
			},
		},
		&cobra.Command{
			Use: "rm NAME", Short: "Delete an image no VM uses", Args: cobra.ExactArgs(1),
			RunE: func(cmd *cobra.Command, args []string) error {
				ctx, cancel := c.ctx()
				defer cancel()
				if err := c.client().DeleteImage(ctx, args[0]); err != nil {
					return err
				}
				return c.print(map[string]string{"name": args[0], "state": "deleted"}, func(w *tabwriter.Writer) { fmt.Fprintf(w, "image %s deleted\n", args[0]) })
			},
		},
	)
	return cmd
}

// progressReader counts bytes read; report prints the progress to stderr
// every half second until stopped.
type progressReader struct {
	r     io.Reader
	n     atomic.Int64
	total int64
}

func (p *progressReader) Read(b []byte) (int, error) {
	n, err := p.r.Read(b)
	p.n.Add(int64(n))
	return n, err
}

func (p *progressReader) report(name string) (stop func()) {
	done := make(chan struct{})
	finished := make(chan struct{})
	start := time.Now()
	line := func() {
		n := p.n.Load()
		pct := 100.0
		if p.total > 0 {
			pct = float64(n) * 100 / float64(p.total)
		}
		rate := float64(n) / max(time.Since(start).Seconds(), 0.001)
		fmt.Fprintf(os.Stderr, "\rimporting %s: %s / %s (%.0f%%, %s/s)   ", name, fmtBytes(n), fmtBytes(p.total), pct, fmtBytes(int64(rate)))
	}
	go func() {
		defer close(finished)
		t := time.NewTicker(500 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-done:
				line()
				fmt.Fprintln(os.Stderr)
				return
			case <-t.C:
				line()
			}
		}
	}()
	return func() { close(done); <-finished }
}

func fmtBytes(n int64) string {
	switch {
	case n >= 1<<30:
		return fmt.Sprintf("%.1f GiB", float64(n)/(1<<30))
	case n >= 1<<20:
		return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
	case n >= 1<<10:
		return fmt.Sprintf("%.1f KiB", float64(n)/(1<<10))
	}
	return fmt.Sprintf("%d B", n)
}

package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/spf13/cobra"
	"golang.org/x/term"

	"github.com/corralhq/corral/internal/wsconsole"
)

// detachKey is Ctrl-], as telnet and virsh console have it.
const detachKey = 0x1d

func (c *cli) vmConsole() *cobra.Command {
	var readOnly bool
	cmd := &cobra.Command{
		Use:   "console NAME",
		Short: "Attach to a running VM's serial console, wherever it runs (Ctrl-] detaches)",
		Long: `Attach to a running VM's serial console. The VM may run on any host: the
corrald this command talks to relays to the VM's host. Several sessions may
watch one console; one at a time types (the first that asks; --read-only
never asks). A session begins with the end of the console log, so it shows
what the guest printed before. Ctrl-] detaches; the session also ends, with
the reason, when the guest stops or its host goes away.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			dctx, dcancel := c.ctx()
			sess, err := wsconsole.AttachVM(dctx, c.client(), args[0], !readOnly)
			dcancel()
			if err != nil {
				return err
			}
			defer sess.Close()
			h := sess.Hello()
			mode := "you type here"
			if !h.Writer {
				mode = "read-only"
				if h.Message != "" {
					mode = h.Message
				}
			}
			fmt.Fprintf(os.Stderr, "Connected to the console of %s on %s (%s). Ctrl-] detaches.\r\n", h.VM, h.Host, mode)
			in := int(os.Stdin.Fd())
			if term.IsTerminal(in) {
				old, err := term.MakeRaw(in)
				if err != nil {
					return err
				}
				defer term.Restore(in, old)
			}
			ended := make(chan error, 1)
			go func() {
				_, err := io.Copy(os.Stdout, sess)
				ended <- err
			}()
			detached := make(chan error, 1)
			go func() { detached <- forwardKeys(os.Stdin, sess, h.Writer) }()
			select {
			case err := <-detached:
				fmt.Fprint(os.Stderr, "\r\nDetached.\r\n")
				if err != nil {
					return err
				}
				return nil
			case err := <-ended:
				if err == nil {
					err = errors.New("console closed")
				}
				fmt.Fprintf(os.Stderr, "\r\n%v\r\n", err)
				return fmt.Errorf("console of %s: %w", h.VM, err)
			case <-ctx.Done():
				return ctx.Err()
			}
		},
	}
	cmd.Flags().BoolVar(&readOnly, "read-only", false, "watch only; never type")
	return cmd
}

// forwardKeys sends what is typed to the console until Ctrl-] (nil) or the
// end of input (nil: detach too); a read-only session sends nothing.
func forwardKeys(r io.Reader, w io.Writer, writer bool) error {
	buf := make([]byte, 4096)
	for {
		n, err := r.Read(buf)
		chunk := buf[:n]
		i := bytes.IndexByte(chunk, detachKey)
		if i >= 0 {
			chunk = chunk[:i]
		}
		if writer && len(chunk) > 0 {
			if _, werr := w.Write(chunk); werr != nil {
				return werr
			}
		}
		if i >= 0 || err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
	}
}

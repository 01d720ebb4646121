package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/signal"
	"sync"
	"syscall"

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

func (c *cli) vmVNC() *cobra.Command {
	var listen string
	var once bool
	cmd := &cobra.Command{
		Use:   "vnc NAME",
		Short: "Serve a running VM's graphical display to a local VNC viewer, wherever the VM runs",
		Long: `Serve a running VM's graphical display (its VGA screen) on a loopback
address for a VNC viewer on this machine, wherever the VM runs: each viewer
that connects gets its own session, relayed by the corrald this command
talks to, authorized like every call (an operator of the VM's project).
The display has no password of its own, so only loopback addresses are
accepted; reach it from elsewhere through SSH. Ctrl-C stops; --once stops
after the first viewer leaves.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			host, _, err := net.SplitHostPort(listen)
			if err != nil {
				return fmt.Errorf("--listen %q: %w", listen, err)
			}
			if ip := net.ParseIP(host); host != "localhost" && (ip == nil || !ip.IsLoopback()) {
				return fmt.Errorf("--listen %q: only a loopback address (the display has no password)", listen)
			}
			// Fail early when the display cannot be had at all.
			dctx, dcancel := c.ctx()
			probe, err := wsconsole.OpenVMDisplay(dctx, c.client(), args[0])
			dcancel()
			if err != nil {
				return err
			}
			probe.Close()
			ln, err := net.Listen("tcp", listen)
			if err != nil {
				return err
			}
			defer ln.Close()
			fmt.Fprintf(os.Stderr, "The display of %s is at %s: connect a VNC viewer there (vnc://%s). Ctrl-C stops.\n", args[0], ln.Addr(), ln.Addr())
			ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			go func() { <-ctx.Done(); ln.Close() }()
			var wg sync.WaitGroup
			defer wg.Wait()
			for {
				conn, err := ln.Accept()
				if err != nil {
					if ctx.Err() != nil {
						return nil
					}
					return err
				}
				wg.Add(1)
				go func() {
					defer wg.Done()
					if err := c.relayDisplay(ctx, args[0], conn); err != nil {
						fmt.Fprintf(os.Stderr, "viewer %s: %v\n", conn.RemoteAddr(), err)
					}
				}()
				if once {
					wg.Wait()
					return nil
				}
			}
		},
	}
	cmd.Flags().StringVar(&listen, "listen", "127.0.0.1:5900", "loopback address:port for the viewer (port 0: any free port)")
	cmd.Flags().BoolVar(&once, "once", false, "stop after the first viewer disconnects")
	return cmd
}

// relayDisplay carries one viewer's connection to the VM's display until
// either side ends.
func (c *cli) relayDisplay(ctx context.Context, name string, conn net.Conn) error {
	defer conn.Close()
	dctx, dcancel := c.ctx()
	disp, err := wsconsole.OpenVMDisplay(dctx, c.client(), name)
	dcancel()
	if err != nil {
		return err
	}
	defer disp.Close()
	done := make(chan error, 2)
	go func() { _, err := io.Copy(disp, conn); done <- err }()
	go func() { _, err := io.Copy(conn, disp); done <- err }()
	select {
	case err = <-done:
	case <-ctx.Done():
	}
	var ce *wsconsole.ClosedError
	if errors.As(err, &ce) {
		return err // the server's reason: the guest stopped, its host went away
	}
	return nil
}

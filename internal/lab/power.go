package lab

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"
)

// The lab's power agents, for corrald's power_off_command and
// power_on_command. Powering off is the fence agent (corral-lab fence:
// kill the host's processes), which works from inside another host's
// namespaces, where corrald runs its commands. Powering on is a boot, which
// needs this machine's own namespaces (the host's veth, /run/netns), so
// `corral-lab power-on -- NAME ADDR` asks the lab's power agent over a Unix
// socket in the lab directory (which every host sees), and the agent,
// running where the lab was made (a test, or `corral-lab power-agent`),
// boots the host.

// PowerSocket is where the power agent listens.
func (l *Lab) PowerSocket() string { return filepath.Join(l.Dir, "power.sock") }

// ServePower runs the power agent until stop is called: each connection
// names one host to boot and gets "ok" or "error: why" back.
func (l *Lab) ServePower() (stop func(), err error) {
	os.Remove(l.PowerSocket())
	ln, err := net.Listen("unix", l.PowerSocket())
	if err != nil {
		return nil, err
	}
	var mu sync.Mutex // one boot at a time
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer conn.Close()
				conn.SetDeadline(time.Now().Add(3 * time.Minute))
				line, err := bufio.NewReader(conn).ReadString('\n')
				if err != nil {
					return
				}
				name := strings.TrimSpace(strings.TrimPrefix(line, "boot "))
				mu.Lock()
				err = l.bootHost(name)
				mu.Unlock()
				if err != nil {
					fmt.Fprintf(conn, "error: %v\n", err)
					return
				}
				fmt.Fprintln(conn, "ok")
			}()
		}
	}()
	return func() { ln.Close(); wg.Wait(); os.Remove(l.PowerSocket()) }, nil
}

func (l *Lab) bootHost(name string) error {
	h, err := l.Host(name)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	return h.Boot(ctx)
}

// RequestPowerOn asks the power agent of the lab in dir to boot host, from
// any namespace.
func RequestPowerOn(ctx context.Context, dir, host string) error {
	var d net.Dialer
	conn, err := d.DialContext(ctx, "unix", filepath.Join(dir, "power.sock"))
	if err != nil {
		return fmt.Errorf("no power agent for the lab in %s (corral-lab power-agent): %w", dir, err)
	}
	defer conn.Close()
	if dl, ok := ctx.Deadline(); ok {
		conn.SetDeadline(dl)
	}
	if _, err := fmt.Fprintf(conn, "boot %s\n", host); err != nil {
		return err
	}
	line, err := bufio.NewReader(conn).ReadString('\n')
	if err != nil {
		return fmt.Errorf("power agent: %w", err)
	}
	if line = strings.TrimSpace(line); line != "ok" {
		return errors.New("power agent: " + line)
	}
	return nil
}

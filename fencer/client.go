package fencer

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"time"

	"github.com/corralhq/corral/internal/guestproc"
)

// Client is corrald's side: it keeps one connection to the fencer and
// sends it the latest wish (arm with a deadline, or release) whenever that
// changes or the connection is made anew. Arm and Release never block;
// Sync waits for the fencer to acknowledge.
type Client struct {
	socket string
	budget time.Duration
	log    *slog.Logger

	mu        sync.Mutex
	want      Request
	wantSeq   uint64
	ackSeq    uint64
	acked     Status
	connected bool
	changed   chan struct{} // closed and replaced on every ack or connection change
	kick      chan struct{}
}

// NewClient returns a client of the fencer on socket; the kill starts
// budget before each deadline. Run keeps it connected.
func NewClient(socket string, budget time.Duration, log *slog.Logger) *Client {
	return &Client{socket: socket, budget: budget, log: log, changed: make(chan struct{}), kick: make(chan struct{}, 1)}
}

// Arm asks the fencer to kill every corral guest when the lease ends,
// remaining from now (minus the budget), unless armed again before.
func (c *Client) Arm(remaining time.Duration) {
	c.set(Request{Op: OpArm, DeadlineNS: int64(guestproc.MonoNow() + remaining), BudgetNS: int64(c.budget)})
}

// Release asks the fencer to stand down: guests outlive corrald.
func (c *Client) Release() { c.set(Request{Op: OpRelease}) }

func (c *Client) set(r Request) {
	c.mu.Lock()
	c.want = r
	c.wantSeq++
	c.mu.Unlock()
	select {
	case c.kick <- struct{}{}:
	default:
	}
}

// Sync waits until the fencer has acknowledged the latest Arm or Release.
func (c *Client) Sync(ctx context.Context) error {
	c.mu.Lock()
	seq := c.wantSeq
	c.mu.Unlock()
	for {
		c.mu.Lock()
		done, ch, errText := c.ackSeq >= seq, c.changed, c.acked.Error
		c.mu.Unlock()
		if done {
			if errText != "" {
				return fmt.Errorf("fencer: %s", errText)
			}
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("fencer at %s did not answer: %w", c.socket, ctx.Err())
		case <-ch:
		}
	}
}

// Armed reports whether the fencer has acknowledged a deadline whose kill
// is still ahead: this host's guests die with its lease even if corrald
// does not live to see it.
func (c *Client) Armed() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.connected && c.acked.Mode == Armed && time.Duration(c.acked.DeadlineNS-c.acked.BudgetNS) > guestproc.MonoNow()
}

// Status returns the fencer's last answer and whether it is connected.
func (c *Client) Status() (Status, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.acked, c.connected
}

// Run keeps the connection until ctx ends; it returns nil then.
func (c *Client) Run(ctx context.Context) error {
	backoff := 50 * time.Millisecond
	var warned time.Time
	for ctx.Err() == nil {
		err := c.session(ctx)
		c.setConnected(false)
		if ctx.Err() != nil {
			return nil
		}
		if time.Since(warned) > time.Minute {
			c.log.Warn("fencer unreachable: this host's guests would outlive a crash of corrald", "socket", c.socket, "err", err)
			warned = time.Now()
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, time.Second)
	}
	return nil
}

func (c *Client) setConnected(v bool) {
	c.mu.Lock()
	c.connected = v
	close(c.changed)
	c.changed = make(chan struct{})
	c.mu.Unlock()
}

// session sends the latest wish on every change, and a status query every
// few seconds so that a dead fencer is noticed.
func (c *Client) session(ctx context.Context) error {
	var d net.Dialer
	conn, err := d.DialContext(ctx, "unix", c.socket)
	if err != nil {
		return err
	}
	defer conn.Close()
	stop := context.AfterFunc(ctx, func() { conn.Close() })
	defer stop()
	r := bufio.NewReader(conn)
	sent := ^uint64(0)
	poll := time.NewTicker(2 * time.Second)
	defer poll.Stop()
	first := true
	for {
		c.mu.Lock()
		req, seq := c.want, c.wantSeq
		c.mu.Unlock()
		if seq == 0 {
			req = Request{Op: OpStatus}
		}
		if seq != sent || first {
			st, err := exchange(conn, r, req)
			if err != nil {
				return err
			}
			if first {
				c.log.Info("fencer connected", "socket", c.socket, "mode", st.Mode)
				first = false
			}
			if st.Error != "" {
				c.log.Error("fencer refused", "op", req.Op, "err", st.Error)
			}
			c.mu.Lock()
			c.acked, c.ackSeq, c.connected = st, seq, true
			close(c.changed)
			c.changed = make(chan struct{})
			c.mu.Unlock()
			sent = seq
			continue // the wish may have changed meanwhile
		}
		select {
		case <-ctx.Done():
			return nil
		case <-c.kick:
		case <-poll.C:
			st, err := exchange(conn, r, Request{Op: OpStatus})
			if err != nil {
				return err
			}
			c.mu.Lock()
			c.acked = st
			c.mu.Unlock()
		}
	}
}

func exchange(conn net.Conn, r *bufio.Reader, req Request) (Status, error) {
	conn.SetDeadline(time.Now().Add(2 * time.Second))
	b, _ := json.Marshal(req)
	if _, err := conn.Write(append(b, '\n')); err != nil {
		return Status{}, err
	}
	line, err := r.ReadBytes('\n')
	if err != nil {
		return Status{}, err
	}
	var st Status
	if err := json.Unmarshal(line, &st); err != nil {
		return Status{}, errors.New("fencer: undecodable answer")
	}
	return st, nil
}

// Query asks the fencer on socket for its status once (corralctl-free
// tools and tests use it).
func Query(ctx context.Context, socket string) (Status, error) {
	var d net.Dialer
	conn, err := d.DialContext(ctx, "unix", socket)
	if err != nil {
		return Status{}, err
	}
	defer conn.Close()
	return exchange(conn, bufio.NewReader(conn), Request{Op: OpStatus})
}

package daemon

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"sync"

	"github.com/corralhq/corral/api"
	"github.com/corralhq/corral/internal/wsconsole"
	"github.com/corralhq/corral/model"
)

// Interactive serial consoles. The host that runs a guest holds at most
// one console session of it with libvirt and shares it: every client
// reads the guest's output, one at a time may type (the first that asks;
// the others read). A client on another host reaches it through its own
// corrald, which relays over the cluster RPC's TLS (a WebSocket to the
// VM's host); so the guest's console is reachable from any host, or
// remotely, whichever host it runs on. A new client first gets the end of
// the console log, so it sees what the guest printed before it came.

// Console limits: clients of one guest's console, chunks of output a
// client may fall behind by before it is dropped, and the log's tail a new
// client gets.
const (
	maxConsoleClients = 16
	consoleBacklog    = 256
	consoleReplay     = 8 << 10
)

// consoleOpener opens a guest's console on this host (the driver).
type consoleOpener interface {
	OpenConsole(ctx context.Context, name string) (io.ReadWriteCloser, error)
	ConsoleLog(ctx context.Context, name string, max int64) ([]byte, error)
}

// consoles are this host's shared console sessions, by VM.
type consoles struct {
	host string
	drv  consoleOpener
	mu   sync.Mutex
	hubs map[string]*consoleHub
}

func newConsoles(host string, drv consoleOpener) *consoles {
	return &consoles{host: host, drv: drv, hubs: map[string]*consoleHub{}}
}

// consoleHub is one guest's console session and its clients.
type consoleHub struct {
	name   string
	conn   io.ReadWriteCloser
	subs   map[*consoleSub]bool
	writer *consoleSub
}

// consoleSub is one client's attachment to a hub (a wsconsole.Session).
type consoleSub struct {
	c     *consoles
	hub   *consoleHub
	hello api.ConsoleHello
	out   chan []byte
	pend  []byte
	gone  chan struct{} // closed when the hub drops the client
	err   error         // why (set before gone is closed)
	once  sync.Once
}

// attach joins name's console, opening it if no client has; write asks to
// be the one that types.
func (c *consoles) attach(ctx context.Context, name string, write bool) (*consoleSub, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	h := c.hubs[name]
	if h == nil {
		conn, err := c.drv.OpenConsole(ctx, name)
		if err != nil {
			return nil, fmt.Errorf("console of %s: %w", name, err)
		}
		h = &consoleHub{name: name, conn: conn, subs: map[*consoleSub]bool{}}
		c.hubs[name] = h
		go c.pump(h)
	}
	if len(h.subs) >= maxConsoleClients {
		return nil, fmt.Errorf("console of %s has %d clients already: %w", name, maxConsoleClients, model.ErrConflict)
	}
	s := &consoleSub{c: c, hub: h, out: make(chan []byte, consoleBacklog), gone: make(chan struct{}),
		hello: api.ConsoleHello{VM: name, Host: c.host}}
	switch {
	case write && h.writer == nil:
		h.writer, s.hello.Writer = s, true
	case write:
		s.hello.Message = "read-only: another session types on this console"
	}
	h.subs[s] = true
	return s, nil
}

// attachReplay is attach, the session starting with the end of the
// console log: what the guest printed before (and perhaps a little of
// what the session then shows again, never a gap).
func (c *consoles) attachReplay(ctx context.Context, name string, write bool) (*consoleSub, error) {
	s, err := c.attach(ctx, name, write)
	if err != nil {
		return nil, err
	}
	if log, err := c.drv.ConsoleLog(ctx, name, consoleReplay); err == nil {
		s.pend = log
	}
	return s, nil
}

// pump copies the guest's output to every client of h until the session
// ends; a client that falls behind by consoleBacklog chunks is dropped
// rather than hold the others (or libvirt) up.
func (c *consoles) pump(h *consoleHub) {
	buf := make([]byte, 4096)
	for {
		n, err := h.conn.Read(buf)
		if n > 0 {
			chunk := append([]byte(nil), buf[:n]...)
			c.mu.Lock()
			for s := range h.subs {
				select {
				case s.out <- chunk:
				default:
					c.dropLocked(s, errors.New("console reader too slow: dropped"))
				}
			}
			c.mu.Unlock()
		}
		if err != nil {
			c.mu.Lock()
			for s := range h.subs {
				c.dropLocked(s, err)
			}
			if c.hubs[h.name] == h {
				delete(c.hubs, h.name)
			}
			c.mu.Unlock()
			h.conn.Close()
			return
		}
	}
}

// dropLocked detaches s with err (c.mu held); the last client leaving
// closes the session.
func (c *consoles) dropLocked(s *consoleSub, err error) {
	h := s.hub
	if !h.subs[s] {
		return
	}
	delete(h.subs, s)
	if h.writer == s {
		h.writer = nil
	}
	s.err = err
	close(s.gone)
	if len(h.subs) == 0 && c.hubs[h.name] == h {
		delete(c.hubs, h.name)
		h.conn.Close()
	}
}

func (s *consoleSub) Hello() api.ConsoleHello { return s.hello }

func (s *consoleSub) Read(p []byte) (int, error) {
	if len(s.pend) == 0 {
		select {
		case s.pend = <-s.out:
		case <-s.gone:
			select {
			case s.pend = <-s.out: // what came before the end
			default:
				return 0, s.err
			}
		}
	}
	n := copy(p, s.pend)
	s.pend = s.pend[n:]
	return n, nil
}

func (s *consoleSub) Write(p []byte) (int, error) {
	s.c.mu.Lock()
	writer := s.hub.writer == s && s.hub.subs[s]
	s.c.mu.Unlock()
	if !writer {
		return 0, wsconsole.ErrReadOnly
	}
	return s.hub.conn.Write(p)
}

func (s *consoleSub) Close() error {
	s.once.Do(func() {
		s.c.mu.Lock()
		s.c.dropLocked(s, io.EOF)
		s.c.mu.Unlock()
	})
	return nil
}

// AttachConsole attaches to a VM's serial console: here when its guest
// runs here, else through the corrald of its host.
func (b backend) AttachConsole(ctx context.Context, name string, write bool) (wsconsole.Session, error) {
	if err := b.scopedVM(ctx, name); err != nil {
		return nil, err
	}
	v, err := b.d.store.VM(name)
	if err != nil {
		return nil, err
	}
	switch {
	case v.Host == "":
		return nil, fmt.Errorf("vm %q is not placed on any host: %w", name, model.ErrConflict)
	case v.Actual.State != model.StateRunning && v.Actual.State != model.StateMigrating:
		return nil, fmt.Errorf("vm %q is %s: its console is there only while it runs: %w", name, vmView(v).State, model.ErrConflict)
	case v.Host == b.d.cfg.Name:
		return b.d.consoles.attachReplay(ctx, name, write)
	}
	h, err := b.d.store.Host(v.Host)
	if err != nil {
		return nil, err
	}
	q := url.Values{"vm": {name}, "write": {strconv.FormatBool(write)}}
	return wsconsole.Dial(ctx, b.d.rpcCli.HTTPClient(), b.d.rpcCli.StreamURL(h.RPCAddr, "console", q), nil)
}

// serveConsoleRPC answers another host's relay of a console session: the
// VM must be placed here.
func (d *Daemon) serveConsoleRPC(ctx context.Context, q url.Values) (http.Handler, error) {
	name := q.Get("vm")
	if err := d.placedHere(ctx, name); err != nil {
		return nil, err
	}
	write, _ := strconv.ParseBool(q.Get("write"))
	sess, err := d.consoles.attachReplay(ctx, name, write)
	if err != nil {
		return nil, err
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { wsconsole.Serve(w, r, sess, d.log) }), nil
}

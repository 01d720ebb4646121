// Package console shares the serial console of the guests that run on this
// host: at most one libvirt console session per guest, read by every
// client attached to it and typed into by one. Clients are
// wsconsole.Sessions, carried over WebSockets by the daemon (its API for
// local clients, its cluster RPC for relays from other hosts).
package console

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"

	"github.com/corralhq/corral/api"
	"github.com/corralhq/corral/internal/wsconsole"
	"github.com/corralhq/corral/model"
)

// A client on another host reaches a guest's console through its own
// corrald, which relays over the cluster RPC's TLS (a WebSocket to the
// guest's host); so the console is reachable from any host, or remotely,
// whichever host the guest runs on. A new client first gets the end of
// the console log, so it sees what the guest printed before it came.

// Console limits: clients of one guest's console, chunks of output a
// client may fall behind by before it is dropped, and the log's tail a new
// client gets.
const (
	maxConsoleClients = 16
	consoleBacklog    = 256
	consoleReplay     = 8 << 10
)

// Opener opens a guest's console on this host (the hypervisor driver).
type Opener interface {
	OpenConsole(ctx context.Context, name string) (io.ReadWriteCloser, error)
	ConsoleLog(ctx context.Context, name string, max int64) ([]byte, error)
}

// Hub holds this host's shared console sessions, by VM.
type Hub struct {
	host string
	drv  Opener
	mu   sync.Mutex
	hubs map[string]*consoleHub
}

// New returns the hub of the host called host.
func New(host string, drv Opener) *Hub {
	return &Hub{host: host, drv: drv, hubs: map[string]*consoleHub{}}
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
	c     *Hub
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
func (c *Hub) attach(ctx context.Context, name string, write bool) (*consoleSub, error) {
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

// Attach joins name's console (opening it if no client has; write asks to
// be the session that types), the session starting with the end of the
// console log: what the guest printed before (and perhaps a little of
// what the session then shows again, never a gap).
func (c *Hub) Attach(ctx context.Context, name string, write bool) (wsconsole.Session, error) {
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
func (c *Hub) pump(h *consoleHub) {
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
func (c *Hub) dropLocked(s *consoleSub, err error) {
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

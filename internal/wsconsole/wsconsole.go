// Package wsconsole carries an interactive serial console over a
// WebSocket, between a client (corralctl, the portal, a corrald relaying
// for a VM on another host) and a corrald. The server's first message is
// text: an api.ConsoleHello (which VM, on which host, whether this
// session may write). Then binary messages carry the guest's output from
// the server, and the client's keystrokes to it; text messages from the
// client are ignored (reserved). The session ends with a close frame
// whose reason says why (the guest stopped, its host went away).
//
// A guest's graphical display is carried the same way (ServeDisplay,
// DialDisplay) with subprotocol DisplayProtocol, minus the greeting: the
// binary messages are the RFB (VNC) stream itself, in both directions,
// which is what a browser's noVNC speaks.
package wsconsole

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/coder/websocket"

	"github.com/corralhq/corral/api"
	apiclient "github.com/corralhq/corral/api/client"
	"github.com/corralhq/corral/internal/errcode"
	"github.com/corralhq/corral/internal/httpserve"
	"github.com/corralhq/corral/model"
)

// Session is one client's attachment to a console: Read returns the
// guest's output, Write sends keystrokes (refused on a read-only
// session), Close detaches.
type Session interface {
	io.ReadWriteCloser
	Hello() api.ConsoleHello
}

// Protocol is the WebSocket subprotocol of a console session. A browser,
// which cannot set an Authorization header on a WebSocket, offers its API
// token beside it as the subprotocol BearerPrefix+SECRET; the server
// selects Protocol, never the token.
const (
	Protocol        = "corral.console"
	DisplayProtocol = "corral.vnc"
	BearerPrefix    = "corral.bearer."
)

// BearerProtocol returns the API token a WebSocket request offers as a
// subprotocol, if it is a WebSocket request and offers one.
func BearerProtocol(r *http.Request) (string, bool) {
	if !strings.EqualFold(r.Header.Get("Upgrade"), "websocket") {
		return "", false
	}
	for _, v := range r.Header.Values("Sec-WebSocket-Protocol") {
		for _, p := range strings.Split(v, ",") {
			if secret, ok := strings.CutPrefix(strings.TrimSpace(p), BearerPrefix); ok {
				return secret, true
			}
		}
	}
	return "", false
}

// ErrReadOnly: a write on a session that may not write.
var ErrReadOnly = fmt.Errorf("read-only console session (another session writes): %w", model.ErrConflict)

// Limits of the protocol.
const (
	// MaxInput bounds one message from a client (keystrokes, a paste).
	MaxInput = 64 << 10
	// pingEvery and pingTimeout find a peer that went away without
	// closing (its host died).
	pingEvery   = 5 * time.Second
	pingTimeout = 10 * time.Second
	maxReason   = 120 // a close frame's reason is at most 123 bytes
)

// Serve upgrades r to a WebSocket and carries sess over it until either
// side ends; sess is closed when it returns. The caller has authorized
// the request and opened sess; errors before that are answered as plain
// HTTP errors. Only same-origin browsers are accepted (the library's
// default): another site cannot attach a visitor's session.
func Serve(w http.ResponseWriter, r *http.Request, sess Session, log *slog.Logger) {
	hello, _ := json.Marshal(sess.Hello())
	serve(w, r, sess, Protocol, hello, log, "console")
}

// ServeDisplay is Serve for a guest's graphical display: conn is the
// RFB stream of its VNC server, carried without a greeting.
func ServeDisplay(w http.ResponseWriter, r *http.Request, conn io.ReadWriteCloser, log *slog.Logger) {
	serve(w, r, conn, DisplayProtocol, nil, log, "display")
}

func serve(w http.ResponseWriter, r *http.Request, sess io.ReadWriteCloser, proto string, hello []byte, log *slog.Logger, what string) {
	defer sess.Close()
	ws, err := websocket.Accept(w, r, &websocket.AcceptOptions{Subprotocols: []string{proto}})
	if err != nil {
		log.Debug("console: websocket accept", "err", err)
		return
	}
	defer ws.CloseNow()
	ws.SetReadLimit(MaxInput)
	ctx, cancel := context.WithCancel(r.Context())
	defer cancel()
	if hello != nil {
		if err := ws.Write(ctx, websocket.MessageText, hello); err != nil {
			return
		}
	}
	why := make(chan string, 3)
	go func() { // the guest's output to the client
		buf := make([]byte, 32<<10)
		for {
			n, err := sess.Read(buf)
			if n > 0 {
				if werr := ws.Write(ctx, websocket.MessageBinary, buf[:n]); werr != nil {
					why <- ""
					return
				}
			}
			if err != nil {
				why <- ended(err, what)
				return
			}
		}
	}()
	go func() { // the client's keystrokes to the guest
		for {
			typ, data, err := ws.Read(ctx)
			if err != nil {
				why <- ""
				return
			}
			if typ != websocket.MessageBinary || len(data) == 0 {
				continue
			}
			if _, err := sess.Write(data); err != nil {
				why <- ended(err, what)
				return
			}
		}
	}()
	go func() { // a client that went away without closing
		tick := time.NewTicker(pingEvery)
		defer tick.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
			}
			pctx, pcancel := context.WithTimeout(ctx, pingTimeout)
			err := ws.Ping(pctx)
			pcancel()
			if err != nil {
				why <- ""
				return
			}
		}
	}()
	var reason string
	select {
	case reason = <-why:
	case <-httpserve.Stopping(r.Context()):
		reason = "corrald is stopping"
	}
	if reason != "" {
		ws.Close(websocket.StatusNormalClosure, clip(reason))
	}
}

// ended says why a session ended, for the close frame.
func ended(err error, what string) string {
	var ce *ClosedError
	switch {
	case errors.As(err, &ce):
		return ce.Reason // a relayed session: the far side's reason
	case errors.Is(err, io.EOF):
		return what + " closed: the guest stopped or left this host"
	case errors.Is(err, ErrReadOnly):
		return "read-only session: another session writes to this console"
	}
	return what + " closed: " + err.Error()
}

func clip(s string) string { return model.Clip(s, maxReason) }

// Dial attaches to the console at url (ws:// or wss://) through hc, with
// extra request headers h. An error before the upgrade keeps its class
// (the server's api.Error).
func Dial(ctx context.Context, hc *http.Client, url string, h http.Header) (Session, error) {
	c, err := dial(ctx, hc, url, h, Protocol)
	if err != nil {
		return nil, err
	}
	hctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	typ, data, err := c.ws.Read(hctx)
	if err != nil || typ != websocket.MessageText || json.Unmarshal(data, &c.hello) != nil {
		c.ws.CloseNow()
		return nil, fmt.Errorf("console: no greeting from the server (%v): %w", err, model.ErrUnavailable)
	}
	go c.ping()
	return c, nil
}

// DialDisplay opens the graphical display at url (ServeDisplay): what it
// returns carries the RFB stream.
func DialDisplay(ctx context.Context, hc *http.Client, url string, h http.Header) (io.ReadWriteCloser, error) {
	c, err := dial(ctx, hc, url, h, DisplayProtocol)
	if err != nil {
		return nil, err
	}
	c.hello.Host = "the display's host"
	go c.ping()
	return c, nil
}

func dial(ctx context.Context, hc *http.Client, url string, h http.Header, proto string) (*client, error) {
	ws, resp, err := websocket.Dial(ctx, url, &websocket.DialOptions{HTTPClient: hc, HTTPHeader: h, Subprotocols: []string{proto}})
	if err != nil {
		if resp != nil && resp.StatusCode != http.StatusSwitchingProtocols {
			var e api.Error
			if b, rerr := io.ReadAll(resp.Body); rerr == nil && json.Unmarshal(b, &e) == nil && e.Code != "" {
				return nil, errcode.FromAPI(&e)
			}
			return nil, fmt.Errorf("console: status %d: %w", resp.StatusCode, model.ErrUnavailable)
		}
		return nil, fmt.Errorf("console: %v: %w", err, model.ErrUnavailable)
	}
	ws.SetReadLimit(1 << 20)
	return &client{ws: ws, done: make(chan struct{})}, nil
}

// client is the dialling side of a session.
type client struct {
	ws    *websocket.Conn
	hello api.ConsoleHello
	pend  []byte
	once  sync.Once
	done  chan struct{}

	mu  sync.Mutex
	err error // set when the server stopped answering pings
}

func (c *client) Hello() api.ConsoleHello { return c.hello }

// ping closes a session whose server stopped answering (its host died).
func (c *client) ping() {
	tick := time.NewTicker(pingEvery)
	defer tick.Stop()
	for {
		select {
		case <-c.done:
			return
		case <-tick.C:
		}
		ctx, cancel := context.WithTimeout(context.Background(), pingTimeout)
		err := c.ws.Ping(ctx)
		cancel()
		if err != nil {
			c.mu.Lock()
			if c.err == nil {
				c.err = fmt.Errorf("console: %s does not answer (%v): %w", c.hello.Host, err, model.ErrUnavailable)
			}
			c.mu.Unlock()
			c.ws.CloseNow()
			return
		}
	}
}

func (c *client) Read(p []byte) (int, error) {
	for len(c.pend) == 0 {
		typ, data, err := c.ws.Read(context.Background())
		if err != nil {
			return 0, c.readErr(err)
		}
		if typ == websocket.MessageBinary {
			c.pend = data
		}
	}
	n := copy(p, c.pend)
	c.pend = c.pend[n:]
	return n, nil
}

// readErr turns the end of the connection into the session's end: EOF
// for a normal close with no reason, else an error saying why.
func (c *client) readErr(err error) error {
	c.mu.Lock()
	perr := c.err
	c.mu.Unlock()
	if perr != nil {
		return perr
	}
	var ce websocket.CloseError
	if errors.As(err, &ce) {
		if ce.Code == websocket.StatusNormalClosure && ce.Reason == "" {
			return io.EOF
		}
		return &ClosedError{Reason: ce.Reason}
	}
	select {
	case <-c.done:
		return io.EOF // we detached
	default:
	}
	return fmt.Errorf("console: %v: %w", err, model.ErrUnavailable)
}

// ClosedError is the server's reason for ending a session.
type ClosedError struct{ Reason string }

func (e *ClosedError) Error() string { return e.Reason }

func (c *client) Write(p []byte) (int, error) {
	for off := 0; off < len(p); off += MaxInput {
		end := min(off+MaxInput, len(p))
		if err := c.ws.Write(context.Background(), websocket.MessageBinary, p[off:end]); err != nil {
			return off, c.readErr(err)
		}
	}
	return len(p), nil
}

func (c *client) Close() error {
	c.once.Do(func() { close(c.done) })
	return c.ws.Close(websocket.StatusNormalClosure, "")
}

// AttachVM attaches to a VM's console through the corrald c talks to;
// write asks to be the session that types.
func AttachVM(ctx context.Context, c *apiclient.Client, name string, write bool) (Session, error) {
	url, h, hc := c.WebSocket(apiclient.ConsolePath(name, write))
	return Dial(ctx, hc, url, h)
}

// OpenVMDisplay opens a VM's graphical display (its RFB stream) through
// the corrald c talks to.
func OpenVMDisplay(ctx context.Context, c *apiclient.Client, name string) (io.ReadWriteCloser, error) {
	url, h, hc := c.WebSocket(apiclient.DisplayPath(name))
	return DialDisplay(ctx, hc, url, h)
}

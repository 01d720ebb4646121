// Package rpc is the cluster RPC between corral daemons: JSON requests over
// HTTP on rpc_port, one POST per named method. Followers forward writes to
// the leader through it, and hosts renew their leases with it, directly or,
// when their link to the leader is broken, through a tunnel another host
// opens for them (CallVia, SetRelay). Given a TLS
// config (mutual TLS, cluster CA) the same server and client run over TLS;
// nothing else changes. Errors keep their class across the hop (see
// internal/errcode).
package rpc

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/corralhq/corral/api"
	"github.com/corralhq/corral/internal/errcode"
	"github.com/corralhq/corral/internal/httpserve"
	"github.com/corralhq/corral/internal/origin"
	"github.com/corralhq/corral/model"
)

const (
	pathPrefix   = "/cluster/v1/"
	maxBodyBytes = 16 << 20
	// maxPublicBodyBytes bounds what a caller without a certificate (a
	// host asking to join) can make a server read.
	maxPublicBodyBytes = 64 << 10
)

// Handler serves one method: it gets the raw JSON request and returns a
// value to encode as the response.
type Handler func(ctx context.Context, body json.RawMessage) (any, error)

// Server dispatches cluster RPCs to registered handlers.
type Server struct {
	log *slog.Logger
	tls *tls.Config

	mu       sync.RWMutex
	handlers map[string]Handler
	public   map[string]bool
	streams  map[string]StreamOpener
	relay    func(target string) (addr string, err error)
	relaying chan struct{} // one token per relay open
}

// StreamOpener opens a long-lived exchange (a console relay) for a GET of
// /cluster/v1/stream/NAME: it checks the query and returns the handler
// that carries the stream (a WebSocket), or an error answered as any
// RPC's. Streams are for hosts of the cluster only, never public.
type StreamOpener func(ctx context.Context, q url.Values) (http.Handler, error)

// streamPrefix is where streams are served.
const streamPrefix = pathPrefix + "stream/"

// HandleStream registers a stream. Registering one twice panics.
func (s *Server) HandleStream(name string, open StreamOpener) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, dup := s.streams[name]; dup {
		panic("rpc: stream " + name + " registered twice")
	}
	s.streams[name] = open
}

func (s *Server) serveStream(w http.ResponseWriter, r *http.Request) {
	name := strings.TrimPrefix(r.URL.Path, streamPrefix)
	s.mu.RLock()
	open := s.streams[name]
	s.mu.RUnlock()
	if open == nil {
		writeErr(w, fmt.Errorf("no such rpc stream %q: %w", name, model.ErrNotFound))
		return
	}
	ctx := r.Context()
	if s.tls != nil {
		if r.TLS == nil || len(r.TLS.VerifiedChains) == 0 || len(r.TLS.VerifiedChains[0]) == 0 {
			writeErr(w, fmt.Errorf("rpc stream %s needs a host certificate of this cluster: %w", name, model.ErrForbidden))
			return
		}
		ctx = context.WithValue(ctx, peerKey{}, r.TLS.VerifiedChains[0][0].Subject.CommonName)
	}
	h, err := open(ctx, r.URL.Query())
	if err != nil {
		s.log.Debug("rpc stream refused", "stream", name, "from", r.RemoteAddr, "err", err)
		writeErr(w, err)
		return
	}
	h.ServeHTTP(w, r.WithContext(ctx))
}

// NewServer returns a server; tlsConf nil means plain TCP.
func NewServer(tlsConf *tls.Config, log *slog.Logger) *Server {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Server{log: log, tls: tlsConf, handlers: map[string]Handler{}, public: map[string]bool{}, streams: map[string]StreamOpener{},
		relaying: make(chan struct{}, maxRelays)}
}

// Method declares one cluster RPC method: its name with its request and
// response types, so that the server and its callers cannot disagree.
type Method[Req, Resp any] struct{ Name string }

// Handle registers h for method. Registering a method twice is a
// programming error: it panics rather than silently replace the first.
func (s *Server) Handle(method string, h Handler) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, dup := s.handlers[method]; dup {
		panic("rpc: method " + method + " registered twice")
	}
	s.handlers[method] = h
}

// Public marks a method that callers without a cluster certificate may
// call (joining). Every other method of a TLS server refuses them.
func (s *Server) Public(method string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.public[method] = true
}

type peerKey struct{}

// Peer returns the host that made this call: the name in its verified
// cluster certificate. ok is false on a server without TLS, for a call made
// in-process, and for a caller of a public method without a certificate.
func Peer(ctx context.Context) (name string, ok bool) {
	name, ok = ctx.Value(peerKey{}).(string)
	return name, ok
}

// Register registers a typed handler for m: the request body is decoded
// into Req strictly (DecodeStrict).
func Register[Req, Resp any](s *Server, m Method[Req, Resp], fn func(context.Context, Req) (Resp, error)) {
	method := m.Name
	s.Handle(method, func(ctx context.Context, body json.RawMessage) (any, error) {
		var req Req
		if err := DecodeStrict(body, &req); err != nil {
			return nil, fmt.Errorf("%s: bad request body: %v: %w", method, err, model.ErrInvalid)
		}
		return fn(ctx, req)
	})
}

// DecodeStrict decodes one JSON value into v, refusing fields v does not
// have and trailing data. A request with a field this daemon does not know
// is refused rather than half-understood: during a rolling upgrade, a newer
// host's request that an older leader cannot honour fails loudly.
func DecodeStrict(data []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return err
	}
	if dec.More() {
		return errors.New("trailing data after the JSON value")
	}
	return nil
}

// Serve answers on ln until ctx ends. A cancelled ctx is a clean stop.
func (s *Server) Serve(ctx context.Context, ln net.Listener) error {
	if s.tls != nil {
		ln = tls.NewListener(ln, s.tls)
	}
	// Peers are hosts of this cluster (or, for the public methods, hosts
	// joining it): no rate limit, which could starve lease renewals, but a
	// cap on what is handled at once.
	return httpserve.Serve(ctx, ln, s, s.log, httpserve.Limits{MaxInFlight: 512})
}

func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method == http.MethodConnect {
		s.serveRelay(w, r)
		return
	}
	if r.Method == http.MethodGet && strings.HasPrefix(r.URL.Path, streamPrefix) {
		s.serveStream(w, r)
		return
	}
	if r.Method != http.MethodPost || len(r.URL.Path) <= len(pathPrefix) || r.URL.Path[:len(pathPrefix)] != pathPrefix {
		writeErr(w, fmt.Errorf("no such rpc %s %s: %w", r.Method, r.URL.Path, model.ErrNotFound))
		return
	}
	method := r.URL.Path[len(pathPrefix):]
	s.mu.RLock()
	h, public := s.handlers[method], s.public[method]
	s.mu.RUnlock()
	if h == nil {
		writeErr(w, fmt.Errorf("no such rpc method %q: %w", method, model.ErrNotFound))
		return
	}
	ctx := r.Context()
	limit := int64(maxBodyBytes)
	if s.tls != nil {
		if r.TLS == nil || len(r.TLS.VerifiedChains) == 0 || len(r.TLS.VerifiedChains[0]) == 0 {
			if !public {
				writeErr(w, fmt.Errorf("rpc %s needs a host certificate of this cluster: %w", method, model.ErrForbidden))
				return
			}
			limit = maxPublicBodyBytes
		} else {
			ctx = context.WithValue(ctx, peerKey{}, r.TLS.VerifiedChains[0][0].Subject.CommonName)
		}
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, limit))
	if err != nil {
		writeErr(w, fmt.Errorf("read request: %v: %w", err, model.ErrInvalid))
		return
	}
	// Who asked, as the forwarding host says (an operation a follower
	// forwards for an API client).
	if h := r.Header.Get(origin.Header); h != "" {
		o, err := origin.Decode(h)
		if err != nil {
			writeErr(w, fmt.Errorf("rpc %s: %v: %w", method, err, model.ErrInvalid))
			return
		}
		ctx = origin.With(ctx, o)
	}
	resp, err := h(ctx, body)
	if err != nil {
		s.log.Debug("rpc failed", "method", method, "from", r.RemoteAddr, "err", err)
		writeErr(w, err)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	if err := json.NewEncoder(w).Encode(resp); err != nil {
		s.log.Debug("rpc write", "method", method, "err", err)
	}
}

func writeErr(w http.ResponseWriter, err error) {
	e := errcode.ToAPI(err)
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(e.Code.Status())
	json.NewEncoder(w).Encode(e)
}

// Relays: a host whose direct path to another fails (one broken link)
// reaches it through a third, which opens a TCP tunnel for it (HTTP
// CONNECT). The caller's TLS session runs end to end through the tunnel,
// so the far side sees the caller's own certificate, exactly as on a
// direct call; the relay sees only ciphertext. A relay serves hosts of
// the cluster only, opens tunnels only to the addresses its resolver
// returns (never an address the caller names), at most maxRelays at once,
// each for at most relayTTL.
const (
	// RelayLeader is the tunnel target "the leader, as the relay knows it".
	RelayLeader = "leader"
	maxRelays   = 64
	relayTTL    = 30 * time.Second
	relayDial   = 2 * time.Second
)

// SetRelay turns relaying on: resolve maps the target a caller asks for
// (RelayLeader, say) to the address to open the tunnel to, or refuses it.
func (s *Server) SetRelay(resolve func(target string) (addr string, err error)) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.relay = resolve
}

func (s *Server) serveRelay(w http.ResponseWriter, r *http.Request) {
	if s.tls != nil && (r.TLS == nil || len(r.TLS.VerifiedChains) == 0) {
		writeErr(w, fmt.Errorf("relay needs a host certificate of this cluster: %w", model.ErrForbidden))
		return
	}
	s.mu.RLock()
	resolve := s.relay
	s.mu.RUnlock()
	if resolve == nil {
		writeErr(w, fmt.Errorf("this host relays nothing: %w", model.ErrNotFound))
		return
	}
	target, _, err := net.SplitHostPort(r.Host)
	if err != nil {
		target = r.Host
	}
	addr, err := resolve(target)
	if err != nil {
		writeErr(w, fmt.Errorf("relay to %q: %w", target, err))
		return
	}
	select {
	case s.relaying <- struct{}{}:
		defer func() { <-s.relaying }()
	default:
		writeErr(w, fmt.Errorf("relay: %d tunnels open already: %w", maxRelays, model.ErrUnavailable))
		return
	}
	dctx, cancel := context.WithTimeout(r.Context(), relayDial)
	up, err := (&net.Dialer{}).DialContext(dctx, "tcp", addr)
	cancel()
	if err != nil {
		writeErr(w, fmt.Errorf("relay to %s: %v: %w", addr, err, model.ErrUnavailable))
		return
	}
	defer up.Close()
	hj, ok := w.(http.Hijacker)
	if !ok {
		writeErr(w, errors.New("relay: connection cannot be taken over"))
		return
	}
	conn, buf, err := hj.Hijack()
	if err != nil {
		return
	}
	defer conn.Close()
	end := time.Now().Add(relayTTL)
	conn.SetDeadline(end)
	up.SetDeadline(end)
	if _, err := buf.WriteString("HTTP/1.1 200 Connection established\r\n\r\n"); err != nil || buf.Flush() != nil {
		return
	}
	// What the caller sent after its request, read ahead already.
	if n := buf.Reader.Buffered(); n > 0 {
		ahead, _ := buf.Reader.Peek(n)
		if _, err := up.Write(ahead); err != nil {
			return
		}
	}
	done := make(chan struct{})
	go func() {
		io.Copy(up, conn)
		up.Close() // ends the copy below too
		close(done)
	}()
	io.Copy(conn, up)
	conn.Close()
	<-done
}

// Client calls other daemons. It is safe for concurrent use.
type Client struct {
	hc     *http.Client
	scheme string
	tls    *tls.Config
	vias   sync.Map // relay address -> *http.Client through it
}

// NewClient returns a client; tlsConf nil means plain TCP.
func NewClient(tlsConf *tls.Config) *Client {
	tr := &http.Transport{
		DialContext:         (&net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
		MaxIdleConnsPerHost: 4,
		IdleConnTimeout:     90 * time.Second,
		TLSClientConfig:     tlsConf,
	}
	scheme := "http"
	if tlsConf != nil {
		scheme = "https"
	}
	return &Client{hc: &http.Client{Transport: tr}, scheme: scheme, tls: tlsConf}
}

// CallVia calls m on target (RelayLeader: whoever leads, as relay knows
// it) through a tunnel the daemon at relay opens (see SetRelay). Each call
// has a tunnel of its own.
func CallVia[Req, Resp any](ctx context.Context, c *Client, relay, target string, m Method[Req, Resp], req Req) (Resp, error) {
	var resp Resp
	err := c.callWith(ctx, c.via(relay), target, m.Name, req, &resp)
	return resp, err
}

// via returns the HTTP client whose connections go through relay.
func (c *Client) via(relay string) *http.Client {
	if hc, ok := c.vias.Load(relay); ok {
		return hc.(*http.Client)
	}
	tr := &http.Transport{
		DialContext:       func(ctx context.Context, _, addr string) (net.Conn, error) { return c.dialVia(ctx, relay, addr) },
		TLSClientConfig:   c.tls,
		DisableKeepAlives: true,
	}
	hc, _ := c.vias.LoadOrStore(relay, &http.Client{Transport: tr})
	return hc.(*http.Client)
}

// dialVia opens a tunnel to target through relay: a connection to the
// relay (TLS with this client's identity, when it has one) on which a
// CONNECT was answered 200. The caller's own session (TLS again) runs
// inside.
func (c *Client) dialVia(ctx context.Context, relay, target string) (net.Conn, error) {
	raw, err := (&net.Dialer{Timeout: relayDial}).DialContext(ctx, "tcp", relay)
	if err != nil {
		return nil, err
	}
	conn := raw
	if c.tls != nil {
		tc := tls.Client(raw, c.tls)
		if err := tc.HandshakeContext(ctx); err != nil {
			raw.Close()
			return nil, err
		}
		conn = tc
	}
	if dl, ok := ctx.Deadline(); ok {
		conn.SetDeadline(dl)
	}
	req := &http.Request{Method: http.MethodConnect, URL: &url.URL{Opaque: target}, Host: target, Header: http.Header{}}
	if err := req.Write(conn); err != nil {
		conn.Close()
		return nil, err
	}
	br := bufio.NewReader(conn)
	resp, err := http.ReadResponse(br, req)
	if err != nil {
		conn.Close()
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		var e api.Error
		data, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
		resp.Body.Close()
		conn.Close()
		if json.Unmarshal(data, &e) == nil && e.Code != "" {
			return nil, errcode.FromAPI(&e)
		}
		return nil, fmt.Errorf("relay %s: status %d", relay, resp.StatusCode)
	}
	conn.SetDeadline(time.Time{})
	if br.Buffered() > 0 { // the relay speaks only after the caller
		conn.Close()
		return nil, fmt.Errorf("relay %s: data before the tunnel's first byte", relay)
	}
	return conn, nil
}

// Call invokes method on the daemon at addr (host:port). A transport
// failure wraps model.ErrUnavailable; an error from the remote handler keeps
// its class.
func (c *Client) Call(ctx context.Context, addr, method string, req, resp any) error {
	return c.call(ctx, addr, method, req, resp)
}

// Call calls m on the daemon at addr.
func Call[Req, Resp any](ctx context.Context, c *Client, addr string, m Method[Req, Resp], req Req) (Resp, error) {
	var resp Resp
	err := c.call(ctx, addr, m.Name, req, &resp)
	return resp, err
}

func (c *Client) call(ctx context.Context, addr, method string, req, resp any) error {
	return c.callWith(ctx, c.hc, addr, method, req, resp)
}

func (c *Client) callWith(ctx context.Context, hc *http.Client, addr, method string, req, resp any) error {
	body, err := json.Marshal(req)
	if err != nil {
		return fmt.Errorf("rpc %s: encode: %w", method, err)
	}
	hreq, err := http.NewRequestWithContext(ctx, http.MethodPost, c.scheme+"://"+addr+pathPrefix+method, bytes.NewReader(body))
	if err != nil {
		return fmt.Errorf("rpc %s: %w", method, err)
	}
	hreq.Header.Set("Content-Type", "application/json")
	if o, ok := origin.From(ctx); ok {
		hreq.Header.Set(origin.Header, o.Encode())
	}
	hresp, err := hc.Do(hreq)
	if err != nil {
		return fmt.Errorf("rpc %s to %s: %v: %w", method, addr, err, model.ErrUnavailable)
	}
	defer hresp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(hresp.Body, maxBodyBytes))
	if err != nil {
		return fmt.Errorf("rpc %s to %s: read: %v: %w", method, addr, err, model.ErrUnavailable)
	}
	if hresp.StatusCode != http.StatusOK {
		var e api.Error
		if json.Unmarshal(data, &e) != nil || e.Code == "" {
			return fmt.Errorf("rpc %s to %s: status %d: %w", method, addr, hresp.StatusCode, model.ErrUnavailable)
		}
		return errcode.FromAPI(&e)
	}
	if resp == nil {
		return nil
	}
	if err := json.Unmarshal(data, resp); err != nil {
		return fmt.Errorf("rpc %s to %s: decode response: %w", method, addr, err)
	}
	return nil
}

// HTTPClient is the client's HTTP client (its cluster TLS), for streams.
func (c *Client) HTTPClient() *http.Client { return c.hc }

// StreamURL is the WebSocket URL of stream name on the daemon at addr.
func (c *Client) StreamURL(addr, name string, q url.Values) string {
	scheme := "ws"
	if c.scheme == "https" {
		scheme = "wss"
	}
	return scheme + "://" + addr + streamPrefix + name + "?" + q.Encode()
}

// Close releases idle connections.
func (c *Client) Close() { c.hc.CloseIdleConnections() }

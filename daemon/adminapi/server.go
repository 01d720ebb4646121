// Package adminapi serves corral's admin API: HTTP/JSON on a Unix socket
// (see package api for the routes and types). Routes are declared as data;
// errors map to status codes in one place (internal/errcode). Writes go to
// the Backend, which forwards them to the leader when this host is not it.
package adminapi

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/user"
	"path/filepath"
	"strconv"
	"time"

	"github.com/corralhq/corral/api"
	"github.com/corralhq/corral/internal/errcode"
	"github.com/corralhq/corral/model"
)

// Backend is what the handlers need from the daemon.
type Backend interface {
	Status(ctx context.Context) (api.Status, error)
	Hosts(ctx context.Context) ([]api.Host, error)
	Host(ctx context.Context, name string) (api.Host, error)
	SetHostLabels(ctx context.Context, name string, req api.HostLabelsRequest) (api.Host, error)
}

const maxBody = 1 << 20

// Server is the admin API.
type Server struct {
	b   Backend
	log *slog.Logger
	mux *http.ServeMux
}

type route struct {
	pattern string
	handle  func(r *http.Request) (any, error)
}

// New returns a Server for b.
func New(b Backend, log *slog.Logger) *Server {
	s := &Server{b: b, log: log, mux: http.NewServeMux()}
	for _, rt := range s.routes() {
		s.mux.Handle(rt.pattern, s.wrap(rt.handle))
	}
	s.mux.Handle("/", s.wrap(func(r *http.Request) (any, error) {
		return nil, fmt.Errorf("no route for %s %s: %w", r.Method, r.URL.Path, model.ErrNotFound)
	}))
	return s
}

func (s *Server) routes() []route {
	return []route{
		{"GET /v1/status", func(r *http.Request) (any, error) { return s.b.Status(r.Context()) }},
		{"GET /v1/hosts", func(r *http.Request) (any, error) { return s.b.Hosts(r.Context()) }},
		{"GET /v1/hosts/{name}", func(r *http.Request) (any, error) {
			name, err := hostName(r)
			if err != nil {
				return nil, err
			}
			return s.b.Host(r.Context(), name)
		}},
		{"PUT /v1/hosts/{name}/labels", func(r *http.Request) (any, error) {
			name, err := hostName(r)
			if err != nil {
				return nil, err
			}
			var req api.HostLabelsRequest
			if err := decode(r, &req); err != nil {
				return nil, err
			}
			return s.b.SetHostLabels(r.Context(), name, req)
		}},
	}
}

func hostName(r *http.Request) (string, error) {
	name := r.PathValue("name")
	return name, model.ValidateHostName(name)
}

// decode reads a JSON body into v, refusing unknown fields and trailing data.
func decode(r *http.Request, v any) error {
	dec := json.NewDecoder(io.LimitReader(r.Body, maxBody))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return fmt.Errorf("malformed JSON body: %v: %w", err, model.ErrInvalid)
	}
	if dec.More() {
		return fmt.Errorf("malformed JSON body: trailing data: %w", model.ErrInvalid)
	}
	return nil
}

func (s *Server) wrap(h func(r *http.Request) (any, error)) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		resp, err := h(r)
		w.Header().Set("Content-Type", "application/json")
		if err != nil {
			e := errcode.ToAPI(err)
			if e.Code == api.CodeInternal {
				s.log.Error("admin request failed", "method", r.Method, "path", r.URL.Path, "err", err)
			}
			w.WriteHeader(e.Code.Status())
			json.NewEncoder(w).Encode(e)
			return
		}
		json.NewEncoder(w).Encode(resp)
	})
}

// Handler returns the HTTP handler, for tests.
func (s *Server) Handler() http.Handler { return s.mux }

// Serve answers on ln until ctx ends; a cancelled ctx is a clean stop.
func (s *Server) Serve(ctx context.Context, ln net.Listener) error {
	srv := &http.Server{Handler: s.mux, ReadHeaderTimeout: 10 * time.Second,
		ErrorLog: slog.NewLogLogger(s.log.Handler(), slog.LevelDebug)}
	done := make(chan struct{})
	go func() {
		select {
		case <-ctx.Done():
			sctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			defer cancel()
			srv.Shutdown(sctx)
		case <-done:
		}
	}()
	err := srv.Serve(ln)
	close(done)
	if errors.Is(err, http.ErrServerClosed) {
		return nil
	}
	return err
}

// ErrAlreadyRunning is returned by Listen when another daemon answers on
// the socket.
var ErrAlreadyRunning = errors.New("another corrald is answering on the socket")

// Listen opens the admin socket at path: it refuses when another daemon
// answers there, removes a stale socket, listens, and sets mode 0660 and
// group (when that group exists).
func Listen(path, group string) (net.Listener, error) {
	if c, err := net.DialTimeout("unix", path, time.Second); err == nil {
		c.Close()
		return nil, fmt.Errorf("%s: %w", path, ErrAlreadyRunning)
	}
	if fi, err := os.Lstat(path); err == nil {
		if fi.Mode()&os.ModeSocket == 0 {
			return nil, fmt.Errorf("%s exists and is not a socket; not removing it", path)
		}
		if err := os.Remove(path); err != nil {
			return nil, fmt.Errorf("remove stale socket: %w", err)
		}
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return nil, fmt.Errorf("socket directory: %w", err)
	}
	ln, err := net.Listen("unix", path)
	if err != nil {
		return nil, fmt.Errorf("listen on %s: %w", path, err)
	}
	if err := os.Chmod(path, 0o660); err != nil {
		ln.Close()
		return nil, fmt.Errorf("chmod %s: %w", path, err)
	}
	if group != "" {
		if g, err := user.LookupGroup(group); err == nil {
			gid, _ := strconv.Atoi(g.Gid)
			if err := os.Chown(path, -1, gid); err != nil {
				ln.Close()
				return nil, fmt.Errorf("chown %s to group %s: %w", path, group, err)
			}
		}
	}
	return ln, nil
}

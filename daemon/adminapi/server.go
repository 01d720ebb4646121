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
	"github.com/corralhq/corral/internal/httpserve"
	"github.com/corralhq/corral/model"
)

// Backend is what the handlers need from the daemon.
type Backend interface {
	Status(ctx context.Context) (api.Status, error)
	Hosts(ctx context.Context) ([]api.Host, error)
	Host(ctx context.Context, name string) (api.Host, error)
	SetHostLabels(ctx context.Context, name string, req api.HostLabelsRequest) (api.Host, error)
	DrainHost(ctx context.Context, name string) (api.Host, error)
	RemoveHost(ctx context.Context, name string, force bool) error
	RestoreHost(ctx context.Context, name string, req api.HostRestoreRequest) (api.Host, error)
	SetHA(ctx context.Context, req api.HARequest) (api.Status, error)
	JoinTokens(ctx context.Context) ([]api.JoinToken, error)
	CreateJoinToken(ctx context.Context, req api.JoinTokenCreateRequest) (api.JoinTokenCreated, error)
	RevokeJoinToken(ctx context.Context, id string) error
	RotateGossipKey(ctx context.Context) (api.GossipKeyRotation, error)
	MigrateVM(ctx context.Context, name string, req api.VMMigrateRequest) (api.VM, error)

	VMs(ctx context.Context) ([]api.VM, error)
	VM(ctx context.Context, name string) (api.VM, error)
	CreateVM(ctx context.Context, req api.VMCreateRequest) (api.VM, error)
	SetVMPower(ctx context.Context, name, desired string) (api.VM, error)
	RestartVM(ctx context.Context, name string) (api.VM, error)
	ResizeVM(ctx context.Context, name string, req api.VMResizeRequest) (api.VM, error)
	DeleteVM(ctx context.Context, name string, force bool) (api.VM, error)
	ConsoleLog(ctx context.Context, name string, bytes int64) (api.ConsoleLog, error)
	VMStats(ctx context.Context, name string) (api.VMStats, error)

	Networks(ctx context.Context) ([]api.Network, error)
	CreateNetwork(ctx context.Context, req api.NetworkCreateRequest) (api.Network, error)
	DeleteNetwork(ctx context.Context, name string) error

	Images(ctx context.Context) ([]api.Image, error)
	ImportImage(ctx context.Context, name string, body io.Reader) (api.Image, error)
	DeleteImage(ctx context.Context, name string) error

	Events(ctx context.Context, after uint64, limit int, wait time.Duration) ([]api.Event, error)
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
		{"DELETE /v1/hosts/{name}", func(r *http.Request) (any, error) {
			name, err := hostName(r)
			if err != nil {
				return nil, err
			}
			force, err := boolParam(r, "force")
			if err != nil {
				return nil, err
			}
			return struct{}{}, s.b.RemoveHost(r.Context(), name, force)
		}},
		{"POST /v1/hosts/{name}/drain", func(r *http.Request) (any, error) {
			name, err := hostName(r)
			if err != nil {
				return nil, err
			}
			return s.b.DrainHost(r.Context(), name)
		}},
		{"POST /v1/hosts/{name}/restore", func(r *http.Request) (any, error) {
			name, err := hostName(r)
			if err != nil {
				return nil, err
			}
			var req api.HostRestoreRequest
			if r.ContentLength != 0 {
				if err := decode(r, &req); err != nil {
					return nil, err
				}
			}
			return s.b.RestoreHost(r.Context(), name, req)
		}},
		{"PUT /v1/cluster/ha", func(r *http.Request) (any, error) {
			var req api.HARequest
			if err := decode(r, &req); err != nil {
				return nil, err
			}
			return s.b.SetHA(r.Context(), req)
		}},
		{"POST /v1/cluster/gossip-key/rotate", func(r *http.Request) (any, error) { return s.b.RotateGossipKey(r.Context()) }},
		{"GET /v1/cluster/tokens", func(r *http.Request) (any, error) { return s.b.JoinTokens(r.Context()) }},
		{"POST /v1/cluster/tokens", func(r *http.Request) (any, error) {
			var req api.JoinTokenCreateRequest
			if r.ContentLength != 0 {
				if err := decode(r, &req); err != nil {
					return nil, err
				}
			}
			return s.b.CreateJoinToken(r.Context(), req)
		}},
		{"DELETE /v1/cluster/tokens/{id}", func(r *http.Request) (any, error) {
			return struct{}{}, s.b.RevokeJoinToken(r.Context(), r.PathValue("id"))
		}},

		{"GET /v1/vms", func(r *http.Request) (any, error) { return s.b.VMs(r.Context()) }},
		{"POST /v1/vms/{name}/migrate", withVM(func(r *http.Request, name string) (any, error) {
			var req api.VMMigrateRequest
			if r.ContentLength != 0 {
				if err := decode(r, &req); err != nil {
					return nil, err
				}
			}
			return s.b.MigrateVM(r.Context(), name, req)
		})},
		{"POST /v1/vms", func(r *http.Request) (any, error) {
			var req api.VMCreateRequest
			if err := decode(r, &req); err != nil {
				return nil, err
			}
			return s.b.CreateVM(r.Context(), req)
		}},
		{"GET /v1/vms/{name}", withVM(func(r *http.Request, name string) (any, error) { return s.b.VM(r.Context(), name) })},
		{"POST /v1/vms/{name}/start", withVM(func(r *http.Request, name string) (any, error) { return s.b.SetVMPower(r.Context(), name, "running") })},
		{"POST /v1/vms/{name}/stop", withVM(func(r *http.Request, name string) (any, error) { return s.b.SetVMPower(r.Context(), name, "stopped") })},
		{"POST /v1/vms/{name}/restart", withVM(func(r *http.Request, name string) (any, error) { return s.b.RestartVM(r.Context(), name) })},
		{"PUT /v1/vms/{name}/resize", withVM(func(r *http.Request, name string) (any, error) {
			var req api.VMResizeRequest
			if err := decode(r, &req); err != nil {
				return nil, err
			}
			return s.b.ResizeVM(r.Context(), name, req)
		})},
		{"DELETE /v1/vms/{name}", withVM(func(r *http.Request, name string) (any, error) {
			force, err := boolParam(r, "force")
			if err != nil {
				return nil, err
			}
			return s.b.DeleteVM(r.Context(), name, force)
		})},
		{"GET /v1/vms/{name}/console", withVM(func(r *http.Request, name string) (any, error) {
			n, err := intParam(r, "bytes", 64<<10)
			if err != nil {
				return nil, err
			}
			return s.b.ConsoleLog(r.Context(), name, n)
		})},
		{"GET /v1/vms/{name}/stats", withVM(func(r *http.Request, name string) (any, error) { return s.b.VMStats(r.Context(), name) })},

		{"GET /v1/networks", func(r *http.Request) (any, error) { return s.b.Networks(r.Context()) }},
		{"POST /v1/networks", func(r *http.Request) (any, error) {
			var req api.NetworkCreateRequest
			if err := decode(r, &req); err != nil {
				return nil, err
			}
			return s.b.CreateNetwork(r.Context(), req)
		}},
		{"DELETE /v1/networks/{name}", func(r *http.Request) (any, error) {
			name := r.PathValue("name")
			if err := model.ValidateName("network", name); err != nil {
				return nil, err
			}
			return struct{}{}, s.b.DeleteNetwork(r.Context(), name)
		}},

		{"GET /v1/images", func(r *http.Request) (any, error) { return s.b.Images(r.Context()) }},
		{"PUT /v1/images/{name}", func(r *http.Request) (any, error) {
			name := r.PathValue("name")
			if err := model.ValidateName("image", name); err != nil {
				return nil, err
			}
			return s.b.ImportImage(r.Context(), name, r.Body)
		}},
		{"DELETE /v1/images/{name}", func(r *http.Request) (any, error) {
			name := r.PathValue("name")
			if err := model.ValidateName("image", name); err != nil {
				return nil, err
			}
			return struct{}{}, s.b.DeleteImage(r.Context(), name)
		}},

		{"GET /v1/events", func(r *http.Request) (any, error) {
			after, err := intParam(r, "after", 0)
			if err != nil {
				return nil, err
			}
			limit, err := intParam(r, "limit", 0)
			if err != nil {
				return nil, err
			}
			wait := time.Duration(0)
			if w := r.URL.Query().Get("wait"); w != "" {
				if wait, err = time.ParseDuration(w); err != nil || wait < 0 || wait > 5*time.Minute {
					return nil, fmt.Errorf("wait %q: want a duration up to 5m: %w", w, model.ErrInvalid)
				}
			}
			evs, err := s.b.Events(r.Context(), uint64(after), int(limit), wait)
			if evs == nil {
				evs = []api.Event{}
			}
			return evs, err
		}},
	}
}

// withVM validates the {name} of a VM route before calling h.
func withVM(h func(r *http.Request, name string) (any, error)) func(r *http.Request) (any, error) {
	return func(r *http.Request) (any, error) {
		name := r.PathValue("name")
		if err := model.ValidateName("vm", name); err != nil {
			return nil, err
		}
		return h(r, name)
	}
}

func intParam(r *http.Request, key string, def int64) (int64, error) {
	v := r.URL.Query().Get(key)
	if v == "" {
		return def, nil
	}
	n, err := strconv.ParseInt(v, 10, 64)
	if err != nil || n < 0 {
		return 0, fmt.Errorf("%s=%q: want a non-negative number: %w", key, v, model.ErrInvalid)
	}
	return n, nil
}

func boolParam(r *http.Request, key string) (bool, error) {
	v := r.URL.Query().Get(key)
	if v == "" {
		return false, nil
	}
	b, err := strconv.ParseBool(v)
	if err != nil {
		return false, fmt.Errorf("%s=%q: want true or false: %w", key, v, model.ErrInvalid)
	}
	return b, nil
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
	return httpserve.Serve(ctx, ln, s.mux, s.log)
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

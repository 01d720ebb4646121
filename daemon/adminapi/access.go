package adminapi

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"os/user"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"unsafe"

	"github.com/corralhq/corral/internal/errcode"
	"github.com/corralhq/corral/internal/origin"
	"github.com/corralhq/corral/model"
)

// Role is what a client may do. Each route needs one (routeRole); a client
// on the socket has one by its credentials (Access).
type Role int

const (
	RoleNone     Role = iota
	RoleViewer        // reads
	RoleOperator      // creates and operates VMs, networks and images
	RoleAdmin         // everything: hosts, cluster, HA, tokens
)

func (r Role) String() string {
	return [...]string{"none", "viewer", "operator", "admin"}[r]
}

// routeRole is the role a route needs: reads need a viewer, host and
// cluster changes and everything about API tokens an admin, any other
// change an operator. A guest's console
// output is an operator's: guests print secrets there (cloud-init's
// generated passwords, keys).
func routeRole(pattern string) Role {
	method, path, _ := strings.Cut(pattern, " ")
	switch {
	case strings.HasPrefix(path, "/v1/tokens") || strings.HasPrefix(path, "/v1/certificates"):
		return RoleAdmin // who holds which credential is an admin's business
	case path == "/v1/projects/{name}/backup-schedule":
		return RoleOperator // as a VM's backup schedule
	case strings.HasPrefix(path, "/v1/projects") && method != http.MethodGet:
		return RoleAdmin
	case strings.HasPrefix(path, "/v1/backup-targets") && (method != http.MethodGet || strings.HasSuffix(path, "/credentials")):
		return RoleAdmin // where backups go, on every host's file system
	case path == "/v1/cluster/backup":
		return RoleAdmin // the whole state, secrets of backup targets with it
	case strings.HasPrefix(path, "/v1/vms/{name}/console") || path == "/v1/vms/{name}/vnc":
		return RoleOperator // the log, the console itself, the screen
	case method == http.MethodGet:
		return RoleViewer
	case strings.HasPrefix(path, "/v1/hosts") || strings.HasPrefix(path, "/v1/cluster"):
		return RoleAdmin
	}
	return RoleOperator
}

// Access says who may use the socket: root and the members of AdminGID are
// admins, the members of ReadGID viewers, anyone else nothing. A group
// counts when it is the client's primary group or one of its supplementary
// groups as the kernel had them when the client connected (SO_PEERCRED and
// SO_PEERGROUPS), never as /etc/group says now. -1: no such group.
type Access struct {
	AdminGID, ReadGID int
}

// NoGroups: only root may use the socket.
var NoGroups = Access{AdminGID: -1, ReadGID: -1}

// ResolveAccess looks the groups up by name; an empty name, or a group
// that does not exist, is no group ("" for the read group is the default;
// a missing admin group leaves root alone, as the socket's owner).
func ResolveAccess(adminGroup, readGroup string) (Access, error) {
	a := NoGroups
	for _, g := range []struct {
		name string
		gid  *int
		must bool
	}{{adminGroup, &a.AdminGID, false}, {readGroup, &a.ReadGID, true}} {
		if g.name == "" {
			continue
		}
		grp, err := user.LookupGroup(g.name)
		if err != nil {
			if g.must {
				return a, fmt.Errorf("socket_read_group %q: %w", g.name, err)
			}
			continue
		}
		*g.gid, _ = strconv.Atoi(grp.Gid)
	}
	return a, nil
}

// peer is a client: on the socket its credentials and what they allow,
// on the HTTPS API the token it presented.
type peer struct {
	name     string // "uid 1000", "token ci": the audit trail's actor
	uid, gid uint32
	groups   []uint32
	role     Role
	why      string // "root", "group 1001", "token", ...
	// project confines the client to one project (a token's); empty:
	// every project.
	project string
}

func (p peer) String() string { return fmt.Sprintf("%s (%s: %s)", p.name, p.role, p.why) }

// roleOf gives the role of credentials.
func (a Access) roleOf(p *peer) {
	in := func(gid int) bool {
		return gid >= 0 && (p.gid == uint32(gid) || slices.Contains(p.groups, uint32(gid)))
	}
	switch {
	case p.uid == 0:
		p.role, p.why = RoleAdmin, "root"
	case in(a.AdminGID):
		p.role, p.why = RoleAdmin, fmt.Sprintf("group %d", a.AdminGID)
	case in(a.ReadGID):
		p.role, p.why = RoleViewer, fmt.Sprintf("group %d", a.ReadGID)
	default:
		p.role, p.why = RoleNone, "in neither group"
	}
}

type peerKey struct{}

// withPeer puts a Unix connection's peer credentials, and the role they
// give, in its context.
func (a Access) withPeer(ctx context.Context, c net.Conn) context.Context {
	uc, ok := c.(*net.UnixConn)
	if !ok {
		return ctx
	}
	raw, err := uc.SyscallConn()
	if err != nil {
		return ctx
	}
	var p *peer
	raw.Control(func(fd uintptr) {
		cred, err := syscall.GetsockoptUcred(int(fd), syscall.SOL_SOCKET, syscall.SO_PEERCRED)
		if err != nil {
			return
		}
		// Without SO_PEERGROUPS (Linux before 4.13) only the primary
		// group counts.
		groups, _ := peerGroups(int(fd))
		p = &peer{name: "uid " + strconv.FormatUint(uint64(cred.Uid), 10), uid: cred.Uid, gid: cred.Gid, groups: groups}
	})
	if p == nil {
		return ctx
	}
	a.roleOf(p)
	return context.WithValue(ctx, peerKey{}, *p)
}

// soPeerGroups is Linux's SO_PEERGROUPS (4.13+), which package syscall
// does not name.
const soPeerGroups = 59

// peerGroups returns the supplementary groups the peer of a Unix socket
// had when it connected.
func peerGroups(fd int) ([]uint32, error) {
	buf := make([]uint32, 64)
	for {
		n := uint32(len(buf) * 4)
		_, _, e := syscall.Syscall6(syscall.SYS_GETSOCKOPT, uintptr(fd), syscall.SOL_SOCKET, soPeerGroups,
			uintptr(unsafe.Pointer(&buf[0])), uintptr(unsafe.Pointer(&n)), 0)
		switch {
		case e == 0:
			return buf[:n/4], nil
		case e == syscall.ERANGE && int(n/4) > len(buf) && n/4 <= 1<<16:
			buf = make([]uint32, n/4) // the kernel said how many
		default:
			return nil, e
		}
	}
}

// peerIdentity names the client of a request: "uid N" on the socket,
// "token NAME" on the HTTPS API.
func peerIdentity(r *http.Request) string {
	if p, ok := r.Context().Value(peerKey{}).(peer); ok && p.name != "" {
		return p.name
	}
	return r.RemoteAddr
}

// withOrigin gives each request its origin for the audit trail: the
// client's identity, the socket of this host, and a request id (the
// client's X-Request-Id when it is a fair one, else a new one), which every
// answer past the rate limit carries back, refusals included.
// On the socket the source is "socket@HOST", on the HTTPS API
// "api@HOST from ADDRESS" (the client's address and port).
func (s *Server) withOrigin(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		id := r.Header.Get(origin.RequestIDHeader)
		if !origin.ValidRequestID(id) {
			id = origin.NewRequestID()
		}
		w.Header().Set(origin.RequestIDHeader, id)
		source := "socket@" + s.Host
		if r.TLS != nil {
			source = "api@" + s.Host + " from " + r.RemoteAddr
		}
		o := origin.Origin{Actor: peerIdentity(r), Source: source, RequestID: id}
		if o.Check() != nil { // a host name is checked at start; this is belt and braces
			o.Source = "socket"
			if r.TLS != nil {
				o.Source = "api"
			}
		}
		next.ServeHTTP(w, r.WithContext(origin.With(r.Context(), o)))
	})
}

// authorize refuses, with 403 and what was missing, a request whose client
// lacks the role its route needs; nothing runs for it.
func (s *Server) authorize(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		p, ok := r.Context().Value(peerKey{}).(peer)
		if !ok {
			p = peer{role: RoleNone, why: "no credentials"}
		}
		_, pattern := s.mux.Handler(r)
		need := RoleViewer // unknown routes answer 404 to any client
		if _, ok := s.need[pattern]; ok {
			need = s.need[pattern]
		}
		if p.project != "" && pattern != "/" && !projectRoute(pattern) {
			err := fmt.Errorf("%s is confined to project %s: it may use VMs, networks, images, backups, events and its project, not %s %s: %w",
				p, p.project, r.Method, r.URL.Path, model.ErrForbidden)
			writeError(w, errcode.ToAPI(err))
			return
		}
		if p.role < need {
			err := fmt.Errorf("%s may not %s %s: it needs the %s role: %w", p, r.Method, r.URL.Path, need, model.ErrForbidden)
			if p.role == RoleNone && r.TLS == nil {
				err = fmt.Errorf("%s may not use this socket (root, socket_group: admin; socket_read_group: viewer): %w", p, model.ErrForbidden)
			}
			writeError(w, errcode.ToAPI(err))
			return
		}
		next.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), scopeKey{}, p.project)))
	})
}

type scopeKey struct{}

// Scope returns the one project a request's client may use, or "" when
// it may use every project (the socket, tokens without a project). The
// backend filters what it shows and refuses what it is asked by it.
func Scope(ctx context.Context) string {
	s, _ := ctx.Value(scopeKey{}).(string)
	return s
}

// projectRoute reports whether a client confined to a project may use a
// route at all: what a project holds, and reads of itself.
func projectRoute(pattern string) bool {
	method, path, _ := strings.Cut(pattern, " ")
	for _, prefix := range []string{"/v1/vms", "/v1/groups", "/v1/networks", "/v1/images", "/v1/events", "/v1/status", "/v1/whoami", "/v1/openapi.json", "/v1/backups"} {
		if path == prefix || strings.HasPrefix(path, prefix+"/") {
			return true
		}
	}
	// The backup targets, to back its VMs up to; its VMs' backup schedule.
	return method == http.MethodGet && (strings.HasPrefix(path, "/v1/projects") || path == "/v1/backup-targets") ||
		path == "/v1/projects/{name}/backup-schedule"
}

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
	"github.com/corralhq/corral/internal/origin"
	"github.com/corralhq/corral/internal/version"
	"github.com/corralhq/corral/internal/wsconsole"
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
	ClusterBackup(ctx context.Context) (api.ClusterBackup, error)
	Recovery(ctx context.Context) (*api.Recovery, error)
	EndRecovery(ctx context.Context, req api.RecoveryEndRequest) error
	// Balance runs a round of the leader's balancer (a plan, or applied).
	Balance(ctx context.Context, req api.BalanceRequest) (api.BalanceResult, error)
	JoinTokens(ctx context.Context) ([]api.JoinToken, error)
	CreateJoinToken(ctx context.Context, req api.JoinTokenCreateRequest) (api.JoinTokenCreated, error)
	RevokeJoinToken(ctx context.Context, id string) error
	APITokens(ctx context.Context) ([]api.APIToken, error)
	CreateAPIToken(ctx context.Context, req api.APITokenCreateRequest) (api.APITokenCreated, error)
	RevokeAPIToken(ctx context.Context, name string) error
	CreateCertificate(ctx context.Context, req api.CertificateCreateRequest) (api.CertificateCreated, error)
	Projects(ctx context.Context) ([]api.Project, error)
	Project(ctx context.Context, name string) (api.Project, error)
	CreateProject(ctx context.Context, req api.ProjectCreateRequest) (api.Project, error)
	SetProjectQuota(ctx context.Context, name string, q api.Quota) (api.Project, error)
	// SetProjectBackupSchedule sets a project's backup schedule to a
	// target (an empty one removes it); it answers once this host's copy
	// shows the change.
	SetProjectBackupSchedule(ctx context.Context, name string, req api.BackupScheduleRequest) (api.Project, error)
	DeleteProject(ctx context.Context, name string) error
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
	// AttachConsole attaches to a running VM's serial console, wherever
	// it runs; write asks to be the session that types.
	AttachConsole(ctx context.Context, name string, write bool) (wsconsole.Session, error)
	// AttachDisplay opens a running VM's graphical display (the RFB
	// stream of its VNC server), wherever it runs.
	AttachDisplay(ctx context.Context, name string) (io.ReadWriteCloser, error)
	VMStats(ctx context.Context, name string) (api.VMStats, error)
	// Snapshots of a VM's disks: a stopped VM's is ready at once, a
	// running guest's creating until its host has taken it.
	Snapshots(ctx context.Context, name string) ([]api.Snapshot, error)
	CreateSnapshot(ctx context.Context, name string, req api.SnapshotCreateRequest) (api.Snapshot, error)
	RevertSnapshot(ctx context.Context, name, snapshot string) (api.VM, error)
	DeleteSnapshot(ctx context.Context, name, snapshot string) (api.VM, error)
	// SetSnapshotSchedule sets a VM's snapshot schedule (an empty one
	// removes it); it answers once this host's copy shows the change.
	SetSnapshotSchedule(ctx context.Context, name string, req api.SnapshotScheduleRequest) (api.VM, error)
	// Backups: targets (an admin's), a VM's backup job (BackupVM answers
	// with it once recorded; its host copies the disks), the catalog of
	// complete backups, and restores as new VMs.
	BackupTargets(ctx context.Context) ([]api.BackupTarget, error)
	CreateBackupTarget(ctx context.Context, req api.BackupTargetCreateRequest) (api.BackupTarget, error)
	// BackupTargetCredentials returns an S3 target's keys (an admin's).
	BackupTargetCredentials(ctx context.Context, name string) (api.S3Credentials, error)
	DeleteBackupTarget(ctx context.Context, name string, force bool) (api.BackupTarget, error)
	BackupVM(ctx context.Context, name string, req api.VMBackupRequest) (api.BackupJob, error)
	Backups(ctx context.Context, vm, target string) ([]api.Backup, error)
	Backup(ctx context.Context, id string) (api.Backup, error)
	DeleteBackup(ctx context.Context, id string) (api.Backup, error)
	RestoreBackup(ctx context.Context, id string, req api.RestoreRequest) (api.VM, error)
	// SetBackupSchedule sets a VM's backup schedule to a target (an empty
	// one removes it); it answers once this host's copy shows the change.
	SetBackupSchedule(ctx context.Context, name string, req api.BackupScheduleRequest) (api.VM, error)

	Networks(ctx context.Context) ([]api.Network, error)
	CreateNetwork(ctx context.Context, req api.NetworkCreateRequest) (api.Network, error)
	DeleteNetwork(ctx context.Context, name string) error

	Images(ctx context.Context) ([]api.Image, error)
	ImportImage(ctx context.Context, name, project string, body io.Reader) (api.Image, error)
	DeleteImage(ctx context.Context, name string) error

	Groups(ctx context.Context) ([]api.Group, error)
	Group(ctx context.Context, name string) (api.Group, error)
	CreateGroup(ctx context.Context, req api.GroupCreateRequest) (api.Group, error)
	ScaleGroup(ctx context.Context, name string, count int) (api.Group, error)
	DeleteGroup(ctx context.Context, name string, keepVMs bool) error
	UpdateGroup(ctx context.Context, name string, req api.GroupUpdateRequest) (api.Group, error)
	RollbackGroup(ctx context.Context, name string) (api.Group, error)
	SetGroupAutoscale(ctx context.Context, name string, a *api.Autoscale) (api.Group, error)

	Events(ctx context.Context, after uint64, limit int, wait time.Duration) ([]api.Event, error)
}

const maxBody = 1 << 20

// Server is the admin API.
type Server struct {
	// Access says who may use the socket; set it before Serve (New: root
	// only).
	Access Access
	// RateLimit is the requests a second each client may send (0: no
	// limit; New: DefaultRateLimit).
	RateLimit float64
	// Host names this host in the audit trail: a request through its
	// socket has the source "socket@Host".
	Host string
	// Tokens finds the live API token whose secret a client of the HTTPS
	// API presents (ServeAPI); nil: none is.
	Tokens func(secret string) (model.APIToken, bool)
	// Certificates finds the live credential of a client certificate by
	// its fingerprint; nil: none is.
	Certificates func(fingerprint string) (model.APIToken, bool)
	// Portal, when set, serves the web portal on the HTTPS API for the
	// requests PortalServes picks, without credentials (the page asks the
	// user for a token and sends it with every API call).
	Portal       http.Handler
	PortalServes func(*http.Request) bool
	b            Backend
	log          *slog.Logger
	mux          *http.ServeMux
	need         map[string]Role // by route pattern
}

type route struct {
	pattern string
	doc     doc
	handle  func(r *http.Request) (any, error)
}

// doc describes a route for the OpenAPI document (openapi.go): every route
// has one, so the document cannot miss a route or name one that is not
// served.
type doc struct {
	summary string
	in, out any // zero values of the request and response bodies; in nil: none
	query   []param
	// stream: with Accept: text/event-stream the route answers as
	// Server-Sent Events, one event per element of out.
	stream bool
}

// param is a query parameter.
type param struct{ name, typ, help string }

var (
	qForce   = param{"force", "boolean", "see the summary"}
	qKeepVMs = param{"keep_vms", "boolean", "keep the members as VMs of no group"}
	qBytes   = param{"bytes", "integer", "how much of the log's end (default 65536)"}
	qAfter   = param{"after", "integer", "events after this sequence number"}
	qLimit   = param{"limit", "integer", "at most this many events (0: the server's limit)"}
	qWait    = param{"wait", "string", "a Go duration up to 5m: wait that long for a new event when none is there"}
	qProject = param{"project", "string", "the project to hold it (default: the caller's token's, else default)"}
	qWrite   = param{"write", "boolean", "ask to be the session that types (one at a time; the others read)"}
	qVM      = param{"vm", "string", "only this VM's (by name)"}
	qTarget  = param{"target", "string", "only those on this backup target"}
)

// rawBody marks a request body that is raw bytes, not JSON.
type rawBody struct{}

// New returns a Server for b.
func New(b Backend, log *slog.Logger) *Server {
	s := &Server{Access: NoGroups, RateLimit: DefaultRateLimit, b: b, log: log, mux: http.NewServeMux(), need: map[string]Role{}}
	routes := s.routes()
	for _, rt := range append(routes, openAPIRoute) {
		s.need[rt.pattern] = routeRole(rt.pattern)
	}
	for _, rt := range routes {
		h := s.wrap(rt.handle)
		if rt.doc.stream {
			h = s.streamOr(h)
		}
		s.mux.Handle(rt.pattern, h)
	}
	doc, err := openAPI(append(routes, openAPIRoute), version.Version)
	if err != nil {
		// The route table is code: a test builds the document, so this is
		// a bug caught before release, and the API serves on without it.
		log.Error("no OpenAPI document", "err", err)
		doc = []byte("{}")
	}
	s.mux.Handle(openAPIRoute.pattern, serveOpenAPI(doc))
	s.mux.Handle("/", s.wrap(func(r *http.Request) (any, error) {
		return nil, fmt.Errorf("no route for %s %s: %w", r.Method, r.URL.Path, model.ErrNotFound)
	}))
	return s
}

func (s *Server) routes() []route {
	return []route{
		{"GET /v1/status", doc{summary: "this host, its Raft node, the leader, HA, lease and protocols", out: api.Status{}}, func(r *http.Request) (any, error) { return s.b.Status(r.Context()) }},
		{"GET /v1/hosts", doc{summary: "the hosts in cluster state and gossip", out: []api.Host{}}, func(r *http.Request) (any, error) { return s.b.Hosts(r.Context()) }},
		{"GET /v1/hosts/{name}", doc{summary: "one host", out: api.Host{}}, func(r *http.Request) (any, error) {
			name, err := hostName(r)
			if err != nil {
				return nil, err
			}
			return s.b.Host(r.Context(), name)
		}},
		{"PUT /v1/hosts/{name}/labels", doc{summary: "set and remove host labels", in: api.HostLabelsRequest{}, out: api.Host{}}, func(r *http.Request) (any, error) {
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
		{"DELETE /v1/hosts/{name}", doc{summary: "remove a host from state (force: a fenced host owning VMs)", out: struct{}{}, query: []param{qForce}}, func(r *http.Request) (any, error) {
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
		{"POST /v1/hosts/{name}/drain", doc{summary: "live-migrate every VM away and put the host in maintenance", out: api.Host{}}, func(r *http.Request) (any, error) {
			name, err := hostName(r)
			if err != nil {
				return nil, err
			}
			return s.b.DrainHost(r.Context(), name)
		}},
		{"POST /v1/hosts/{name}/restore", doc{summary: "return a host in maintenance to service (failback: move its VMs back)", in: api.HostRestoreRequest{}, out: api.Host{}}, func(r *http.Request) (any, error) {
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
		{"POST /v1/cluster/balance", doc{summary: "a round of the leader's balancer toward a goal (spread: even memory use; consolidate: empty the least used hosts, keeping N+1): the moves it plans and why, and with apply=true the first ones started as live migrations within the budget; never while HA is disarmed or a recovery, drain or migration is under way", in: api.BalanceRequest{}, out: api.BalanceResult{}}, func(r *http.Request) (any, error) {
			var req api.BalanceRequest
			if err := decode(r, &req); err != nil {
				return nil, err
			}
			return s.b.Balance(r.Context(), req)
		}},
		{"PUT /v1/cluster/ha", doc{summary: "arm or disarm fencing and recovery", in: api.HARequest{}, out: api.Status{}}, func(r *http.Request) (any, error) {
			var req api.HARequest
			if err := decode(r, &req); err != nil {
				return nil, err
			}
			return s.b.SetHA(r.Context(), req)
		}},
		{"GET /v1/cluster/backup", doc{summary: "a consistent copy of the cluster's state, for corrald recover --from (admin: it holds the secret keys of S3 backup targets)", out: api.ClusterBackup{}}, func(r *http.Request) (any, error) {
			return s.b.ClusterBackup(r.Context())
		}},
		{"GET /v1/cluster/recovery", doc{summary: "the recovery from a backup of the cluster's state under way (null when none): hosts waited for, guests adopted and unknown", out: api.Recovery{}}, func(r *http.Request) (any, error) {
			return s.b.Recovery(r.Context())
		}},
		{"POST /v1/cluster/recovery/end", doc{summary: "end a recovery: unknown guests are then removed by their hosts; force ends it while hosts are waited for (they must run no guest)", in: api.RecoveryEndRequest{}, out: struct{}{}}, func(r *http.Request) (any, error) {
			var req api.RecoveryEndRequest
			if r.ContentLength != 0 {
				if err := decode(r, &req); err != nil {
					return nil, err
				}
			}
			return struct{}{}, s.b.EndRecovery(r.Context(), req)
		}},
		{"POST /v1/cluster/gossip-key/rotate", doc{summary: "rotate the gossip encryption key on every live host", out: api.GossipKeyRotation{}}, func(r *http.Request) (any, error) { return s.b.RotateGossipKey(r.Context()) }},
		{"GET /v1/cluster/tokens", doc{summary: "join tokens (never their secrets)", out: []api.JoinToken{}}, func(r *http.Request) (any, error) { return s.b.JoinTokens(r.Context()) }},
		{"POST /v1/cluster/tokens", doc{summary: "create a join token; its secret is in this answer only", in: api.JoinTokenCreateRequest{}, out: api.JoinTokenCreated{}}, func(r *http.Request) (any, error) {
			var req api.JoinTokenCreateRequest
			if r.ContentLength != 0 {
				if err := decode(r, &req); err != nil {
					return nil, err
				}
			}
			return s.b.CreateJoinToken(r.Context(), req)
		}},
		{"DELETE /v1/cluster/tokens/{id}", doc{summary: "revoke a join token", out: struct{}{}}, func(r *http.Request) (any, error) {
			return struct{}{}, s.b.RevokeJoinToken(r.Context(), r.PathValue("id"))
		}},

		{"GET /v1/whoami", doc{summary: "who a request is made as: its actor in the audit trail, its role, its source", out: api.Whoami{}}, func(r *http.Request) (any, error) {
			p, _ := r.Context().Value(peerKey{}).(peer)
			o, _ := origin.From(r.Context())
			return api.Whoami{Actor: o.Actor, Role: p.role.String(), Source: o.Source, Project: p.project}, nil
		}},
		{"GET /v1/projects", doc{summary: "projects with their quotas and use (a token of a project sees its own)", out: []api.Project{}}, func(r *http.Request) (any, error) { return s.b.Projects(r.Context()) }},
		{"POST /v1/projects", doc{summary: "create a project", in: api.ProjectCreateRequest{}, out: api.Project{}}, func(r *http.Request) (any, error) {
			var req api.ProjectCreateRequest
			if err := decode(r, &req); err != nil {
				return nil, err
			}
			return s.b.CreateProject(r.Context(), req)
		}},
		{"GET /v1/projects/{name}", doc{summary: "one project, its quota and what its VMs take", out: api.Project{}}, func(r *http.Request) (any, error) {
			name, err := projectName(r)
			if err != nil {
				return nil, err
			}
			return s.b.Project(r.Context(), name)
		}},
		{"PUT /v1/projects/{name}/backup-schedule", doc{summary: "set a project's backup schedule to a target (as a VM's, e.g. \"daily 02:00 keep 7 daily 4 weekly\"): each VM of the project without a backup schedule of its own, now or created later, follows it as if it were its own (the VM shows it as the project's); a VM's own schedule replaces it, and removing the VM's own gives it back; an empty schedule removes the project's (the VMs following it then have none; their backups stay)", in: api.BackupScheduleRequest{}, out: api.Project{}}, func(r *http.Request) (any, error) {
			name, err := projectName(r)
			if err != nil {
				return nil, err
			}
			var req api.BackupScheduleRequest
			if err := decode(r, &req); err != nil {
				return nil, err
			}
			if err := validBackupSchedule(req); err != nil {
				return nil, err
			}
			return s.b.SetProjectBackupSchedule(r.Context(), name, req)
		}},
		{"PUT /v1/projects/{name}/quota", doc{summary: "set a project's quota (0: no limit); a lower one refuses only growth", in: api.Quota{}, out: api.Project{}}, func(r *http.Request) (any, error) {
			name, err := projectName(r)
			if err != nil {
				return nil, err
			}
			var q api.Quota
			if err := decode(r, &q); err != nil {
				return nil, err
			}
			return s.b.SetProjectQuota(r.Context(), name, q)
		}},
		{"DELETE /v1/projects/{name}", doc{summary: "remove a project that holds nothing", out: struct{}{}}, func(r *http.Request) (any, error) {
			name, err := projectName(r)
			if err != nil {
				return nil, err
			}
			return struct{}{}, s.b.DeleteProject(r.Context(), name)
		}},
		{"GET /v1/tokens", doc{summary: "API tokens (never their secrets)", out: []api.APIToken{}}, func(r *http.Request) (any, error) { return s.b.APITokens(r.Context()) }},
		{"POST /v1/tokens", doc{summary: "create an API token; its secret is in this answer only", in: api.APITokenCreateRequest{}, out: api.APITokenCreated{}}, func(r *http.Request) (any, error) {
			var req api.APITokenCreateRequest
			if err := decode(r, &req); err != nil {
				return nil, err
			}
			return s.b.CreateAPIToken(r.Context(), req)
		}},
		{"POST /v1/certificates", doc{summary: "have the cluster CA sign a client certificate for the HTTPS API (revoke it as a token)", in: api.CertificateCreateRequest{}, out: api.CertificateCreated{}}, func(r *http.Request) (any, error) {
			var req api.CertificateCreateRequest
			if err := decode(r, &req); err != nil {
				return nil, err
			}
			return s.b.CreateCertificate(r.Context(), req)
		}},
		{"DELETE /v1/tokens/{name}", doc{summary: "revoke an API token or client certificate: every host refuses it once it has applied the revocation", out: struct{}{}}, func(r *http.Request) (any, error) {
			name := r.PathValue("name")
			if err := model.ValidateName("token", name); err != nil {
				return nil, err
			}
			return struct{}{}, s.b.RevokeAPIToken(r.Context(), name)
		}},

		{"GET /v1/vms", doc{summary: "every VM in cluster state", out: []api.VM{}}, func(r *http.Request) (any, error) { return s.b.VMs(r.Context()) }},
		{"POST /v1/vms/{name}/migrate", doc{summary: "live-migrate a VM (to target, or where placement says)", in: api.VMMigrateRequest{}, out: api.VM{}}, withVM(func(r *http.Request, name string) (any, error) {
			var req api.VMMigrateRequest
			if r.ContentLength != 0 {
				if err := decode(r, &req); err != nil {
					return nil, err
				}
			}
			return s.b.MigrateVM(r.Context(), name, req)
		})},
		{"POST /v1/vms", doc{summary: "create a VM", in: api.VMCreateRequest{}, out: api.VM{}}, func(r *http.Request) (any, error) {
			var req api.VMCreateRequest
			if err := decode(r, &req); err != nil {
				return nil, err
			}
			return s.b.CreateVM(r.Context(), req)
		}},
		{"GET /v1/vms/{name}", doc{summary: "one VM", out: api.VM{}}, withVM(func(r *http.Request, name string) (any, error) { return s.b.VM(r.Context(), name) })},
		{"POST /v1/vms/{name}/start", doc{summary: "power a VM on", out: api.VM{}}, withVM(func(r *http.Request, name string) (any, error) { return s.b.SetVMPower(r.Context(), name, "running") })},
		{"POST /v1/vms/{name}/stop", doc{summary: "power a VM off (ACPI, then destroy after guest_shutdown_timeout)", out: api.VM{}}, withVM(func(r *http.Request, name string) (any, error) { return s.b.SetVMPower(r.Context(), name, "stopped") })},
		{"POST /v1/vms/{name}/restart", doc{summary: "restart a VM where it runs", out: api.VM{}}, withVM(func(r *http.Request, name string) (any, error) { return s.b.RestartVM(r.Context(), name) })},
		{"PUT /v1/vms/{name}/resize", doc{summary: "change a VM's vCPUs and memory (applied at its next start)", in: api.VMResizeRequest{}, out: api.VM{}}, withVM(func(r *http.Request, name string) (any, error) {
			var req api.VMResizeRequest
			if err := decode(r, &req); err != nil {
				return nil, err
			}
			return s.b.ResizeVM(r.Context(), name, req)
		})},
		{"DELETE /v1/vms/{name}", doc{summary: "delete a VM: its host destroys it and deletes its disks (force: forget it at once, disks stay)", out: api.VM{}, query: []param{qForce}}, withVM(func(r *http.Request, name string) (any, error) {
			force, err := boolParam(r, "force")
			if err != nil {
				return nil, err
			}
			return s.b.DeleteVM(r.Context(), name, force)
		})},
		{"GET /v1/vms/{name}/snapshots", doc{summary: "a VM's snapshots, oldest first", out: []api.Snapshot{}}, withVM(func(r *http.Request, name string) (any, error) { return s.b.Snapshots(r.Context(), name) })},
		{"POST /v1/vms/{name}/snapshots", doc{summary: "snapshot all of a VM's disks: a stopped VM's snapshot is ready at once; a running guest's is creating until its host has moved the guest's disks onto a new layer (its file systems frozen by its guest agent if one answers, else crash-consistent), and is gone if the host failed to (a snapshot-failed event says why)", in: api.SnapshotCreateRequest{}, out: api.Snapshot{}}, withVM(func(r *http.Request, name string) (any, error) {
			var req api.SnapshotCreateRequest
			if err := decode(r, &req); err != nil {
				return nil, err
			}
			if err := model.ValidateName("snapshot", req.Name); err != nil {
				return nil, err
			}
			return s.b.CreateSnapshot(r.Context(), name, req)
		})},
		{"POST /v1/vms/{name}/snapshots/{snapshot}/revert", doc{summary: "put a VM's disks back to a snapshot: the writes since are lost (unless another snapshot holds them); a running guest is powered off and started again on the snapshot's disks", out: api.VM{}}, withSnapshot(func(r *http.Request, name, snapshot string) (any, error) {
			return s.b.RevertSnapshot(r.Context(), name, snapshot)
		})},
		{"DELETE /v1/vms/{name}/snapshots/{snapshot}", doc{summary: "remove a snapshot; its host deletes the disk layers nothing uses any more", out: api.VM{}}, withSnapshot(func(r *http.Request, name, snapshot string) (any, error) {
			return s.b.DeleteSnapshot(r.Context(), name, snapshot)
		})},
		{"PUT /v1/vms/{name}/snapshot-schedule", doc{summary: "set a VM's snapshot schedule, \"WHEN keep RETENTION\": WHEN is hourly, daily [HH:MM] (UTC) or every DURATION (10s to 30 days); RETENTION counts, each followed by last (the default), daily or weekly (e.g. \"hourly keep 24\", \"daily 02:00 keep 7 daily 4 weekly\", \"every 15m keep 4\"). The leader takes a snapshot named auto-YYYYMMDD-HHMMSS at each slot and removes the scheduled ones the schedule no longer keeps (never the VM's other snapshots); an empty schedule removes the schedule (its snapshots stay)", in: api.SnapshotScheduleRequest{}, out: api.VM{}}, withVM(func(r *http.Request, name string) (any, error) {
			var req api.SnapshotScheduleRequest
			if err := decode(r, &req); err != nil {
				return nil, err
			}
			if err := validSchedule(req.Schedule); err != nil {
				return nil, err
			}
			return s.b.SetSnapshotSchedule(r.Context(), name, req)
		})},
		{"PUT /v1/vms/{name}/backup-schedule", doc{summary: "set a VM's backup schedule to a target (the schedule as a snapshot schedule's, e.g. \"daily 02:00 keep 7 daily 4 weekly\"): the leader starts a backup at each slot (incremental where it can build on one) and removes the backups the schedule made that it no longer keeps (never one a kept backup builds on, nor the newest); an empty schedule removes the schedule (its backups stay)", in: api.BackupScheduleRequest{}, out: api.VM{}}, withVM(func(r *http.Request, name string) (any, error) {
			var req api.BackupScheduleRequest
			if err := decode(r, &req); err != nil {
				return nil, err
			}
			if err := validBackupSchedule(req); err != nil {
				return nil, err
			}
			return s.b.SetBackupSchedule(r.Context(), name, req)
		})},
		{"POST /v1/vms/{name}/backup", doc{summary: "back a VM up to a target while it runs: the leader snapshots its disks and the VM's host copies that frozen state as content-addressed chunks; incremental (only what the guest wrote since) when an earlier backup of it to the target can be built on, unless full; answers with the job (the VM shows it while under way), which is retried twice after a failure (backup-failed events say why) and is in the catalog once complete", in: api.VMBackupRequest{}, out: api.BackupJob{}}, withVM(func(r *http.Request, name string) (any, error) {
			var req api.VMBackupRequest
			if err := decode(r, &req); err != nil {
				return nil, err
			}
			if err := model.ValidateName("backup target", req.Target); err != nil {
				return nil, err
			}
			if req.BytesPerSec < 0 {
				return nil, fmt.Errorf("bytes_per_s %d: want 0 (no limit) or more: %w", req.BytesPerSec, model.ErrInvalid)
			}
			return s.b.BackupVM(r.Context(), name, req)
		})},
		{"GET /v1/backup-targets", doc{summary: "backup targets", out: []api.BackupTarget{}}, func(r *http.Request) (any, error) { return s.b.BackupTargets(r.Context()) }},
		{"POST /v1/backup-targets", doc{summary: "add a backup target: a directory with the same path on every host (local disk, or NFS shared by the hosts), or a bucket (which must exist) of S3-compatible object storage", in: api.BackupTargetCreateRequest{}, out: api.BackupTarget{}}, func(r *http.Request) (any, error) {
			var req api.BackupTargetCreateRequest
			if err := decode(r, &req); err != nil {
				return nil, err
			}
			t := model.BackupTarget{Name: req.Name, Dir: req.Dir}
			if s3 := req.S3; s3 != nil {
				t.S3 = &model.S3Target{Endpoint: s3.Endpoint, Bucket: s3.Bucket, Prefix: s3.Prefix, Region: s3.Region, AccessKey: s3.AccessKey, SecretKey: s3.SecretKey, Insecure: s3.Insecure}
			}
			if err := t.Validate(); err != nil {
				return nil, err
			}
			return s.b.CreateBackupTarget(r.Context(), req)
		}},
		{"GET /v1/backup-targets/{name}/credentials", doc{summary: "an S3 target's access and secret keys (admins only)", out: api.S3Credentials{}}, func(r *http.Request) (any, error) {
			name := r.PathValue("name")
			if err := model.ValidateName("backup target", name); err != nil {
				return nil, err
			}
			return s.b.BackupTargetCredentials(r.Context(), name)
		}},
		{"DELETE /v1/backup-targets/{name}", doc{summary: "remove a backup target (never while a backup or restore uses it); its files stay; one that holds backups only with force, which drops them from the catalog", out: api.BackupTarget{}, query: []param{qForce}}, func(r *http.Request) (any, error) {
			name := r.PathValue("name")
			if err := model.ValidateName("backup target", name); err != nil {
				return nil, err
			}
			force, err := boolParam(r, "force")
			if err != nil {
				return nil, err
			}
			return s.b.DeleteBackupTarget(r.Context(), name, force)
		}},
		{"GET /v1/backups", doc{summary: "complete backups, newest first (a token of a project sees its project's)", out: []api.Backup{}, query: []param{qVM, qTarget}}, func(r *http.Request) (any, error) {
			q := r.URL.Query()
			vm, target := q.Get("vm"), q.Get("target")
			if vm != "" {
				if err := model.ValidateName("vm", vm); err != nil {
					return nil, err
				}
			}
			if target != "" {
				if err := model.ValidateName("backup target", target); err != nil {
					return nil, err
				}
			}
			return s.b.Backups(r.Context(), vm, target)
		}},
		{"GET /v1/backups/{id}", doc{summary: "one complete backup", out: api.Backup{}}, withBackup(func(r *http.Request, id string) (any, error) { return s.b.Backup(r.Context(), id) })},
		{"DELETE /v1/backups/{id}", doc{summary: "remove a backup from the catalog (not one another builds on); the leader then deletes from its target what no other backup needs", out: api.Backup{}}, withBackup(func(r *http.Request, id string) (any, error) { return s.b.DeleteBackup(r.Context(), id) })},
		{"POST /v1/backups/{id}/restore", doc{summary: "restore a backup as a new VM in the backup's project, placed as any new VM, or in place over the stopped VM it was taken of: its host writes the disks from the backup's chain (the VM's message says how far), then starts it unless stopped", in: api.RestoreRequest{}, out: api.VM{}}, withBackup(func(r *http.Request, id string) (any, error) {
			var req api.RestoreRequest
			if err := decode(r, &req); err != nil {
				return nil, err
			}
			if req.InPlace && req.As != "" {
				return nil, fmt.Errorf("restore: as and in_place exclude each other: %w", model.ErrInvalid)
			}
			if !req.InPlace {
				if err := model.ValidateName("vm", req.As); err != nil {
					return nil, err
				}
			}
			return s.b.RestoreBackup(r.Context(), id, req)
		})},
		{"GET /v1/groups", doc{summary: "VM groups with their members", out: []api.Group{}}, func(r *http.Request) (any, error) { return s.b.Groups(r.Context()) }},
		{"POST /v1/groups", doc{summary: "create a group: the leader keeps count members, NAME-1 ... NAME-N, spread over the hosts", in: api.GroupCreateRequest{}, out: api.Group{}}, func(r *http.Request) (any, error) {
			var req api.GroupCreateRequest
			if err := decode(r, &req); err != nil {
				return nil, err
			}
			return s.b.CreateGroup(r.Context(), req)
		}},
		{"GET /v1/groups/{name}", doc{summary: "one group and its members", out: api.Group{}}, func(r *http.Request) (any, error) {
			name, err := groupName(r)
			if err != nil {
				return nil, err
			}
			return s.b.Group(r.Context(), name)
		}},
		{"PUT /v1/groups/{name}/count", doc{summary: "scale a group: missing members are created lowest index first, surplus ones deleted highest first", in: api.GroupScaleRequest{}, out: api.Group{}}, func(r *http.Request) (any, error) {
			name, err := groupName(r)
			if err != nil {
				return nil, err
			}
			var req api.GroupScaleRequest
			if err := decode(r, &req); err != nil {
				return nil, err
			}
			return s.b.ScaleGroup(r.Context(), name, req.Count)
		}},
		{"PUT /v1/groups/{name}/template", doc{summary: "a new template for a group's members, rolled out batch by batch: new members start before as many old ones go; a failing new member pauses it", in: api.GroupUpdateRequest{}, out: api.Group{}}, func(r *http.Request) (any, error) {
			name, err := groupName(r)
			if err != nil {
				return nil, err
			}
			var req api.GroupUpdateRequest
			if err := decode(r, &req); err != nil {
				return nil, err
			}
			return s.b.UpdateGroup(r.Context(), name, req)
		}},
		{"POST /v1/groups/{name}/rollback", doc{summary: "roll the template before the last change out again (resumes a paused roll-out)", out: api.Group{}}, func(r *http.Request) (any, error) {
			name, err := groupName(r)
			if err != nil {
				return nil, err
			}
			return s.b.RollbackGroup(r.Context(), name)
		}},
		{"PUT /v1/groups/{name}/autoscale", doc{summary: "let the leader move a group's count with its members' CPU use, within min..max", in: api.Autoscale{}, out: api.Group{}}, func(r *http.Request) (any, error) {
			name, err := groupName(r)
			if err != nil {
				return nil, err
			}
			var a api.Autoscale
			if err := decode(r, &a); err != nil {
				return nil, err
			}
			return s.b.SetGroupAutoscale(r.Context(), name, &a)
		}},
		{"DELETE /v1/groups/{name}/autoscale", doc{summary: "stop autoscaling a group (its count stays where it is)", out: api.Group{}}, func(r *http.Request) (any, error) {
			name, err := groupName(r)
			if err != nil {
				return nil, err
			}
			return s.b.SetGroupAutoscale(r.Context(), name, nil)
		}},
		{"DELETE /v1/groups/{name}", doc{summary: "remove a group and delete its members (keep_vms: they stay, in no group)", out: struct{}{}, query: []param{qKeepVMs}}, func(r *http.Request) (any, error) {
			name, err := groupName(r)
			if err != nil {
				return nil, err
			}
			keep, err := boolParam(r, "keep_vms")
			if err != nil {
				return nil, err
			}
			return struct{}{}, s.b.DeleteGroup(r.Context(), name, keep)
		}},
		{"GET /v1/vms/{name}/console", doc{summary: "the tail of a VM's serial console log", out: api.ConsoleLog{}, query: []param{qBytes}}, withVM(func(r *http.Request, name string) (any, error) {
			n, err := intParam(r, "bytes", 64<<10)
			if err != nil {
				return nil, err
			}
			return s.b.ConsoleLog(r.Context(), name, n)
		})},
		{"GET /v1/vms/{name}/console/attach", doc{summary: "attach to a running VM's serial console, wherever it runs: a WebSocket whose first message (text) is the ConsoleHello, then binary messages carry the guest's output and, from the one session that may write (write=true, first come), keystrokes; closed with the reason when the guest stops or its host goes away",
			out: api.ConsoleHello{}, query: []param{qWrite}}, withVM(func(r *http.Request, name string) (any, error) {
			write, err := boolParam(r, "write")
			if err != nil {
				return nil, err
			}
			sess, err := s.b.AttachConsole(r.Context(), name, write)
			if err != nil {
				return nil, err
			}
			o, _ := origin.From(r.Context())
			s.log.Info("console attached", "vm", name, "host", sess.Hello().Host, "writer", sess.Hello().Writer, "actor", o.Actor, "source", o.Source)
			return upgrade{sess: sess}, nil
		})},
		{"GET /v1/vms/{name}/vnc", doc{summary: "a running VM's graphical display, wherever it runs: a WebSocket (subprotocol corral.vnc) whose binary messages carry the RFB (VNC) protocol of the guest's VGA screen, as noVNC speaks it; closed with the reason when the guest stops or its host goes away", out: ""},
			withVM(func(r *http.Request, name string) (any, error) {
				conn, err := s.b.AttachDisplay(r.Context(), name)
				if err != nil {
					return nil, err
				}
				o, _ := origin.From(r.Context())
				s.log.Info("display attached", "vm", name, "actor", o.Actor, "source", o.Source)
				return upgrade{display: conn}, nil
			})},
		{"GET /v1/vms/{name}/stats", doc{summary: "a VM's libvirt counters from the host it runs on", out: api.VMStats{}}, withVM(func(r *http.Request, name string) (any, error) { return s.b.VMStats(r.Context(), name) })},

		{"GET /v1/networks", doc{summary: "networks, as the answering host set them up", out: []api.Network{}}, func(r *http.Request) (any, error) { return s.b.Networks(r.Context()) }},
		{"POST /v1/networks", doc{summary: "create a VXLAN or VLAN network on every host", in: api.NetworkCreateRequest{}, out: api.Network{}}, func(r *http.Request) (any, error) {
			var req api.NetworkCreateRequest
			if err := decode(r, &req); err != nil {
				return nil, err
			}
			return s.b.CreateNetwork(r.Context(), req)
		}},
		{"DELETE /v1/networks/{name}", doc{summary: "delete a network no VM uses", out: struct{}{}}, func(r *http.Request) (any, error) {
			name := r.PathValue("name")
			if err := model.ValidateName("network", name); err != nil {
				return nil, err
			}
			return struct{}{}, s.b.DeleteNetwork(r.Context(), name)
		}},

		{"GET /v1/images", doc{summary: "images in the shared image store", out: []api.Image{}}, func(r *http.Request) (any, error) { return s.b.Images(r.Context()) }},
		{"PUT /v1/images/{name}", doc{summary: "import an image: the body is the disk image itself (qcow2 or raw)", in: rawBody{}, out: api.Image{}, query: []param{qProject}}, func(r *http.Request) (any, error) {
			name := r.PathValue("name")
			if err := model.ValidateName("image", name); err != nil {
				return nil, err
			}
			project := r.URL.Query().Get("project")
			if err := model.ValidProjectRef(project); err != nil {
				return nil, err
			}
			return s.b.ImportImage(r.Context(), name, project, r.Body)
		}},
		{"DELETE /v1/images/{name}", doc{summary: "delete an image no VM uses", out: struct{}{}}, func(r *http.Request) (any, error) {
			name := r.PathValue("name")
			if err := model.ValidateName("image", name); err != nil {
				return nil, err
			}
			return struct{}{}, s.b.DeleteImage(r.Context(), name)
		}},

		{"GET /v1/events", doc{summary: "cluster events after a sequence number, optionally waiting for new ones", out: []api.Event{}, query: []param{qAfter, qLimit, qWait}, stream: true}, func(r *http.Request) (any, error) {
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

// streamOr answers a request for Server-Sent Events with the event stream,
// any other with h.
func (s *Server) streamOr(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if wantsStream(r) {
			s.streamEvents(w, r)
			return
		}
		h.ServeHTTP(w, r)
	})
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

// withSnapshot validates the {name} and {snapshot} of a snapshot route
// before calling h.
func withSnapshot(h func(r *http.Request, name, snapshot string) (any, error)) func(r *http.Request) (any, error) {
	return withVM(func(r *http.Request, name string) (any, error) {
		snapshot := r.PathValue("snapshot")
		if err := model.ValidateName("snapshot", snapshot); err != nil {
			return nil, err
		}
		return h(r, name, snapshot)
	})
}

// validSchedule checks a schedule's text (model.ParseSchedule); empty
// removes a schedule.
func validSchedule(text string) error {
	if text == "" {
		return nil
	}
	_, err := model.ParseSchedule(text)
	return err
}

// validBackupSchedule checks the body of a VM's or a project's
// backup-schedule route: a schedule (model.ParseSchedule) needs a target;
// an empty one removes the schedule.
func validBackupSchedule(req api.BackupScheduleRequest) error {
	if err := validSchedule(req.Schedule); err != nil {
		return err
	}
	switch {
	case req.Schedule != "" && req.Target == "":
		return fmt.Errorf("a backup schedule needs a target: %w", model.ErrInvalid)
	case req.Target != "":
		return model.ValidateName("backup target", req.Target)
	}
	return nil
}

// withBackup validates the {id} of a backup route before calling h.
func withBackup(h func(r *http.Request, id string) (any, error)) func(r *http.Request) (any, error) {
	return func(r *http.Request) (any, error) {
		id := r.PathValue("id")
		if err := model.ValidateBackupID(id); err != nil {
			return nil, err
		}
		return h(r, id)
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

func projectName(r *http.Request) (string, error) {
	name := r.PathValue("name")
	return name, model.ValidateName("project", name)
}

func groupName(r *http.Request) (string, error) {
	name := r.PathValue("name")
	return name, model.ValidateName("group", name)
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

// upgrade is a route's answer that takes the connection over: a console
// session or a display carried over a WebSocket.
type upgrade struct {
	sess    wsconsole.Session
	display io.ReadWriteCloser
}

func (s *Server) wrap(h func(r *http.Request) (any, error)) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		resp, err := h(r)
		if u, ok := resp.(upgrade); ok && err == nil {
			if u.display != nil {
				wsconsole.ServeDisplay(w, r, u.display, s.log)
			} else {
				wsconsole.Serve(w, r, u.sess, s.log)
			}
			return
		}
		w.Header().Set("Content-Type", "application/json")
		if err != nil {
			e := errcode.ToAPI(err)
			if e.Code == api.CodeInternal {
				s.log.Error("admin request failed", "method", r.Method, "path", r.URL.Path, "err", err)
			}
			writeError(w, e)
			return
		}
		json.NewEncoder(w).Encode(resp)
	})
}

func writeError(w http.ResponseWriter, e *api.Error) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(e.Code.Status())
	json.NewEncoder(w).Encode(e)
}

// Handler returns the HTTP handler without the socket's access control,
// for tests.
func (s *Server) Handler() http.Handler { return s.mux }

// Limits on the admin socket: 256 requests in flight in all (long-polls
// included); each client (a uid, from the socket's peer credentials) may
// send Server.RateLimit requests a second, bursts of twice that.
var Limits = httpserve.Limits{MaxInFlight: 256, Identity: peerIdentity}

// DefaultRateLimit is Server.RateLimit's default (api_rate_limit): enough
// for any script that waits for its answers.
const DefaultRateLimit = 200

// Serve answers on ln until ctx ends; a cancelled ctx is a clean stop.
// Each client gets the role its credentials give (s.Access).
func (s *Server) Serve(ctx context.Context, ln net.Listener) error {
	lim := Limits
	lim.ConnContext = s.Access.withPeer
	lim.Rate, lim.Burst = s.RateLimit, int(2*s.RateLimit)
	return httpserve.Serve(ctx, ln, s.withOrigin(s.authorize(s.mux)), s.log, lim)
}

// ErrAlreadyRunning is returned by Listen when another daemon answers on
// the socket.
var ErrAlreadyRunning = errors.New("another corrald is answering on the socket")

// Listen opens the admin socket at path: it refuses when another daemon
// answers there, removes a stale socket, listens, and sets mode 0660 and
// group (when that group exists). With open set (a socket_read_group is
// configured) the mode is 0666: any user may connect, and the role check
// (Access) refuses everything to those in neither group.
func Listen(path, group string, open bool) (net.Listener, error) {
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
	mode := os.FileMode(0o660)
	if open {
		mode = 0o666
	}
	if err := os.Chmod(path, mode); err != nil {
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

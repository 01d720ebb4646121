package api

import "time"

// RaftStatus summarizes this host's Raft node.
type RaftStatus struct {
	State        string    `json:"state"` // Leader, Follower, Candidate, Shutdown
	Term         uint64    `json:"term"`
	LastIndex    uint64    `json:"last_index"`
	CommitIndex  uint64    `json:"commit_index"`
	AppliedIndex uint64    `json:"applied_index"`
	LastContact  time.Time `json:"last_contact,omitzero"`
}

// Status is the answer to GET /v1/status.
type Status struct {
	Host    string `json:"host"`
	Version string `json:"version"`
	// Leader is the name of the Raft leader, empty while there is none.
	Leader    string     `json:"leader"`
	Raft      RaftStatus `json:"raft"`
	Voters    []string   `json:"voters"`
	Nonvoters []string   `json:"nonvoters"`
	// Members counts hosts by gossip state.
	Members map[string]int `json:"members"`
	// Joined is false while this host is still looking for its seeds.
	Joined bool `json:"joined"`
	// HAArmed: fencing and recovery are on (corralctl cluster ha).
	HAArmed bool `json:"ha_armed"`
	// Lease is this host's own lease: held (valid), fencing (expired, guests
	// destroyed) or none; LeaseRemainingMs is what is left of it.
	Lease            string `json:"lease"`
	LeaseRemainingMs int64  `json:"lease_remaining_ms"`
	// Fencer is this host's fencer (corral-fencer): armed (it kills the
	// guests when the lease ends, even without corrald), released, fenced,
	// unreachable, or none (fencer_socket is empty).
	Fencer string `json:"fencer"`
	// Exposures: what leaves this host's cluster plane open to anyone who
	// reaches its ports (no TLS, no gossip key); empty when none.
	Exposures []string `json:"exposures,omitempty"`
	// Protocol is the cluster protocol recorded in state: features up to
	// it are in use, and no host below it is registered or starts.
	// HostsProtocol is the lowest protocol of the hosts in state (the
	// leader raises Protocol to it); ThisProtocol is this corrald's.
	Protocol      int `json:"protocol"`
	HostsProtocol int `json:"hosts_protocol"`
	ThisProtocol  int `json:"this_protocol"`
	// API is this host's HTTPS API (api_addr) and the SHA-256 fingerprint
	// of its certificate, which `corralctl remote add` pins; empty when
	// api_addr is off.
	API            string `json:"api,omitempty"`
	APIFingerprint string `json:"api_fingerprint,omitempty"`
	// Recovery says what a cluster recovered from a backup of its state
	// still waits for (corralctl cluster recovery); empty when none.
	Recovery string `json:"recovery,omitempty"`
}

// Capacity is what a host offers to guests.
type Capacity struct {
	VCPUs     int   `json:"vcpus"`
	MemoryMiB int64 `json:"memory_mib"`
}

// HostAddresses are the endpoints of a host.
type HostAddresses struct {
	Advertise string `json:"advertise"`
	Gossip    string `json:"gossip,omitempty"`
	Raft      string `json:"raft,omitempty"`
	RPC       string `json:"rpc,omitempty"`
}

// Host is one host as this daemon sees it: cluster state merged with its
// local gossip view.
type Host struct {
	Name      string        `json:"name"`
	Addresses HostAddresses `json:"addresses"`
	// Gossip is alive, dead or left as seen by the answering host, or
	// unknown for a host in cluster state it has not heard from.
	Gossip      string    `json:"gossip"`
	GossipSince time.Time `json:"gossip_since,omitzero"`
	// RaftRole is leader, voter, nonvoter or none.
	RaftRole string `json:"raft_role"`
	Version  string `json:"version"`
	// Protocol is the cluster protocol the host's corrald speaks, as last
	// registered (or gossiped, before it is).
	Protocol int               `json:"protocol"`
	Capacity Capacity          `json:"capacity"`
	Labels   map[string]string `json:"labels,omitempty"`
	// Mode is active, maintenance or fenced; empty while the leader has
	// not recorded the host yet.
	Mode         string    `json:"mode"`
	RegisteredAt time.Time `json:"registered_at,omitzero"`
	// Lease is the leader's view of the host's lease: ok, late (renewals
	// missing, suspected), or unknown (no leader to ask); LeaseAgeMs is the
	// time since its last renewal reached the leader.
	Lease       string    `json:"lease"`
	LeaseAgeMs  int64     `json:"lease_age_ms"`
	Draining    bool      `json:"draining,omitempty"`
	FencedAt    time.Time `json:"fenced_at,omitzero"`
	FenceReason string    `json:"fence_reason,omitempty"`
	// StoppedAt: corrald on the host stopped cleanly then and has not
	// renewed its lease since; its guests keep running there.
	StoppedAt time.Time `json:"stopped_at,omitzero"`
	// Health is the host's hardware health (ok, degraded, failing) and why.
	Health        string   `json:"health"`
	HealthReasons []string `json:"health_reasons,omitempty"`
	// Allocatable is what placement may use (capacity less the reserve,
	// times overcommit); Allocated is what the VMs placed there take.
	Allocatable Capacity `json:"allocatable"`
	Allocated   Capacity `json:"allocated"`
	VMs         int      `json:"vms"`
	// Usage as the host last gossiped it.
	CPUPercent int `json:"cpu_percent"`
	// PowerWatts is the host's power draw; PowerSource says whether a
	// sensor or the CPU packages' RAPL counters measured it or it is
	// estimated from CPU use (sensor, rapl, estimate).
	PowerWatts         int    `json:"power_watts,omitempty"`
	PowerSource        string `json:"power_source,omitempty"`
	MemoryAvailableMiB int64  `json:"memory_available_mib"`
}

// HostRestoreRequest is the body of POST /v1/hosts/{name}/restore.
type HostRestoreRequest struct {
	Failback bool `json:"failback,omitempty"`
}

// VMMigrateRequest is the body of POST /v1/vms/{name}/migrate.
type VMMigrateRequest struct {
	Target string `json:"target,omitempty"`
}

// HARequest is the body of PUT /v1/cluster/ha.
type HARequest struct {
	Armed bool `json:"armed"`
}

// JoinToken describes a join token; its secret is shown once, when it is
// created, and never stored.
type JoinToken struct {
	ID          string    `json:"id"`
	Description string    `json:"description,omitempty"`
	Created     time.Time `json:"created"`
	Expires     time.Time `json:"expires"`
	Expired     bool      `json:"expired,omitempty"`
}

// JoinTokenCreateRequest is the body of POST /v1/cluster/tokens.
type JoinTokenCreateRequest struct {
	// TTL is how long the token admits hosts (Go duration, default 24h,
	// at most 720h).
	TTL         string `json:"ttl,omitempty"`
	Description string `json:"description,omitempty"`
}

// JoinTokenCreated is a new join token: Token is the whole text a host puts
// in join_token.
type JoinTokenCreated struct {
	JoinToken
	Token string `json:"token"`
}

// Project groups VMs, networks and images under quotas; Usage is what its
// VMs take now.
type Project struct {
	Name        string    `json:"name"`
	Description string    `json:"description,omitempty"`
	Quota       Quota     `json:"quota"`
	Usage       Usage     `json:"usage"`
	CreatedAt   time.Time `json:"created_at,omitzero"`
	// BackupSchedule is the project's backup schedule ("daily 02:00 keep
	// 7"), if it has one, to BackupTarget: each of its VMs without a
	// schedule of its own follows it (VM.BackupScheduleFrom).
	BackupSchedule string `json:"backup_schedule,omitempty"`
	BackupTarget   string `json:"backup_target,omitempty"`
}

// Quota bounds a project's VMs, counted whatever their power state; 0 is
// no limit.
type Quota struct {
	VCPUs     int   `json:"vcpus"`
	MemoryMiB int64 `json:"memory_mib"`
	DiskGiB   int64 `json:"disk_gib"`
	VMs       int   `json:"vms"`
}

// Usage is what a project's VMs take.
type Usage struct {
	VCPUs     int   `json:"vcpus"`
	MemoryMiB int64 `json:"memory_mib"`
	DiskMiB   int64 `json:"disk_mib"`
	VMs       int   `json:"vms"`
}

// ProjectCreateRequest is the body of POST /v1/projects.
type ProjectCreateRequest struct {
	Name        string `json:"name"`
	Description string `json:"description,omitempty"`
	Quota       Quota  `json:"quota"`
}

// Whoami is the answer of GET /v1/whoami.
type Whoami struct {
	// Actor names the client in the audit trail: "uid 1000" on the
	// socket, "token ci" on the HTTPS API.
	Actor string `json:"actor"`
	// Role is viewer, operator or admin.
	Role string `json:"role"`
	// Source is where the request came in: "socket@h1", "api@h1 from
	// 192.0.2.7:51234".
	Source string `json:"source"`
	// Project is the one project the client may use; empty: every one.
	Project string `json:"project,omitempty"`
}

// APIToken describes an API token; its secret is shown once, when it is
// created, and never stored.
type APIToken struct {
	Name      string    `json:"name"`
	Role      string    `json:"role"`
	Created   time.Time `json:"created"`
	Expires   time.Time `json:"expires,omitzero"` // zero: never
	Expired   bool      `json:"expired,omitempty"`
	CreatedBy string    `json:"created_by,omitempty"`
	Project   string    `json:"project,omitempty"` // empty: every project
	// Kind is empty for a bearer token, "certificate" for a client
	// certificate (Fingerprint is then its SHA-256).
	Kind        string `json:"kind,omitempty"`
	Fingerprint string `json:"fingerprint,omitempty"`
}

// CertificateCreateRequest is the body of POST /v1/certificates: a
// certificate request the client made with its own key (which never
// leaves it), for "user:NAME".
type CertificateCreateRequest struct {
	Name    string `json:"name"`
	Role    string `json:"role"`
	Project string `json:"project,omitempty"`
	// Expires: a duration or days, at most 365d (default 90d).
	Expires string `json:"expires,omitempty"`
	CSR     string `json:"csr"`
}

// CertificateCreated is a new client certificate, its CA, and its record.
type CertificateCreated struct {
	APIToken
	Certificate string `json:"certificate"`
	CA          string `json:"ca"`
}

// APITokenCreateRequest is the body of POST /v1/tokens.
type APITokenCreateRequest struct {
	Name string `json:"name"`
	// Project confines a viewer or operator token to one project.
	Project string `json:"project,omitempty"`
	// Role is viewer, operator or admin.
	Role string `json:"role"`
	// Expires is the token's lifetime: a Go duration or a number of days
	// ("90d"); empty: it never expires.
	Expires string `json:"expires,omitempty"`
}

// APITokenCreated is a new API token: Token is the secret a client sends
// as "Authorization: Bearer TOKEN". This answer is the only place it is
// ever shown.
type APITokenCreated struct {
	APIToken
	Token string `json:"token"`
}

// GossipKeyRotation is the answer of POST /v1/cluster/gossip-key/rotate:
// the new key's fingerprint and the hosts that took every step.
type GossipKeyRotation struct {
	Key     string   `json:"key"`
	Hosts   []string `json:"hosts"`
	Seconds float64  `json:"seconds"`
}

// HostLabelsRequest is the body of PUT /v1/hosts/{name}/labels.
type HostLabelsRequest struct {
	Set    map[string]string `json:"set,omitempty"`
	Remove []string          `json:"remove,omitempty"`
}

// Network is a corral network (a bridge on every host).
type Network struct {
	Name   string `json:"name"`
	Kind   string `json:"kind"` // vxlan or vlan
	VNI    int    `json:"vni,omitempty"`
	VLAN   int    `json:"vlan,omitempty"`
	Uplink string `json:"uplink,omitempty"`
	MTU    int    `json:"mtu,omitempty"`
	// Bridge is the bridge's name on every host.
	Bridge    string    `json:"bridge"`
	CreatedAt time.Time `json:"created_at"`
	// LocalOK and LocalError: how the answering host set it up.
	LocalOK    bool   `json:"local_ok"`
	LocalError string `json:"local_error,omitempty"`
	Project    string `json:"project"`
}

// NetworkCreateRequest is the body of POST /v1/networks.
type NetworkCreateRequest struct {
	Name   string `json:"name"`
	Kind   string `json:"kind"`
	VNI    int    `json:"vni,omitempty"`
	VLAN   int    `json:"vlan,omitempty"`
	Uplink string `json:"uplink,omitempty"`
	MTU    int    `json:"mtu,omitempty"`
	// Project holds the network (empty: the caller's token's, else default).
	Project string `json:"project,omitempty"`
}

// BalanceRequest is the body of POST /v1/cluster/balance: a round of the
// leader's balancer toward Goal (spread, consolidate; "": the configured
// one); with Apply it starts the first moves, else it only plans.
type BalanceRequest struct {
	Goal  string `json:"goal,omitempty"`
	Apply bool   `json:"apply,omitempty"`
}

// BalanceMove is a planned live migration (Cold: a stopped VM's placement).
type BalanceMove struct {
	VM   string `json:"vm"`
	From string `json:"from"`
	To   string `json:"to"`
	Cold bool   `json:"cold,omitempty"`
	Why  string `json:"why"`
}

// BalanceResult is a balancer round: its plan (the moves, the hosts a
// consolidation empties, notes on what does not move and why), why the
// balancer would not act now (Blocked), and the moves it started.
type BalanceResult struct {
	Goal    string        `json:"goal"`
	Moves   []BalanceMove `json:"moves"`
	Freed   []string      `json:"freed,omitempty"`
	Notes   []string      `json:"notes,omitempty"`
	Blocked string        `json:"blocked,omitempty"`
	Started []string      `json:"started,omitempty"`
}

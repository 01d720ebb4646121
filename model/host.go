package model

import (
	"fmt"
	"net"
	"time"
)

// HostMode is the operator-visible mode of a host in cluster state.
type HostMode string

const (
	// ModeActive hosts run guests and receive new placements.
	ModeActive HostMode = "active"
	// ModeMaintenance hosts receive no new placements; their guests are
	// drained away.
	ModeMaintenance HostMode = "maintenance"
	// ModeFenced hosts were declared dead; they own no guests until they
	// return and are reactivated.
	ModeFenced HostMode = "fenced"
	// ModeStandby hosts were emptied and powered off on purpose (the
	// balancer's consolidation): no VM is placed there, and their silence
	// is no failure (raftlog.FeatureBalance).
	ModeStandby HostMode = "standby"
)

// Valid reports whether m is one of the known modes.
func (m HostMode) Valid() bool {
	switch m {
	case ModeActive, ModeMaintenance, ModeFenced, ModeStandby:
		return true
	}
	return false
}

// HealthState is a host's hardware health.
type HealthState string

const (
	HealthOK       HealthState = "ok"
	HealthDegraded HealthState = "degraded"
	HealthFailing  HealthState = "failing"
)

// Health is a host's hardware health with the reasons for it.
type Health struct {
	State   HealthState `json:"state"`
	Reasons []string    `json:"reasons,omitempty"`
}

// Capacity is what a host offers to guests.
type Capacity struct {
	VCPUs     int   `json:"vcpus"`
	MemoryMiB int64 `json:"memory_mib"`
}

// Host is a physical host as recorded in cluster state.
type Host struct {
	Name     string            `json:"name"`
	Addr     string            `json:"addr"`      // advertise IP address
	RaftAddr string            `json:"raft_addr"` // host:port of the Raft transport
	RPCAddr  string            `json:"rpc_addr"`  // host:port of the cluster RPC
	Version  string            `json:"version"`
	Labels   map[string]string `json:"labels,omitempty"`
	Capacity Capacity          `json:"capacity"`
	Health   Health            `json:"health"`
	Mode     HostMode          `json:"mode"`
	// RegisteredAt is when the leader first recorded the host (leader's
	// wall clock, chosen before the Raft entry was written).
	RegisteredAt time.Time `json:"registered_at"`
	// FencedAt and FenceReason say when and why the leader declared the
	// host dead (mode fenced).
	FencedAt    time.Time `json:"fenced_at,omitzero"`
	FenceReason string    `json:"fence_reason,omitempty"`
	// Draining: the leader is live-migrating the host's VMs away.
	Draining bool `json:"draining,omitempty"`
	// StoppedAt: corrald on this host stopped cleanly then (leader's wall
	// clock) and has not renewed its lease since. Its guests keep running
	// there, so an expired lease does not mean they are gone; cleared by
	// its next renewal.
	StoppedAt time.Time `json:"stopped_at,omitzero"`
	// Protocol is the cluster protocol (raftlog.Protocol) the host's
	// corrald gossiped when last registered; 0 means 1 (a corrald from
	// before protocols gossips none).
	Protocol int `json:"protocol,omitempty"`
}

// Cluster holds cluster-wide settings kept in state.
type Cluster struct {
	// HADisarmed pauses fencing and recovery (for cluster-wide network
	// work): the leader declares no host dead, hosts do not self-fence.
	HADisarmed bool `json:"ha_disarmed,omitempty"`
	// HAChangedAt is when HA was last armed or disarmed (leader's clock).
	HAChangedAt time.Time `json:"ha_changed_at,omitzero"`
	// JoinTokens are the join tokens a new host may present (at most
	// MaxJoinTokens; expired ones are dropped when a token is added).
	JoinTokens []JoinToken `json:"join_tokens,omitempty"`
	// Revoked lists removed hosts: a certificate for Name issued at or
	// before Before is refused everywhere. Kept for RevocationKeep, longer
	// than any host certificate lives; one entry per name.
	Revoked []RevokedHost `json:"revoked,omitempty"`
	// GossipKeys is the gossip keyring every host holds, the key in use
	// first; empty until the first rotation (each host's identity holds the
	// one it joined with). A secret: never shown by the admin API.
	GossipKeys [][]byte `json:"gossip_keys,omitempty"`
	// APITokens are the tokens a client of the HTTPS API may present (at
	// most MaxAPITokens; expired ones are dropped when a token is added).
	APITokens []APIToken `json:"api_tokens,omitempty"`
	// Projects are the projects besides an unconfigured default (sorted by
	// name; at most MaxProjects). DefaultProject appears once given a
	// quota or a backup schedule.
	Projects []Project `json:"projects,omitempty"`
	// Groups are the VM groups (sorted by name; at most MaxGroups;
	// raftlog.FeatureGroups).
	Groups []Group `json:"groups,omitempty"`
	// BackupTargets are where backups go (sorted by name; at most
	// MaxBackupTargets); Backups the catalog of complete backups (sorted by
	// ID; at most MaxBackups). raftlog.FeatureBackups.
	BackupTargets []BackupTarget `json:"backup_targets,omitempty"`
	Backups       []Backup       `json:"backups,omitempty"`
	// Protocol is the cluster protocol (raftlog.SetProtocol): every host
	// ran at least this one when the leader raised it, and it is never
	// lowered. 0 means 1.
	Protocol int `json:"protocol,omitempty"`
	// Recovery is set while a cluster recovered from a backup of its
	// state adopts the guests its hosts run (raftlog.FeatureRecovery).
	Recovery *Recovery `json:"recovery,omitempty"`
}

// RevokedHost is a removed host whose certificates are revoked.
type RevokedHost struct {
	Name   string    `json:"name"`
	Before time.Time `json:"before"`
}

// RevocationKeep is how long a revocation is kept: beyond it, every
// certificate it covers has expired.
const RevocationKeep = 400 * 24 * time.Hour

// IsRevoked reports whether a certificate for name issued at issued is
// revoked.
func (c Cluster) IsRevoked(name string, issued time.Time) bool {
	for _, r := range c.Revoked {
		if r.Name == name && !issued.After(r.Before) {
			return true
		}
	}
	return false
}

// MaxJoinTokens bounds the join tokens the cluster keeps.
const MaxJoinTokens = 64

// JoinToken is what the cluster keeps of a join token: its ID, a hash of
// its secret (never the secret), and when it expires.
type JoinToken struct {
	ID          string    `json:"id"`
	Hash        string    `json:"hash"`
	Description string    `json:"description,omitempty"`
	Created     time.Time `json:"created"`
	Expires     time.Time `json:"expires"`
}

// Validate checks a token record's form.
func (t JoinToken) Validate() error {
	if !IsLowerHex(t.ID, 12) || !IsLowerHex(t.Hash, 64) {
		return fmt.Errorf("join token: malformed id or hash: %w", ErrInvalid)
	}
	if len(t.Description) > 256 {
		return fmt.Errorf("join token: description of %d bytes, at most 256: %w", len(t.Description), ErrInvalid)
	}
	if !t.Expires.After(t.Created) {
		return fmt.Errorf("join token: expires before it is created: %w", ErrInvalid)
	}
	return nil
}

// IsLowerHex reports whether s is n lower-case hex digits.
func IsLowerHex(s string, n int) bool {
	if len(s) != n {
		return false
	}
	for _, c := range s {
		if !('0' <= c && c <= '9' || 'a' <= c && c <= 'f') {
			return false
		}
	}
	return true
}

// Clone returns a deep copy of h.
func (h Host) Clone() Host {
	h.Labels = CloneLabels(h.Labels)
	h.Health.Reasons = append([]string(nil), h.Health.Reasons...)
	return h
}

// Validate checks the fields a host registers with.
func (h Host) Validate() error {
	if err := ValidateHostName(h.Name); err != nil {
		return err
	}
	if net.ParseIP(h.Addr) == nil {
		return fmt.Errorf("host %q: address %q is not an IP address: %w", h.Name, h.Addr, ErrInvalid)
	}
	for _, a := range []struct{ key, val string }{{"raft_addr", h.RaftAddr}, {"rpc_addr", h.RPCAddr}} {
		if _, _, err := net.SplitHostPort(a.val); err != nil {
			return fmt.Errorf("host %q: %s %q: %v: %w", h.Name, a.key, a.val, err, ErrInvalid)
		}
	}
	if h.Capacity.VCPUs < 0 || h.Capacity.MemoryMiB < 0 {
		return fmt.Errorf("host %q: negative capacity: %w", h.Name, ErrInvalid)
	}
	if h.Mode != "" && !h.Mode.Valid() {
		return fmt.Errorf("host %q: unknown mode %q: %w", h.Name, h.Mode, ErrInvalid)
	}
	return ValidateLabels(h.Labels)
}

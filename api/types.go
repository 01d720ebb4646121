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
	RaftRole string            `json:"raft_role"`
	Version  string            `json:"version"`
	Capacity Capacity          `json:"capacity"`
	Labels   map[string]string `json:"labels,omitempty"`
	// Mode is active, maintenance or fenced; empty while the leader has
	// not recorded the host yet.
	Mode         string    `json:"mode"`
	RegisteredAt time.Time `json:"registered_at,omitzero"`
}

// HostLabelsRequest is the body of PUT /v1/hosts/{name}/labels.
type HostLabelsRequest struct {
	Set    map[string]string `json:"set,omitempty"`
	Remove []string          `json:"remove,omitempty"`
}

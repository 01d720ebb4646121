package model

import "time"

// Event is one step the cluster took, for operators: a VM created, placed,
// crashed, restarted, relocated, failed; later fencing and recovery steps.
type Event struct {
	// Seq is assigned by the state machine: strictly increasing.
	Seq  uint64    `json:"seq"`
	Time time.Time `json:"time"` // chosen by the leader
	// Kind is a short stable word: created, placed, started, stopped,
	// crashed, restarted, relocated, failed, deleted, ...
	Kind    string `json:"kind"`
	Host    string `json:"host,omitempty"`
	VM      string `json:"vm,omitempty"`
	Message string `json:"message,omitempty"`
	// Actor, Source and RequestID: who asked for the operation the event
	// records, from where, under which request id (an operator's through
	// the API; empty for what corral does by itself). Written from
	// cluster protocol 3 (raftlog.FeatureAudit).
	Actor     string `json:"actor,omitempty"`
	Source    string `json:"source,omitempty"`
	RequestID string `json:"request_id,omitempty"`
	// Project is the project of the event's VM (empty: the default
	// project, or no VM); written from cluster protocol 4
	// (raftlog.FeatureProjects).
	Project string `json:"project,omitempty"`
}

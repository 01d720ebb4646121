// Package raftstore runs corral's replicated state: a hashicorp/raft node
// with a raft-wal log store and file snapshots, the FSM holding hosts, VMs
// and networks, and the codec of log entries (one type byte plus a JSON
// body). It is the only importer of hashicorp/raft. See DESIGN.md.
package raftstore

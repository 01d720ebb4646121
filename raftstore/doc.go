// Package raftstore runs corral's replicated state: a hashicorp/raft node
// with a raft-wal log store and file snapshots, and the FSM holding hosts,
// VMs and networks, which applies the commands of package raftlog. It is
// the only importer of hashicorp/raft. See DESIGN.md.
package raftstore

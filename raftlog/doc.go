// Package raftlog is the vocabulary of corral's Raft log: the command types
// that change cluster state, their codec (one type byte plus a JSON body),
// and the Raft configuration as the controller sees it. It imports neither
// hashicorp/raft nor the state machine: the controller writes commands
// without linking Raft, and raftstore applies them.
package raftlog

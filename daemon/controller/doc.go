// Package controller holds the loops that turn cluster state into action.
//
// The leader loop runs on the Raft leader only. It registers hosts that
// gossip reports into cluster state, manages Raft membership (voters up to
// raft_voters, the rest non-voters, promotion when a voter is gone for good),
// and executes the writes that followers forward (validate, then apply through
// Raft). Bootstrap decides, before any Raft cluster exists, which one host
// forms it. See DESIGN.md for the protocols.
package controller

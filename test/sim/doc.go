// Package sim is corral's cluster simulator: hundreds to thousands of hosts
// in one test process, each running the real controller code (the leader
// loop with its liveness and recovery, the host loop, the lease) over the
// real FSM (raftstore.Memory) and the fake hypervisor, on a simulated
// network and clock.
//
// The clock is Go's testing/synctest bubble: time moves only when every
// goroutine of the simulation waits, so a simulated minute of a thousand
// hosts takes as long as the work done in it, not a minute, and no test
// sleeps. What is simulated, and how (see sim_test.go):
//
//   - Raft: one committed log, applied to one shared FSM. Only the current
//     leader commits; a commit costs a replication round trip and an fsync.
//     Elections take Raft's heartbeat timeout plus a random election
//     timeout (corrald's defaults) and pick a voter that is up and on the
//     majority side. The FSM notes renewals when it applies them, which is
//     later than any voter's store time: a later leader waits longer from
//     it, never less.
//   - Network: every call (lease renewal, report, migration result) takes
//     a seeded random LAN delay each way; a partition cuts hosts off; a
//     message to or from a host that is off or cut off is lost and its
//     caller times out.
//   - Gossip: memberlist's failure detection as its code computes it, not
//     memberlist itself: a dead or cut-off host shows dead to the leader
//     after up to a probe interval plus the suspicion timeout
//     (SuspicionMult × log10(n) probe intervals). How fast an update
//     spreads at n hosts is an epidemic estimate (gossipRounds), not
//     measured.
//   - Hosts: each has a fake hypervisor whose starts take 0.4 s (libvirt's,
//     measured) and whose live migrations 0.6 s, and a fencer that kills
//     the host's guests at the deadline of its last armed lease, as
//     corral-fencer does.
//
// The invariant, checked at every guest start and over every host's
// hypervisor every simulated second: no VM runs on two hosts.
//
// Go's scheduler orders goroutines that wake at the same simulated instant,
// so a seed fixes the network's delays and losses and the scenario, not
// every interleaving: two runs of a seed agree in outcome, not event for
// event.
//
// `make sim` runs 1,000 hosts and 50,000 VMs; the test suite runs 200 hosts
// and 10,000 VMs. SIM_LOG=FILE keeps the controllers' warnings.
package sim

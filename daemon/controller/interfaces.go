package controller

import (
	"context"
	"slices"
	"strings"
	"time"

	"github.com/corralhq/corral/internal/clock"
	"github.com/corralhq/corral/model"
	"github.com/corralhq/corral/raftlog"
)

// Store is the replicated state as the controller uses it.
type Store interface {
	Apply(ctx context.Context, c raftlog.Command) (any, error)
	Hosts() []model.Host
	Host(name string) (model.Host, error)
	VMs() []model.VM
	// EachVM calls fn with every VM, in no order, under the state's read
	// lock; fn must neither change the VM nor call the store. See vmsWhere.
	EachVM(fn func(*model.VM))
	VM(name string) (model.VM, error)
	Image(name string) (model.Image, error)
	Network(name string) (model.Network, error)
	Cluster() model.Cluster
	// Watch signals (coalesced) after every change to the state.
	Watch() (<-chan struct{}, func())
}

// Raft is the consensus node as the controller uses it.
type Raft interface {
	IsLeader() bool
	LeaderCh() <-chan bool
	Barrier(ctx context.Context) error
	HasState() bool
	Bootstrap(servers []raftlog.Server) error
	Servers() ([]raftlog.Server, error)
	AddVoter(ctx context.Context, id, addr string) error
	AddNonvoter(ctx context.Context, id, addr string) error
	RemoveServer(ctx context.Context, id string) error
	CommitIndex() uint64
	// PreviousLeader: on the leader, the host that led before it and when
	// this node last heard from it (ok false if unknown).
	PreviousLeader() (id string, lastContact time.Time, ok bool)
	// Renewals: since when this node has applied every lease renewal a
	// leader granted (zero: it cannot tell), and when it applied each
	// host's latest one since then, on its own clock (raftstore).
	Renewals() (since time.Time, at map[string]time.Time)
}

// PeerState is a peer's gossip state.
type PeerState string

const (
	PeerAlive PeerState = "alive"
	PeerDead  PeerState = "dead"
	PeerLeft  PeerState = "left"
)

// Peer is a host as gossip reports it: a hint, checked before use.
type Peer struct {
	Name      string
	State     PeerState
	Since     time.Time // when State last changed (local clock)
	Addr      string    // advertise IP
	RaftAddr  string
	RPCAddr   string
	Version   string
	Capacity  model.Capacity
	Health    model.Health
	InCluster bool // the peer has Raft state
	// Protocol is the cluster protocol the peer's corrald speaks
	// (raftlog.Protocol); 0 from a corrald that predates protocols, which
	// speaks 1.
	Protocol int
}

// Peers is the gossip view.
type Peers interface {
	Peers() []Peer
	Changes() (<-chan struct{}, func())
}

// Clock is the controller's time source. Every wait of the loops (tickers,
// timeouts, retry pauses) goes through the injected Clock, never the time
// package, so tests drive them with internal/clock's Fake instead of
// sleeping, and a simulator can step them deterministically.
type Clock = clock.Clock

// SystemClock is the real clock (the time package).
type SystemClock = clock.Real

// vmsWhere returns copies of the VMs keep accepts, sorted by name. keep
// sees every VM read-only (Store.EachVM): the leader's periodic passes
// look at the few VMs with a backup job, a schedule or a drain under way
// without copying all of them.
func vmsWhere(st Store, keep func(*model.VM) bool) []model.VM {
	var out []model.VM
	st.EachVM(func(v *model.VM) {
		if keep(v) {
			out = append(out, v.Clone())
		}
	})
	slices.SortFunc(out, func(a, b model.VM) int { return strings.Compare(a.Name, b.Name) })
	return out
}

package controller

import (
	"context"
	"fmt"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/corralhq/corral/daemon/placement"
	"github.com/corralhq/corral/internal/notify"
	"github.com/corralhq/corral/model"
	"github.com/corralhq/corral/raftlog"
	"github.com/corralhq/corral/raftstore"
)

// fakeRaft is a Raft configuration in memory plus an in-memory state.
type fakeRaft struct {
	mu       sync.Mutex
	leader   bool
	servers  map[string]raftlog.Server
	hasState bool
	booted   []raftlog.Server
	store    *raftstore.Memory
	leaderCh chan bool
	// PreviousLeader's answer.
	prevLeader  string
	prevContact time.Time
}

func newFakeRaft() *fakeRaft {
	return &fakeRaft{leader: true, servers: map[string]raftlog.Server{}, store: raftstore.NewMemory(), leaderCh: make(chan bool, 1)}
}

func (f *fakeRaft) IsLeader() bool                    { f.mu.Lock(); defer f.mu.Unlock(); return f.leader }
func (f *fakeRaft) LeaderCh() <-chan bool             { return f.leaderCh }
func (f *fakeRaft) Barrier(ctx context.Context) error { return nil }
func (f *fakeRaft) HasState() bool                    { f.mu.Lock(); defer f.mu.Unlock(); return f.hasState }
func (f *fakeRaft) Bootstrap(s []raftlog.Server) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.hasState {
		return fmt.Errorf("already bootstrapped")
	}
	f.hasState, f.booted = true, s
	return nil
}
func (f *fakeRaft) Servers() ([]raftlog.Server, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []raftlog.Server
	for _, s := range f.servers {
		out = append(out, s)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out, nil
}
func (f *fakeRaft) AddVoter(ctx context.Context, id, addr string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.servers[id] = raftlog.Server{ID: id, Address: addr, Voter: true}
	return nil
}
func (f *fakeRaft) AddNonvoter(ctx context.Context, id, addr string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if s, ok := f.servers[id]; ok && s.Voter {
		s.Address = addr
		f.servers[id] = s
		return nil
	}
	f.servers[id] = raftlog.Server{ID: id, Address: addr}
	return nil
}
func (f *fakeRaft) CommitIndex() uint64 { return 42 }

func (f *fakeRaft) PreviousLeader() (string, time.Time, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.prevLeader, f.prevContact, f.prevLeader != ""
}

func (f *fakeRaft) Renewals() (time.Time, map[string]time.Time) { return f.store.Renewals() }

func (f *fakeRaft) RemoveServer(ctx context.Context, id string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	delete(f.servers, id)
	return nil
}

func (f *fakeRaft) roles() (voters, nonvoters []string) {
	ss, _ := f.Servers()
	for _, s := range ss {
		if s.Voter {
			voters = append(voters, s.ID)
		} else {
			nonvoters = append(nonvoters, s.ID)
		}
	}
	return voters, nonvoters
}

// fakePeers is a gossip view set by the test.
type fakePeers struct {
	mu    sync.Mutex
	peers map[string]Peer
	hub   notify.Hub
}

func (f *fakePeers) set(p Peer) {
	f.mu.Lock()
	if f.peers == nil {
		f.peers = map[string]Peer{}
	}
	if p.Protocol == 0 { // a peer of the previous protocol says 1 (it gossips none)
		p.Protocol = raftlog.Protocol
	}
	if p.RaftAddr == "" {
		p.RaftAddr = "10.0.0.1:7947"
		p.RPCAddr = "10.0.0.1:7948"
		p.Addr = "10.0.0.1"
	}
	f.peers[p.Name] = p
	f.mu.Unlock()
	f.hub.Signal()
}

func (f *fakePeers) Peers() []Peer {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []Peer
	for _, p := range f.peers {
		out = append(out, p)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

func (f *fakePeers) Changes() (<-chan struct{}, func()) { return f.hub.Subscribe() }

func setLabels(host, k, v string) raftlog.SetHostLabels {
	return raftlog.SetHostLabels{Name: host, Set: map[string]string{k: v}}
}

func placementOpts() placement.Options {
	return placement.Options{Strategy: placement.Spread, CPUOvercommit: 4, MemoryOvercommit: 1}
}

// countingStore is a Memory store that counts reads of every VM (VMs
// and EachVM).
type countingStore struct {
	*raftstore.Memory
	vmReads atomic.Int64
}

func (s *countingStore) VMs() []model.VM {
	s.vmReads.Add(1)
	return s.Memory.VMs()
}

func (s *countingStore) EachVM(fn func(*model.VM)) {
	s.vmReads.Add(1)
	s.Memory.EachVM(fn)
}

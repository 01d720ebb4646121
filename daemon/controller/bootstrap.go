package controller

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
	"sort"
	"time"

	"github.com/corralhq/corral/raftlog"
)

// BootstrapView is what a host answers when a bootstrap candidate asks
// whether it agrees.
type BootstrapView struct {
	Self string `json:"self"`
	// InCluster: the host already has Raft state.
	InCluster bool `json:"in_cluster"`
	// Candidates are the bootstrap_expect lowest-named alive hosts the
	// answering host sees, or empty while it sees fewer.
	Candidates []string `json:"candidates"`
	Expect     int      `json:"expect"`
}

// Bootstrap forms the Raft cluster exactly once. See DESIGN.md, "Bootstrap".
type Bootstrap struct {
	Self   string
	Expect int
	// Settle is how long the candidate set must stay unchanged before the
	// lowest-named candidate acts.
	Settle time.Duration
	Raft   Raft
	Peers  Peers
	// Ask fetches a peer's view over the cluster RPC.
	Ask   func(ctx context.Context, p Peer) (BootstrapView, error)
	Clock Clock
	Log   *slog.Logger
}

// candidates returns the alive peers that can be voters, sorted by name,
// and whether any of them is already in a cluster.
func (b *Bootstrap) candidates() (cands []Peer, anyInCluster bool) {
	for _, p := range b.Peers.Peers() {
		if p.State != PeerAlive || p.RaftAddr == "" {
			continue
		}
		if p.InCluster {
			anyInCluster = true
		}
		cands = append(cands, p)
	}
	sort.Slice(cands, func(i, j int) bool { return cands[i].Name < cands[j].Name })
	if len(cands) < b.Expect {
		return nil, anyInCluster
	}
	return cands[:b.Expect], anyInCluster
}

func names(ps []Peer) []string {
	out := make([]string, len(ps))
	for i, p := range ps {
		out[i] = p.Name
	}
	return out
}

// View answers a peer's bootstrap query.
func (b *Bootstrap) View() BootstrapView {
	cands, _ := b.candidates()
	return BootstrapView{Self: b.Self, InCluster: b.Raft.HasState(), Candidates: names(cands), Expect: b.Expect}
}

// Run waits until this host is part of a Raft cluster: it had state, some
// peer already forms a cluster (whose leader will add this host), or this
// host is the lowest-named of the first bootstrap_expect hosts and every
// other one of them confirms the same set and has no state, in which case it
// bootstraps them all as voters. It returns nil when done and ctx.Err() never.
func (b *Bootstrap) Run(ctx context.Context) error {
	if b.Raft.HasState() {
		return nil
	}
	changes, stop := b.Peers.Changes()
	defer stop()
	tick := b.Clock.NewTicker(max(b.Settle/2, 50*time.Millisecond))
	defer tick.Stop()
	var (
		last      []string
		lastSince time.Time
		waiting   string
	)
	say := func(msg string, args ...any) {
		if msg != waiting {
			b.Log.Info(msg, args...)
			waiting = msg
		}
	}
	for {
		if b.Raft.HasState() {
			return nil
		}
		cands, inCluster := b.candidates()
		now := b.Clock.Now()
		switch {
		case inCluster:
			say("a peer already runs a cluster; waiting for its leader to add this host")
		case len(cands) == 0:
			say("waiting for hosts before bootstrap", "expect", b.Expect)
		case cands[0].Name != b.Self:
			say("bootstrap is up to another host", "bootstrapper", cands[0].Name)
		case !slices.Equal(names(cands), last):
			last, lastSince = names(cands), now
		case now.Sub(lastSince) >= b.Settle:
			if err := b.confirm(ctx, cands); err != nil {
				b.Log.Info("bootstrap not confirmed yet", "err", err)
				last = nil // start settling again
				break
			}
			servers := make([]raftlog.Server, len(cands))
			for i, p := range cands {
				servers[i] = raftlog.Server{ID: p.Name, Address: p.RaftAddr, Voter: true}
			}
			if err := b.Raft.Bootstrap(servers); err != nil {
				return fmt.Errorf("bootstrap: %w", err)
			}
			b.Log.Info("bootstrapped cluster", "voters", names(cands))
			return nil
		}
		select {
		case <-ctx.Done():
			return nil
		case <-changes:
		case <-tick.C():
		}
	}
}

// confirm asks every other candidate for its view; all must see the same
// candidate set and none may have Raft state.
func (b *Bootstrap) confirm(ctx context.Context, cands []Peer) error {
	want := names(cands)
	for _, p := range cands {
		if p.Name == b.Self {
			continue
		}
		actx, cancel := context.WithTimeout(ctx, 2*time.Second)
		v, err := b.Ask(actx, p)
		cancel()
		if err != nil {
			return fmt.Errorf("ask %s: %w", p.Name, err)
		}
		if v.InCluster {
			return fmt.Errorf("%s already has raft state", p.Name)
		}
		if v.Expect != b.Expect {
			b.Log.Warn("bootstrap_expect differs between hosts", "host", p.Name, "theirs", v.Expect, "ours", b.Expect)
			return fmt.Errorf("%s has bootstrap_expect %d, this host %d", p.Name, v.Expect, b.Expect)
		}
		if !slices.Equal(v.Candidates, want) {
			return fmt.Errorf("%s sees candidates %v, this host %v", p.Name, v.Candidates, want)
		}
	}
	return nil
}

package raftstore

import (
	"context"
	"fmt"
	"io"
	"testing"
	"time"

	"github.com/hashicorp/raft"

	"github.com/corralhq/corral/internal/testutil"
	"github.com/corralhq/corral/raftlog"
)

// slowCommitTiming is fastTiming with a CommitTimeout no test outlives: a
// follower learns of a commit only from an entry sent after it.
func slowCommitTiming() Timing {
	t := fastTiming()
	t.CommitTimeout = time.Hour
	return t
}

func followersOf(stores []*Store, leader *Store) []*Store {
	var out []*Store
	for _, s := range stores {
		if s != leader {
			out = append(out, s)
		}
	}
	return out
}

// An entry the hosts act on reaches the followers' state without waiting
// for another entry or for CommitTimeout: the leader publishes its commit.
func TestCommitsArePublishedToFollowers(t *testing.T) {
	stores := startClusterTiming(t, 3, false, slowCommitTiming())
	leader := waitLeader(t, stores)
	ctx := context.Background()
	for i := range 3 {
		name := fmt.Sprintf("x%d", i)
		if _, err := leader.Apply(ctx, raftlog.RegisterHost{Host: testHost(name)}); err != nil {
			t.Fatal(err)
		}
		for _, f := range followersOf(stores, leader) {
			testutil.Eventually(t, 10*time.Second, func() error {
				_, err := f.Host(name)
				return err
			})
		}
	}
}

// While entries flow, the heartbeats to followers that answer them are held
// back; once the entries stop, the heartbeats go out again and nobody
// calls an election. At corrald's own Raft timing (a 250 ms quiet window
// against 500 ms before a follower stands), so that a test machine's
// scheduling delays do not pass for a lost leader.
func TestHeartbeatsQuietWhileReplicating(t *testing.T) {
	timing := DefaultTiming()
	timing.CommitTimeout = time.Hour
	stores := startClusterTiming(t, 3, false, timing)
	leader := waitLeader(t, stores)
	ctx := context.Background()
	if _, err := leader.Apply(ctx, raftlog.RegisterHost{Host: testHost("h1")}); err != nil {
		t.Fatal(err)
	}
	term := leader.Status().Term
	sameLeader := func() error {
		for _, s := range stores {
			if st := s.Status(); st.Term != term {
				return fmt.Errorf("%s: term %d, was %d: an election", s.cfg.ID, st.Term, term)
			}
		}
		if !leader.IsLeader() {
			return fmt.Errorf("%s lost leadership", leader.cfg.ID)
		}
		return nil
	}
	// Entries every 20 ms (Renewals, which publish nothing) for 2 s, four
	// heartbeat timeouts: the heartbeats every 50-100 ms find fresh answers.
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for end := time.Now().Add(2 * time.Second); time.Now().Before(end); <-tick.C {
		if _, err := leader.Apply(ctx, raftlog.Renewals{Hosts: []string{"h1"}}); err != nil {
			t.Fatal(err)
		}
		if err := sameLeader(); err != nil {
			t.Fatal(err)
		}
	}
	held, sent := leader.quiet.held.Load(), leader.quiet.sent.Load()
	if held == 0 {
		t.Fatal("no heartbeat was held while replication answered")
	}
	// Two followers, raft's heartbeats every 50-100 ms: 40-80 in 2 s. Held,
	// a few go out: the first of each follower before it answered, and one
	// after a hiccup of more than the window.
	if sent > 6 {
		t.Fatalf("%d heartbeats sent while the followers answered entries every 20 ms", sent)
	}
	// No entries for 2 s: with CommitTimeout an hour, only heartbeats keep
	// the followers from an election now.
	for end := time.Now().Add(2 * time.Second); time.Now().Before(end); <-tick.C {
		if err := sameLeader(); err != nil {
			t.Fatal(err)
		}
	}
	if quietSent := leader.quiet.sent.Load() - sent; quietSent < 20 {
		t.Fatalf("only %d heartbeats sent in 2 s without entries", quietSent)
	}
	t.Logf("replicating: %d heartbeats held, %d sent; then %d sent without entries", held, sent, leader.quiet.sent.Load()-sent)
}

// TestVotesSurviveRestartedPeer asks a peer for votes, restarts it on the
// same address and asks again: NetworkTransport's pooled connections to
// the old process are dead, and each vote RPC must still get through.
func TestVotesSurviveRestartedPeer(t *testing.T) {
	addr := fmt.Sprintf("127.0.0.1:%d", testutil.FreePort(t, "127.0.0.1"))
	serve := func() *raft.NetworkTransport {
		tr, err := raft.NewTCPTransport(addr, nil, poolSize, time.Second, io.Discard)
		if err != nil {
			t.Fatal(err)
		}
		go func() {
			for rpc := range tr.Consumer() {
				switch rpc.Command.(type) {
				case *raft.RequestVoteRequest:
					rpc.Respond(&raft.RequestVoteResponse{Granted: true}, nil)
				case *raft.RequestPreVoteRequest:
					rpc.Respond(&raft.RequestPreVoteResponse{Granted: true}, nil)
				default:
					rpc.Respond(nil, fmt.Errorf("unexpected %T", rpc.Command))
				}
			}
		}()
		return tr
	}
	peer := serve()
	client, err := raft.NewTCPTransport("127.0.0.1:0", nil, poolSize, time.Second, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	q := newQuietTransport(client, time.Second)
	ask := func() error {
		var vote raft.RequestVoteResponse
		if err := q.RequestVote("peer", raft.ServerAddress(addr), &raft.RequestVoteRequest{Term: 2}, &vote); err != nil {
			return fmt.Errorf("vote: %w", err)
		}
		var pre raft.RequestPreVoteResponse
		if err := q.RequestPreVote("peer", raft.ServerAddress(addr), &raft.RequestPreVoteRequest{Term: 2}, &pre); err != nil {
			return fmt.Errorf("pre-vote: %w", err)
		}
		if !vote.Granted || !pre.Granted {
			return fmt.Errorf("not granted: %+v %+v", vote, pre)
		}
		return nil
	}
	// Fill the pool: concurrent asks each take a connection of their own.
	errs := make(chan error, poolSize)
	for range poolSize {
		go func() { errs <- ask() }()
	}
	for range poolSize {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	peer.Close()
	peer = serve()
	defer peer.Close()
	for i := range 2 {
		if err := ask(); err != nil {
			t.Fatalf("ask %d after the restart: %v", i+1, err)
		}
	}
}

package raftstore

import (
	"context"
	"fmt"
	"testing"
	"time"

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

// While entries flow, the heartbeats to followers that answered them stay
// home; once the entries stop, the heartbeats go out again and nobody
// calls an election. At corrald's own Raft timing (a 200 ms quiet window
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
	skipped := leader.quiet.skipped.Load()
	if skipped == 0 {
		t.Fatal("no heartbeat was answered from replication")
	}
	// No entries for 2 s: with CommitTimeout an hour, only heartbeats keep
	// the followers from an election now.
	for end := time.Now().Add(2 * time.Second); time.Now().Before(end); <-tick.C {
		if err := sameLeader(); err != nil {
			t.Fatal(err)
		}
	}
	t.Logf("%d heartbeats answered from replication", skipped)
}

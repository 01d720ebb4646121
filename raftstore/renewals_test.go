package raftstore

import (
	"bytes"
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/hashicorp/raft"

	"github.com/corralhq/corral/internal/testutil"
	"github.com/corralhq/corral/raftlog"
)

// TestRenewalsAreKnownToEveryReplica: a committed Renewals entry is noted
// by every replica, each on its own clock and no earlier than the renewal
// was sent, and only once FeatureCommittedLeases is enabled; it changes
// no state and wakes no watcher. A new leader (the old one closed) knows
// the renewals its predecessor committed.
func TestRenewalsAreKnownToEveryReplica(t *testing.T) {
	stores := startCluster(t, 3)
	leader := waitLeader(t, stores)
	ctx := context.Background()
	for _, h := range []string{"h1", "h2", "h3"} {
		if _, err := leader.Apply(ctx, raftlog.RegisterHost{Host: testHost(h)}); err != nil {
			t.Fatal(err)
		}
	}
	// Below the feature a replica cannot tell which renewals it missed.
	if _, err := leader.Apply(ctx, raftlog.Renewals{Hosts: []string{"h2"}}); err != nil {
		t.Fatal(err)
	}
	if since, at := leader.Renewals(); !since.IsZero() || at != nil {
		t.Fatalf("below the feature: since %v, renewals %v", since, at)
	}
	enabled := time.Now()
	if _, err := leader.Apply(ctx, raftlog.SetProtocol{Protocol: raftlog.FeatureCommittedLeases.Since}); err != nil {
		t.Fatal(err)
	}
	for _, s := range stores {
		testutil.Eventually(t, 5*time.Second, func() error {
			if since, _ := s.Renewals(); since.Before(enabled) {
				return fmt.Errorf("%s: known since %v, want after %v", s.cfg.ID, since, enabled)
			}
			return nil
		})
	}
	changes, stop := stores[1].Watch()
	defer stop()
	sent := time.Now()
	// Names not in state are not kept.
	if _, err := leader.Apply(ctx, raftlog.Renewals{Hosts: []string{"h2", "h3", "nosuch"}}); err != nil {
		t.Fatal(err)
	}
	for _, s := range stores {
		testutil.Eventually(t, 5*time.Second, func() error {
			_, at := s.Renewals()
			if at["h2"].Before(sent) || at["h3"].Before(sent) || len(at) != 2 {
				return fmt.Errorf("%s: renewals %v, want h2 and h3 after %v", s.cfg.ID, at, sent)
			}
			return nil
		})
	}
	select {
	case <-changes:
		t.Fatal("a renewal woke a watcher")
	default:
	}

	leader.Close()
	var rest []*Store
	for _, s := range stores {
		if s != leader {
			rest = append(rest, s)
		}
	}
	next := waitLeader(t, rest)
	if err := next.Barrier(ctx); err != nil {
		t.Fatal(err)
	}
	if _, at := next.Renewals(); at["h2"].Before(sent) {
		t.Fatalf("the new leader does not know h2's renewal: %v", at)
	}
}

// TestRestoreForgetsRenewals: a replica that installs a snapshot knows no
// renewal from before it, and counts every one from the restore.
func TestRestoreForgetsRenewals(t *testing.T) {
	f := newFSM(nil)
	applyAll(t, f, raftlog.RegisterHost{Host: testHost("h1")}, raftlog.SetProtocol{Protocol: raftlog.FeatureCommittedLeases.Since}, raftlog.Renewals{Hosts: []string{"h1"}})
	if since, at := f.renewals(); since.IsZero() || at["h1"].IsZero() {
		t.Fatalf("since %v, renewals %v", since, at)
	}
	snap, _ := f.Snapshot()
	var buf bytes.Buffer
	if err := writeSnapshot(&buf, snap.(*fsmSnapshot).state, 0); err != nil {
		t.Fatal(err)
	}
	g := newFSM(nil)
	applyAll(t, g, raftlog.RegisterHost{Host: testHost("h1")}, raftlog.SetProtocol{Protocol: raftlog.FeatureCommittedLeases.Since}, raftlog.Renewals{Hosts: []string{"h1"}})
	_, before := g.renewals()
	restored := time.Now()
	if err := g.Restore(nopCloser{&buf}); err != nil {
		t.Fatal(err)
	}
	since, at := g.renewals()
	if since.Before(restored) || len(at) != 0 || before["h1"].IsZero() {
		t.Fatalf("after restore: since %v (restored at %v), renewals %v", since, restored, at)
	}
}

// TestRenewalCountsFromWhenItWasStored: a renewal counts from when this
// replica stored its entry, not from when it learned it committed; an
// entry it did not see stored counts from its apply; a store always
// counts, even at an index noted before (a new leader's entry replacing
// an old one), since it can only make the note later.
func TestRenewalCountsFromWhenItWasStored(t *testing.T) {
	f := newFSM(nil)
	t0 := time.Unix(1000, 0)
	now := t0
	f.now = func() time.Time { return now }
	applyAll(t, f, raftlog.RegisterHost{Host: testHost("h1")}, raftlog.RegisterHost{Host: testHost("h2")}, raftlog.SetProtocol{Protocol: raftlog.FeatureCommittedLeases.Since})
	entry := func(index uint64, hosts ...string) *raft.Log {
		return &raft.Log{Index: index, Type: raft.LogCommand, Data: raftlog.MustEncode(raftlog.Renewals{Hosts: hosts})}
	}
	at := func(h string) time.Duration { _, a := f.renewals(); return a[h].Sub(t0) }

	now = t0.Add(time.Second)
	f.noteStored([]*raft.Log{entry(10, "h1")})
	now = t0.Add(2 * time.Second)
	f.Apply(entry(10, "h1")) // learned committed later: the store counts
	f.Apply(entry(11, "h2")) // never seen stored (a replay): the apply counts
	if at("h1") != time.Second || at("h2") != 2*time.Second {
		t.Fatalf("h1 at %v (want 1s, its store), h2 at %v (want 2s, its apply)", at("h1"), at("h2"))
	}
	now = t0.Add(3 * time.Second)
	f.noteStored([]*raft.Log{entry(9, "h1")}) // a rewritten index below the note
	if at("h1") != 3*time.Second {
		t.Fatalf("h1 at %v after a store at 3s", at("h1"))
	}
	now = t0.Add(4 * time.Second)
	f.Apply(entry(9, "h1"))
	if at("h1") != 3*time.Second {
		t.Fatalf("h1 at %v: the apply of an entry seen stored moved it", at("h1"))
	}
}

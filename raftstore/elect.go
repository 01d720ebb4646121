package raftstore

import (
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/raft"
)

// Prompt elections (DESIGN.md). A hashicorp/raft follower stands for
// election when its heartbeat timer, re-armed at random between
// HeartbeatTimeout and twice that, fires and finds the leader silent for a
// HeartbeatTimeout. It asks for (pre-)votes, and a follower that still
// knows a leader refuses them ("we have a leader") until its own timer has
// fired the same way; the election therefore waited for the second
// follower's timer, anywhere from 0.5 to about 2 s after a leader died.
//
// promptElections makes the timers' random moments an order instead: a
// follower whose leader has been silent for HeartbeatTimeout plus rank x
// electionStep (its rank among the voters other than the leader, by ID)
// has raft look at its heartbeat now. With three voters, the first
// follower's pre-vote is refused by the second, which still knows the
// leader; an electionStep later the second clears it, asks, and the first,
// which cleared it already, grants: the election ends about
// HeartbeatTimeout + electionStep after the leader's last word. With five,
// the third one asking wins, and so on.
//
// The look is raft's own: ReloadConfig with a shorter HeartbeatTimeout
// makes a follower's timer fire at once, and raft stands only if the
// leader has been silent for a whole HeartbeatTimeout by its own clock
// (the one-millisecond-shorter value is put back straight after). Nothing
// here decides anything raft's timer would not have decided at a moment of
// its choosing; a follower cut off from a leader that lives asks for
// pre-votes the others refuse, as before.

// electionStep is the spacing of the followers' turns.
func electionStep(heartbeat time.Duration) time.Duration { return heartbeat / 5 }

// electionRank is self's place among the voters of conf other than the
// leader, sorted by ID; ok is false when self is not among them.
func electionRank(conf raft.Configuration, self, leader raft.ServerID) (rank int, ok bool) {
	var ids []raft.ServerID
	for _, sv := range conf.Servers {
		if sv.Suffrage == raft.Voter && sv.ID != leader {
			ids = append(ids, sv.ID)
		}
	}
	slices.Sort(ids)
	rank = slices.Index(ids, self)
	return rank, rank >= 0
}

// electionPrompt schedules the looks. Looking on a timer of its own woke
// every follower every 300-500 ms (the leader's silence is never older
// than a renewal interval at a look), and each wake of an idle Go process
// costs it about a millisecond of the runtime spinning down: 0.1 % of a
// core on the lab. So the timer is a dead man's: every batch of entries
// the leader replicates (noteLog.StoreLogs, every renewal interval) pushes
// it back to a HeartbeatTimeout from now, without waking anything, and
// it fires only when entries stop; raft's LastContact, which heartbeats
// refresh too, then says whether the leader is silent.
type electionPrompt struct {
	hb        time.Duration
	following atomic.Bool // the timer runs: this node follows a leader
	mu        sync.Mutex
	timer     *time.Timer
}

func newElectionPrompt(hb time.Duration) *electionPrompt {
	p := &electionPrompt{hb: hb, timer: time.NewTimer(hb)}
	p.timer.Stop()
	return p
}

// heard pushes the next look back to a HeartbeatTimeout from now.
func (p *electionPrompt) heard() {
	if p.following.Load() {
		p.mu.Lock()
		p.timer.Reset(p.hb)
		p.mu.Unlock()
	}
}

func (p *electionPrompt) set(wait time.Duration) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.following.Store(wait > 0)
	if wait > 0 {
		p.timer.Reset(wait)
	} else {
		p.timer.Stop()
	}
}

// promptElections looks at the leader's silence until stop closes: when
// the dead man's timer fires, and whenever the leader changes (leaders). A
// leader, or a follower that knows none, waits for the next change only.
func (s *Store) promptElections(r *raft.Raft, p *electionPrompt, stop <-chan struct{}, leaders <-chan struct{}) {
	defer p.set(0)
	for {
		select {
		case <-stop:
			return
		case <-p.timer.C:
		case <-leaders:
		}
		p.set(s.promptElection(r, p.hb))
	}
}

// promptElection looks once and returns how long to wait before the next
// look (until the leader's silence could make this follower's turn), or 0
// to wait for the next leader change.
func (s *Store) promptElection(r *raft.Raft, hb time.Duration) time.Duration {
	if r.State() != raft.Follower {
		return 0 // a leader or candidate; becoming a follower changes the leader
	}
	_, leader := r.LeaderWithID()
	if leader == "" {
		return 0 // raft's own timer runs the election; no one to wait for
	}
	silent := time.Since(r.LastContact())
	if silent < hb {
		return hb - silent
	}
	f := r.GetConfiguration()
	if f.Error() != nil {
		return hb
	}
	rank, ok := electionRank(f.Configuration(), raft.ServerID(s.cfg.ID), leader)
	if !ok {
		return hb // a non-voter never stands
	}
	turn := hb + time.Duration(rank)*electionStep(hb)
	if silent < turn {
		return turn - silent
	}
	rc := r.ReloadableConfig()
	look := rc
	look.HeartbeatTimeout = rc.HeartbeatTimeout - time.Millisecond
	if err := r.ReloadConfig(look); err != nil {
		s.log.Warn("prompt election", "err", err)
		return hb
	}
	if err := r.ReloadConfig(rc); err != nil {
		s.log.Warn("prompt election: restore heartbeat timeout", "err", err)
	}
	s.log.Info("leader silent, standing for election", "leader", leader, "silent", silent.Round(time.Millisecond), "rank", rank)
	return hb // raft cleared the leader (a change, which wakes the loop), or heard from it again
}

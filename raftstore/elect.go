package raftstore

import (
	"slices"
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

// promptElections looks at the leader's silence until stop closes.
func (s *Store) promptElections(r *raft.Raft, stop <-chan struct{}) {
	hb := s.cfg.Timing.HeartbeatTimeout
	timer := time.NewTimer(hb)
	defer timer.Stop()
	for {
		select {
		case <-stop:
			return
		case <-timer.C:
		}
		timer.Reset(s.promptElection(r, hb))
	}
}

// promptElection looks once and returns how long to wait before the next
// look: until the leader's silence could make this follower's turn.
func (s *Store) promptElection(r *raft.Raft, hb time.Duration) time.Duration {
	if r.State() != raft.Follower {
		return hb
	}
	_, leader := r.LeaderWithID()
	if leader == "" {
		return hb // raft's own timer runs the election; no one to wait for
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
	return hb
}

package raftstore

import (
	"fmt"
	"testing"
	"time"

	"github.com/corralhq/corral/internal/testutil"
)

// The timer figures come from raft itself: a leader samples its followers'
// contact ages, the first election follows a heartbeat timeout, and a
// leader that loses its quorum steps down on the lease timeout.
func TestTimersCountContactAgesAndTimeouts(t *testing.T) {
	before := Timers()
	stores := startCluster(t, 3)
	leader := waitLeader(t, stores)
	testutil.Eventually(t, 5*time.Second, func() error {
		if now := Timers(); now.ContactCount < before.ContactCount+10 || now.HeartbeatTimeouts <= before.HeartbeatTimeouts {
			return fmt.Errorf("contact samples %d -> %d, heartbeat timeouts %d -> %d",
				before.ContactCount, now.ContactCount, before.HeartbeatTimeouts, now.HeartbeatTimeouts)
		}
		return nil
	})
	s := Timers()
	if last := s.ContactCounts[len(s.ContactCounts)-1]; last > s.ContactCount || s.ContactSum > time.Duration(s.ContactCount)*s.ContactMax {
		t.Fatalf("inconsistent histogram: %+v", s)
	}
	for _, st := range stores {
		if st != leader {
			st.Close()
		}
	}
	testutil.Eventually(t, 5*time.Second, func() error {
		if now := Timers(); now.LeaseTimeouts <= before.LeaseTimeouts {
			return fmt.Errorf("no lease timeout counted (leader %v)", leader.IsLeader())
		}
		return nil
	})
}

package daemon

import (
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/corralhq/corral/api"
	"github.com/corralhq/corral/daemon/adminapi"
	"github.com/corralhq/corral/internal/testutil"
)

func TestThreeHostCluster(t *testing.T) {
	tc := newTestCluster(t, 3, []int{0, 1, 2}, nil)
	tc.startAll()
	st := tc.waitConverged(3, 0)
	t.Logf("leader %s voters %v", st.Leader, st.Voters)

	// A write on a follower reaches the leader transparently and is visible
	// everywhere.
	var follower *testHost
	for _, h := range tc.hosts {
		if h.cfg.Name != st.Leader {
			follower = h
			break
		}
	}
	h, err := follower.client.SetHostLabels(ctxT(t), "h1", api.HostLabelsRequest{Set: map[string]string{"rack": "r7"}})
	if err != nil {
		t.Fatal(err)
	}
	if h.Labels["rack"] != "r7" {
		t.Fatalf("labels in reply: %v", h.Labels)
	}
	for _, o := range tc.hosts {
		testutil.Eventually(t, 5*time.Second, func() error {
			h, err := o.client.Host(ctxT(t), "h1")
			if err != nil {
				return err
			}
			if h.Labels["rack"] != "r7" {
				return fmt.Errorf("%s sees labels %v", o.cfg.Name, h.Labels)
			}
			return nil
		})
	}
	// Errors keep their class through the follower -> leader hop.
	_, err = follower.client.SetHostLabels(ctxT(t), "nope", api.HostLabelsRequest{Set: map[string]string{"a": "b"}})
	if !errors.Is(err, api.ErrNotFound) {
		t.Fatalf("label unknown host: %v", err)
	}
	_, err = follower.client.SetHostLabels(ctxT(t), "h1", api.HostLabelsRequest{Set: map[string]string{"BAD": "b"}})
	if !errors.Is(err, api.ErrInvalid) {
		t.Fatalf("bad label: %v", err)
	}
	if _, err := follower.client.Host(ctxT(t), "nope"); !errors.Is(err, api.ErrNotFound) {
		t.Fatalf("show unknown host: %v", err)
	}
}

func TestLeaderStopsNewLeaderAnswers(t *testing.T) {
	tc := newTestCluster(t, 3, []int{0, 1, 2}, nil)
	tc.startAll()
	st := tc.waitConverged(3, 0)
	old := tc.host(st.Leader)
	old.stop()
	var next string
	testutil.Eventually(t, 15*time.Second, func() error {
		for _, h := range tc.running() {
			s, err := h.client.Status(ctxT(t))
			if err != nil {
				return err
			}
			if s.Leader == "" || s.Leader == old.cfg.Name {
				return fmt.Errorf("%s: leader %q", h.cfg.Name, s.Leader)
			}
			next = s.Leader
		}
		return nil
	})
	t.Logf("leader %s stopped, %s took over", old.cfg.Name, next)
	// Writes work through the survivors.
	for _, h := range tc.running() {
		if _, err := h.client.SetHostLabels(ctxT(t), h.cfg.Name, api.HostLabelsRequest{Set: map[string]string{"survivor": "yes"}}); err != nil {
			t.Fatalf("write via %s: %v", h.cfg.Name, err)
		}
	}
	// The old leader restarts with its data dir and rejoins.
	old.start()
	tc.waitConverged(3, 0)
}

func TestFiveHostsThreeVoters(t *testing.T) {
	tc := newTestCluster(t, 5, []int{0, 1, 2}, nil)
	tc.startAll()
	st := tc.waitConverged(3, 2)

	// A voter gone for good: a healthy non-voter takes its seat.
	var victim *testHost
	for _, v := range st.Voters {
		if v != st.Leader {
			victim = tc.host(v)
			break
		}
	}
	victim.stop()
	testutil.Eventually(t, 30*time.Second, func() error {
		for _, h := range tc.running() {
			s, err := h.client.Status(ctxT(t))
			if err != nil {
				return err
			}
			if len(s.Voters) != 3 || sorted(s.Voters) == sorted(st.Voters) {
				return fmt.Errorf("%s: voters %v", h.cfg.Name, s.Voters)
			}
			for _, v := range s.Voters {
				if v == victim.cfg.Name {
					return fmt.Errorf("%s still lists %s as voter", h.cfg.Name, v)
				}
			}
		}
		return nil
	})
	// The old voter comes back as a non-voter.
	victim.start()
	tc.waitConverged(3, 2)
}

func TestFiveVoters(t *testing.T) {
	tc := newTestCluster(t, 5, []int{0}, func(i int, c *Config) { c.RaftVoters = 5 })
	tc.startAll()
	tc.waitConverged(5, 0)
}

func TestHostStartedBeforeItsSeeds(t *testing.T) {
	// h3 lists only h1 and h2 as seeds and starts alone; it keeps retrying
	// until they appear.
	tc := newTestCluster(t, 3, []int{0, 1}, nil)
	tc.hosts[2].start()
	testutil.Eventually(t, 5*time.Second, func() error {
		s, err := tc.hosts[2].client.Status(ctxT(t))
		if err != nil {
			return err
		}
		if s.Joined || s.Leader != "" {
			return fmt.Errorf("joined=%v leader=%q with no seed up", s.Joined, s.Leader)
		}
		return nil
	})
	// Let a few join attempts fail before the seeds start.
	deadline := time.Now().Add(1500 * time.Millisecond)
	testutil.Eventually(t, 3*time.Second, func() error {
		if time.Now().Before(deadline) {
			return errNotYet
		}
		return nil
	})
	tc.hosts[0].start()
	tc.hosts[1].start()
	tc.waitConverged(3, 0)
}

func TestTwoSeedsBootstrapOneCluster(t *testing.T) {
	// Four hosts start at once, all listing h1 and h2 as seeds, expecting 3
	// for bootstrap: exactly one cluster must form, holding all four.
	for round := 0; round < 3; round++ {
		t.Run(fmt.Sprint("round", round), func(t *testing.T) {
			tc := newTestCluster(t, 4, []int{0, 1}, nil)
			done := make(chan struct{})
			for _, h := range tc.hosts {
				go func() {
					defer func() { done <- struct{}{} }()
					h.start()
				}()
			}
			for range tc.hosts {
				<-done
			}
			st := tc.waitConverged(3, 1)
			for _, h := range tc.hosts {
				s, err := h.client.Status(ctxT(t))
				if err != nil {
					t.Fatal(err)
				}
				if s.Raft.Term == 0 || s.Leader != st.Leader || sorted(append(s.Voters, s.Nonvoters...)) != "h1,h2,h3,h4" {
					t.Fatalf("%s: %+v", h.cfg.Name, s)
				}
			}
		})
	}
}

func TestSingleHost(t *testing.T) {
	tc := newTestCluster(t, 1, nil, func(i int, c *Config) { c.BootstrapExpect = 1 })
	tc.startAll()
	tc.waitConverged(1, 0)
}

func TestSecondDaemonOnSocketRefused(t *testing.T) {
	tc := newTestCluster(t, 1, nil, func(i int, c *Config) { c.BootstrapExpect = 1 })
	tc.startAll()
	second := *tc.hosts[0]
	second.cfg.DataDir = t.TempDir()
	d, err := New(second.cfg, testutil.Logger(t))
	if err != nil {
		t.Fatal(err)
	}
	err = d.Run(ctxT(t))
	if err == nil || !errors.Is(err, adminapi.ErrAlreadyRunning) {
		t.Fatalf("second daemon on the same socket: %v", err)
	}
	// The first one still answers.
	if _, err := tc.hosts[0].client.Status(ctxT(t)); err != nil {
		t.Fatal(err)
	}
}

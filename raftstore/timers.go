package raftstore

import (
	"sync"
	"time"

	"github.com/hashicorp/go-metrics"
)

// Raft reports its timers only through hashicorp/go-metrics' process-wide
// sink. corrald keeps the three that say whether its Raft timeouts fit the
// machine: how long the leader's followers stay silent (raft samples each
// voter's contact age at every leader-lease check, that is at least every
// LeaderLeaseTimeout), and how often a follower's heartbeat timeout or a
// leader's lease timeout fired. A leader steps down when a quorum's contact
// age passes LeaderLeaseTimeout (450 ms by default), so the distribution of
// contact ages under load is the margin those defaults have.

// ContactBounds are the upper bounds of the contact-age histogram's buckets.
var ContactBounds = []time.Duration{
	10 * time.Millisecond, 25 * time.Millisecond, 50 * time.Millisecond, 100 * time.Millisecond,
	150 * time.Millisecond, 200 * time.Millisecond, 250 * time.Millisecond, 450 * time.Millisecond, 500 * time.Millisecond,
	time.Second,
}

// TimerStats are this process's Raft timer figures since it started.
type TimerStats struct {
	// ContactCounts[i] counts contact ages <= ContactBounds[i]
	// (cumulative, as Prometheus buckets); ContactCount counts them all.
	ContactCounts []uint64
	ContactCount  uint64
	ContactSum    time.Duration
	ContactMax    time.Duration
	// HeartbeatTimeouts: this host, a follower, heard from no leader within
	// its heartbeat timeout and stood for election.
	HeartbeatTimeouts uint64
	// LeaseTimeouts: this host, a leader, had no contact with a quorum within
	// LeaderLeaseTimeout and stepped down.
	LeaseTimeouts uint64
}

type timerSink struct {
	metrics.BlackholeSink // everything else is dropped
	mu                    sync.Mutex
	s                     TimerStats
}

var (
	timersOnce sync.Once
	timers     = &timerSink{s: TimerStats{ContactCounts: make([]uint64, len(ContactBounds))}}
)

// installTimerSink makes go-metrics' global sink ours; only the keys above
// pass its filter, so Raft's other timing calls cost a prefix lookup.
func installTimerSink() {
	timersOnce.Do(func() {
		c := metrics.DefaultConfig("")
		c.HostName, c.EnableHostname, c.EnableRuntimeMetrics = "", false, false
		c.FilterDefault = false
		c.AllowedPrefixes = []string{"raft.leader.lastContact", "raft.transition."}
		_, _ = metrics.NewGlobal(c, timers) // fails only on a bad filter
	})
}

// Timers returns this process's Raft timer figures (all stores in it).
func Timers() TimerStats {
	timers.mu.Lock()
	defer timers.mu.Unlock()
	s := timers.s
	s.ContactCounts = append([]uint64(nil), s.ContactCounts...)
	return s
}

func (t *timerSink) AddSample(key []string, val float32) {
	if !isKey(key, "raft", "leader", "lastContact") {
		return
	}
	d := time.Duration(float64(val) * float64(time.Millisecond)) // raft samples whole milliseconds
	t.mu.Lock()
	defer t.mu.Unlock()
	for i, b := range ContactBounds {
		if d <= b {
			t.s.ContactCounts[i]++
		}
	}
	t.s.ContactCount++
	t.s.ContactSum += d
	t.s.ContactMax = max(t.s.ContactMax, d)
}

func (t *timerSink) AddSampleWithLabels(key []string, val float32, _ []metrics.Label) {
	t.AddSample(key, val)
}

func (t *timerSink) IncrCounter(key []string, val float32) {
	t.mu.Lock()
	defer t.mu.Unlock()
	switch {
	case isKey(key, "raft", "transition", "heartbeat_timeout"):
		t.s.HeartbeatTimeouts += uint64(val)
	case isKey(key, "raft", "transition", "leader_lease_timeout"):
		t.s.LeaseTimeouts += uint64(val)
	}
}

func (t *timerSink) IncrCounterWithLabels(key []string, val float32, _ []metrics.Label) {
	t.IncrCounter(key, val)
}

func isKey(key []string, want ...string) bool {
	if len(key) != len(want) {
		return false
	}
	for i := range key {
		if key[i] != want[i] {
			return false
		}
	}
	return true
}

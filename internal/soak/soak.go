// Package soak runs a lab cluster for a long time under steady VM churn
// and periodic faults, and judges whether every corrald stays flat: its
// resident memory, goroutines and file descriptors at the end of the run
// against the start, and no leader change while no fault is injected.
//
// The evidence comes from outside corrald: each host's corrald is found
// by its network namespace under /proc (so a restarted one is found too),
// RSS and descriptors come from /proc/PID, established TCP connections
// from the namespace's /proc/PID/net/tcp matched against the process's
// socket inodes, and goroutines from corrald's own Prometheus endpoint
// (metrics_addr, set only in the soak lab's configuration: LabConfig).
// A corrald restart starts a new segment of a host's series; the longest
// segment is judged, after its warm-up, by the median of its first tenth
// against the median of its last tenth (Judge). Churn goes through the
// admin API as an operator's would (create, delete beyond a working set,
// stop and start); faults come one at a time, each healed and the cluster
// healthy again before the next, and leader elections from the cluster's
// event log are counted separately inside and outside the faults' windows.
package soak

import (
	"fmt"
	"io"
	"time"

	"github.com/corralhq/corral/internal/lab"
)

// MetricsPort is where each soak lab host's corrald serves its metrics,
// on every address of its own network namespace; the soak scrapes it at
// the host's lab address.
const MetricsPort = 9480

// The cluster ports of the soak lab's corralds, set in LabConfig so that
// the sampler can tell each connection's service by its port.
const (
	GossipPort = 7946
	RaftPort   = 7947
	RPCPort    = 7948
)

// services names the corrald ports a connection may use.
var services = map[int]string{GossipPort: "gossip", RaftPort: "raft", RPCPort: "rpc", MetricsPort: "metrics"}

// LabConfig is appended to every soak lab host's corral.toml: metrics on,
// for the goroutine count, the cluster ports fixed, and load ignored for
// health (the lab's hosts share the machine's cores, and a busy machine
// would mark every host degraded and stop placements and drains).
var LabConfig = fmt.Sprintf("health_load_per_cpu_degraded = 0\nmetrics_addr = \"0.0.0.0:%d\"\ngossip_port = %d\nraft_port = %d\nrpc_port = %d\n",
	MetricsPort, GossipPort, RaftPort, RPCPort)

// Config sets a soak up on a lab that is up with LabConfig.
type Config struct {
	Lab *lab.Lab
	// GuestDir holds the test guest (vmlinuz, initrd.img, disk.qcow2;
	// scripts/build-test-guest.sh).
	GuestDir string
	// Duration is the soak's length, from the end of the set-up.
	Duration time.Duration
	// SampleEvery is the sampling period; 0 is Duration/120 within 1 s
	// to 30 s.
	SampleEvery time.Duration
	// FaultEvery is the period of the faults; 0 is Duration/12 within
	// 30 s to 5 min, negative injects none.
	FaultEvery time.Duration
	// Thresholds judge the series; the zero value is
	// DefaultThresholds(Duration).
	Thresholds Thresholds
	// WorkingSet is how many churn VMs are kept (3); every ChurnEvery
	// (20 s) one is created and the oldest beyond the set deleted, and
	// every StopEvery-th time (5) one is stopped, started again later.
	WorkingSet int
	ChurnEvery time.Duration
	StopEvery  int
	// FailingFor: churn operations that keep failing this long with none
	// succeeding (2 min) fail the run; single errors are only reported.
	FailingFor time.Duration
	// LeaderGrace extends each fault's window for counting leader
	// changes (30 s).
	LeaderGrace time.Duration
	// Out gets a progress line every PrintEvery (the sampling period,
	// but not more often than every 30 s); Log gets faults and churn
	// errors as they happen.
	Out, Log   io.Writer
	PrintEvery time.Duration
}

// withDefaults fills in what is zero and checks the rest.
func (c Config) withDefaults() (Config, error) {
	if c.Lab == nil || len(c.Lab.Hosts) == 0 {
		return c, fmt.Errorf("soak: no lab")
	}
	if c.Duration <= 0 {
		return c, fmt.Errorf("soak: duration %v, want > 0", c.Duration)
	}
	if c.SampleEvery == 0 {
		c.SampleEvery = min(max(c.Duration/120, time.Second), 30*time.Second)
	}
	if c.SampleEvery < 0 {
		return c, fmt.Errorf("soak: sample period %v, want > 0", c.SampleEvery)
	}
	if c.FaultEvery == 0 {
		c.FaultEvery = min(max(c.Duration/12, 30*time.Second), 5*time.Minute)
	}
	if c.Thresholds == (Thresholds{}) {
		c.Thresholds = DefaultThresholds(c.Duration)
	}
	if c.WorkingSet <= 0 {
		c.WorkingSet = 3
	}
	if c.ChurnEvery <= 0 {
		c.ChurnEvery = 20 * time.Second
	}
	if c.StopEvery <= 0 {
		c.StopEvery = 5
	}
	if c.FailingFor <= 0 {
		c.FailingFor = 2 * time.Minute
	}
	if c.LeaderGrace <= 0 {
		c.LeaderGrace = 30 * time.Second
	}
	if c.PrintEvery <= 0 {
		c.PrintEvery = max(c.SampleEvery, 30*time.Second)
	}
	if c.Out == nil {
		c.Out = io.Discard
	}
	if c.Log == nil {
		c.Log = io.Discard
	}
	return c, nil
}

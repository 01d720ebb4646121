// Package chaos runs random fault schedules against a lab cluster and
// checks, from outside corrald, what a VM cluster promises: no guest ever
// runs on two hosts at once, no HA guest is lost, each runs again within
// its budget once the faults heal, the guests' disk counters never go
// backwards, and every host's Raft state converges.
//
// A schedule is a pure function of its seed, so a failing one replays with
// corral-lab chaos --seed S --only N. The checker's evidence is the
// kernel's record of QEMU processes (lab.GuestWatch: exec and exit
// timestamps on CLOCK_MONOTONIC, the lab's shared clock) and the guests'
// serial output (each test guest keeps a counter on its disk and prints
// it every second); corrald is asked only for the convergence check and
// to drive operator actions (drains, migrations).
package chaos

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"time"
)

// Kind is a kind of fault.
type Kind string

// The faults. Each holds For and is then healed, except the instant ones
// (libvirtd restart, migrate).
const (
	Kill       Kind = "kill"       // power loss of a host; it boots again at heal
	Partition  Kind = "partition"  // a host's link down
	Split      Kind = "split"      // the hosts in Hosts cut off from the others, both ways
	Asymmetric Kind = "asymmetric" // a host hears nobody but can still send
	Blip       Kind = "blip"       // a host's link down for 0.5-4 s
	Netem      Kind = "netem"      // loss and latency on a host's link
	Libvirtd   Kind = "libvirtd"   // libvirtd restarts on a host
	SIGKILL    Kind = "corrald-kill"
	SIGTERM    Kind = "corrald-stop"
	// LeaderKill kills a host, then whichever host leads Delay later, in
	// the middle of the first one's recovery; both boot at heal.
	LeaderKill Kind = "leader-kill"
	DiskFull   Kind = "disk-full" // a host's data_dir full
	Drain      Kind = "drain"     // a host drained (live migration); restored at heal
	Migrate    Kind = "migrate"   // one guest live-migrated to another host
)

// Step is one fault of a schedule.
type Step struct {
	At    time.Duration `json:"at"`            // from the schedule's start
	For   time.Duration `json:"for,omitempty"` // until healed; 0 for instant faults
	Kind  Kind          `json:"kind"`
	Hosts []int         `json:"hosts"` // host indexes (0-based); a split's minority
	Guest int           `json:"guest,omitempty"`
	Loss  float64       `json:"loss,omitempty"`  // netem: percent
	Delay time.Duration `json:"delay,omitempty"` // netem latency; leader-kill: the leader's kill after the first
}

func (s Step) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s@%.1fs", s.Kind, s.At.Seconds())
	var hs []string
	for _, h := range s.Hosts {
		hs = append(hs, fmt.Sprintf("h%d", h+1))
	}
	if len(hs) > 0 {
		fmt.Fprintf(&b, "(%s)", strings.Join(hs, ","))
	}
	switch s.Kind {
	case Netem:
		fmt.Fprintf(&b, "[%.0f%% %v]", s.Loss, s.Delay)
	case Migrate:
		fmt.Fprintf(&b, "[g%d]", s.Guest)
	case LeaderKill:
		fmt.Fprintf(&b, "[+%v]", s.Delay)
	}
	if s.For > 0 {
		fmt.Fprintf(&b, "/%.1fs", s.For.Seconds())
	}
	return b.String()
}

// Schedule is the faults of one run, from its seed.
type Schedule struct {
	Index int    `json:"index"`
	Seed  uint64 `json:"seed"`
	Steps []Step `json:"steps"`
	// Length is when the last fault is healed.
	Length time.Duration `json:"length"`
}

func (s Schedule) String() string {
	var parts []string
	for _, st := range s.Steps {
		parts = append(parts, st.String())
	}
	return strings.Join(parts, " ")
}

// Options shape generated schedules.
type Options struct {
	Hosts  int
	Guests int
	// Duration is the window faults start in; a fault may last beyond it.
	Duration time.Duration
	// DiskFull allows data_dir faults (the lab's data dirs are small
	// file systems of their own).
	DiskFull bool
}

// ScheduleSeed is the seed of schedule index of a run seeded with seed.
func ScheduleSeed(seed uint64, index int) uint64 {
	r := rand.New(rand.NewPCG(seed, uint64(index)))
	return r.Uint64()
}

// maxOut is how many hosts may be out (off, cut off, corrald down) at one
// instant: with 5 hosts, a quorum of 3 stays.
func maxOut(hosts int) int { return max((hosts-1)/2, 1) }

// Generate makes the schedule of a seed: two to four faults, starting
// within Duration, never more than a minority of hosts out at one instant.
func Generate(index int, seed uint64, o Options) Schedule {
	r := rand.New(rand.NewPCG(seed, 0x636f7272616c))
	s := Schedule{Index: index, Seed: seed}
	kinds := []Kind{Kill, Partition, Split, Asymmetric, Blip, Netem, Libvirtd, SIGKILL, SIGTERM, LeaderKill, Drain, Migrate}
	if o.DiskFull {
		kinds = append(kinds, DiskFull)
	}
	durRound := func(lo, hi, to time.Duration) time.Duration {
		return (lo + time.Duration(r.Int64N(int64(hi-lo)))).Round(to)
	}
	dur := func(lo, hi time.Duration) time.Duration { return durRound(lo, hi, 100*time.Millisecond) }
	n := 2 + r.IntN(3)
	for tries := 0; len(s.Steps) < n && tries < 100; tries++ {
		st := Step{Kind: kinds[r.IntN(len(kinds))], At: dur(0, o.Duration), Hosts: []int{r.IntN(o.Hosts)}}
		switch st.Kind {
		case Kill, Partition, Asymmetric, SIGKILL, SIGTERM, DiskFull:
			st.For = dur(2*time.Second, 20*time.Second)
		case Blip:
			st.For = dur(500*time.Millisecond, 4*time.Second)
		case Netem:
			st.For = dur(3*time.Second, 15*time.Second)
			st.Loss = float64(5 + r.IntN(26))
			st.Delay = durRound(10*time.Millisecond, 150*time.Millisecond, time.Millisecond) // latency: 100 ms steps would mostly round to 0
		case Split:
			st.For = dur(2*time.Second, 15*time.Second)
			st.Hosts = r.Perm(o.Hosts)[:maxOut(o.Hosts)]
			slices.Sort(st.Hosts)
		case LeaderKill:
			st.For = dur(10*time.Second, 20*time.Second)
			st.Delay = dur(2*time.Second, 6*time.Second)
		case Drain:
			st.For = dur(5*time.Second, 20*time.Second)
		case Migrate:
			st.Guest = r.IntN(max(o.Guests, 1))
			st.Hosts = nil
		}
		if !fits(s.Steps, st, o.Hosts) {
			continue
		}
		s.Steps = append(s.Steps, st)
	}
	slices.SortStableFunc(s.Steps, func(a, b Step) int { return int(a.At - b.At) })
	for _, st := range s.Steps {
		s.Length = max(s.Length, st.At+st.For)
	}
	return s
}

// out says how many hosts a step takes out of the cluster while it lasts.
// A leader kill takes out two hosts, the second unknown in advance: it
// counts as a whole minority.
func out(st Step, hosts int) int {
	switch st.Kind {
	case Kill, Partition, Split, Asymmetric, SIGKILL, SIGTERM, DiskFull, Blip:
		return len(st.Hosts)
	case LeaderKill:
		return maxOut(hosts)
	}
	return 0
}

// fits reports whether st can join steps with at most a minority of hosts
// out at any instant (counted over every step st overlaps: a bound, not
// exact), no host hit by two faults at once, and nothing beside a leader
// kill.
func fits(steps []Step, st Step, hosts int) bool {
	n := out(st, hosts)
	end := st.At + max(st.For, time.Second)
	for _, o := range steps {
		oend := o.At + max(o.For, time.Second)
		if o.At >= end || st.At >= oend {
			continue
		}
		n += out(o, hosts)
		for _, h := range st.Hosts {
			if slices.Contains(o.Hosts, h) {
				return false
			}
		}
		if o.Kind == LeaderKill || st.Kind == LeaderKill {
			return false // its victims are not known in advance
		}
	}
	return n <= maxOut(hosts)
}

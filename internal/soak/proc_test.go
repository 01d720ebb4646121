package soak

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"reflect"
	"runtime"
	"testing"
	"time"
)

func TestParseRSS(t *testing.T) {
	n, err := parseRSS([]byte("Name:\tcorrald\nVmPeak:\t 900000 kB\nVmRSS:\t   61234 kB\nThreads:\t12\n"))
	if err != nil || n != 61234 {
		t.Fatalf("%d %v", n, err)
	}
	if _, err := parseRSS([]byte("Name:\tkthreadd\n")); err == nil {
		t.Fatal("a kernel thread has an RSS")
	}
}

func TestCountEstablished(t *testing.T) {
	table := `  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0B4D0A0A:1F0B 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1001 1 0000000000000000 100 0 0 10 0
   1: 0B4D0A0A:1F0B 0C4D0A0A:9C40 01 00000000:00000000 02:000A7B1B 00000000     0        0 1002 1 0000000000000000 20 4 30 10 -1
   2: 0B4D0A0A:D2A4 0D4D0A0A:1F0B 01 00000000:00000000 02:000A7B1B 00000000     0        0 1003 1 0000000000000000 20 4 30 10 -1
   3: 0B4D0A0A:D2A6 0D4D0A0A:1F0B 01 00000000:00000000 02:000A7B1B 00000000     0        0 2000 1 0000000000000000 20 4 30 10 -1
   4: 0B4D0A0A:D2A8 0D4D0A0A:1F0B 06 00000000:00000000 03:00000F2E 00000000     0        0 0 3 0000000000000000
   5: 0B4D0A0A:D2AA 0C4D0A0A:1F0C 01 00000000:00000000 02:000A7B1B 00000000     0        0 1004 1 0000000000000000 20 4 30 10 -1
   6: 0100007F:D2AC 0100007F:0050 01 00000000:00000000 02:000A7B1B 00000000     0        0 1005 1 0000000000000000 20 4 30 10 -1
`
	// 1001 listens, 2000 is another process's, the fifth is TIME_WAIT;
	// 1002 came in on raft's port (7947), 1003 and 1004 went out to raft's
	// and the RPC's (7948), 1005 to port 80.
	by := map[string]int{}
	n := countEstablished([]byte(table), map[uint64]bool{1001: true, 1002: true, 1003: true, 1004: true, 1005: true}, by)
	if want := map[string]int{"raft-in": 1, "raft-out": 1, "rpc-out": 1, "other": 1}; n != 4 || !reflect.DeepEqual(by, want) {
		t.Fatalf("%d established: %v, want 4: %v", n, by, want)
	}
}

func TestParseGoroutines(t *testing.T) {
	text := "# HELP go_goroutines Number of goroutines that currently exist.\n# TYPE go_goroutines gauge\ngo_goroutines 173\ngo_threads 14\n"
	if n, err := parseGoroutines([]byte(text)); err != nil || n != 173 {
		t.Fatalf("%d %v", n, err)
	}
	if _, err := parseGoroutines([]byte("corral_vms 3\n")); err == nil {
		t.Fatal("goroutines without go_goroutines")
	}
}

// read against this test process: its RSS, descriptors, one established
// connection of its own, and goroutines from a metrics endpoint.
func TestReadSelf(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		fmt.Fprintf(w, "go_goroutines %d\n", runtime.NumGoroutine())
	}))
	defer srv.Close()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	a, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	s, err := read(context.Background(), os.Getpid(), srv.URL+"/metrics")
	if err != nil {
		t.Fatal(err)
	}
	// Both ends of the pair are this process's.
	if s.RSSKiB <= 0 || s.FDs < 5 || s.Goroutines < 2 || s.Conns < 2 {
		t.Fatalf("%+v", s)
	}
	if _, err := read(context.Background(), 1<<30, srv.URL); err == nil {
		t.Fatal("a process that does not exist was read")
	}
}

func TestFindProcs(t *testing.T) {
	self := inode("/proc/self/ns/net")
	comm, err := os.ReadFile("/proc/self/comm")
	if err != nil {
		t.Fatal(err)
	}
	got := findProcs(string(comm[:len(comm)-1]), map[uint64]bool{self: true})
	found := false
	for _, p := range got[self] {
		found = found || p == os.Getpid()
	}
	if !found {
		t.Fatalf("this process is not among %v", got)
	}
}

// The Raft timer figures come from corrald's own exposition: a cumulative
// histogram, its max gauge and two counters.
func TestParseRaftTimers(t *testing.T) {
	text := `# HELP corral_raft_leader_contact_age_seconds x
# TYPE corral_raft_leader_contact_age_seconds histogram
corral_raft_leader_contact_age_seconds_bucket{le="0.05"} 90
corral_raft_leader_contact_age_seconds_bucket{le="0.1"} 97
corral_raft_leader_contact_age_seconds_bucket{le="0.45"} 99
corral_raft_leader_contact_age_seconds_bucket{le="+Inf"} 100
corral_raft_leader_contact_age_seconds_sum 3.5
corral_raft_leader_contact_age_seconds_count 100
corral_raft_leader_contact_age_max_seconds 0.462
corral_raft_heartbeat_timeouts_total 2
corral_raft_lease_timeouts_total 1
go_goroutines 40
`
	rt, ok := parseRaftTimers([]byte(text))
	want := RaftTimers{Contacts: 100, Over100ms: 3, Over450ms: 1, MaxMs: 462, HeartbeatTimeouts: 2, LeaseTimeouts: 1}
	if !ok || *rt != want {
		t.Fatalf("got %+v %v, want %+v", rt, ok, want)
	}
	if _, ok := parseRaftTimers([]byte("go_goroutines 40\n")); ok {
		t.Fatal("timers from a scrape without them")
	}
	// Totals add each process's last reading.
	t0 := time.Unix(0, 0)
	samples := []Sample{
		{At: t0, PID: 1, Raft: &RaftTimers{Contacts: 5, MaxMs: 20}},
		{At: t0.Add(time.Second), PID: 1, Raft: &RaftTimers{Contacts: 9, Over450ms: 1, MaxMs: 300, LeaseTimeouts: 1}},
		{At: t0.Add(2 * time.Second), PID: 2, Raft: &RaftTimers{Contacts: 4, MaxMs: 40, HeartbeatTimeouts: 1}},
		{At: t0.Add(3 * time.Second), PID: 2},
	}
	tot, procs := raftTotals(samples)
	if want := (RaftTimers{Contacts: 13, Over450ms: 1, MaxMs: 300, HeartbeatTimeouts: 1, LeaseTimeouts: 1}); procs != 2 || tot != want {
		t.Fatalf("totals %+v over %d processes, want %+v over 2", tot, procs, want)
	}
}

// A drain is an operation: a leader change during one is fault-free.
func TestDrainsExcuseNoLeaderChange(t *testing.T) {
	t0 := time.Unix(1000, 0)
	faults := []Fault{
		{Kind: DrainRestore, Injected: t0, Healthy: t0.Add(20 * time.Second)},
		{Kind: CorraldKill, Injected: t0.Add(time.Minute), Healthy: t0.Add(70 * time.Second)},
	}
	changes := []LeaderChange{{At: t0.Add(10 * time.Second)}, {At: t0.Add(65 * time.Second)}}
	quiet, around := ClassifyLeaderChanges(changes, faultWindows(faults), 0, t0.Add(2*time.Minute))
	if quiet != 1 || around != 1 || changes[0].Fault || !changes[1].Fault {
		t.Fatalf("quiet %d around %d: %+v", quiet, around, changes)
	}
}

func TestParseRole(t *testing.T) {
	text := "corral_raft_state{state=\"Candidate\"} 0\ncorral_raft_state{state=\"Follower\"} 0\ncorral_raft_state{state=\"Leader\"} 1\ngo_goroutines 40\n"
	if r := parseRole([]byte(text)); r != "leader" {
		t.Fatalf("role %q", r)
	}
	if r := parseRole([]byte("go_goroutines 40\n")); r != "" {
		t.Fatalf("role %q without corral_raft_state", r)
	}
}

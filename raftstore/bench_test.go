package raftstore

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"sync"
	"testing"

	"github.com/corralhq/corral/raftlog"
	"github.com/hashicorp/raft"
)

// benchState builds a state with hosts and nVMs placed VMs.
func benchState(nHosts, nVMs int) *fsm {
	f := newFSM(nil)
	for i := 0; i < nHosts; i++ {
		h := testHost(fmt.Sprintf("host%04d", i))
		f.state.hosts[h.Name] = h
	}
	for i := 0; i < nVMs; i++ {
		v := testVM(fmt.Sprintf("vm%06d", i))
		v.Host = fmt.Sprintf("host%04d", i%nHosts)
		v.Generation = 1
		v.Spec.Labels = map[string]string{"app": "web", "tier": "frontend"}
		f.state.vms[v.Name] = v
		f.state.vmIDs[v.ID] = v.Name
	}
	return f
}

// BenchmarkFSMApply measures decode+apply of one placement command.
func BenchmarkFSMApply(b *testing.B) {
	f := benchState(100, 10000)
	entries := make([][]byte, 10000)
	gens := make([]uint64, 10000)
	for i := range gens {
		gens[i] = 1
	}
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		k := i % 10000
		entries[k] = raftlog.MustEncode(raftlog.PlaceVM{Name: fmt.Sprintf("vm%06d", k), Host: fmt.Sprintf("host%04d", (i+1)%100), Generation: gens[k]})
		if res := f.Apply(&raft.Log{Index: uint64(i + 1), Type: raft.LogCommand, Data: entries[k]}); res != nil {
			b.Fatal(res)
		}
		gens[k]++
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "applies/s")
}

// prepCommitBench starts a 3-voter loopback cluster with one host and n
// unplaced VMs, and returns its leader.
func prepCommitBench(b *testing.B, n int) *Store {
	return prepCommitBenchTLS(b, n, false)
}

func prepCommitBenchTLS(b *testing.B, n int, withTLS bool) *Store {
	stores := startClusterTLS(b, 3, withTLS)
	leader := waitLeader(b, stores)
	ctx := context.Background()
	if _, err := leader.Apply(ctx, raftlog.RegisterHost{Host: testHost("h1")}); err != nil {
		b.Fatal(err)
	}
	var cmds []raftlog.Command
	for i := 0; i < n; i++ {
		cmds = append(cmds, raftlog.CreateVM{VM: testVM(fmt.Sprintf("vm%06d", i))})
		if len(cmds) == 500 || i == n-1 {
			if _, err := leader.ApplyBatch(ctx, cmds); err != nil {
				b.Fatal(err)
			}
			cmds = cmds[:0]
		}
	}
	return leader
}

// BenchmarkRaftCommitSingle: one placement per log entry, one at a time
// (every commit waits for a quorum fsync round trip); plain TCP and mutual
// TLS between the voters.
func BenchmarkRaftCommitSingle(b *testing.B) {
	for _, mode := range []string{"plain", "tls"} {
		b.Run(mode, func(b *testing.B) { benchCommitSingle(b, mode == "tls") })
	}
}

func benchCommitSingle(b *testing.B, withTLS bool) {
	leader := prepCommitBenchTLS(b, b.N, withTLS)
	ctx := context.Background()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if _, err := leader.Apply(ctx, raftlog.PlaceVM{Name: fmt.Sprintf("vm%06d", i), Host: "h1"}); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "commands/s")
}

// BenchmarkRaftCommitPipelined: one placement per log entry, 64 in flight;
// raft groups concurrent entries into shared appends and fsyncs; plain TCP
// and mutual TLS between the voters.
func BenchmarkRaftCommitPipelined(b *testing.B) {
	for _, mode := range []string{"plain", "tls"} {
		b.Run(mode, func(b *testing.B) { benchCommitPipelined(b, mode == "tls") })
	}
}

func benchCommitPipelined(b *testing.B, withTLS bool) {
	leader := prepCommitBenchTLS(b, b.N, withTLS)
	ctx := context.Background()
	const workers = 64
	var wg sync.WaitGroup
	next := make(chan int)
	b.ResetTimer()
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				if _, err := leader.Apply(ctx, raftlog.PlaceVM{Name: fmt.Sprintf("vm%06d", i), Host: "h1"}); err != nil {
					b.Error(err)
				}
			}
		}()
	}
	for i := 0; i < b.N; i++ {
		next <- i
	}
	close(next)
	wg.Wait()
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "commands/s")
}

// BenchmarkRaftCommitBatched: 100 placements per Batch entry, one entry at
// a time. b.N counts placements.
func BenchmarkRaftCommitBatched(b *testing.B) {
	leader := prepCommitBench(b, b.N)
	ctx := context.Background()
	b.ResetTimer()
	for i := 0; i < b.N; i += 100 {
		var cmds []raftlog.Command
		for j := i; j < i+100 && j < b.N; j++ {
			cmds = append(cmds, raftlog.PlaceVM{Name: fmt.Sprintf("vm%06d", j), Host: "h1"})
		}
		res, err := leader.ApplyBatch(ctx, cmds)
		if err != nil {
			b.Fatal(err)
		}
		for _, e := range res {
			if e != nil {
				b.Fatal(e)
			}
		}
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "commands/s")
}

// BenchmarkSnapshot100k measures FSM.Snapshot plus Persist of 100,000 VMs.
func BenchmarkSnapshot100k(b *testing.B) {
	f := benchState(1000, 100000)
	var size int
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		snap, _ := f.Snapshot()
		var buf bytes.Buffer
		if err := writeSnapshot(&buf, snap.(*fsmSnapshot).state, 0); err != nil {
			b.Fatal(err)
		}
		size = buf.Len()
	}
	b.ReportMetric(float64(size)/(1<<20), "MiB")
}

// BenchmarkRestore100k measures FSM.Restore of 100,000 VMs.
func BenchmarkRestore100k(b *testing.B) {
	f := benchState(1000, 100000)
	var buf bytes.Buffer
	if err := writeSnapshot(&buf, f.state, 0); err != nil {
		b.Fatal(err)
	}
	data := buf.Bytes()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		g := newFSM(nil)
		if err := g.Restore(io.NopCloser(bytes.NewReader(data))); err != nil {
			b.Fatal(err)
		}
		if len(g.state.vms) != 100000 {
			b.Fatal("short restore")
		}
	}
}

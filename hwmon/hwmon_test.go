package hwmon

import (
	"context"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/corralhq/corral/model"
)

func sample(memAvailPct float64, diskPct float64, up bool, nicErrs uint64) Sample {
	return Sample{
		CPUs: 4, MemTotal: 1000, MemAvailable: uint64(memAvailPct * 10),
		Disks: []DiskUsage{{Path: "/var/lib/corral", UsedPercent: diskPct}},
		NIC:   &NICStatus{Name: "eth0", Up: up, ErrorsIn: nicErrs},
	}
}

func TestHealthHysteresis(t *testing.T) {
	m := NewMonitor(Thresholds{MemDegradedPct: 10, MemFailingPct: 3, DiskDegradedPct: 85, DiskFailingPct: 95, NICErrorsDegraded: 10, Rise: 2, Fall: 3})
	steps := []struct {
		s    Sample
		want model.HealthState
	}{
		{sample(50, 10, true, 0), model.HealthOK},
		{sample(5, 10, true, 0), model.HealthOK}, // one bad sample: not yet
		{sample(50, 10, true, 0), model.HealthOK},
		{sample(5, 10, true, 0), model.HealthOK},
		{sample(5, 10, true, 0), model.HealthDegraded}, // two in a row
		{sample(1, 97, true, 0), model.HealthDegraded}, // failing needs two too
		{sample(1, 97, true, 0), model.HealthFailing},
		{sample(50, 10, true, 0), model.HealthFailing}, // recovery needs three
		{sample(50, 10, true, 0), model.HealthFailing},
		{sample(50, 10, true, 0), model.HealthOK},
		{sample(50, 10, false, 0), model.HealthOK}, // uplink down
		{sample(50, 10, false, 0), model.HealthFailing},
		{sample(50, 10, true, 0), model.HealthFailing},
		{sample(50, 10, true, 500), model.HealthFailing}, // errors: degraded level, still better than failing
		{sample(50, 10, true, 1000), model.HealthFailing},
		{sample(50, 10, true, 1500), model.HealthDegraded},
	}
	for i, st := range steps {
		h := m.Observe(st.s)
		if h.State != st.want {
			t.Fatalf("step %d: %s (%v), want %s", i, h.State, h.Reasons, st.want)
		}
	}
	h := m.Observe(sample(1, 97, false, 1500))
	joined := strings.Join(h.Reasons, "; ")
	for _, want := range []string{"memory 1% available", "disk /var/lib/corral 97% full", "uplink eth0 down"} {
		if !strings.Contains(joined, want) {
			t.Errorf("reasons %q lack %q", joined, want)
		}
	}
}

func TestSystemSample(t *testing.T) {
	s := &System{Paths: []string{t.TempDir(), "/does/not/exist"}, Uplink: "lo"}
	x, err := s.Sample(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if x.CPUs < 1 || x.MemTotal == 0 || x.MemAvailable == 0 || len(x.Disks) != 1 || x.NIC == nil || !x.NIC.Up {
		t.Fatalf("sample %+v", x)
	}
	c := CapacityOf(x)
	if c.VCPUs != x.CPUs || c.MemoryMiB <= 0 {
		t.Fatalf("capacity %+v", c)
	}
}

// BenchmarkSample measures the CPU time one full sample costs (user+system,
// from getrusage), besides wall time.
func BenchmarkSample(b *testing.B) {
	s := &System{Paths: []string{"/", "/tmp"}, Uplink: "lo"}
	ctx := context.Background()
	var before, after syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &before)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if _, err := s.Sample(ctx); err != nil {
			b.Fatal(err)
		}
	}
	b.StopTimer()
	syscall.Getrusage(syscall.RUSAGE_SELF, &after)
	cpu := time.Duration(after.Utime.Nano()+after.Stime.Nano()-before.Utime.Nano()-before.Stime.Nano()) / time.Duration(b.N)
	b.ReportMetric(float64(cpu.Microseconds()), "cpu-µs/sample")
}

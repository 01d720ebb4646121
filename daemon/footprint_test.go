package daemon

import (
	"fmt"
	"os"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/corralhq/corral/api"
	"github.com/corralhq/corral/api/client"
	"github.com/corralhq/corral/hwmon"
	"github.com/corralhq/corral/internal/testutil"
)

// BenchmarkLoadedFootprint: three in-process daemons with production
// timing (DefaultTuning) and fake hypervisors, 200 running VMs each (on
// injected hosts of 64 CPUs and 256 GiB), measured over a minute once
// every VM runs and the cluster has settled: CPU and memory per daemon
// (the process's, divided by three, since the daemons share one runtime:
// an estimate), and the Raft log's growth, entries and payload bytes of the
// leader's log, extrapolated to an hour. With -benchtime 1x.
func BenchmarkLoadedFootprint(b *testing.B) {
	const perHost, window = 200, time.Minute
	for range b.N {
		b.StopTimer()
		tc := newTestCluster(b, 3, []int{0, 1, 2}, func(i int, c *Config) {
			t := DefaultTuning()
			t.Driver, t.Networker = c.Tuning.Driver, c.Tuning.Networker
			hw := newFakeHW()
			hw.set(func(s *hwmon.Sample) { s.CPUs, s.MemTotal, s.MemAvailable = 64, 256<<30, 250<<30 })
			t.HWSource = hw
			c.Tuning = t
		})
		tc.startAll()
		st := tc.waitConverged(3, 0)
		leader := tc.host(st.Leader)
		c := leader.client
		ctx := ctxT(b)
		for _, h := range tc.hosts {
			for i := range perHost {
				req := api.VMCreateRequest{Name: fmt.Sprintf("%s-vm%03d", h.cfg.Name, i), Host: h.cfg.Name,
					Spec: api.VMSpec{VCPUs: 1, MemoryMiB: 64, Disks: []api.Disk{{SizeMiB: 8}}}}
				if _, err := c.CreateVM(ctx, req); err != nil {
					b.Fatal(err)
				}
			}
		}
		testutil.Eventually(b, 5*time.Minute, func() error {
			vms, err := c.VMs(ctxT(b))
			if err != nil {
				return err
			}
			running := 0
			for _, v := range vms {
				if v.State == "running" {
					running++
				}
			}
			if running != 3*perHost {
				return fmt.Errorf("%d of %d VMs running", running, 3*perHost)
			}
			return nil
		})
		// The start's reports settle first: until no VM has changed for 5 s
		// (or a minute has passed; then they change all along, and the
		// window measures that).
		settled(b, c, 5*time.Second, time.Minute)
		// Straight from the leader's store: a Status call with ctx, which
		// may have run out while the VMs started, read 0 entries before.
		i0, cpu0 := leader.d.store.Status().LastIndex, cpuTime()
		b.StartTimer()
		<-time.After(window) // the measurement window itself
		b.StopTimer()
		i1, cpu1 := leader.d.store.Status().LastIndex, cpuTime()
		logBytes, err := leader.d.store.LogBytes(i0+1, i1)
		if err != nil {
			b.Fatal(err)
		}
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		perHour := float64(time.Hour) / float64(window)
		b.ReportMetric((cpu1-cpu0).Seconds()/window.Seconds()*100/3, "cpu-%-per-daemon")
		b.ReportMetric(float64(rssBytes(b))/3/(1<<20), "rss-MiB-per-daemon")
		b.ReportMetric(float64(ms.HeapInuse)/3/(1<<20), "heap-MiB-per-daemon")
		b.ReportMetric(float64(i1-i0)*perHour, "raft-entries/h")
		b.ReportMetric(float64(logBytes)*perHour/(1<<20), "raft-MiB/h")
		for _, h := range tc.hosts {
			h.stop()
		}
	}
}

// settled waits until no VM has changed (state, host, placement) for
// quiet, or for at most limit. The leader's log is no measure of it: the
// lease renewals it commits make it grow all along.
func settled(b *testing.B, c *client.Client, quiet, limit time.Duration) {
	deadline := time.Now().Add(limit)
	var last string
	since := time.Now()
	tick := time.NewTicker(250 * time.Millisecond)
	defer tick.Stop()
	for time.Now().Before(deadline) {
		vms, err := c.VMs(ctxT(b))
		if err != nil {
			b.Fatal(err)
		}
		var sb strings.Builder
		for _, v := range vms {
			fmt.Fprintf(&sb, "%s %s %s %d;", v.Name, v.State, v.Host, v.Generation)
		}
		if sb.String() != last {
			last, since = sb.String(), time.Now()
		} else if time.Since(since) >= quiet {
			return
		}
		<-tick.C
	}
	b.Logf("the VMs still changed after %v", limit)
}

// cpuTime is the CPU time this process has used, user and system.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// rssBytes is this process's resident memory.
func rssBytes(b *testing.B) int64 {
	data, err := os.ReadFile("/proc/self/status")
	if err != nil {
		b.Fatal(err)
	}
	for _, line := range strings.Split(string(data), "\n") {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			kb, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			return kb << 10
		}
	}
	return 0
}

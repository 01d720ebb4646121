package daemon

import (
	"bytes"
	"fmt"
	"net/http"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	pmodel "github.com/prometheus/common/model"

	"github.com/corralhq/corral/internal/testutil"
)

// TestMetricsScrape scrapes /metrics of a one-host cluster running a VM and
// parses it with Prometheus' own text parser.
func TestMetricsScrape(t *testing.T) {
	port := testutil.FreePort(t, "127.0.0.1")
	tc := newTestCluster(t, 1, nil, func(i int, c *Config) {
		c.BootstrapExpect = 1
		c.MetricsAddr = fmt.Sprintf("127.0.0.1:%d", port)
		c.Tuning.HWSource = newFakeHW()
		c.SampleInterval = 100 * time.Millisecond
	})
	tc.startAll()
	tc.waitConverged(1, 0)
	c := tc.hosts[0].client
	ctx := ctxT(t)
	if _, err := c.ImportImage(ctx, "base", bytes.NewReader(qcow2(1<<20)), 1024); err != nil {
		t.Fatal(err)
	}
	if _, err := c.CreateVM(ctx, vmReq("m1")); err != nil {
		t.Fatal(err)
	}
	waitVM(t, c, "m1", "running")

	var fams map[string]*dto.MetricFamily
	testutil.Eventually(t, 10*time.Second, func() error {
		resp, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/metrics", port))
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		p := expfmt.NewTextParser(pmodel.UTF8Validation)
		fams, err = p.TextToMetricFamilies(resp.Body)
		if err != nil {
			return fmt.Errorf("parse: %w", err)
		}
		if value(fams, "corral_lease_held", nil) != 1 {
			return fmt.Errorf("lease not held yet")
		}
		return nil
	})
	checks := []struct {
		name   string
		labels map[string]string
		typ    dto.MetricType
		want   func(float64) bool
	}{
		{"corral_host_cpus", nil, dto.MetricType_GAUGE, func(v float64) bool { return v == 8 }},
		{"corral_host_memory_bytes", nil, dto.MetricType_GAUGE, func(v float64) bool { return v == 32<<30 }},
		{"corral_host_health", map[string]string{"state": "ok"}, dto.MetricType_GAUGE, func(v float64) bool { return v == 1 }},
		{"corral_host_power_watts", map[string]string{"source": "rapl"}, dto.MetricType_GAUGE, func(v float64) bool { return v == 142.4 }},
		{"corral_cluster_hosts", map[string]string{"mode": "active"}, dto.MetricType_GAUGE, func(v float64) bool { return v == 1 }},
		{"corral_cluster_hosts", map[string]string{"mode": "standby"}, dto.MetricType_GAUGE, func(v float64) bool { return v == 0 }},
		{"corral_host_vms", nil, dto.MetricType_GAUGE, func(v float64) bool { return v == 1 }},
		{"corral_vm_vcpus", map[string]string{"vm": "m1"}, dto.MetricType_GAUGE, func(v float64) bool { return v == 1 }},
		{"corral_vm_memory_bytes", map[string]string{"vm": "m1"}, dto.MetricType_GAUGE, func(v float64) bool { return v == 256<<20 }},
		{"corral_vm_cpu_seconds_total", map[string]string{"vm": "m1"}, dto.MetricType_COUNTER, func(v float64) bool { return v >= 0 }},
		{"corral_raft_state", map[string]string{"state": "Leader"}, dto.MetricType_GAUGE, func(v float64) bool { return v == 1 }},
		{"corral_raft_commit_index", nil, dto.MetricType_GAUGE, func(v float64) bool { return v > 0 }},
		{"corral_raft_leader_contact_age_seconds", nil, dto.MetricType_HISTOGRAM, func(float64) bool { return true }},
		{"corral_raft_heartbeat_timeouts_total", nil, dto.MetricType_COUNTER, func(v float64) bool { return v >= 0 }},
		{"corral_raft_lease_timeouts_total", nil, dto.MetricType_COUNTER, func(v float64) bool { return v >= 0 }},
		{"corral_gossip_members", map[string]string{"state": "alive"}, dto.MetricType_GAUGE, func(v float64) bool { return v == 1 }},
		{"corral_lease_remaining_seconds", nil, dto.MetricType_GAUGE, func(v float64) bool { return v > 0 && v <= 4.5 }},
		{"corral_host_lease_age_seconds", map[string]string{"host": "h1"}, dto.MetricType_GAUGE, func(v float64) bool { return v < 2 }},
		{"corral_recoveries_total", nil, dto.MetricType_COUNTER, func(v float64) bool { return v == 0 }},
		{"corral_migration_duration_seconds", nil, dto.MetricType_HISTOGRAM, func(float64) bool { return true }},
	}
	for _, ch := range checks {
		f, ok := fams[ch.name]
		if !ok {
			t.Errorf("no metric %s", ch.name)
			continue
		}
		if f.GetType() != ch.typ {
			t.Errorf("%s is %v, want %v", ch.name, f.GetType(), ch.typ)
		}
		if v := value(fams, ch.name, ch.labels); !ch.want(v) {
			t.Errorf("%s%v = %v", ch.name, ch.labels, v)
		}
	}
	// The power draw is in host show too (through gossip).
	testutil.Eventually(t, 10*time.Second, func() error {
		if h, err := c.Host(ctx, "h1"); err != nil || h.PowerWatts != 142 || h.PowerSource != "rapl" {
			return fmt.Errorf("h1's power: %d W from %q (%v)", h.PowerWatts, h.PowerSource, err)
		}
		return nil
	})
}

// value finds the sample of a family with the given labels (-1 if none).
func value(fams map[string]*dto.MetricFamily, name string, labels map[string]string) float64 {
	f, ok := fams[name]
	if !ok {
		return -1
	}
	for _, m := range f.GetMetric() {
		match := true
		for k, v := range labels {
			found := false
			for _, lp := range m.GetLabel() {
				if lp.GetName() == k && lp.GetValue() == v {
					found = true
				}
			}
			match = match && found
		}
		if !match {
			continue
		}
		switch {
		case m.Gauge != nil:
			return m.Gauge.GetValue()
		case m.Counter != nil:
			return m.Counter.GetValue()
		case m.Histogram != nil:
			return float64(m.Histogram.GetSampleCount())
		}
	}
	return -1
}

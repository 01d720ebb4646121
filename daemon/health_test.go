package daemon

import (
	"bytes"
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/corralhq/corral/daemon/hypervisor/fake"
	"github.com/corralhq/corral/hwmon"
	"github.com/corralhq/corral/internal/testutil"
	"github.com/corralhq/corral/model"
)

// fakeHW is a hardware source whose samples the test sets.
type fakeHW struct {
	mu sync.Mutex
	s  hwmon.Sample
}

func newFakeHW() *fakeHW {
	return &fakeHW{s: hwmon.Sample{CPUs: 8, MemTotal: 32 << 30, MemAvailable: 24 << 30, PowerWatts: 142.4, PowerSource: hwmon.PowerRAPL}}
}

func (f *fakeHW) Sample(ctx context.Context) (hwmon.Sample, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	s := f.s
	s.Time = time.Now()
	return s, nil
}

func (f *fakeHW) set(fn func(*hwmon.Sample)) {
	f.mu.Lock()
	fn(&f.s)
	f.mu.Unlock()
}

// TestHealthDrivesPlacementAndEvacuation injects samples: a host whose
// memory runs out turns failing, gets no new VMs, and with auto_evacuate is
// drained by live migration; its capacity comes from its samples.
func TestHealthDrivesPlacementAndEvacuation(t *testing.T) {
	hws := []*fakeHW{newFakeHW(), newFakeHW(), newFakeHW()}
	tc := newTestCluster(t, 3, []int{0, 1, 2}, func(i int, c *Config) {
		c.Tuning.HWSource = hws[i]
		c.SampleInterval = 100 * time.Millisecond
		c.HealthRise, c.HealthFall = 2, 2
		c.AutoEvacuate = true
	})
	drivers := map[string]*fake.Driver{}
	for _, h := range tc.hosts {
		drivers[fmt.Sprintf(h.cfg.MigrationURI, h.cfg.BindAddr)] = h.cfg.Tuning.Driver.(*fake.Driver)
	}
	fake.Connect(drivers)
	tc.startAll()
	tc.waitConverged(3, 0)
	c := tc.hosts[0].client
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	// Capacity comes from the samples: 8 CPUs, 32 GiB.
	testutil.Eventually(t, 10*time.Second, func() error {
		h, err := c.Host(ctx, "h2")
		if err != nil {
			return err
		}
		if h.Capacity.VCPUs != 8 || h.Capacity.MemoryMiB != 32<<10 || h.Health != "ok" {
			return fmt.Errorf("h2: %+v", h)
		}
		return nil
	})
	if _, err := c.ImportImage(ctx, "base", bytes.NewReader(qcow2(1<<20)), 1024); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 2; i++ {
		req := vmReq(fmt.Sprintf("on-h2-%d", i))
		req.Host = "h2"
		if _, err := c.CreateVM(ctx, req); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			if t.Failed() {
				evs, _ := c.Events(context.Background(), 0, 0, 0)
				for _, e := range evs {
					t.Logf("event %s %s %s %s", e.Kind, e.Host, e.VM, e.Message)
				}
			}
		})
		if v := waitVMState(t, c, req.Name, "running"); v.Host != "h2" {
			t.Fatal(v)
		}
	}
	// h2's memory runs out.
	hws[1].set(func(s *hwmon.Sample) { s.MemAvailable = 256 << 20 })
	testutil.Eventually(t, 10*time.Second, func() error {
		h, _ := c.Host(ctx, "h2")
		if h.Health != "failing" || !strings.Contains(strings.Join(h.HealthReasons, ";"), "memory") {
			return fmt.Errorf("h2 health %s %v", h.Health, h.HealthReasons)
		}
		return nil
	})
	// No new VM goes there.
	req := vmReq("new")
	req.Host = "h2"
	if _, err := c.CreateVM(ctx, req); err == nil || !strings.Contains(err.Error(), "health failing") {
		t.Fatalf("placed on a failing host: %v", err)
	}
	// auto_evacuate drains it by live migration.
	testutil.Eventually(t, 20*time.Second, func() error {
		for i := 0; i < 2; i++ {
			v, _ := c.VM(ctx, fmt.Sprintf("on-h2-%d", i))
			if v.Host == "h2" || v.State != "running" {
				return fmt.Errorf("%s on %s (%s)", v.Name, v.Host, v.State)
			}
		}
		h, _ := c.Host(ctx, "h2")
		if h.Mode != "maintenance" {
			return fmt.Errorf("h2 mode %s", h.Mode)
		}
		return nil
	})
	testutil.Eventually(t, 10*time.Second, func() error {
		evs, _ := c.Events(ctx, 0, 0, 0)
		var kinds []string
		for _, e := range evs {
			kinds = append(kinds, e.Kind)
		}
		for _, k := range []string{"health", "evacuating", "migrated", "drained"} {
			if !strings.Contains(strings.Join(kinds, " "), k) {
				return fmt.Errorf("no %s event: %v", k, kinds)
			}
		}
		return nil
	})
	// Health recovers (after health_fall good samples).
	hws[1].set(func(s *hwmon.Sample) { s.MemAvailable = 24 << 30 })
	testutil.Eventually(t, 10*time.Second, func() error {
		if h, _ := c.Host(ctx, "h2"); h.Health != "ok" {
			return fmt.Errorf("h2 health %s", h.Health)
		}
		return nil
	})
}

// TestStorageProblemMakesHostFailing: a host whose storage pool cannot be
// used turns failing with the reason (host show), takes no new VM, and is
// healthy again once the pool is fixed.
func TestStorageProblemMakesHostFailing(t *testing.T) {
	tc := newTestCluster(t, 3, []int{0, 1, 2}, func(i int, c *Config) {
		c.Tuning.HWSource = newFakeHW()
		c.SampleInterval = 100 * time.Millisecond
	})
	tc.startAll()
	tc.waitConverged(3, 0)
	c := tc.hosts[0].client
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	h2 := tc.hosts[1].cfg.Tuning.Driver.(*fake.Driver)
	h2.SetProblem(`storage pool: libvirt pool "corral" points at /old, not at storage_pool /new`)
	testutil.Eventually(t, 10*time.Second, func() error {
		h, _ := c.Host(ctx, "h2")
		if h.Health != "failing" || !strings.Contains(strings.Join(h.HealthReasons, ";"), "storage pool: libvirt pool") {
			return fmt.Errorf("h2 health %s %v", h.Health, h.HealthReasons)
		}
		return nil
	})
	if _, err := c.ImportImage(ctx, "base", bytes.NewReader(qcow2(1<<20)), 1024); err != nil {
		t.Fatal(err)
	}
	req := vmReq("new")
	req.Host = "h2"
	if _, err := c.CreateVM(ctx, req); err == nil || !strings.Contains(err.Error(), "storage pool") {
		t.Fatalf("placed on a host without a usable pool: %v", err)
	}
	h2.SetProblem("")
	testutil.Eventually(t, 10*time.Second, func() error {
		h, _ := c.Host(ctx, "h2")
		if h.Health != "ok" {
			return fmt.Errorf("h2 health %s %v", h.Health, h.HealthReasons)
		}
		return nil
	})
	if _, err := c.CreateVM(ctx, req); err != nil {
		t.Fatal(err)
	}
	waitVMState(t, c, "new", "running")
}

func TestWithProblem(t *testing.T) {
	h := withProblem(model.Health{State: model.HealthDegraded, Reasons: []string{"load 9"}}, "storage pool: gone")
	if h.State != model.HealthFailing || strings.Join(h.Reasons, ";") != "storage pool: gone;load 9" {
		t.Fatal(h)
	}
	if h := withProblem(model.Health{State: model.HealthOK}, ""); h.State != model.HealthOK || h.Reasons != nil {
		t.Fatal(h)
	}
}

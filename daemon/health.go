package daemon

import (
	"context"
	"net"
	"strings"
	"sync"

	"github.com/corralhq/corral/daemon/membership"
	"github.com/corralhq/corral/hwmon"
	"github.com/corralhq/corral/model"
)

// hardware is the latest hardware report of this host.
type hardware struct {
	mu     sync.Mutex
	report hwmon.Report
	known  bool
}

func (h *hardware) set(r hwmon.Report) {
	h.mu.Lock()
	h.report, h.known = r, true
	h.mu.Unlock()
}

// last returns the latest report, if there is one.
func (h *hardware) last() (hwmon.Report, bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.report, h.known
}

func (h *hardware) get() hwmon.Report {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.report
}

// uplinkName is the configured uplink, or the interface holding addr.
func uplinkName(configured, addr string) string {
	if configured != "" {
		return configured
	}
	ifs, err := net.Interfaces()
	if err != nil {
		return ""
	}
	for _, i := range ifs {
		addrs, _ := i.Addrs()
		for _, a := range addrs {
			if n, ok := a.(*net.IPNet); ok && n.IP.String() == addr {
				return i.Name
			}
		}
	}
	return ""
}

func (d *Daemon) hwSource() hwmon.Source {
	if d.cfg.Tuning.HWSource != nil {
		return d.cfg.Tuning.HWSource
	}
	return &hwmon.System{Paths: []string{d.cfg.DataDir, d.cfg.StoragePool}, Uplink: uplinkName(d.cfg.Uplink, d.cfg.AdvertiseAddr),
		Power: hwmon.PowerMeter{Estimate: hwmon.Estimate{IdleWatts: d.cfg.PowerIdleWatts, MaxWatts: d.cfg.PowerMaxWatts}}}
}

// publish puts a hardware report into this host's gossip metadata, where
// the leader picks capacity and health up. A host where no guest can start
// (the driver's Problem: a storage pool that cannot be used, a QEMU that
// libvirt cannot run) is failing whatever the hardware says, so placement
// passes it by.
func (d *Daemon) publish(r hwmon.Report) {
	d.hw.set(r)
	health := withProblem(r.Health, d.driver.Problem())
	reasons := strings.Join(health.Reasons, "; ")
	if len(reasons) > 160 { // memberlist metadata is capped at 512 bytes
		reasons = reasons[:157] + "..."
	}
	d.members.UpdateMeta(func(m *membership.Meta) {
		m.VCPUs, m.MemoryMiB = r.Capacity.VCPUs, r.Capacity.MemoryMiB
		m.Health, m.Reasons = string(health.State), reasons
		m.CPUPercent, m.MemAvailMiB = int(r.Sample.CPUPercent+0.5), int64(r.Sample.MemAvailable>>20)
		m.PowerWatts, m.PowerSource = int(r.Sample.PowerWatts+0.5), r.Sample.PowerSource
	})
}

// withProblem adds the driver's problem to a health report.
func withProblem(h model.Health, problem string) model.Health {
	if problem == "" {
		return h
	}
	return model.Health{State: model.HealthFailing, Reasons: append([]string{problem}, h.Reasons...)}
}

// republish publishes the last hardware report again (the driver's problem
// changed between samples).
func (d *Daemon) republish() {
	if r, ok := d.hw.last(); ok {
		d.publish(r)
	}
}

// sampleOnce takes the first sample before gossip starts, so a host never
// registers with zero capacity.
func (d *Daemon) sampleOnce(ctx context.Context) {
	s, err := d.hwSource().Sample(ctx)
	if err != nil {
		d.log.Warn("cannot read host capacity", "err", err)
		return
	}
	d.publish(hwmon.Report{Sample: s, Capacity: hwmon.CapacityOf(s), Health: d.monitor.Observe(s)})
}

func (d *Daemon) runHardware(ctx context.Context) error {
	return hwmon.Run(ctx, d.hwSource(), d.monitor, d.cfg.SampleInterval, d.log.With("component", "hwmon"), d.publish)
}

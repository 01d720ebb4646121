package hwmon

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
	"time"

	"github.com/corralhq/corral/model"
)

// Thresholds turn samples into health. A zero threshold is off.
type Thresholds struct {
	// Memory available below these percentages of total.
	MemDegradedPct, MemFailingPct float64
	// Disk use above these percentages.
	DiskDegradedPct, DiskFailingPct float64
	// Any temperature above these.
	TempDegradedC, TempFailingC float64
	// Load average (1 min) per CPU above this.
	LoadDegradedPerCPU float64
	// New uplink errors and drops per sample above this.
	NICErrorsDegraded uint64
	// Rise: consecutive samples at a worse level before health gets worse;
	// Fall: consecutive samples at a better level before it gets better.
	Rise, Fall int
}

// DefaultThresholds are what corrald uses unless configured.
func DefaultThresholds() Thresholds {
	return Thresholds{
		MemDegradedPct: 10, MemFailingPct: 3,
		DiskDegradedPct: 85, DiskFailingPct: 95,
		TempDegradedC: 85, TempFailingC: 95,
		LoadDegradedPerCPU: 4,
		NICErrorsDegraded:  100,
		Rise:               3, Fall: 3,
	}
}

var levels = map[model.HealthState]int{model.HealthOK: 0, model.HealthDegraded: 1, model.HealthFailing: 2}

// Monitor keeps the health of one host across samples. It is not safe for
// concurrent use; Run owns it.
type Monitor struct {
	th       Thresholds
	cur      model.Health
	streak   int
	streakAt model.HealthState
	prevNIC  *NICStatus
}

// NewMonitor starts healthy.
func NewMonitor(th Thresholds) *Monitor {
	if th.Rise < 1 {
		th.Rise = 1
	}
	if th.Fall < 1 {
		th.Fall = 1
	}
	return &Monitor{th: th, cur: model.Health{State: model.HealthOK}}
}

// assess is one sample's verdict without hysteresis.
func (m *Monitor) assess(s Sample) model.Health {
	h := model.Health{State: model.HealthOK}
	note := func(st model.HealthState, format string, args ...any) {
		h.Reasons = append(h.Reasons, fmt.Sprintf(format, args...))
		if levels[st] > levels[h.State] {
			h.State = st
		}
	}
	th := m.th
	if s.MemTotal > 0 {
		avail := float64(s.MemAvailable) * 100 / float64(s.MemTotal)
		switch {
		case th.MemFailingPct > 0 && avail < th.MemFailingPct:
			note(model.HealthFailing, "memory %.0f%% available", avail)
		case th.MemDegradedPct > 0 && avail < th.MemDegradedPct:
			note(model.HealthDegraded, "memory %.0f%% available", avail)
		}
	}
	for _, d := range s.Disks {
		switch {
		case th.DiskFailingPct > 0 && d.UsedPercent > th.DiskFailingPct:
			note(model.HealthFailing, "disk %s %.0f%% full", d.Path, d.UsedPercent)
		case th.DiskDegradedPct > 0 && d.UsedPercent > th.DiskDegradedPct:
			note(model.HealthDegraded, "disk %s %.0f%% full", d.Path, d.UsedPercent)
		}
	}
	for _, t := range s.Temps {
		switch {
		case th.TempFailingC > 0 && t.Celsius > th.TempFailingC:
			note(model.HealthFailing, "%s at %.0f°C", t.Sensor, t.Celsius)
		case th.TempDegradedC > 0 && t.Celsius > th.TempDegradedC:
			note(model.HealthDegraded, "%s at %.0f°C", t.Sensor, t.Celsius)
		}
	}
	if th.LoadDegradedPerCPU > 0 && s.CPUs > 0 && s.Load1/float64(s.CPUs) > th.LoadDegradedPerCPU {
		note(model.HealthDegraded, "load %.1f on %d CPUs", s.Load1, s.CPUs)
	}
	if s.NIC != nil {
		if !s.NIC.Up {
			note(model.HealthFailing, "uplink %s down", s.NIC.Name)
		} else if p := m.prevNIC; p != nil && th.NICErrorsDegraded > 0 {
			errs := (s.NIC.ErrorsIn + s.NIC.ErrorsOut + s.NIC.DropsIn + s.NIC.DropsOut) - (p.ErrorsIn + p.ErrorsOut + p.DropsIn + p.DropsOut)
			if errs > th.NICErrorsDegraded {
				note(model.HealthDegraded, "uplink %s: %d errors/drops since the last sample", s.NIC.Name, errs)
			}
		}
		m.prevNIC = s.NIC
	}
	return h
}

// Observe takes a sample and returns the health: the state moves to a
// worse level after Rise samples at it (or worse), to a better one after
// Fall samples at it (or better); the reasons are always the latest.
func (m *Monitor) Observe(s Sample) model.Health {
	raw := m.assess(s)
	if raw.State != m.streakAt {
		m.streakAt, m.streak = raw.State, 0
	}
	m.streak++
	need := m.th.Fall
	if levels[raw.State] > levels[m.cur.State] {
		need = m.th.Rise
	}
	if raw.State != m.cur.State && m.streak >= need {
		m.cur.State = raw.State
	}
	m.cur.Reasons = raw.Reasons
	return model.Health{State: m.cur.State, Reasons: slices.Clone(m.cur.Reasons)}
}

// Report is what the monitor tells the daemon after each sample.
type Report struct {
	Sample   Sample
	Capacity model.Capacity
	Health   model.Health
}

// Run samples src every interval, the first time one interval from now,
// until ctx ends, and calls report with each result. A failed sample is
// logged and skipped.
func Run(ctx context.Context, src Source, mon *Monitor, interval time.Duration, log *slog.Logger, report func(Report)) error {
	tick := time.NewTicker(interval)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
		}
		s, err := src.Sample(ctx)
		if err != nil {
			log.Warn("hardware sample failed", "err", err)
			continue
		}
		report(Report{Sample: s, Capacity: CapacityOf(s), Health: mon.Observe(s)})
	}
}

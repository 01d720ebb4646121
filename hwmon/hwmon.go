// Package hwmon watches this host's hardware with gopsutil (v4): CPU count
// and use, memory, load, disk use of the data directory and the storage pool,
// temperatures when sensors exist, errors and link state of the uplink, and
// the power draw (a sensor, RAPL, or an estimate from CPU use).
// A Monitor turns samples into capacity and health (ok, degraded, failing,
// with reasons) with thresholds and hysteresis, so one bad sample does not
// flap a host. It is the only importer of gopsutil.
package hwmon

import (
	"context"
	"fmt"
	"time"

	"github.com/shirou/gopsutil/v4/cpu"
	"github.com/shirou/gopsutil/v4/disk"
	"github.com/shirou/gopsutil/v4/load"
	"github.com/shirou/gopsutil/v4/mem"
	gnet "github.com/shirou/gopsutil/v4/net"
	"github.com/shirou/gopsutil/v4/sensors"

	"github.com/corralhq/corral/model"
)

// Sample is one reading of the host.
type Sample struct {
	Time         time.Time   `json:"time"`
	CPUs         int         `json:"cpus"`
	CPUPercent   float64     `json:"cpu_percent"` // all CPUs, since the previous sample
	MemTotal     uint64      `json:"mem_total"`
	MemAvailable uint64      `json:"mem_available"`
	Load1        float64     `json:"load1"`
	Load5        float64     `json:"load5"`
	Load15       float64     `json:"load15"`
	Disks        []DiskUsage `json:"disks"`
	Temps        []Temp      `json:"temps,omitempty"`
	NIC          *NICStatus  `json:"nic,omitempty"`
	// PowerWatts is the host's power draw, measured or estimated as
	// PowerSource says (PowerSensor, PowerRAPL, PowerEstimate).
	PowerWatts  float64 `json:"power_watts"`
	PowerSource string  `json:"power_source"`
}

// DiskUsage is the use of the file system holding Path.
type DiskUsage struct {
	Path        string  `json:"path"`
	Total       uint64  `json:"total"`
	Used        uint64  `json:"used"`
	UsedPercent float64 `json:"used_percent"`
}

// Temp is one temperature sensor.
type Temp struct {
	Sensor  string  `json:"sensor"`
	Celsius float64 `json:"celsius"`
}

// NICStatus is the uplink's state and error counters (cumulative).
type NICStatus struct {
	Name      string `json:"name"`
	Up        bool   `json:"up"`
	ErrorsIn  uint64 `json:"errors_in"`
	ErrorsOut uint64 `json:"errors_out"`
	DropsIn   uint64 `json:"drops_in"`
	DropsOut  uint64 `json:"drops_out"`
}

// Source produces samples: System for real, a fake in tests.
type Source interface {
	Sample(ctx context.Context) (Sample, error)
}

// System samples this host with gopsutil.
type System struct {
	// Paths whose file systems are watched (data_dir, storage pool).
	Paths []string
	// Uplink is the interface whose link and errors are watched; empty
	// for none.
	Uplink string
	// Power reads the power draw.
	Power PowerMeter
}

// Sample reads the host. A part that cannot be read (no sensors, a path
// that does not exist yet) is left out rather than failing the sample.
func (s *System) Sample(ctx context.Context) (Sample, error) {
	out := Sample{Time: time.Now()}
	n, err := cpu.CountsWithContext(ctx, true)
	if err != nil {
		return out, fmt.Errorf("cpu count: %w", err)
	}
	out.CPUs = n
	if pct, err := cpu.PercentWithContext(ctx, 0, false); err == nil && len(pct) == 1 {
		out.CPUPercent = pct[0]
	}
	vm, err := mem.VirtualMemoryWithContext(ctx)
	if err != nil {
		return out, fmt.Errorf("memory: %w", err)
	}
	out.MemTotal, out.MemAvailable = vm.Total, vm.Available
	if l, err := load.AvgWithContext(ctx); err == nil {
		out.Load1, out.Load5, out.Load15 = l.Load1, l.Load5, l.Load15
	}
	for _, p := range s.Paths {
		if u, err := disk.UsageWithContext(ctx, p); err == nil {
			out.Disks = append(out.Disks, DiskUsage{Path: p, Total: u.Total, Used: u.Used, UsedPercent: u.UsedPercent})
		}
	}
	if temps, err := sensors.TemperaturesWithContext(ctx); err == nil {
		for _, t := range temps {
			if t.Temperature > 0 {
				out.Temps = append(out.Temps, Temp{Sensor: t.SensorKey, Celsius: t.Temperature})
			}
		}
	}
	if s.Uplink != "" {
		out.NIC = s.nic(ctx)
	}
	out.PowerWatts, out.PowerSource = s.Power.Read(out.Time, out.CPUs, out.CPUPercent)
	return out, nil
}

func (s *System) nic(ctx context.Context) *NICStatus {
	st := &NICStatus{Name: s.Uplink}
	if ifs, err := gnet.InterfacesWithContext(ctx); err == nil {
		for _, i := range ifs {
			if i.Name != s.Uplink {
				continue
			}
			for _, f := range i.Flags {
				if f == "up" {
					st.Up = true
				}
			}
		}
	}
	if cs, err := gnet.IOCountersWithContext(ctx, true); err == nil {
		for _, c := range cs {
			if c.Name == s.Uplink {
				st.ErrorsIn, st.ErrorsOut, st.DropsIn, st.DropsOut = c.Errin, c.Errout, c.Dropin, c.Dropout
			}
		}
	}
	return st
}

// Capacity returns the host's logical CPU count and total memory.
func Capacity() (model.Capacity, error) {
	s, err := (&System{}).Sample(context.Background())
	if err != nil {
		return model.Capacity{}, err
	}
	return CapacityOf(s), nil
}

// CapacityOf is the capacity a sample shows.
func CapacityOf(s Sample) model.Capacity {
	return model.Capacity{VCPUs: s.CPUs, MemoryMiB: int64(s.MemTotal >> 20)}
}

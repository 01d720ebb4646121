package hwmon

import (
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Power sources, best first: a power sensor the kernel exposes (hwmon
// power*_input or power*_average, e.g. ACPI power meters and some BMCs),
// the CPU packages' energy counters (Intel/AMD RAPL through powercap: the
// packages only, not the rest of the machine), else an estimate from CPU
// use (Estimate).
const (
	PowerSensor   = "sensor"
	PowerRAPL     = "rapl"
	PowerEstimate = "estimate"
)

// Estimate is the linear model used where nothing measures power: Idle
// watts at rest, Max at full CPU use. Zero values take 20 W plus 2 W (idle)
// or 8 W (max) per logical CPU, a rough middle of today's x86 servers.
type Estimate struct {
	IdleWatts, MaxWatts float64
}

func (e Estimate) watts(cpus int, cpuPercent float64) float64 {
	idle, top := e.IdleWatts, e.MaxWatts
	if idle <= 0 {
		idle = 20 + 2*float64(cpus)
	}
	if top <= idle {
		top = max(idle, 20+8*float64(cpus))
	}
	return idle + (top-idle)*min(max(cpuPercent, 0), 100)/100
}

// PowerMeter reads the host's power draw from sysfs (Root, "/sys" when
// empty), keeping the RAPL counters between samples.
type PowerMeter struct {
	Root     string
	Estimate Estimate

	mu    sync.Mutex
	last  map[string]uint64 // RAPL domain -> energy (µJ) at lastT
	lastT time.Time
}

var raplDomain = regexp.MustCompile(`^intel-rapl:\d+$`) // packages, not their sub-domains

// Read returns the draw in watts and where it comes from.
func (p *PowerMeter) Read(now time.Time, cpus int, cpuPercent float64) (float64, string) {
	root := p.Root
	if root == "" {
		root = "/sys"
	}
	if w, ok := sensorWatts(root); ok {
		return w, PowerSensor
	}
	if w, ok := p.rapl(root, now); ok {
		return w, PowerRAPL
	}
	return p.Estimate.watts(cpus, cpuPercent), PowerEstimate
}

// sensorWatts sums the hwmon power sensors (µW).
func sensorWatts(root string) (float64, bool) {
	var sum float64
	found := false
	hw, _ := filepath.Glob(filepath.Join(root, "class/hwmon/hwmon*"))
	for _, h := range hw {
		for _, name := range []string{"power1_input", "power1_average"} {
			if v, ok := readUint(filepath.Join(h, name)); ok {
				sum += float64(v) / 1e6
				found = true
				break
			}
		}
	}
	return sum, found
}

// rapl is the package domains' energy since the previous read over the
// time since; the first read only starts the count.
func (p *PowerMeter) rapl(root string, now time.Time) (float64, bool) {
	dirs, _ := filepath.Glob(filepath.Join(root, "class/powercap/intel-rapl:*"))
	cur := map[string]uint64{}
	ranges := map[string]uint64{}
	for _, d := range dirs {
		if !raplDomain.MatchString(filepath.Base(d)) {
			continue
		}
		if e, ok := readUint(filepath.Join(d, "energy_uj")); ok {
			cur[filepath.Base(d)] = e
			ranges[filepath.Base(d)], _ = readUint(filepath.Join(d, "max_energy_range_uj"))
		}
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	last, lastT := p.last, p.lastT
	p.last, p.lastT = cur, now
	if len(cur) == 0 || last == nil || !now.After(lastT) {
		return 0, false
	}
	var uj float64
	for d, e := range cur {
		prev, ok := last[d]
		if !ok {
			return 0, false // a domain appeared: start over
		}
		if e < prev { // the counter wrapped
			if ranges[d] == 0 {
				return 0, false
			}
			e += ranges[d]
		}
		uj += float64(e - prev)
	}
	return uj / 1e6 / now.Sub(lastT).Seconds(), true
}

func readUint(path string) (uint64, bool) {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, false
	}
	v, err := strconv.ParseUint(strings.TrimSpace(string(b)), 10, 64)
	return v, err == nil
}

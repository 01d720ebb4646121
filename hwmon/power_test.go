package hwmon

import (
	"os"
	"path/filepath"
	"testing"
	"time"
)

func write(t *testing.T, path, v string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(v+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
}

// Power comes from a sensor when there is one, else from the RAPL package
// counters (from the second read on, across a wrap, sub-domains not
// counted twice), else from the CPU-use estimate.
func TestPowerSources(t *testing.T) {
	root := t.TempDir()
	p := &PowerMeter{Root: root}
	t0 := time.Unix(1000, 0)
	// Nothing: the estimate, 20 W + 2 W per CPU idle, + 8 W per CPU busy.
	if w, src := p.Read(t0, 4, 0); src != PowerEstimate || w != 28 {
		t.Fatalf("idle estimate %v %s", w, src)
	}
	if w, _ := p.Read(t0, 4, 50); w != 40 {
		t.Fatalf("half-busy estimate %v", w)
	}
	if w, _ := (&PowerMeter{Root: root, Estimate: Estimate{IdleWatts: 100, MaxWatts: 300}}).Read(t0, 4, 100); w != 300 {
		t.Fatalf("configured estimate %v", w)
	}
	// RAPL: two packages; a sub-domain (dram) is inside its package.
	rapl := filepath.Join(root, "class/powercap")
	write(t, filepath.Join(rapl, "intel-rapl:0/energy_uj"), "1000000")
	write(t, filepath.Join(rapl, "intel-rapl:0/max_energy_range_uj"), "262143328850")
	write(t, filepath.Join(rapl, "intel-rapl:1/energy_uj"), "262143000000")
	write(t, filepath.Join(rapl, "intel-rapl:1/max_energy_range_uj"), "262143328850")
	write(t, filepath.Join(rapl, "intel-rapl:0:0/energy_uj"), "5")
	if _, src := p.Read(t0, 4, 0); src != PowerEstimate {
		t.Fatalf("first RAPL read is %s, want the estimate (no interval yet)", src)
	}
	// 2 s later: package 0 used 60 J, package 1 wrapped after 40 J.
	write(t, filepath.Join(rapl, "intel-rapl:0/energy_uj"), "61000000")
	write(t, filepath.Join(rapl, "intel-rapl:1/energy_uj"), "39671150")
	write(t, filepath.Join(rapl, "intel-rapl:0:0/energy_uj"), "999999999")
	if w, src := p.Read(t0.Add(2*time.Second), 4, 0); src != PowerRAPL || w < 49.9 || w > 50.1 {
		t.Fatalf("RAPL %v W from %s, want 50", w, src)
	}
	// A power sensor (µW) wins over RAPL.
	write(t, filepath.Join(root, "class/hwmon/hwmon3/power1_average"), "212500000")
	if w, src := p.Read(t0.Add(4*time.Second), 4, 0); src != PowerSensor || w != 212.5 {
		t.Fatalf("sensor %v %s", w, src)
	}
}

package main

import (
	"strings"
	"testing"

	"github.com/spf13/pflag"

	"github.com/corralhq/corral/api"
)

// Health check flags: given on create they make a check; on update only
// those given change, --no-health removes it, and bad timings are refused.
func TestHealthFlags(t *testing.T) {
	parse := func(args ...string) (*specFlags, *pflag.FlagSet) {
		t.Helper()
		var sf specFlags
		f := pflag.NewFlagSet("x", pflag.ContinueOnError)
		sf.register(f)
		f.BoolVar(&sf.noHealth, "no-health", false, "")
		if err := f.Parse(args); err != nil {
			t.Fatal(err)
		}
		return &sf, f
	}
	sf, _ := parse("--health-exec", "curl -fs localhost", "--health-interval", "2s")
	spec, _, err := sf.spec()
	if err != nil || spec.Health == nil || *spec.Health != (api.HealthCheck{Exec: "curl -fs localhost", IntervalSec: 2, TimeoutSec: 5, Retries: 3, StartSec: 60}) {
		t.Fatalf("create: %+v %v", spec.Health, err)
	}
	if sf, _ := parse("--vcpus", "2"); func() bool { s, _, _ := sf.spec(); return s.Health != nil }() {
		t.Fatal("a check without health flags")
	}
	if sf, _ := parse("--health-tcp", "80", "--health-timeout", "1500ms"); func() bool { _, _, err := sf.spec(); return err == nil }() {
		t.Fatal("a timeout of 1.5s accepted")
	}

	base := api.VMSpec{VCPUs: 1, MemoryMiB: 128, Health: &api.HealthCheck{Exec: "true", IntervalSec: 7, TimeoutSec: 2, Retries: 4, StartSec: 30}}
	sf, f := parse("--health-retries", "9")
	out, _, err := sf.update(base, f)
	if err != nil || *out.Health != (api.HealthCheck{Exec: "true", IntervalSec: 7, TimeoutSec: 2, Retries: 9, StartSec: 30}) {
		t.Fatalf("update retries: %+v %v", out.Health, err)
	}
	sf, f = parse("--health-tcp", "443")
	if out, _, err = sf.update(base, f); err != nil || out.Health.TCPPort != 443 || out.Health.Exec != "" || out.Health.IntervalSec != 7 {
		t.Fatalf("update to TCP: %+v %v", out.Health, err)
	}
	sf, f = parse("--no-health")
	if out, _, err = sf.update(base, f); err != nil || out.Health != nil {
		t.Fatalf("--no-health: %+v %v", out.Health, err)
	}
	sf, f = parse("--health-retries", "2")
	if _, _, err = sf.update(api.VMSpec{VCPUs: 1}, f); err == nil || !strings.Contains(err.Error(), "--health-exec or --health-tcp") {
		t.Fatalf("timings without a check: %v", err)
	}
}

// Soft rules: KIND:KEY=VALUE:WEIGHT, a value may hold colons; anything
// else is refused with the form expected.
func TestSoftRuleFlags(t *testing.T) {
	got, err := parseSoftRules([]string{"host:ssd=yes:50", "vm:app=web:v2:10"}, "--prefer")
	if err != nil || len(got) != 2 || got[0] != (api.SoftRule{Kind: "host", Key: "ssd", Value: "yes", Weight: 50}) ||
		got[1] != (api.SoftRule{Kind: "vm", Key: "app", Value: "web:v2", Weight: 10}) {
		t.Fatalf("parsed %+v, %v", got, err)
	}
	for _, bad := range []string{"ssd=yes:50", "rack:r=1:5", "host:ssd:50", "host:ssd=yes", "host:ssd=yes:x"} {
		if _, err := parseSoftRules([]string{bad}, "--avoid"); err == nil || !strings.Contains(err.Error(), "KEY=VALUE:WEIGHT") {
			t.Errorf("%q: %v", bad, err)
		}
	}
}

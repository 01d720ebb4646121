package controller

import (
	"testing"
	"time"

	"github.com/corralhq/corral/model"
)

// The autoscaler follows load within min..max, waits its cooldowns after
// any change, does not flap on a dip, and leaves a count near its target
// alone.
func TestAutoscalerDecisions(t *testing.T) {
	a := NewAutoscaler()
	t0 := time.Unix(1000, 0)
	g := model.Group{Name: "web", Count: 2, Autoscale: &model.Autoscale{Min: 1, Max: 6, TargetCPU: 50, UpCooldownSec: 30, DownCooldownSec: 120}}
	at := func(s int) time.Time { return t0.Add(time.Duration(s) * time.Second) }
	step := func(s int, mean float64, want int) {
		t.Helper()
		n, why := a.Decide(g, mean, true, at(s))
		if n != want {
			t.Fatalf("t=%ds mean %.2f count %d: got %d (%q), want %d", s, mean, g.Count, n, why, want)
		}
		if n != g.Count && why == "" {
			t.Fatalf("t=%ds: a change without a reason", s)
		}
		g.Count = n
	}
	step(0, 0.9, 2)   // first look: the up cooldown runs from now
	step(15, 0.9, 2)  // still within it
	step(30, 0.9, 4)  // ceil(2 x 0.9/0.5) = 4
	step(45, 0.95, 4) // the change restarted the cooldown
	step(60, 0.95, 6) // ceil(4 x 1.9) = 8, clamped to 6
	step(90, 0.52, 6) // within 10 % of the target: nothing
	// Load drops: a scale-down waits 120 s after the last change and goes
	// to the highest count recommended within those 120 s.
	step(100, 0.1, 6) // recommends 2
	step(150, 0.3, 6) // recommends 4
	step(180, 0.1, 6) // 120 s since t=60, but t=90 recommended 6
	step(211, 0.1, 4) // within 120 s: 2@100, 4@150, 2@180, 2@211
	step(250, 0.1, 4) // cooldown from t=211
	step(331, 0.1, 1) // ceil(4 x 0.2) = 1, all within 120 s agree
	// An operator's count outside min..max is brought back at once; one
	// inside restarts the cooldowns.
	g.Count = 9
	step(332, 0.5, 6)
	g.Count = 2
	step(333, 0.9, 2)
	step(363, 0.9, 4)
	// No sample (no member runs): nothing, unless below min.
	if n, _ := a.Decide(g, 0, false, at(500)); n != 4 {
		t.Fatalf("unsampled: %d", n)
	}
	g.Autoscale.Min = 5
	if n, why := a.Decide(g, 0, false, at(501)); n != 5 || why == "" {
		t.Fatalf("below a raised min: %d %q", n, why)
	}
}

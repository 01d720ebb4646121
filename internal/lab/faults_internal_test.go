package lab

import (
	"math"
	"strings"
	"testing"
	"time"
)

// Netem's parameters as tc gets them; bad values are refused before tc runs.
func TestNetemArgs(t *testing.T) {
	for _, c := range []struct {
		loss          float64
		delay, jitter time.Duration
		want          string // "" for an error
	}{
		{100, 0, 0, "loss 100%"},
		{0.5, 0, 0, "loss 0.5%"},
		{0, 200 * time.Millisecond, 0, "loss 0% delay 200000us"},
		{1, 50 * time.Millisecond, 1500 * time.Microsecond, "loss 1% delay 50000us 1500us"},
		{-1, 0, 0, ""},
		{100.1, 0, 0, ""},
		{math.NaN(), 0, 0, ""},
		{0, -time.Millisecond, 0, ""},
		{0, 0, time.Millisecond, ""},
	} {
		args, err := netemArgs(c.loss, c.delay, c.jitter)
		got := strings.Join(args, " ")
		if c.want == "" && err == nil || c.want != "" && (err != nil || got != c.want) {
			t.Errorf("netemArgs(%v, %v, %v) = %q, %v; want %q", c.loss, c.delay, c.jitter, got, err, c.want)
		}
	}
}

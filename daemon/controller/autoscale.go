package controller

import (
	"fmt"
	"math"
	"time"

	"github.com/corralhq/corral/model"
)

// Autoscaler decides group counts from their members' CPU use (the
// samples come from the daemon, which asks the members' hosts). It keeps,
// per group, when the count last changed (by it or anyone) and the counts
// it recommended within the down cooldown: leader memory, started afresh
// by a new leader (which then waits a full cooldown before any change).
//
// The rule is Kubernetes' HPA's: desired = ceil(count x mean / target),
// within 10 % of the target nothing changes, clamped to min..max. A
// scale-up waits the up cooldown after the last change; a scale-down the
// down cooldown, and goes only to the highest count recommended within it,
// so a dip in load does not remove members that the next minute needs.
type Autoscaler struct {
	groups map[string]*scaleState
}

type scaleState struct {
	count   int       // the count last seen
	changed time.Time // when it changed (or was first seen)
	recs    []scaleRec
}

type scaleRec struct {
	at    time.Time
	count int
}

// NewAutoscaler returns an autoscaler that remembers nothing yet.
func NewAutoscaler() *Autoscaler { return &Autoscaler{groups: map[string]*scaleState{}} }

// tolerance: a mean within 10 % of the target changes nothing.
const tolerance = 0.1

// Decide returns the count g should have now and why, given the mean CPU
// use of its running members (a fraction of their vCPUs, 0..1 and above
// under overcommit) when sampled is true. It returns g.Count and "" when
// nothing should change; a change it returns counts as made now (if it
// is not made, the next look sees the old count and starts over).
func (a *Autoscaler) Decide(g model.Group, mean float64, sampled bool, now time.Time) (int, string) {
	as := g.Autoscale
	if as == nil {
		delete(a.groups, g.Name)
		return g.Count, ""
	}
	s := a.groups[g.Name]
	if s == nil || s.count != g.Count {
		// First look, or the count changed (by us or by an operator):
		// the cooldowns run from now.
		s = &scaleState{count: g.Count, changed: now}
		a.groups[g.Name] = s
	}
	clamp := func(n int) int { return min(max(n, as.Min), as.Max) }
	changed := func(n int, why string) (int, string) {
		s.count, s.changed, s.recs = n, now, nil
		return n, why
	}
	if c := clamp(g.Count); c != g.Count {
		return changed(c, fmt.Sprintf("count %d is outside autoscale's %d..%d", g.Count, as.Min, as.Max))
	}
	if !sampled {
		return g.Count, ""
	}
	target := float64(as.TargetCPU) / 100
	rec := g.Count
	if ratio := mean / target; math.Abs(ratio-1) > tolerance {
		rec = clamp(int(math.Ceil(float64(g.Count) * ratio)))
	}
	up, down := as.Cooldowns()
	kept := s.recs[:0]
	for _, r := range s.recs {
		if now.Sub(r.at) < down {
			kept = append(kept, r)
		}
	}
	s.recs = append(kept, scaleRec{at: now, count: rec})
	why := func(n int) string {
		return fmt.Sprintf("mean CPU %.0f%% of the members' vCPUs, target %d%%: %d -> %d", mean*100, as.TargetCPU, g.Count, n)
	}
	since := now.Sub(s.changed)
	switch {
	case rec > g.Count && since >= up:
		return changed(rec, why(rec))
	case rec < g.Count && since >= down:
		high := rec
		for _, r := range s.recs {
			high = max(high, r.count)
		}
		if high < g.Count {
			return changed(high, why(high))
		}
	}
	return g.Count, ""
}

// Forget drops what is remembered of groups not in keep.
func (a *Autoscaler) Forget(keep map[string]bool) {
	for name := range a.groups {
		if !keep[name] {
			delete(a.groups, name)
		}
	}
}

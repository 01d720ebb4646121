package controller

import (
	"math/rand/v2"
	"testing"
	"time"

	"github.com/corralhq/corral/model"
)

// TestAssess covers each branch of assess with fixed times: interval
// 500 ms (suspected past 1.25 s), fence_after 1.5 s, lease_ttl 5 s +
// fence_margin 1 s, fence_timeout 5 s.
func TestAssess(t *testing.T) {
	now := time.Date(2026, 1, 1, 0, 10, 0, 0, time.UTC)
	ago := func(d time.Duration) time.Time { return now.Add(-d) }
	// renewed: an armed host whose last renewal arrived d ago.
	renewed := func(d time.Duration, mod ...func(*hostLive)) hostLive {
		rec := hostLive{heard: ago(d), renewedAt: ago(d), granted: ago(d), armedAck: true}
		for _, m := range mod {
			m(&rec)
		}
		return rec
	}
	suspected := func(r *hostLive) { r.suspected = true }
	unacked := func(r *hostLive) { r.armedAck = false }
	fencing := func(r *hostLive) { r.fencing = true }
	fenceCmd := func(c *LivenessConfig) { c.FenceCommand = []string{"/bin/fence"} }
	stopped := func(h *model.Host) { h.StoppedAt = ago(time.Minute) }
	failing := func(h *model.Host) {
		h.Health = model.Health{State: model.HealthFailing, Reasons: []string{"disk full"}}
	}
	evacuate := func(c *LivenessConfig) { c.AutoEvacuate = true }
	const lease6100 = "lease expired: last renewal 6.1s ago (lease_ttl 5s + fence_margin 1s)"

	for _, tc := range []struct {
		name      string
		rec       hostLive
		host      func(*model.Host)
		cfg       func(*LivenessConfig)
		facts     hostFacts
		want      step
		suspected bool   // the mark, with stepMark
		reason    string // with stepDeadBy*
	}{
		// Renewals on time, late, and surely expired.
		{name: "heard recently", rec: renewed(200 * time.Millisecond), want: stepMark},
		{name: "on time at 2.5 intervals", rec: renewed(1250 * time.Millisecond), want: stepMark},
		{name: "heard again after suspected", rec: renewed(200*time.Millisecond, suspected), want: stepMark | stepSayReachable},
		{name: "late", rec: renewed(1300 * time.Millisecond), want: stepMark | stepSaySuspected, suspected: true},
		{name: "late, said already", rec: renewed(3*time.Second, suspected), want: stepMark, suspected: true},
		{name: "late beyond fence_after without fence_command", rec: renewed(4*time.Second, suspected), want: stepMark, suspected: true},
		{name: "late up to ttl+margin", rec: renewed(6*time.Second, suspected), want: stepMark, suspected: true},
		{name: "late beyond ttl+margin", rec: renewed(6100*time.Millisecond, suspected),
			want: stepMark | stepDeadByLease, suspected: true, reason: lease6100},
		{name: "late beyond ttl+margin, not suspected yet", rec: renewed(6100 * time.Millisecond),
			want: stepMark | stepSaySuspected | stepDeadByLease, suspected: true, reason: lease6100},
		{name: "beyond ttl+margin, not renewed since HA was armed", rec: renewed(6100*time.Millisecond, suspected, unacked),
			want: stepMark | stepSayUnacked, suspected: true},
		{name: "maintenance is watched like active", rec: renewed(6100*time.Millisecond, suspected),
			host: func(h *model.Host) { h.Mode = model.ModeMaintenance }, want: stepMark | stepDeadByLease, suspected: true, reason: lease6100},

		// A host not heard since this leader's election: late from the
		// election, its lease from its last committed renewal (granted;
		// the election itself below FeatureCommittedLeases).
		{name: "not heard since election, within the lease", rec: hostLive{heard: ago(5 * time.Second), granted: ago(5 * time.Second), armedAck: true},
			want: stepMark | stepSaySuspected, suspected: true},
		{name: "not heard since election, beyond ttl+margin", rec: hostLive{heard: ago(6100 * time.Millisecond), granted: ago(6100 * time.Millisecond), armedAck: true, suspected: true},
			want: stepMark | stepDeadByLease, suspected: true, reason: lease6100},
		{name: "not heard since election, HA re-armed lately", rec: hostLive{heard: ago(6100 * time.Millisecond), granted: ago(6100 * time.Millisecond), suspected: true},
			want: stepMark | stepSayUnacked, suspected: true},
		{name: "elected 1 s ago, last committed renewal beyond ttl+margin", rec: hostLive{heard: ago(time.Second), granted: ago(6100 * time.Millisecond), armedAck: true},
			want: stepMark | stepDeadByLease, reason: lease6100},
		{name: "elected 1 s ago, last committed renewal within ttl+margin", rec: hostLive{heard: ago(time.Second), granted: ago(6 * time.Second), armedAck: true},
			want: stepMark},

		// Disarmed, and the leader itself: marks only.
		{name: "disarmed", rec: renewed(time.Minute), facts: hostFacts{haDisarmed: true}, cfg: fenceCmd,
			want: stepMark | stepSaySuspected, suspected: true},
		{name: "disarmed with a confirmed power-off", rec: renewed(time.Minute, suspected, func(r *hostLive) { r.fenceOK = "off" }),
			facts: hostFacts{haDisarmed: true}, cfg: fenceCmd, want: stepMark, suspected: true},
		{name: "self", rec: renewed(time.Minute, suspected), facts: hostFacts{self: true}, cfg: fenceCmd, want: stepMark, suspected: true},

		// fence_command.
		{name: "fence_command, the leader before, silent beyond fence_after since the last contact", cfg: fenceCmd,
			rec: hostLive{heard: ago(time.Second), granted: ago(time.Second), silentSince: ago(1600 * time.Millisecond), armedAck: true}, want: stepMark | stepFence},
		{name: "fence_command, the leader before, silent since the last contact, not beyond fence_after", cfg: fenceCmd,
			rec: hostLive{heard: ago(time.Second), granted: ago(time.Second), silentSince: ago(1400 * time.Millisecond), armedAck: true}, want: stepMark},
		{name: "fence_command, the leader before, renewed since", cfg: fenceCmd,
			rec: renewed(time.Second, func(r *hostLive) { r.silentSince = ago(time.Minute) }), want: stepMark},
		{name: "the leader before without fence_command: the lease counts from the election",
			rec: hostLive{heard: ago(time.Second), granted: ago(time.Second), silentSince: ago(time.Minute), armedAck: true}, want: stepMark},
		{name: "fence_command, before fence_after", rec: renewed(1400*time.Millisecond, suspected), cfg: fenceCmd,
			want: stepMark, suspected: true},
		{name: "fence_command, beyond fence_after", rec: renewed(1600*time.Millisecond, suspected), cfg: fenceCmd,
			want: stepMark | stepFence, suspected: true},
		{name: "fence_command, gossip dead and late", rec: renewed(1300 * time.Millisecond), cfg: fenceCmd,
			facts: hostFacts{gossipDead: true}, want: stepMark | stepSaySuspected | stepFence, suspected: true},
		{name: "fence_command, gossip dead but on time", rec: renewed(time.Second), cfg: fenceCmd,
			facts: hostFacts{gossipDead: true}, want: stepMark},
		{name: "fence_command running", rec: renewed(3*time.Second, suspected, fencing), cfg: fenceCmd,
			want: stepMark, suspected: true},
		{name: "fence_command running beyond ttl+margin", rec: renewed(6100*time.Millisecond, suspected, fencing), cfg: fenceCmd,
			want: stepMark | stepDeadByLease, suspected: true, reason: lease6100},
		{name: "fence_command beyond ttl+margin", rec: renewed(6100*time.Millisecond, suspected), cfg: fenceCmd,
			want: stepMark | stepFence | stepDeadByLease, suspected: true, reason: lease6100},
		{name: "fence_command succeeded", rec: renewed(2*time.Second, suspected, func(r *hostLive) {
			r.fenceOK, r.fenceStarted = "fence_command confirmed power-off in 1s", ago(time.Second)
		}),
			cfg: fenceCmd, want: stepMark | stepDeadByFence, suspected: true, reason: "fence_command confirmed power-off in 1s"},
		{name: "fence_command succeeded, host not renewed this leadership", rec: hostLive{heard: ago(2 * time.Second), granted: ago(2 * time.Second), armedAck: true, suspected: true, fenceOK: "off", fenceStarted: ago(time.Second)},
			cfg: fenceCmd, want: stepMark | stepDeadByFence, suspected: true, reason: "off"},
		// A confirmation older than the host's last renewal is stale: a
		// slow agent's, for a host powered on and back since, or one that
		// succeeded while HA was disarmed and the host renewed through it.
		{name: "fence_command succeeded before the last renewal", rec: renewed(200*time.Millisecond, func(r *hostLive) { r.fenceOK, r.fenceStarted = "off", ago(time.Hour) }),
			cfg: fenceCmd, want: stepMark},
		{name: "stale confirmation, host late again", rec: renewed(3*time.Second, suspected, func(r *hostLive) { r.fenceOK, r.fenceStarted = "off", ago(time.Hour) }),
			cfg: fenceCmd, want: stepMark | stepFence, suspected: true},
		{name: "fence_command failed within fence_timeout", rec: renewed(3*time.Second, suspected, func(r *hostLive) { r.fenceFail = ago(5 * time.Second) }),
			cfg: fenceCmd, want: stepMark, suspected: true},
		{name: "fence_command failed before fence_timeout", rec: renewed(3*time.Second, suspected, func(r *hostLive) { r.fenceFail = ago(5100 * time.Millisecond) }),
			cfg: fenceCmd, want: stepMark | stepFence, suspected: true},

		// A clean stop: not suspected, never dead on lease expiry alone;
		// fence_command waits for ttl+margin.
		{name: "clean stop, late", rec: renewed(3 * time.Second), host: stopped, want: stepMark, suspected: true},
		{name: "clean stop beyond ttl+margin", rec: renewed(6100*time.Millisecond, suspected), host: stopped,
			want: stepMark | stepSayStopped, suspected: true},
		{name: "clean stop, fence_command, beyond fence_after", rec: renewed(3*time.Second, suspected), host: stopped, cfg: fenceCmd,
			facts: hostFacts{gossipDead: true}, want: stepMark, suspected: true},
		{name: "clean stop, fence_command, beyond ttl+margin", rec: renewed(6100*time.Millisecond, suspected), host: stopped, cfg: fenceCmd,
			want: stepMark | stepFence, suspected: true},
		{name: "clean stop, fence_command running", rec: renewed(6100*time.Millisecond, suspected, fencing), host: stopped, cfg: fenceCmd,
			want: stepMark, suspected: true},
		{name: "clean stop, fence_command succeeded", rec: renewed(7*time.Second, suspected, func(r *hostLive) { r.fenceOK, r.fenceStarted = "off", ago(time.Second) }),
			host: stopped, cfg: fenceCmd, want: stepMark | stepDeadByFence, suspected: true, reason: "off"},

		// Already fenced: welcomed back once it renews after the fence,
		// otherwise its guests are tried again.
		{name: "fenced, renews", rec: renewed(100 * time.Millisecond),
			host: func(h *model.Host) { h.Mode, h.FencedAt = model.ModeFenced, ago(time.Second) }, want: stepWelcome},
		{name: "fenced, silent", rec: renewed(time.Minute),
			host: func(h *model.Host) { h.Mode, h.FencedAt = model.ModeFenced, ago(50*time.Second) }, want: stepRecover},
		{name: "fenced, last renewal before the fence", rec: renewed(100 * time.Millisecond),
			host: func(h *model.Host) { h.Mode, h.FencedAt = model.ModeFenced, ago(50*time.Millisecond) }, want: stepRecover},
		{name: "fenced, not renewed this leadership", rec: hostLive{heard: ago(100 * time.Millisecond), granted: ago(100 * time.Millisecond)},
			host: func(h *model.Host) { h.Mode, h.FencedAt = model.ModeFenced, ago(time.Hour) }, want: stepRecover},
		{name: "fenced, confirmed power-off is not looked at", rec: renewed(time.Minute, func(r *hostLive) { r.fenceOK = "off" }),
			host: func(h *model.Host) { h.Mode, h.FencedAt = model.ModeFenced, ago(time.Second) }, cfg: fenceCmd, want: stepRecover},

		// Standby: silence is no failure.
		{name: "standby, renews", rec: renewed(900 * time.Millisecond),
			host: func(h *model.Host) { h.Mode = model.ModeStandby }, want: stepStandbyBack},
		{name: "standby, silent", rec: renewed(time.Hour),
			host: func(h *model.Host) { h.Mode = model.ModeStandby }, cfg: fenceCmd},

		// Health failing with auto_evacuate: drained while it renews.
		{name: "failing, evacuate", rec: renewed(200 * time.Millisecond), host: failing, cfg: evacuate, want: stepMark | stepEvacuate},
		{name: "failing, evacuate off", rec: renewed(200 * time.Millisecond), host: failing, want: stepMark},
		{name: "failing and late", rec: renewed(1300 * time.Millisecond), host: failing, cfg: evacuate,
			want: stepMark | stepSaySuspected, suspected: true},
		{name: "failing, draining already", rec: renewed(200 * time.Millisecond), cfg: evacuate,
			host: func(h *model.Host) { failing(h); h.Draining = true }, want: stepMark},
		{name: "failing, in maintenance", rec: renewed(200 * time.Millisecond), cfg: evacuate,
			host: func(h *model.Host) { failing(h); h.Mode = model.ModeMaintenance }, want: stepMark},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := LivenessConfig{Interval: 500 * time.Millisecond, TTL: 5 * time.Second, Margin: time.Second,
				FenceAfter: 1500 * time.Millisecond, FenceTimeout: 5 * time.Second}
			if tc.cfg != nil {
				tc.cfg(&cfg)
			}
			h := model.Host{Name: "h2", Addr: "10.0.0.2", Mode: model.ModeActive}
			if tc.host != nil {
				tc.host(&h)
			}
			got := assess(tc.rec, h, now, cfg, tc.facts)
			want := action{steps: tc.want, suspected: tc.suspected, age: now.Sub(tc.rec.heard), reason: tc.reason}
			if got != want {
				t.Fatalf("assess = %v %+v, want %v %+v", got.steps, got, want.steps, want)
			}
		})
	}
}

func TestStepString(t *testing.T) {
	for s, want := range map[step]string{0: "none", stepMark | stepFence: "mark|fence", stepDeadByLease: "dead-by-lease"} {
		if got := s.String(); got != want {
			t.Errorf("%d: %q, want %q", uint16(s), got, want)
		}
	}
	if len(stepNames) != 12 || stepDeadByLease != 1<<(len(stepNames)-1) {
		t.Fatalf("stepNames (%d) does not name every step", len(stepNames))
	}
}

// TestNextAssessMissesNothing: the liveness pass sleeps until nextAssess,
// so assess must say the same at every instant before it as at the pass
// (with the record and facts unchanged: what changes them wakes the pass).
// Random records, modes and configurations; assess is sampled every
// millisecond up to the wake-up (or over 10 s when there is none), and its
// answer must change right at the wake-up for some of them (a tenth at
// least: a wake-up that changes nothing costs a pass, not safety).
func TestNextAssessMissesNothing(t *testing.T) {
	rnd := rand.New(rand.NewPCG(1, 2))
	now := time.Date(2026, 1, 1, 0, 10, 0, 0, time.UTC)
	ago := func(max time.Duration) time.Time { return now.Add(-time.Duration(rnd.Int64N(int64(max)))) }
	maybe := func(p float64, t time.Time) time.Time {
		if rnd.Float64() < p {
			return t
		}
		return time.Time{}
	}
	modes := []model.HostMode{model.ModeActive, model.ModeMaintenance, model.ModeFenced, model.ModeStandby}
	tight := 0
	const runs = 1500
	for i := range runs {
		cfg := LivenessConfig{Interval: 200 * time.Millisecond, TTL: 3700 * time.Millisecond, Margin: 200 * time.Millisecond,
			FenceAfter: 900 * time.Millisecond, FenceTimeout: 5 * time.Second}
		if rnd.IntN(2) == 0 {
			cfg.FenceCommand = []string{"/bin/fence"}
		}
		heard := ago(6 * time.Second)
		rec := hostLive{heard: heard, renewedAt: maybe(0.8, heard), granted: heard.Add(-time.Duration(rnd.Int64N(int64(time.Second)))),
			silentSince: maybe(0.2, ago(5*time.Second)), suspected: rnd.IntN(2) == 0, armedAck: rnd.IntN(5) != 0,
			fencing: rnd.IntN(4) == 0, fenceFail: maybe(0.3, ago(6*time.Second))}
		h := model.Host{Name: "h2", Mode: modes[rnd.IntN(len(modes))], FencedAt: ago(10 * time.Second)}
		if rnd.IntN(5) == 0 {
			h.StoppedAt = ago(time.Minute)
		}
		f := hostFacts{haDisarmed: rnd.IntN(6) == 0, self: rnd.IntN(8) == 0, gossipDead: rnd.IntN(4) == 0}
		next := nextAssess(rec, h, now, cfg, f)
		end := next
		if end.IsZero() {
			end = now.Add(10 * time.Second)
		} else if !next.After(now) {
			t.Fatalf("run %d: next %v is not after now", i, next.Sub(now))
		}
		// The leader's own record is heard at every pass (checkLiveness).
		at := func(t time.Time) hostLive {
			if f.self {
				r := rec
				r.heard, r.granted = t, t
				return r
			}
			return rec
		}
		want := assess(at(now), h, now, cfg, f)
		for ts := now; ts.Before(end); ts = ts.Add(time.Millisecond) {
			if got := assess(at(ts), h, ts, cfg, f); got.steps != want.steps || got.suspected != want.suspected {
				t.Fatalf("run %d: assess changes at +%v (%v -> %v), before the wake-up at +%v\nrec %+v\nhost %+v facts %+v",
					i, ts.Sub(now), want.steps, got.steps, next.Sub(now), rec, h, f)
			}
		}
		if !next.IsZero() {
			if got := assess(at(next), h, next, cfg, f); got.steps != want.steps || got.suspected != want.suspected {
				tight++
			}
		}
	}
	if tight < runs/10 {
		t.Fatalf("assess changed at the wake-up in %d of %d runs: the wake-ups are early for no reason", tight, runs)
	}
	t.Logf("%d runs, assess changed exactly at the wake-up in %d", runs, tight)
}

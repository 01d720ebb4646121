package controller

import (
	"fmt"
	"strings"
	"time"

	"github.com/corralhq/corral/model"
)

// hostLive is the leader's record of one host's lease, kept for one
// leadership (see liveness). A zero time means "never": no renewal, no
// failed fence command, no recovery tried.
type hostLive struct {
	// heard: the last renewal received, on the leader's monotonic clock;
	// the leader's election (or, for a host registered later, the first
	// pass that saw it) until the host renews.
	heard time.Time
	// renewedAt: the last real renewal (heard without the defaults).
	renewedAt time.Time
	// granted bounds, on the leader's monotonic clock, when the host
	// sent the last renewal any leader granted it: its lease ends
	// lease_ttl after that at the latest. A renewal this leader grants
	// sets it with heard; a new leader starts it from when it applied the
	// host's last committed renewal (raftstore Renewals), not from its
	// election, once every leader commits renewals before granting
	// (raftlog.FeatureCommittedLeases); until then from its election.
	granted time.Time
	// silentSince: for the leader this one took over from, when this
	// node last heard from it as a follower (Raft's last contact). Until
	// it renews, fence_command counts its silence from then rather than
	// from this leader's election: a killed leader's host is fenced
	// fence_after after it went quiet. The lease counts from heard, as
	// ever.
	silentSince time.Time
	suspected   bool // renewals late: "suspected" was said, "reachable" is due
	armedAck    bool // renewed while armed: it will self-fence on expiry
	fencing     bool // fence_command running
	// fenceOK: fence_command confirmed the power-off (the reason to give
	// when declaring the host dead); "" if it has not. It counts only for
	// a host that has not renewed since the command started
	// (fenceStarted): a renewal after it shows the host up again (powered
	// on after a slow agent's confirmation, or renewing through a
	// disarmed spell), and the old confirmation must not declare it dead.
	fenceOK      string
	fenceStarted time.Time
	fenceFail    time.Time // fence_command last failed
	// recoveryTried: when the guests of the fenced host were last tried
	// (see recoveryDue); cleared whenever state changes while left is
	// set: the last try left a guest that fit nowhere.
	recoveryTried time.Time
	recoveryLeft  bool
	// declaring: a declaration of the host dead is under way (from the
	// decision until its recovery's placements are written); declarations
	// counts them. Renew refuses a grant that overlaps one.
	declaring    bool
	declarations uint64
	grants       uint64 // leases granted: a pass's copy tells if one came since
}

// hostFacts are what assess needs to know beyond the host's record, its
// state and the liveness config.
type hostFacts struct {
	haDisarmed bool // cluster ha disarm: no host is declared dead
	self       bool // the host is this leader (its renewal is local)
	gossipDead bool // gossip calls the host dead
}

// step is one thing the leader does about a host in a liveness pass.
type step uint16

// The steps, in the order checkLiveness carries them out.
const (
	// stepWelcome: a fenced host renews again; back in service (welcomeBack).
	stepWelcome step = 1 << iota
	// stepRecover: a fenced host stays silent; try its guests again
	// (recover, when recoveryDue says so).
	stepRecover
	// stepStandbyBack: a standby host renews; active again if a power-on
	// was asked for (standbyBack).
	stepStandbyBack
	// stepMark: set the record's suspected mark to action.suspected.
	stepMark
	// stepSaySuspected: event "suspected" (renewals late).
	stepSaySuspected
	// stepSayReachable: event "reachable" (renewals again after "suspected").
	stepSayReachable
	// stepEvacuate: health failing, renewals on time: drain the host.
	stepEvacuate
	// stepDeadByFence: fence_command confirmed the power-off: declare the
	// host dead (FenceHost) with action.reason and recover its guests.
	stepDeadByFence
	// stepFence: run fence_command.
	stepFence
	// stepSayStopped: a clean stop outlasted the lease and no
	// fence_command is configured: "not-fenced", once per stop.
	stepSayStopped
	// stepSayUnacked: the lease surely expired, but the host has not renewed
	// since HA was armed: "not-fenced", once.
	stepSayUnacked
	// stepDeadByLease: the lease surely expired: declare the host dead
	// (FenceHost) with action.reason and recover its guests.
	stepDeadByLease
)

var stepNames = []string{"welcome", "recover", "standby-back", "mark", "say-suspected", "say-reachable",
	"evacuate", "dead-by-fence", "fence", "say-stopped", "say-unacked", "dead-by-lease"}

func (s step) String() string {
	var out []string
	for i, name := range stepNames {
		if s&(1<<i) != 0 {
			out = append(out, name)
		}
	}
	if len(out) == 0 {
		return "none"
	}
	return strings.Join(out, "|")
}

// action is what the leader does about one host in one liveness pass.
type action struct {
	steps     step
	suspected bool          // with stepMark: the new mark (renewals late)
	age       time.Duration // since the record's heard, for events
	reason    string        // with stepDeadBy*: FenceHost's reason
}

// assess decides what the leader does about host h now, from its record
// rec: pure, so that it touches no map, clock, store or lock. checkLiveness
// gathers rec under the liveness lock and carries out the steps outside it.
//
//   - fenced: welcome it back once it renewed after the fence and within
//     2 intervals; otherwise retry recovering its guests.
//   - standby: its silence is no failure; once it renews within 2
//     intervals, standbyBack may make it active.
//   - otherwise it is suspected after 2.5 intervals without a renewal
//     (said once per change, not for a clean stop, which was said already),
//     and evacuated if its health is failing (AutoEvacuate) while renewing.
//     With HA disarmed, or for the leader itself, that is all. A power-off
//     confirmed by fence_command declares it dead. fence_command starts
//     (one run at a time, not within FenceTimeout of a failure) once the
//     renewals are FenceAfter late or gossip calls a late host dead; after
//     a clean stop only once the lease has surely expired. When the lease
//     has surely expired (TTL+Margin since granted) a clean stop is reported
//     (without fence_command), a host that has not renewed since HA was
//     armed is reported, and any other host is declared dead. The lease
//     counts from granted; the rest from heard.
func assess(rec hostLive, h model.Host, now time.Time, cfg LivenessConfig, f hostFacts) action {
	age := now.Sub(rec.heard)
	a := action{age: age}
	switch h.Mode {
	case model.ModeFenced:
		if !rec.renewedAt.IsZero() && rec.renewedAt.After(h.FencedAt) && age < 2*cfg.Interval {
			a.steps = stepWelcome
		} else {
			a.steps = stepRecover
		}
		return a
	case model.ModeStandby:
		// Emptied and powered off on purpose: its silence is no failure,
		// and nothing of it needs recovering. Back in service once it
		// renews after a power-on.
		if age < 2*cfg.Interval {
			a.steps = stepStandbyBack
		}
		return a
	}
	late := age > 2*cfg.Interval+cfg.Interval/2
	stopped := !h.StoppedAt.IsZero()
	a.steps, a.suspected = stepMark, late
	if late && !rec.suspected && !stopped { // a clean stop said so already
		a.steps |= stepSaySuspected
	} else if !late && rec.suspected {
		a.steps |= stepSayReachable
	}
	if cfg.AutoEvacuate && h.Health.State == model.HealthFailing && h.Mode == model.ModeActive && !h.Draining && !late {
		a.steps |= stepEvacuate
	}
	if f.haDisarmed || f.self {
		return a
	}
	if rec.fenceOK != "" && !rec.renewedAt.After(rec.fenceStarted) {
		a.steps |= stepDeadByFence
		a.reason = rec.fenceOK
		return a
	}
	leaseAge := now.Sub(rec.granted)
	expired := leaseAge > cfg.TTL+cfg.Margin
	fenceAge := age
	if !rec.silentSince.IsZero() && rec.renewedAt.IsZero() {
		fenceAge = now.Sub(rec.silentSince)
	}
	fenceNow := fenceAge > cfg.FenceAfter || f.gossipDead && late
	if stopped {
		fenceNow = expired // a restart gets the whole lease
	}
	if len(cfg.FenceCommand) > 0 && !rec.fencing && fenceNow && now.Sub(rec.fenceFail) > cfg.FenceTimeout {
		a.steps |= stepFence
	}
	switch {
	case !expired:
	case stopped: // fence_command, when set, is on it (above)
		if len(cfg.FenceCommand) == 0 {
			a.steps |= stepSayStopped
		}
	case !rec.armedAck:
		a.steps |= stepSayUnacked
	default:
		a.steps |= stepDeadByLease
		a.reason = fmt.Sprintf("lease expired: last renewal %v ago (lease_ttl %v + fence_margin %v)", leaseAge.Round(time.Millisecond), cfg.TTL, cfg.Margin)
	}
	return a
}

// nextAssess is the earliest instant after now at which assess's answer
// for host h could change with nothing else happening: the first threshold
// still ahead that assess compares the record's times against (the zero
// time if none is). The liveness pass sleeps until the earliest over all
// hosts, not on a fixed tick; what changes a record or a fact between
// passes (a renewal from a host that is late, fenced or on standby,
// fence_command's result, a state change a stalled recovery waits for,
// gossip, a new host) wakes the pass itself.
func nextAssess(rec hostLive, h model.Host, now time.Time, cfg LivenessConfig, f hostFacts) time.Time {
	var next time.Time
	// after: assess compares with ">" (age > limit), so its answer changes
	// just after at.
	after := func(at time.Time) {
		at = at.Add(time.Nanosecond)
		if at.After(now) && (next.IsZero() || at.Before(next)) {
			next = at
		}
	}
	switch h.Mode {
	case model.ModeFenced, model.ModeStandby:
		after(rec.heard.Add(2*cfg.Interval - time.Nanosecond)) // "age < 2 intervals" ends
		return next
	}
	if f.self {
		return next // heard at every pass: never late, never declared
	}
	after(rec.heard.Add(2*cfg.Interval + cfg.Interval/2)) // late
	if f.haDisarmed {
		return next
	}
	if len(cfg.FenceCommand) > 0 {
		base := rec.heard
		if !rec.silentSince.IsZero() && rec.renewedAt.IsZero() {
			base = rec.silentSince
		}
		after(base.Add(cfg.FenceAfter))
		if !rec.fenceFail.IsZero() {
			after(rec.fenceFail.Add(cfg.FenceTimeout))
		}
	}
	after(rec.granted.Add(cfg.TTL + cfg.Margin)) // expired
	return next
}

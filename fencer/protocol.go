package fencer

import (
	"errors"
	"fmt"
	"time"
)

// Request is one line of JSON from corrald (or an operator's status query)
// to the fencer.
type Request struct {
	// Op is "arm", "release" or "status".
	Op string `json:"op"`
	// DeadlineNS (arm): the lease's end on CLOCK_MONOTONIC, in nanoseconds.
	DeadlineNS int64 `json:"deadline_ns,omitempty"`
	// BudgetNS (arm): the kill starts this long before the deadline, so
	// that the guests are dead when the lease ends.
	BudgetNS int64 `json:"budget_ns,omitempty"`
}

// Limits on what an arm may ask: a deadline far ahead would switch fencing
// off in all but name, a large budget would kill guests of a healthy host.
const (
	MaxAhead  = time.Minute
	MaxBudget = 5 * time.Second
	maxLine   = 4 << 10
)

// Ops.
const (
	OpArm     = "arm"
	OpRelease = "release"
	OpStatus  = "status"
)

// ErrBadRequest marks a request the fencer refused.
var ErrBadRequest = errors.New("bad request")

func (r Request) validate(now time.Duration) error {
	switch r.Op {
	case OpArm:
		if r.BudgetNS < 0 || time.Duration(r.BudgetNS) > MaxBudget {
			return fmt.Errorf("%w: budget %v, want 0..%v", ErrBadRequest, time.Duration(r.BudgetNS), MaxBudget)
		}
		if r.DeadlineNS <= 0 || time.Duration(r.DeadlineNS) > now+MaxAhead {
			return fmt.Errorf("%w: deadline %v is not within %v of now (%v)", ErrBadRequest, time.Duration(r.DeadlineNS), MaxAhead, now)
		}
	case OpRelease, OpStatus:
	default:
		return fmt.Errorf("%w: unknown op %q", ErrBadRequest, r.Op)
	}
	return nil
}

// Mode is the fencer's state.
type Mode string

const (
	// Released: no deadline; guests outlive corrald (before the first
	// lease, while HA is disarmed, after a clean stop the leader knows of).
	Released Mode = "released"
	// Armed: every corral guest dies at Deadline - Budget unless a later
	// deadline comes first.
	Armed Mode = "armed"
	// Fenced: the deadline passed; every corral guest found is killed
	// until a new deadline or a release.
	Fenced Mode = "fenced"
)

// Status is the fencer's answer to every request.
type Status struct {
	Mode       Mode  `json:"mode"`
	DeadlineNS int64 `json:"deadline_ns,omitempty"`
	BudgetNS   int64 `json:"budget_ns,omitempty"`
	NowNS      int64 `json:"now_ns"`
	// Guests it would kill now.
	Guests []string `json:"guests"`
	// Fences so far, the newest last (at most 16 kept).
	Fences []Fence `json:"fences,omitempty"`
	Error  string  `json:"error,omitempty"`
}

// Fence records one firing, on CLOCK_MONOTONIC.
type Fence struct {
	DeadlineNS int64 `json:"deadline_ns"`
	// StartNS: when the kill began (due at deadline - budget).
	StartNS int64 `json:"start_ns"`
	// DeadNS: when every guest was confirmed dead (0 if one never died).
	DeadNS int64    `json:"dead_ns,omitempty"`
	Killed []string `json:"killed"`
	// Alive: guests still alive when it gave up waiting.
	Alive []string `json:"alive,omitempty"`
}

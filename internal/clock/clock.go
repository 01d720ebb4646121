// Package clock is the time source of code that waits. Such code takes a
// Clock rather than calling the time package, so that production runs on
// Real while tests and the deterministic simulator drive time with a Fake:
// nothing sleeps, and every timer fires exactly when the driver says.
package clock

import "time"

// Clock tells the time and makes timers and tickers on it.
type Clock interface {
	// Now returns the current time.
	Now() time.Time
	// NewTimer returns a timer that sends the time on its channel once d
	// has passed (time.NewTimer).
	NewTimer(d time.Duration) Timer
	// NewTicker returns a ticker that sends the time on its channel every
	// d (time.NewTicker); d must be positive.
	NewTicker(d time.Duration) Ticker
	// AfterFunc calls f once d has passed (time.AfterFunc). The timer's C
	// is nil.
	AfterFunc(d time.Duration, f func()) Timer
	// After returns a channel on which the time is sent once d has passed
	// (time.After).
	After(d time.Duration) <-chan time.Time
}

// Timer is a single event (time.Timer).
type Timer interface {
	// C is the channel the time is sent on; nil for an AfterFunc timer.
	C() <-chan time.Time
	// Stop prevents the timer from firing. It returns true if the call
	// stops the timer, false if it had already fired or been stopped.
	Stop() bool
	// Reset makes the timer fire d from now. It returns true if the timer
	// had been active, false if it had fired or been stopped.
	Reset(d time.Duration) bool
}

// Ticker sends the time at intervals (time.Ticker).
type Ticker interface {
	// C is the channel the ticks are sent on.
	C() <-chan time.Time
	// Stop turns the ticker off; no more ticks are sent.
	Stop()
	// Reset stops the ticker and restarts it with period d (positive).
	Reset(d time.Duration)
}

// Real is the system clock: the time package, unchanged. Its Now is
// time.Now(), with the monotonic reading that durations between two
// readings (leases) rely on.
type Real struct{}

var _ Clock = Real{}

// Now returns time.Now().
func (Real) Now() time.Time { return time.Now() }

// NewTimer returns time.NewTimer(d).
func (Real) NewTimer(d time.Duration) Timer { return realTimer{time.NewTimer(d)} }

// NewTicker returns time.NewTicker(d).
func (Real) NewTicker(d time.Duration) Ticker { return realTicker{time.NewTicker(d)} }

// AfterFunc returns time.AfterFunc(d, f).
func (Real) AfterFunc(d time.Duration, f func()) Timer { return realTimer{time.AfterFunc(d, f)} }

// After returns time.After(d).
func (Real) After(d time.Duration) <-chan time.Time { return time.After(d) }

type realTimer struct{ t *time.Timer }

func (r realTimer) C() <-chan time.Time        { return r.t.C }
func (r realTimer) Stop() bool                 { return r.t.Stop() }
func (r realTimer) Reset(d time.Duration) bool { return r.t.Reset(d) }

type realTicker struct{ t *time.Ticker }

func (r realTicker) C() <-chan time.Time   { return r.t.C }
func (r realTicker) Stop()                 { r.t.Stop() }
func (r realTicker) Reset(d time.Duration) { r.t.Reset(d) }

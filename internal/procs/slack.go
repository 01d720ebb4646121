package procs

import (
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// TimerSlack is the timer slack corrald gives its threads (SetTimerSlack).
const TimerSlack = time.Millisecond

// kernelDefaultSlack is the slack a process has unless someone set it.
const kernelDefaultSlack = 50 * time.Microsecond

// SetTimerSlack lets the kernel fire every timer of every thread of the
// process up to d late (prctl PR_SET_TIMERSLACK, /proc/<tid>/timerslack_ns
// for the threads but the caller; threads made later inherit their
// creator's), so that wake-ups that fall close together are served by one.
// The thread it is for is the runtime's sysmon: it polls every 20 µs while
// any processor runs or sits in a syscall, and at the kernel's default
// slack of 50 µs that was a third of an idle leader's CPU; with 1 ms it
// polls at most about once a millisecond. Nothing in corrald needs its
// timers sooner: a timer only ever fires late (a declaration of a dead
// host comes up to d later; corrald's own lease-expiry timer eats up to d
// of fence_kill_budget), and corral-fencer, the process that kills the
// guests at the lease's end, runs at real-time priority, where the kernel
// applies no slack. A process whose slack is not the kernel's default
// (systemd's TimerSlackNSec=) keeps it: applied reports false.
//
// Setting another thread's slack takes CAP_SYS_NICE; without it only the
// calling thread's is set and the error says so.
func SetTimerSlack(d time.Duration) (applied bool, err error) {
	cur, err := readSlack(os.Getpid())
	if err != nil {
		return false, err
	}
	if cur != kernelDefaultSlack {
		return false, nil
	}
	if err := unix.Prctl(unix.PR_SET_TIMERSLACK, uintptr(d.Nanoseconds()), 0, 0, 0); err != nil {
		return false, fmt.Errorf("prctl PR_SET_TIMERSLACK: %w", err)
	}
	// A thread created while a pass runs, by one not yet set, inherits the
	// old slack; the next pass finds it. The runtime makes its threads in
	// its first moments, so a pass that changes nothing comes soon.
	for range 10 {
		changed, err := slackPass(d)
		if err != nil {
			return true, err
		}
		if !changed {
			return true, nil
		}
	}
	return true, errors.New("threads still appearing after 10 passes")
}

// slackPass sets d on every thread of the process that has another
// slack, and reports whether it changed any.
func slackPass(d time.Duration) (bool, error) {
	tids, err := os.ReadDir("/proc/self/task")
	if err != nil {
		return false, err
	}
	changed := false
	for _, e := range tids {
		tid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		s, err := readSlack(tid)
		if errors.Is(err, os.ErrNotExist) {
			continue // the thread ended
		}
		if err != nil {
			return changed, err
		}
		if s == d {
			continue
		}
		if err := os.WriteFile(slackPath(tid), []byte(strconv.FormatInt(d.Nanoseconds(), 10)), 0); err != nil && !errors.Is(err, os.ErrNotExist) {
			return changed, fmt.Errorf("thread %d: %w", tid, err)
		}
		changed = true
	}
	return changed, nil
}

// slackPath is a thread's slack file: /proc/<tid>, which exists for every
// thread though only processes are listed (/proc/<pid>/task/<tid> has none).
func slackPath(tid int) string { return "/proc/" + strconv.Itoa(tid) + "/timerslack_ns" }

func readSlack(tid int) (time.Duration, error) {
	b, err := os.ReadFile(slackPath(tid))
	if err != nil {
		return 0, err
	}
	ns, err := strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64)
	if err != nil {
		return 0, fmt.Errorf("%s: %w", slackPath(tid), err)
	}
	return time.Duration(ns), nil
}

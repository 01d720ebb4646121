package procs

import (
	"errors"
	"os"
	"runtime"
	"strconv"
	"sync"
	"testing"
	"time"
)

// SetTimerSlack reaches every thread of the process, not just the
// caller's, and leaves a slack someone else chose alone. The test process
// keeps the slack it sets: no other test here depends on timer precision.
func TestSetTimerSlackReachesEveryThread(t *testing.T) {
	root := os.Geteuid() == 0
	if root {
		// Start from the kernel's default, whatever the environment set
		// (systemd's TimerSlackNSec=, say).
		if _, err := slackPass(kernelDefaultSlack); err != nil {
			t.Fatal(err)
		}
	}
	start, startErr := readSlack(os.Getpid())
	// Threads of their own, parked, so that the process has more than the
	// runtime's first few.
	var wg sync.WaitGroup
	release := make(chan struct{})
	for range 4 {
		wg.Add(1)
		started := make(chan struct{})
		go func() {
			defer wg.Done()
			runtime.LockOSThread()
			defer runtime.UnlockOSThread()
			close(started)
			<-release
		}()
		<-started
	}
	defer func() { close(release); wg.Wait() }()

	const want = 3 * time.Millisecond
	applied, err := SetTimerSlack(want)
	if !root {
		// Without CAP_SYS_NICE another thread's slack can be neither read
		// nor set; a user's process started with a slack of its own keeps it.
		if startErr == nil && start != kernelDefaultSlack {
			if applied || err != nil {
				t.Fatalf("as a user with slack %v: applied %v, err %v; want it kept", start, applied, err)
			}
			return
		}
		if !errors.Is(err, os.ErrPermission) {
			t.Fatalf("as a user: applied %v, err %v; want a permission error", applied, err)
		}
		return
	}
	if err != nil || !applied {
		t.Fatalf("applied %v, err %v", applied, err)
	}
	tids, err := os.ReadDir("/proc/self/task")
	if err != nil {
		t.Fatal(err)
	}
	if len(tids) < 5 {
		t.Fatalf("only %d threads: the test wants more than one", len(tids))
	}
	for _, e := range tids {
		tid, _ := strconv.Atoi(e.Name())
		if s, err := readSlack(tid); err == nil && s != want {
			t.Errorf("thread %d: slack %v, want %v", tid, s, want)
		}
	}

	// Now not the kernel's default: somebody's choice, kept.
	applied, err = SetTimerSlack(time.Millisecond)
	if err != nil || applied {
		t.Fatalf("second call: applied %v, err %v; want it to leave the slack alone", applied, err)
	}
	if s, _ := readSlack(os.Getpid()); s != want {
		t.Fatalf("slack %v after the second call, want %v kept", s, want)
	}
}

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
	if s, err := readSlack(os.Getpid()); err != nil || s != kernelDefaultSlack {
		t.Fatalf("the test process starts at slack %v (%v), want the kernel's default %v", s, err, kernelDefaultSlack)
	}
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
	if os.Geteuid() != 0 {
		// Without CAP_SYS_NICE only the calling thread's can be set.
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

package lab

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

const fakeQEMUEnv = "CORRAL_GUESTWATCH_FAKE_QEMU"

// A copy of the test binary run with fakeQEMUEnv set is a fake QEMU: it
// starts threads, says "ready" and waits for stdin to close. init runs
// before the testing package parses the (QEMU) command line.
func init() {
	if os.Getenv(fakeQEMUEnv) == "1" {
		fakeQEMU()
	}
}

func fakeQEMU() {
	var up sync.WaitGroup
	for range 4 {
		up.Add(1)
		go func() {
			runtime.LockOSThread() // a thread of its own, for good
			up.Done()
			select {}
		}()
	}
	up.Wait()
	fmt.Println("ready")
	io.Copy(io.Discard, os.Stdin)
	os.Exit(0)
}

func TestGuestWatchAnalyze(t *testing.T) {
	life := func(vm, host string, pid int, start, end time.Duration) Life {
		return Life{VM: vm, Host: host, PID: pid, Start: start, End: end}
	}
	a := life("vm1", "h1", 10, 100, 200)
	b := life("vm1", "h2", 20, 250, 400)  // 50 after a: handover
	c := life("vm1", "h1", 30, 350, 500)  // overlaps b by 50: handover with gap -50
	d := life("vm1", "h1", 40, 600, 700)  // restart on h1: no handover
	e := life("vm2", "h1", 50, 100, 0)    // alive
	f := life("vm2", "h2", 60, 300, 350)  // inside e's life
	g := life("vm2", "h3", 70, 400, 0)    // alive with e: forever
	h := life("vm3", "h1", 80, 100, 200)  // alone
	i := life("vm4", "h1", 90, 100, 200)  // ends when j starts: no overlap
	j := life("vm4", "h2", 91, 200, 300)  // gap 0
	k := life("vm5", "", 95, 100, 200)    // unknown host counts as a host
	m := life("vm5", "h1", 96, 150, 0)    // alive, overlaps k by 50
	n := life("vm6", "h1", 97, 100, 0)    // alive
	o := life("vm6", "h2", 98, 150, 0)    // both alive: forever
	p := life("vm7", "h1", 99, 100, 0)    // alive
	q := life("vm7", "h1", 100, 150, 160) // same host: neither overlap nor handover
	for _, tc := range []struct {
		name      string
		lives     []Life
		overlaps  []Overlap
		handovers []Handover
	}{
		{"none", nil, nil, nil},
		{"alone", []Life{h}, nil, nil},
		{"handover, overlap, restart", []Life{d, c, b, a}, // any order
			[]Overlap{{VM: "vm1", A: b, B: c, For: 50}},
			[]Handover{{VM: "vm1", From: a, To: b, Gap: 50}, {VM: "vm1", From: b, To: c, Gap: -50}}},
		{"alive is forever", []Life{e, f, g},
			[]Overlap{{VM: "vm2", A: e, B: f, For: 50}, {VM: "vm2", A: e, B: g, For: forever}},
			[]Handover{{VM: "vm2", From: e, To: f, Gap: -forever}, {VM: "vm2", From: f, To: g, Gap: 50}}},
		{"touching is no overlap", []Life{i, j}, nil,
			[]Handover{{VM: "vm4", From: i, To: j, Gap: 0}}},
		{"unknown host", []Life{m, k},
			[]Overlap{{VM: "vm5", A: k, B: m, For: 50}},
			[]Handover{{VM: "vm5", From: k, To: m, Gap: -50}}},
		{"both alive", []Life{n, o},
			[]Overlap{{VM: "vm6", A: n, B: o, For: forever}},
			[]Handover{{VM: "vm6", From: n, To: o, Gap: -forever}}},
		{"same host", []Life{p, q}, nil, nil},
		{"vms apart", []Life{h, i, j, a, b},
			nil,
			[]Handover{{VM: "vm4", From: i, To: j, Gap: 0}, {VM: "vm1", From: a, To: b, Gap: 50}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := analyze(tc.lives)
			if len(r.Lives) != len(tc.lives) || !slices.IsSortedFunc(r.Lives, func(x, y Life) int { return int(x.Start - y.Start) }) {
				t.Errorf("lives %v, want %d sorted by start", r.Lives, len(tc.lives))
			}
			if !slices.Equal(r.Overlaps, tc.overlaps) {
				t.Errorf("overlaps\n%+v\nwant\n%+v", r.Overlaps, tc.overlaps)
			}
			if !slices.Equal(r.Handovers, tc.handovers) {
				t.Errorf("handovers\n%+v\nwant\n%+v", r.Handovers, tc.handovers)
			}
		})
	}

	r := analyze([]Life{d, c, b, a, e, f, g})
	if min, ok := r.MinGap(); !ok || min.Gap != -forever || min.VM != "vm2" {
		t.Errorf("min gap %+v %v", min, ok)
	}
	if got := r.LivesOf("vm1"); !slices.Equal(got, []Life{a, b, c, d}) {
		t.Errorf("lives of vm1: %+v", got)
	}
	if _, ok := (GuestReport{}).MinGap(); ok {
		t.Error("min gap of no handovers")
	}
	r.settle(1000)
	if o := r.Overlaps[len(r.Overlaps)-1]; o.For != 600 { // e and g from 400
		t.Errorf("settled overlap %+v, want 600", o)
	}
	if h := r.Handovers[1]; h.From.PID != e.PID || h.Gap != -700 { // f at 300
		t.Errorf("settled handover %+v, want e's with -700", h)
	}
}

func TestGuestWatchGuestName(t *testing.T) {
	for _, tc := range []struct {
		argv []string
		want string
	}{
		{[]string{"/usr/bin/qemu-system-x86_64", "-name", "guest=vm1,debug-threads=on", "-S"}, "vm1"},
		{[]string{"qemu-system-aarch64", "-name", "debug-threads=on,guest=web-1"}, "web-1"},
		{[]string{"qemu-system-x86_64", "--name", "guest=a,,b,debug-threads=on"}, "a,b"},
		{[]string{"qemu-system-x86_64", "-name", "guest=old", "-name", "guest=new"}, "new"},
		// libvirt's capability probe
		{[]string{"/usr/bin/qemu-system-x86_64", "-S", "-no-user-config", "-nodefaults", "-nographic", "-machine", "none,accel=kvm:tcg", "-qmp", "unix:/var/lib/libvirt/qemu/qmp.monitor,server=on,wait=off"}, ""},
		{[]string{"qemu-system-x86_64", "-name", "vm1"}, ""},
		{[]string{"qemu-system-x86_64", "-name", "guest="}, ""},
		{[]string{"qemu-system-x86_64", "-name"}, ""},
		{[]string{"/usr/bin/qemu-img", "-name", "guest=vm1"}, ""},
		{[]string{"/usr/bin/my-qemu-system-x86_64", "-name", "guest=vm1"}, ""},
		{nil, ""},
	} {
		if got := guestName(tc.argv); got != tc.want {
			t.Errorf("%q: %q, want %q", tc.argv, got, tc.want)
		}
	}
}

// procMsg is a proc connector datagram as the kernel sends it.
func procMsg(what uint32, ts uint64, data ...uint32) []byte {
	ne := binary.NativeEndian
	ev := make([]byte, procEventHdrLen+24) // sizeof(struct proc_event) is 40
	ne.PutUint32(ev, what)
	ne.PutUint32(ev[4:], 1) // cpu
	ne.PutUint64(ev[8:], ts)
	for i, d := range data {
		ne.PutUint32(ev[procEventHdrLen+4*i:], d)
	}
	b := make([]byte, nlmsgHdrLen+cnMsgLen, nlmsgHdrLen+cnMsgLen+len(ev))
	ne.PutUint32(b, uint32(nlmsgHdrLen+cnMsgLen+len(ev)))
	ne.PutUint16(b[4:], 3) // NLMSG_DONE
	ne.PutUint32(b[nlmsgHdrLen:], cnIdxProc)
	ne.PutUint32(b[nlmsgHdrLen+4:], cnValProc)
	ne.PutUint32(b[nlmsgHdrLen+8:], 7) // seq
	ne.PutUint32(b[nlmsgHdrLen+12:], 1)
	ne.PutUint16(b[nlmsgHdrLen+16:], uint16(len(ev)))
	return append(b, ev...)
}

func TestGuestWatchParse(t *testing.T) {
	var b []byte
	b = append(b, procMsg(procEventFork, 1000, 5, 5, 6, 6)...)
	b = append(b, procMsg(procEventExec, 2000, 6, 6)...)
	b = append(b, procMsg(procEventExit, 3000, 7, 6, 9, 9, 5, 5)...)
	b = append(b, procMsg(0x200, 3500, 6, 6)...) // comm: skipped
	b = append(b, procMsg(procEventNone, 4000, 1)...)
	b = append(b, procMsg(procEventExit, 5000)[:50]...) // truncated: dropped
	var got []procEvent
	parseProcEvents(b, func(ev procEvent) { got = append(got, ev) })
	want := []procEvent{
		{what: procEventFork, at: 1000, pid: 6, tgid: 6, seq: 7, ack: 1},
		{what: procEventExec, at: 2000, pid: 6, tgid: 6, seq: 7, ack: 1},
		{what: procEventExit, at: 3000, pid: 7, tgid: 6, seq: 7, ack: 1},
		{what: procEventNone, at: 4000, seq: 7, ack: 1, ackErr: 1},
	}
	if !slices.Equal(got, want) {
		t.Errorf("got\n%+v\nwant\n%+v", got, want)
	}
}

func TestGuestWatchEvents(t *testing.T) {
	probe := func(pid int) (guestProbe, bool) {
		switch pid {
		case 100, 300:
			return guestProbe{VM: "vm1", NetIno: 7}, true
		case 200:
			return guestProbe{VM: "vm2", NetIno: 8}, true // not a lab host
		}
		return guestProbe{}, false // gone, or no guest
	}
	tr := newTracker(map[uint64]string{7: "h1"}, probe)
	exit := func(at time.Duration, pid, tgid int) procEvent {
		return procEvent{what: procEventExit, at: at, pid: pid, tgid: tgid}
	}
	fork := func(at time.Duration, pid, tgid int) procEvent {
		return procEvent{what: procEventFork, at: at, pid: pid, tgid: tgid}
	}
	exec := func(at time.Duration, pid int) procEvent {
		return procEvent{what: procEventExec, at: at, pid: pid, tgid: pid}
	}
	for _, step := range []struct {
		ev   procEvent
		want []Life // after the event
	}{
		{exec(10, 100), []Life{{"vm1", "h1", 100, 10, 0, false}}},
		{exec(11, 400), []Life{{"vm1", "h1", 100, 10, 0, false}}}, // no guest
		{fork(12, 101, 100), []Life{{"vm1", "h1", 100, 10, 0, false}}},
		{exec(13, 100), []Life{{"vm1", "h1", 100, 10, 0, false}}},       // exec again: same life
		{exit(20, 101, 100), []Life{{"vm1", "h1", 100, 10, 0, false}}},  // a thread: alive
		{exit(30, 100, 100), []Life{{"vm1", "h1", 100, 10, 30, false}}}, // the leader: ended
		{exit(35, 102, 100), []Life{{"vm1", "h1", 100, 10, 35, false}}}, // a thread after the leader
		{exec(36, 200), []Life{{"vm1", "h1", 100, 10, 35, false}, {"vm2", "", 200, 36, 0, false}}},
		{fork(40, 100, 100), []Life{{"vm1", "h1", 100, 10, 35, false}, {"vm2", "", 200, 36, 0, false}}}, // pid 100 reused
		{exit(50, 100, 100), []Life{{"vm1", "h1", 100, 10, 35, false}, {"vm2", "", 200, 36, 0, false}}}, // the new process's
		{exit(60, 200, 200), []Life{{"vm1", "h1", 100, 10, 35, false}, {"vm2", "", 200, 36, 60, false}}},
		{exec(70, 300), []Life{{"vm1", "h1", 100, 10, 35, false}, {"vm2", "", 200, 36, 60, false}, {"vm1", "h1", 300, 70, 0, false}}},
		{fork(80, 300, 300), []Life{{"vm1", "h1", 100, 10, 35, false}, {"vm2", "", 200, 36, 60, false}, {"vm1", "h1", 300, 70, 80, false}}}, // reused, exits lost
	} {
		tr.handle(step.ev)
		if got := tr.snapshot(); !slices.Equal(got, step.want) {
			t.Fatalf("after %+v:\n%+v\nwant\n%+v", step.ev, got, step.want)
		}
	}
}

// pollUntil polls cond every few milliseconds until it holds or d passes.
func pollUntil(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.NewTimer(d)
	defer deadline.Stop()
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for !cond() {
		select {
		case <-tick.C:
		case <-deadline.C:
			t.Fatalf("no %s after %v", what, d)
		}
	}
}

func TestGuestWatchQEMU(t *testing.T) {
	if testing.Short() {
		t.Skip("starts fake QEMU processes and listens to the kernel's process events")
	}
	if os.Geteuid() != 0 {
		t.Fatal("the proc connector needs root (CAP_NET_ADMIN): run as root, or go test -short")
	}
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	bin, err := os.ReadFile(self)
	if err != nil {
		t.Fatal(err)
	}
	qemu := filepath.Join(t.TempDir(), "qemu-system-x86_64")
	if err := os.WriteFile(qemu, bin, 0o755); err != nil {
		t.Fatal(err)
	}

	var mu sync.Mutex
	var events []procEvent
	l := &Lab{Hosts: []*Host{{Name: "root", NetIno: nsIno("/proc/self/ns/net")}}}
	w, err := l.watchGuests(func(ev procEvent) {
		if ev.what == procEventExit || ev.what == procEventFork && ev.pid != ev.tgid {
			mu.Lock()
			events = append(events, ev)
			mu.Unlock()
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Stop()

	lifeOf := func(pid int) (Life, bool) {
		r, err := w.Report()
		if err != nil {
			t.Fatal(err)
		}
		for _, l := range r.LivesOf("vm1") {
			if l.PID == pid {
				return l, true
			}
		}
		return Life{}, false
	}
	type run struct {
		pid                              int
		beforeStart, ready, kill, reaped time.Duration
	}
	guest := func() run {
		var r run
		cmd := exec.Command(qemu, "-name", "guest=vm1,debug-threads=on", "-S", "-nodefaults")
		cmd.Env = append(os.Environ(), fakeQEMUEnv+"=1")
		stdin, err := cmd.StdinPipe()
		if err != nil {
			t.Fatal(err)
		}
		defer stdin.Close()
		stdout, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		r.beforeStart = MonoNow()
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		r.pid = cmd.Process.Pid
		if line, err := bufio.NewReader(stdout).ReadString('\n'); line != "ready\n" {
			cmd.Process.Kill()
			cmd.Wait()
			t.Fatalf("fake qemu: %q, %v", line, err)
		}
		r.ready = MonoNow()
		pollUntil(t, 2*time.Second, "life of the fake qemu", func() bool { _, ok := lifeOf(r.pid); return ok })
		if l, _ := lifeOf(r.pid); l.End != 0 {
			t.Errorf("running guest has ended: %+v", l)
		}
		r.kill = MonoNow()
		cmd.Process.Kill()
		cmd.Wait()
		r.reaped = MonoNow()
		return r
	}
	runs := []run{guest(), guest()}
	pollUntil(t, 2*time.Second, "end of both lives", func() bool {
		for _, r := range runs {
			if l, ok := lifeOf(r.pid); !ok || l.End == 0 {
				return false
			}
		}
		return true
	})
	rep, err := w.Stop()
	if err != nil {
		t.Fatal(err)
	}

	var lives []Life
	for _, r := range runs {
		var l Life
		for _, x := range rep.LivesOf("vm1") {
			if x.PID == r.pid {
				l = x
			}
		}
		t.Logf("life %+v, started %v after the spawn, ended %v after SIGKILL", l, l.Start-r.beforeStart, l.End-r.kill)
		if l.Host != "root" {
			t.Errorf("host %q, want root", l.Host)
		}
		if l.Start < r.beforeStart || l.Start > r.ready {
			t.Errorf("start %v outside [%v, %v]", l.Start, r.beforeStart, r.ready)
		}
		if l.End < r.kill || l.End > r.reaped || l.End <= l.Start {
			t.Errorf("end %v outside [%v, %v]", l.End, r.kill, r.reaped)
		}

		// Thread exits: the life ends with the last.
		mu.Lock()
		var order []string
		threads, exits, last, leaderAt, inOrder := 1, 0, time.Duration(0), -1, true
		for _, ev := range events {
			if ev.tgid != r.pid {
				continue
			}
			if ev.what == procEventFork {
				threads++
				continue
			}
			if ev.pid == ev.tgid {
				leaderAt = exits
				order = append(order, "leader")
			} else {
				order = append(order, fmt.Sprint(ev.pid))
			}
			exits++
			inOrder = inOrder && ev.at >= last
			last = max(last, ev.at)
		}
		mu.Unlock()
		t.Logf("pid %d: %d threads, exits in queue order: %v (the leader's is #%d of %d; timestamps ascending: %v; from leader's to last: %v)",
			r.pid, threads, order, leaderAt+1, exits, inOrder, last-leaderExit(events, r.pid))
		if exits < 5 || exits != threads || leaderAt < 0 || l.End != last {
			t.Errorf("%d threads, %d exits, leader's #%d, last at %v: end %v", threads, exits, leaderAt+1, last, l.End)
		}
		lives = append(lives, l)
	}
	if len(rep.Overlaps) != 0 || len(rep.Handovers) != 0 {
		t.Errorf("overlaps %+v, handovers %+v on one host", rep.Overlaps, rep.Handovers)
	}
	if lives[1].Start <= lives[0].End {
		t.Errorf("second life %+v starts before the first %+v ends", lives[1], lives[0])
	}

	// The same lives on two hosts are a handover.
	lives[1].Host = "other"
	h, ok := analyze(lives).MinGap()
	if !ok || h.Gap != lives[1].Start-lives[0].End || h.Gap <= 0 {
		t.Errorf("handover %+v %v", h, ok)
	}
	t.Logf("gap between the two lives: %v", h.Gap)
}

func leaderExit(events []procEvent, pid int) time.Duration {
	for _, ev := range events {
		if ev.what == procEventExit && ev.pid == pid && ev.tgid == pid {
			return ev.at
		}
	}
	return 0
}

func TestGuestWatchLost(t *testing.T) {
	if testing.Short() {
		t.Skip("overflows a proc connector socket with process events")
	}
	if os.Geteuid() != 0 {
		t.Fatal("the proc connector needs root (CAP_NET_ADMIN): run as root, or go test -short")
	}
	w, err := (&Lab{}).WatchGuests()
	if err != nil {
		t.Fatal(err)
	}
	defer w.Stop()
	// A small buffer, and a reader held up (it handles events under mu).
	if err := unix.SetsockoptInt(w.fd, unix.SOL_SOCKET, unix.SO_RCVBUF, 4096); err != nil {
		t.Fatal(err)
	}
	w.mu.Lock()
	for range 30 {
		if err := exec.Command("true").Run(); err != nil {
			w.mu.Unlock()
			t.Fatal(err)
		}
	}
	w.mu.Unlock()
	if _, err := w.Stop(); !errors.Is(err, unix.ENOBUFS) {
		t.Fatalf("stop: %v, want lost events", err)
	}
	if _, err := w.Report(); !errors.Is(err, unix.ENOBUFS) {
		t.Fatalf("report after stop: %v, want lost events", err)
	} else {
		t.Log(err)
	}
}

// A live migration's target QEMU (-incoming) overlaps its source by design:
// it is an overlap, not a double run.
func TestGuestWatchMigrationIsNoDoubleRun(t *testing.T) {
	src := Life{VM: "vm1", Host: "h1", PID: 1, Start: 100, End: 300}
	dst := Life{VM: "vm1", Host: "h2", PID: 2, Start: 200, End: 0, Incoming: true}
	dup := Life{VM: "vm1", Host: "h3", PID: 3, Start: 250, End: 260}
	r := analyze([]Life{src, dst, dup})
	if len(r.Overlaps) != 3 {
		t.Fatalf("overlaps %+v", r.Overlaps)
	}
	d := r.DoubleRuns()
	if len(d) != 2 || d[0].B.PID != 3 || d[1].B.PID != 3 {
		t.Fatalf("double runs %+v", d)
	}
	if g := guestName([]string{"/usr/bin/qemu-system-x86_64", "-name", "guest=vm1,debug-threads=on", "-incoming", "defer"}); g != "vm1" {
		t.Fatal(g)
	}
}

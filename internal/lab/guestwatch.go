package lab

import (
	"cmp"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"github.com/corralhq/corral/internal/guestproc"
)

// The guest watch is an exact double-run checker: it records the life of
// every QEMU guest process on the machine from the kernel's proc connector
// (netlink, NETLINK_CONNECTOR). Every event carries the kernel's own
// timestamp (CLOCK_MONOTONIC, taken when the process execs or a thread
// exits), so lives are measured to the microsecond however late the watch
// gets to read them on a saturated machine. Only the guest's name and host
// are read late, from /proc at its exec event.

// Proc connector constants (linux/connector.h, linux/cn_proc.h).
const (
	cnIdxProc         = 0x1
	cnValProc         = 0x1
	procCnMcastListen = 1
	procCnMcastIgnore = 2

	procEventNone = 0x0
	procEventFork = 0x1
	procEventExec = 0x2
	procEventExit = 0x80000000

	nlmsgHdrLen     = 16 // struct nlmsghdr
	cnMsgLen        = 20 // struct cn_msg: cb_id {idx, val}, seq, ack, len u16, flags u16
	procEventHdrLen = 16 // struct proc_event: what, cpu, timestamp_ns; then event_data

	guestWatchRcvBuf = 16 << 20
)

// forever stands for the end of a life still going on.
const forever = time.Duration(math.MaxInt64)

// MonoNow returns CLOCK_MONOTONIC as a duration since boot: the clock of
// the proc connector's timestamps, of corrald's leases and of the fencer.
func MonoNow() time.Duration { return guestproc.MonoNow() }

// Life is one QEMU process's life.
type Life struct {
	VM    string        // from `-name guest=NAME,...` on QEMU's command line
	Host  string        // the lab host whose network namespace it ran in ("" if none of the lab's)
	PID   int           // its thread group id
	Start time.Duration // CLOCK_MONOTONIC of its exec (as QEMU)
	End   time.Duration // CLOCK_MONOTONIC when its last thread exited; 0 while alive
	// Incoming: QEMU was started with -incoming, as the target of a live
	// migration (its vCPUs wait until the source hands the guest over).
	Incoming bool
}

// Overlap is two lives of one VM on different hosts that overlapped: a
// double run, unless B is the incoming side of a live migration (QEMU runs
// the guest on one side at a time, and hands it over). A started first.
// For is how long they overlapped (so far, when both are alive).
type Overlap struct {
	VM   string
	A, B Life
	For  time.Duration
}

// Migration reports whether the overlap is a live migration's: the later
// QEMU was started to receive the guest.
func (o Overlap) Migration() bool { return o.B.Incoming }

// DoubleRuns returns the overlaps that are not live migrations.
func (r GuestReport) DoubleRuns() []Overlap {
	var out []Overlap
	for _, o := range r.Overlaps {
		if !o.Migration() {
			out = append(out, o)
		}
	}
	return out
}

// Handover is two consecutive lives of one VM on different hosts. Gap is
// To.Start - From.End; below 0 they overlapped (while From is alive, Gap is
// measured to the time of the report).
type Handover struct {
	VM       string
	From, To Life
	Gap      time.Duration
}

// GuestReport is what a guest watch saw: every QEMU guest's lives, sorted
// by start, and the double runs and handovers among them, sorted by time.
type GuestReport struct {
	Lives     []Life
	Overlaps  []Overlap
	Handovers []Handover
}

// MinGap returns the handover with the smallest gap, and false if there
// was none.
func (r GuestReport) MinGap() (Handover, bool) {
	var min Handover
	found := false
	for _, h := range r.Handovers {
		if !found || h.Gap < min.Gap {
			min, found = h, true
		}
	}
	return min, found
}

// LivesOf returns the lives of VM vm, in start order.
func (r GuestReport) LivesOf(vm string) []Life {
	var out []Life
	for _, l := range r.Lives {
		if l.VM == vm {
			out = append(out, l)
		}
	}
	return out
}

func lifeEnd(l Life) time.Duration {
	if l.End == 0 {
		return forever
	}
	return l.End
}

// analyze sorts lives by start and finds, per VM, the overlapping lives on
// different hosts and the handovers between consecutive lives on different
// hosts (consecutive lives on one host are a restart, not a handover). A
// life still alive (End 0) lasts forever: two live ones overlap For
// forever, and a handover from a live one has Gap -forever.
func analyze(lives []Life) GuestReport {
	r := GuestReport{Lives: slices.Clone(lives)}
	slices.SortStableFunc(r.Lives, func(a, b Life) int {
		return cmp.Or(cmp.Compare(a.Start, b.Start), cmp.Compare(a.PID, b.PID))
	})
	byVM := map[string][]Life{}
	var vms []string
	for _, l := range r.Lives {
		if _, ok := byVM[l.VM]; !ok {
			vms = append(vms, l.VM)
		}
		byVM[l.VM] = append(byVM[l.VM], l)
	}
	for _, vm := range vms {
		ls := byVM[vm]
		for i, a := range ls {
			for _, b := range ls[i+1:] {
				if a.Host == b.Host {
					continue
				}
				from, to := max(a.Start, b.Start), min(lifeEnd(a), lifeEnd(b))
				if from >= to {
					continue
				}
				d := forever
				if to != forever {
					d = to - from
				}
				r.Overlaps = append(r.Overlaps, Overlap{VM: vm, A: a, B: b, For: d})
			}
			if i > 0 && ls[i-1].Host != a.Host {
				gap := -forever
				if ls[i-1].End != 0 {
					gap = a.Start - ls[i-1].End
				}
				r.Handovers = append(r.Handovers, Handover{VM: vm, From: ls[i-1], To: a, Gap: gap})
			}
		}
	}
	slices.SortStableFunc(r.Overlaps, func(a, b Overlap) int { return cmp.Compare(a.B.Start, b.B.Start) })
	slices.SortStableFunc(r.Handovers, func(a, b Handover) int { return cmp.Compare(a.To.Start, b.To.Start) })
	return r
}

// settle measures what analyze left open-ended up to now.
func (r *GuestReport) settle(now time.Duration) {
	for i := range r.Overlaps {
		if o := &r.Overlaps[i]; o.For == forever {
			o.For = now - max(o.A.Start, o.B.Start)
		}
	}
	for i := range r.Handovers {
		if h := &r.Handovers[i]; h.Gap == -forever {
			h.Gap = h.To.Start - now
		}
	}
}

// procEvent is the part of a proc connector message the watch uses.
type procEvent struct {
	what      uint32
	at        time.Duration // timestamp_ns: CLOCK_MONOTONIC
	pid, tgid int           // the child for a fork; the process (thread) for exec and exit
	seq, ack  uint32        // of the cn_msg; an answer's ack is its request's plus 1
	ackErr    uint32        // an answer's errno
}

func nlmsgAlign(n int) int { return (n + 3) &^ 3 }

// parseProcEvents calls fn with every proc connector event in datagram b
// (one or more netlink messages); anything else is skipped. Netlink is in
// host byte order.
func parseProcEvents(b []byte, fn func(procEvent)) {
	ne := binary.NativeEndian
	for len(b) >= nlmsgHdrLen {
		n := int(ne.Uint32(b))
		if n < nlmsgHdrLen || n > len(b) {
			return
		}
		typ, msg := ne.Uint16(b[4:]), b[nlmsgHdrLen:n]
		b = b[min(len(b), nlmsgAlign(n)):]
		if typ == unix.NLMSG_ERROR || typ == unix.NLMSG_NOOP || len(msg) < cnMsgLen ||
			ne.Uint32(msg) != cnIdxProc || ne.Uint32(msg[4:]) != cnValProc {
			continue
		}
		data := msg[cnMsgLen:]
		if l := int(ne.Uint16(msg[16:])); l < len(data) {
			data = data[:l]
		}
		if len(data) < procEventHdrLen {
			continue
		}
		ev := procEvent{
			what: ne.Uint32(data), at: time.Duration(ne.Uint64(data[8:])),
			seq: ne.Uint32(msg[8:]), ack: ne.Uint32(msg[12:]),
		}
		u := data[procEventHdrLen:]
		switch ev.what {
		case procEventNone: // the answer to a listen request: {err}
			if len(u) < 4 {
				continue
			}
			ev.ackErr = ne.Uint32(u)
		case procEventFork: // {parent_pid, parent_tgid, child_pid, child_tgid}
			if len(u) < 16 {
				continue
			}
			ev.pid, ev.tgid = int(ne.Uint32(u[8:])), int(ne.Uint32(u[12:]))
		case procEventExec, procEventExit: // {process_pid, process_tgid, ...}
			if len(u) < 8 {
				continue
			}
			ev.pid, ev.tgid = int(ne.Uint32(u)), int(ne.Uint32(u[4:]))
		default:
			continue
		}
		fn(ev)
	}
}

// guestName returns the guest name of a QEMU command line (argv[0] named
// qemu-system-*, `-name guest=NAME,...`), or "" if it is none (libvirt's
// capability probes run QEMU without -name).
func guestName(argv []string) string {
	if len(argv) == 0 || !strings.HasPrefix(filepath.Base(argv[0]), "qemu-system") {
		return ""
	}
	name := ""
	for i := 1; i+1 < len(argv); i++ {
		if argv[i] == "-name" || argv[i] == "--name" {
			name = argv[i+1] // QEMU takes the last one
			i++
		}
	}
	guest := ""
	for _, opt := range splitQEMUOpts(name) {
		if v, ok := strings.CutPrefix(opt, "guest="); ok {
			guest = v
		}
	}
	return guest
}

// splitQEMUOpts splits a QEMU option string at its commas; ",," is a comma
// inside a value.
func splitQEMUOpts(s string) []string {
	var out []string
	var cur strings.Builder
	for i := 0; i < len(s); i++ {
		switch {
		case s[i] == ',' && i+1 < len(s) && s[i+1] == ',':
			cur.WriteByte(',')
			i++
		case s[i] == ',':
			out = append(out, cur.String())
			cur.Reset()
		default:
			cur.WriteByte(s[i])
		}
	}
	return append(out, cur.String())
}

// guestProbe is what /proc says of a new QEMU guest process.
type guestProbe struct {
	VM       string
	NetIno   uint64
	Incoming bool
}

// probeGuest reads the guest name, network namespace and -incoming of
// process pid from /proc; ok is false if it is gone or no QEMU guest.
func probeGuest(pid int) (guestProbe, bool) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	if err != nil || len(b) == 0 {
		return guestProbe{}, false
	}
	argv := strings.Split(strings.TrimSuffix(string(b), "\x00"), "\x00")
	vm := guestName(argv)
	if vm == "" {
		return guestProbe{}, false
	}
	return guestProbe{VM: vm, NetIno: nsIno(fmt.Sprintf("/proc/%d/ns/net", pid)), Incoming: slices.Contains(argv, "-incoming")}, true
}

// tracker builds lives from proc events, in the order the kernel queued
// them.
type tracker struct {
	hosts map[uint64]string // network namespace inode -> lab host
	probe func(pid int) (guestProbe, bool)
	lives []*track
	open  map[int]*track // by thread group id, until the pid is reused
}

type track struct {
	Life
	leaderGone bool // the thread group leader's exit was seen
}

func newTracker(hosts map[uint64]string, probe func(int) (guestProbe, bool)) *tracker {
	return &tracker{hosts: hosts, probe: probe, open: map[int]*track{}}
}

func (t *tracker) handle(ev procEvent) {
	switch ev.what {
	case procEventFork:
		// A new process with the pid of an old one: the old one is gone
		// for good, and later events with its pid are the new one's.
		if ev.pid == ev.tgid {
			if tr := t.open[ev.tgid]; tr != nil {
				if !tr.leaderGone { // only if events were lost
					tr.End, tr.leaderGone = ev.at, true
				}
				delete(t.open, ev.tgid)
			}
		}
	case procEventExec:
		if t.open[ev.tgid] != nil {
			// A guest that execs again (QEMU's cpr-exec, or a wrapper
			// that execs QEMU read late) goes on living: keep its
			// first start.
			return
		}
		g, ok := t.probe(ev.tgid)
		if !ok {
			return
		}
		tr := &track{Life: Life{VM: g.VM, Host: t.hosts[g.NetIno], PID: ev.tgid, Start: ev.at, Incoming: g.Incoming}}
		t.lives = append(t.lives, tr)
		t.open[ev.tgid] = tr
	case procEventExit:
		// One event per thread, the leader's not necessarily last: the
		// process ends with its last thread.
		if tr := t.open[ev.tgid]; tr != nil {
			tr.End = max(tr.End, ev.at)
			if ev.pid == ev.tgid {
				tr.leaderGone = true
			}
		}
	}
}

func (t *tracker) snapshot() []Life {
	out := make([]Life, 0, len(t.lives))
	for _, tr := range t.lives {
		l := tr.Life
		if !tr.leaderGone {
			l.End = 0
		}
		out = append(out, l)
	}
	return out
}

// GuestWatch records the lives of QEMU guests from the proc connector
// until stopped.
type GuestWatch struct {
	fd    int // netlink socket
	wake  int // eventfd that stops the reader
	buf   []byte
	trace func(procEvent) // sees every event (tests)

	// Subscription, the reader's own.
	nonce  uint32 // the ack of the listen request
	acked  bool
	ackErr uint32

	mu      sync.Mutex
	t       *tracker
	lost    int // times the socket overflowed
	readErr error

	done     chan struct{}
	stopOnce sync.Once
}

// WatchGuests starts recording the lives of QEMU guests on this machine,
// mapping them to the lab's hosts by network namespace. Events are
// subscribed to when it returns. It needs CAP_NET_ADMIN and the initial
// user, pid and network namespaces; Stop ends it.
func (l *Lab) WatchGuests() (*GuestWatch, error) { return l.watchGuests(nil) }

func (l *Lab) watchGuests(trace func(procEvent)) (*GuestWatch, error) {
	hosts := map[uint64]string{}
	for _, h := range l.Hosts {
		if h.NetIno != 0 {
			hosts[h.NetIno] = h.Name
		}
	}
	fd, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, unix.NETLINK_CONNECTOR)
	if err != nil {
		return nil, fmt.Errorf("proc connector socket: %w", err)
	}
	w := &GuestWatch{
		fd: fd, wake: -1, buf: make([]byte, 64<<10), trace: trace,
		t: newTracker(hosts, probeGuest), done: make(chan struct{}),
	}
	if err := w.setup(); err != nil {
		w.closeFDs()
		return nil, err
	}
	ready := make(chan error, 1)
	go w.run(ready)
	if err := <-ready; err != nil {
		<-w.done
		w.closeFDs()
		return nil, err
	}
	return w, nil
}

func (w *GuestWatch) setup() error {
	// A burst of events must not overflow the socket while the reader
	// waits for a CPU: lost events make the watch worthless.
	if err := unix.SetsockoptInt(w.fd, unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, guestWatchRcvBuf); err != nil {
		if err := unix.SetsockoptInt(w.fd, unix.SOL_SOCKET, unix.SO_RCVBUF, guestWatchRcvBuf); err != nil {
			return fmt.Errorf("proc connector receive buffer: %w", err)
		}
	}
	if err := unix.Bind(w.fd, &unix.SockaddrNetlink{Family: unix.AF_NETLINK, Groups: cnIdxProc}); err != nil {
		return fmt.Errorf("binding to the proc connector: %w", err)
	}
	wake, err := unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK)
	if err != nil {
		return fmt.Errorf("eventfd: %w", err)
	}
	w.wake = wake
	return nil
}

func (w *GuestWatch) closeFDs() {
	unix.Close(w.fd)
	if w.wake >= 0 {
		unix.Close(w.wake)
	}
}

// request sends the proc connector a multicast op. With filter (Linux 6.6
// and later) it asks for fork, exec and exit events only.
func (w *GuestWatch) request(op uint32, ack uint32, filter bool) error {
	payload := 4
	if filter {
		payload = 8 // struct proc_input {mcast_op, event_type}
	}
	ne := binary.NativeEndian
	b := make([]byte, nlmsgHdrLen+cnMsgLen+payload)
	ne.PutUint32(b, uint32(len(b)))
	ne.PutUint16(b[4:], unix.NLMSG_DONE)
	c := b[nlmsgHdrLen:]
	ne.PutUint32(c, cnIdxProc)
	ne.PutUint32(c[4:], cnValProc)
	ne.PutUint32(c[12:], ack)
	ne.PutUint16(c[16:], uint16(payload))
	ne.PutUint32(c[cnMsgLen:], op)
	if filter {
		ne.PutUint32(c[cnMsgLen+4:], procEventFork|procEventExec|procEventExit)
	}
	if err := unix.Sendto(w.fd, b, 0, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		return fmt.Errorf("proc connector request: %w", err)
	}
	return nil
}

// subscribe asks to listen and waits for the kernel's answer: events flow
// to the socket from then on. The answer is told from other listeners' by
// its ack, the request's plus 1 (the kernel overwrites its seq with an
// event counter). Then it narrows the events to forks, execs and exits:
// that request has no answer (Linux 6.6 and later filter it out as no such
// event; older kernels ignore the request and send every event).
func (w *GuestWatch) subscribe() error {
	w.nonce = rand.Uint32() | 1<<31
	if err := w.request(procCnMcastListen, w.nonce, false); err != nil {
		return err
	}
	deadline := time.Now().Add(2 * time.Second)
	for !w.acked {
		left := time.Until(deadline)
		if left <= 0 {
			return errors.New("no answer from the proc connector (it needs CAP_NET_ADMIN and the initial user, pid and network namespaces)")
		}
		fds := []unix.PollFd{{Fd: int32(w.fd), Events: unix.POLLIN}}
		if _, err := unix.Poll(fds, int(left/time.Millisecond)+1); err != nil && err != unix.EINTR {
			return fmt.Errorf("poll: %w", err)
		}
		if err := w.drain(); err != nil {
			return err
		}
	}
	if w.ackErr != 0 {
		return fmt.Errorf("proc connector refused to listen: %w", unix.Errno(w.ackErr))
	}
	return w.request(procCnMcastListen, 0, true)
}

// run is the reader. Its thread is its own so that it reads /proc at an
// exec as soon as it can.
func (w *GuestWatch) run(ready chan<- error) {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	defer close(w.done)
	if err := w.subscribe(); err != nil {
		ready <- err
		return
	}
	ready <- nil
	fds := []unix.PollFd{{Fd: int32(w.fd), Events: unix.POLLIN}, {Fd: int32(w.wake), Events: unix.POLLIN}}
	for {
		if _, err := unix.Poll(fds, -1); err != nil {
			if err == unix.EINTR {
				continue
			}
			w.fail(fmt.Errorf("poll: %w", err))
			return
		}
		// Stopping too: what was queued before Stop belongs in the report.
		if err := w.drain(); err != nil {
			w.fail(err)
			return
		}
		if fds[1].Revents != 0 {
			return
		}
	}
}

func (w *GuestWatch) fail(err error) {
	w.mu.Lock()
	w.readErr = err
	w.mu.Unlock()
}

// drain handles every datagram queued on the socket.
func (w *GuestWatch) drain() error {
	for {
		n, from, err := unix.Recvfrom(w.fd, w.buf, unix.MSG_DONTWAIT)
		switch err {
		case nil:
		case unix.EAGAIN, unix.EINTR:
			if err == unix.EAGAIN {
				return nil
			}
			continue
		case unix.ENOBUFS: // the kernel dropped events
			w.mu.Lock()
			w.lost++
			w.mu.Unlock()
			continue
		default:
			return fmt.Errorf("reading the proc connector: %w", err)
		}
		if sa, ok := from.(*unix.SockaddrNetlink); !ok || sa.Pid != 0 {
			continue // not from the kernel
		}
		parseProcEvents(w.buf[:n], w.dispatch)
	}
}

func (w *GuestWatch) dispatch(ev procEvent) {
	if ev.what == procEventNone {
		if ev.ack == w.nonce+1 {
			w.acked, w.ackErr = true, ev.ackErr
		}
		return
	}
	if w.trace != nil {
		w.trace(ev)
	}
	w.mu.Lock()
	w.t.handle(ev)
	w.mu.Unlock()
}

// Report returns the lives seen so far, analysed. Its error says the
// report is incomplete: the kernel dropped events, or reading failed.
func (w *GuestWatch) Report() (GuestReport, error) {
	w.mu.Lock()
	lives, lost, readErr := w.t.snapshot(), w.lost, w.readErr
	w.mu.Unlock()
	r := analyze(lives)
	r.settle(MonoNow())
	switch {
	case readErr != nil:
		return r, fmt.Errorf("guest watch stopped reading, its report is incomplete: %w", readErr)
	case lost > 0:
		return r, fmt.Errorf("guest watch lost proc events (socket overflows: %d), its report is incomplete: %w", lost, unix.ENOBUFS)
	}
	return r, nil
}

// Stop stops listening and returns the final report, events queued before
// the call included. It may be called more than once.
func (w *GuestWatch) Stop() (GuestReport, error) {
	w.stopOnce.Do(func() {
		// Unsubscribe, or the kernel goes on sending events to nobody.
		w.request(procCnMcastIgnore, 0, false)
		var one [8]byte
		binary.NativeEndian.PutUint64(one[:], 1)
		unix.Write(w.wake, one[:])
		<-w.done
		w.closeFDs()
	})
	return w.Report()
}

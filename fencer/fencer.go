// Package fencer is the host's independent fencer: a small process of its
// own (cmd/corral-fencer) that corrald feeds with each lease's deadline and
// that SIGKILLs every corral guest on the host when a deadline passes
// unfed. It is what makes a host's guests die with its lease when corrald
// itself is dead, hung or starved.
//
// The fencer knows the guests' QEMU processes before it needs them: it
// scans libvirt's run directory every Scan and pins each corral guest's
// process by a pidfd (internal/guestproc). Its kill path reads nothing and
// asks no one: it signals the pinned processes, sweeps the run directory
// once more for a guest started since the last scan, and confirms every
// death through the pidfds. It never talks to libvirtd; libvirtd notices
// the deaths by itself.
//
// It keeps deadlines on CLOCK_MONOTONIC, the clock of corrald's lease, and
// persists its state in a file under /run, so that a restarted fencer
// carries on with the deadline it had (a deadline passed meanwhile fires at
// once). See daemon/controller/DESIGN.md, "The fencer", for the timeline
// and what it guarantees.
package fencer

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"sort"
	"sync"
	"time"

	"github.com/corralhq/corral/internal/guestproc"
)

// Defaults.
const (
	DefaultSocket = "/run/corral-fencer/fencer.sock"
	DefaultScan   = 100 * time.Millisecond
	// killWait bounds how long a fence waits for deaths before it records
	// the survivors (a QEMU stuck in the kernel) and carries on killing.
	killWait   = 5 * time.Second
	maxConns   = 16
	keepFences = 16
)

// Config configures the fencer.
type Config struct {
	// Socket is the Unix socket corrald feeds (0600: root only).
	Socket string
	// StateFile persists mode and deadline across fencer restarts
	// (default: fencer.state beside the socket).
	StateFile string
	// RunDir is libvirt's QEMU run directory (guestproc.DefaultRunDir).
	RunDir string
	// Scan is how often the guests are looked for (DefaultScan).
	Scan time.Duration
}

// Server is the fencer.
type Server struct {
	cfg   Config
	log   *slog.Logger
	calls chan call

	// Owned by Run's loop.
	st     state
	procs  map[string]*guestproc.Proc
	others map[string]int // domains found not to be corral's: name -> pid
	fences []Fence
}

type state struct {
	Mode       Mode  `json:"mode"`
	DeadlineNS int64 `json:"deadline_ns,omitempty"`
	BudgetNS   int64 `json:"budget_ns,omitempty"`
}

type call struct {
	req   Request
	reply chan Status
}

// New returns a fencer; Run runs it.
func New(cfg Config, log *slog.Logger) *Server {
	if cfg.Socket == "" {
		cfg.Socket = DefaultSocket
	}
	if cfg.StateFile == "" {
		cfg.StateFile = filepath.Join(filepath.Dir(cfg.Socket), "fencer.state")
	}
	if cfg.RunDir == "" {
		cfg.RunDir = guestproc.DefaultRunDir
	}
	if cfg.Scan <= 0 {
		cfg.Scan = DefaultScan
	}
	return &Server{cfg: cfg, log: log, calls: make(chan call), procs: map[string]*guestproc.Proc{}, others: map[string]int{}, st: state{Mode: Released}}
}

// Run serves until ctx ends; it returns nil then.
func (s *Server) Run(ctx context.Context) error {
	if err := s.load(); err != nil {
		return err
	}
	ln, err := listen(s.cfg.Socket)
	if err != nil {
		return err
	}
	s.log.Info("fencer running", "socket", s.cfg.Socket, "mode", s.st.Mode, "run_dir", s.cfg.RunDir)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { defer wg.Done(); s.accept(ctx, ln) }()
	defer func() {
		ln.Close()
		wg.Wait()
		for _, p := range s.procs {
			p.Close()
		}
	}()

	scan := time.NewTicker(s.cfg.Scan)
	defer scan.Stop()
	fire := time.NewTimer(time.Hour)
	defer fire.Stop()
	s.refresh()
	for {
		s.schedule(fire)
		select {
		case <-ctx.Done():
			s.log.Info("fencer stopping", "mode", s.st.Mode)
			return nil
		case c := <-s.calls:
			c.reply <- s.handle(c.req)
		case <-fire.C:
			if s.st.Mode == Armed && guestproc.MonoNow() >= s.due() {
				s.fire()
			}
		case <-scan.C:
			s.refresh()
			if s.st.Mode == Fenced {
				s.enforce()
			}
		}
	}
}

func (s *Server) due() time.Duration {
	return time.Duration(s.st.DeadlineNS - s.st.BudgetNS)
}

// schedule sets the timer to the kill's due time while armed.
func (s *Server) schedule(t *time.Timer) {
	if !t.Stop() {
		select {
		case <-t.C:
		default:
		}
	}
	if s.st.Mode == Armed {
		t.Reset(max(s.due()-guestproc.MonoNow(), 0))
	}
}

func (s *Server) handle(req Request) Status {
	now := guestproc.MonoNow()
	if err := req.validate(now); err != nil {
		st := s.status(now)
		st.Error = err.Error()
		return st
	}
	prev := s.st
	switch req.Op {
	case OpArm:
		switch {
		case time.Duration(req.DeadlineNS-req.BudgetNS) <= now:
			// Too late to extend anything: a renewal that came back after
			// its own kill time. The current deadline stands.
		case s.st.Mode == Armed && req.DeadlineNS <= s.st.DeadlineNS:
			// Deadlines only move forward.
		default:
			s.st = state{Mode: Armed, DeadlineNS: req.DeadlineNS, BudgetNS: req.BudgetNS}
		}
	case OpRelease:
		s.st = state{Mode: Released}
	}
	if s.st != prev {
		if prev.Mode != s.st.Mode {
			s.log.Info("fencer mode", "from", prev.Mode, "to", s.st.Mode, "deadline_in", time.Duration(s.st.DeadlineNS)-now)
		}
		if err := s.save(); err != nil {
			s.log.Error("persist fencer state", "err", err)
		}
	}
	return s.status(now)
}

func (s *Server) status(now time.Duration) Status {
	st := Status{Mode: s.st.Mode, DeadlineNS: s.st.DeadlineNS, BudgetNS: s.st.BudgetNS, NowNS: int64(now), Guests: []string{}}
	for name := range s.procs {
		st.Guests = append(st.Guests, name)
	}
	sort.Strings(st.Guests)
	st.Fences = append(st.Fences, s.fences...)
	return st
}

// refresh pins the processes of guests started since the last scan and
// forgets those that died. A pinned process stays pinned until it dies,
// even if its pid file goes.
func (s *Server) refresh() {
	s.pinNew()
	for k, p := range s.procs {
		if p.Dead() {
			p.Close()
			delete(s.procs, k)
		}
	}
}

// pinNew pins the guests started since the last scan and returns them.
func (s *Server) pinNew() []*guestproc.Proc {
	var added []*guestproc.Proc
	targets, err := guestproc.Find(s.cfg.RunDir)
	if err != nil {
		s.log.Warn("scan guests", "dir", s.cfg.RunDir, "err", err)
	}
	for _, t := range targets {
		if p, ok := s.procs[t.Name]; ok && p.PID == t.PID {
			continue // pinned already: the common case, no file read
		}
		if pid, ok := s.others[t.Name]; ok && pid == t.PID {
			continue
		}
		if corral, known := guestproc.IsCorral(s.cfg.RunDir, t.Name); !corral {
			if known && len(s.others) < 4096 {
				s.others[t.Name] = t.PID
			}
			continue
		}
		p, err := guestproc.Open(t)
		if err != nil {
			// Gone, or still in execve: the next scan looks again
			// (every Scan; a fenced host's enforce kills it then).
			if !errors.Is(err, os.ErrProcessDone) && !errors.Is(err, guestproc.ErrStarting) {
				s.log.Warn("pin guest", "vm", t.Name, "err", err)
			}
			continue
		}
		if old, ok := s.procs[t.Name]; ok {
			// A new QEMU for the name while the old one lives on (should
			// not happen): keep both under distinct keys.
			s.procs[fmt.Sprintf("%s#%d", t.Name, old.PID)] = old
		}
		s.procs[t.Name] = p
		added = append(added, p)
	}
	return added
}

// fire kills every corral guest: the lease is over.
func (s *Server) fire() {
	start := guestproc.MonoNow()
	var ps []*guestproc.Proc
	for _, p := range s.procs {
		p.Kill()
		ps = append(ps, p)
	}
	for _, p := range s.pinNew() { // a guest started since the last scan
		p.Kill()
		ps = append(ps, p)
	}
	alive := guestproc.WaitDead(ps, killWait)
	f := Fence{DeadlineNS: s.st.DeadlineNS, StartNS: int64(start), Killed: []string{}}
	for _, p := range ps {
		f.Killed = append(f.Killed, p.Name)
	}
	for _, p := range alive {
		f.Alive = append(f.Alive, p.Name)
	}
	if len(alive) == 0 {
		f.DeadNS = int64(guestproc.MonoNow())
	}
	sort.Strings(f.Killed)
	s.fences = append(s.fences, f)
	if len(s.fences) > keepFences {
		s.fences = s.fences[len(s.fences)-keepFences:]
	}
	s.st.Mode = Fenced
	if err := s.save(); err != nil {
		s.log.Error("persist fencer state", "err", err)
	}
	late := time.Duration(f.StartNS - int64(s.due()))
	if len(alive) > 0 {
		s.log.Error("fenced: lease expired, but guests survived SIGKILL", "killed", f.Killed, "alive", f.Alive, "late", late)
	} else {
		s.log.Warn("fenced: lease expired; every corral guest killed", "killed", f.Killed,
			"took", time.Duration(f.DeadNS-f.StartNS), "dead_before_deadline", time.Duration(f.DeadlineNS-f.DeadNS), "late", late)
	}
	s.refresh()
}

// enforce kills any corral guest found while fenced: corrald may be alive
// but hung halfway through starting one.
func (s *Server) enforce() {
	for name, p := range s.procs {
		s.log.Warn("fenced: killing a guest found running", "vm", name, "pid", p.PID)
		p.Kill()
	}
}

func (s *Server) load() error {
	b, err := os.ReadFile(s.cfg.StateFile)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	var st state
	if err := json.Unmarshal(b, &st); err != nil {
		// Never start released on a state we cannot read: that could be
		// an armed deadline. Refuse, loudly; the operator removes it.
		return fmt.Errorf("fencer state %s: %w (remove it only if this host runs no guests)", s.cfg.StateFile, err)
	}
	switch st.Mode {
	case Released, Armed, Fenced:
	default:
		return fmt.Errorf("fencer state %s: mode %q", s.cfg.StateFile, st.Mode)
	}
	if st.Mode == Armed && time.Duration(st.DeadlineNS) > guestproc.MonoNow()+MaxAhead {
		// A deadline no arm could have set: the file outlived a reboot
		// (CLOCK_MONOTONIC restarts at zero). Kill rather than wait.
		s.log.Warn("fencer state holds a deadline from before a reboot; fencing until corrald arms it again", "file", s.cfg.StateFile)
		st.Mode = Fenced
	}
	s.st = st
	return nil
}

func (s *Server) save() error {
	b, _ := json.Marshal(s.st)
	tmp := s.cfg.StateFile + ".tmp"
	if err := os.WriteFile(tmp, b, 0o600); err != nil {
		return err
	}
	return os.Rename(tmp, s.cfg.StateFile)
}

// listen opens the socket, refusing when another fencer answers on it.
func listen(path string) (net.Listener, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, err
	}
	if c, err := net.DialTimeout("unix", path, time.Second); err == nil {
		c.Close()
		return nil, fmt.Errorf("another fencer is running on %s", path)
	}
	os.Remove(path)
	ln, err := net.Listen("unix", path)
	if err != nil {
		return nil, err
	}
	if err := os.Chmod(path, 0o600); err != nil {
		ln.Close()
		return nil, err
	}
	return ln, nil
}

func (s *Server) accept(ctx context.Context, ln net.Listener) {
	slots := make(chan struct{}, maxConns)
	var wg sync.WaitGroup
	defer wg.Wait()
	for {
		c, err := ln.Accept()
		if err != nil {
			return // closed by Run
		}
		select {
		case slots <- struct{}{}:
		default:
			c.Close() // only corrald and a status query are expected
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-slots }()
			s.serve(ctx, c)
		}()
	}
}

func (s *Server) serve(ctx context.Context, c net.Conn) {
	defer c.Close()
	stop := context.AfterFunc(ctx, func() { c.Close() })
	defer stop()
	sc := bufio.NewScanner(c)
	sc.Buffer(make([]byte, 0, 512), maxLine)
	enc := json.NewEncoder(c)
	for sc.Scan() {
		var req Request
		dec := json.NewDecoder(bytes.NewReader(sc.Bytes()))
		dec.DisallowUnknownFields()
		var st Status
		if err := dec.Decode(&req); err != nil {
			st = Status{Error: fmt.Sprintf("%v: %v", ErrBadRequest, err)}
		} else {
			reply := make(chan Status, 1)
			select {
			case s.calls <- call{req, reply}:
				st = <-reply
			case <-ctx.Done():
				return
			}
		}
		if err := enc.Encode(st); err != nil {
			return
		}
	}
}

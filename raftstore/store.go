package raftstore

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"
	wal "github.com/hashicorp/raft-wal"
	"github.com/hashicorp/raft-wal/metadb"

	"github.com/corralhq/corral/internal/logadapt"
	"github.com/corralhq/corral/model"
	"github.com/corralhq/corral/raftlog"
)

// Timing holds Raft's timers. Production uses DefaultTiming; tests shrink it.
type Timing struct {
	HeartbeatTimeout   time.Duration
	ElectionTimeout    time.Duration
	LeaderLeaseTimeout time.Duration
	// QuietWindow: how long quietTransport holds a heartbeat to a follower
	// that answers replication (0: LeaderLeaseTimeout/2). Above the
	// renewal interval, below LeaderLeaseTimeout by a heartbeat's round
	// trip under load.
	QuietWindow       time.Duration
	CommitTimeout     time.Duration
	SnapshotInterval  time.Duration
	SnapshotThreshold uint64
	TrailingLogs      uint64
}

// DefaultTiming is what corrald runs with. The heartbeat and election
// timeouts are half of Raft's defaults: the election adds directly to the
// recovery of a failed leader's guests, and on a LAN 500 ms without a
// heartbeat is failure enough. CommitTimeout, how long a follower may wait
// to learn of a commit when no entry follows it, is 1 s (Raft's default is
// 50 ms): the entries hosts act on are published at once (publishCommit),
// Renewals entries need not be, and the 50 ms timer sent every follower an
// AppendEntries whenever 50-100 ms passed without an entry, on top of the
// heartbeats. The leader lease (450 ms, Raft's default 500 ms) counts the
// followers' real answers, which come every renewal interval (200 ms):
// quietTransport holds the heartbeats for QuietWindow (250 ms) while they
// come, which leaves a released heartbeat 200 ms to be answered
// (DESIGN.md).
func DefaultTiming() Timing {
	return Timing{
		HeartbeatTimeout:   500 * time.Millisecond,
		ElectionTimeout:    500 * time.Millisecond,
		LeaderLeaseTimeout: 450 * time.Millisecond,
		QuietWindow:        250 * time.Millisecond,
		CommitTimeout:      time.Second,
		SnapshotInterval:   120 * time.Second,
		SnapshotThreshold:  8192,
		TrailingLogs:       10240,
	}
}

// Config is what a Store needs.
type Config struct {
	ID            string // server ID: the host name
	BindAddr      string // ip:port to listen on
	AdvertiseAddr string // ip:port peers dial
	Dir           string // raft's directory: wal/ and snapshots/
	// ServerTLS and ClientTLS, both set or both nil, turn on mutual TLS:
	// the listener's and the dialer's configurations.
	ServerTLS, ClientTLS *tls.Config
	// DialTLS, when set with ClientTLS, gives the configuration to dial
	// one address with (the daemon's: the certificate must name the host
	// registered at that Raft address); nil falls back to ClientTLS.
	DialTLS func(addr string) *tls.Config
	Logger  *slog.Logger
	Timing  Timing
}

// Status is a summary of the local Raft node.
type Status struct {
	State        string    `json:"state"` // Leader, Follower, Candidate, Shutdown
	Term         uint64    `json:"term"`
	LastIndex    uint64    `json:"last_index"`
	CommitIndex  uint64    `json:"commit_index"`
	AppliedIndex uint64    `json:"applied_index"`
	LastContact  time.Time `json:"last_contact"`
}

// Store runs a Raft node and its FSM. New builds nothing; Open starts Raft;
// Close stops it.
type Store struct {
	reader
	cfg Config
	log *slog.Logger

	mu       sync.Mutex
	raft     *raft.Raft
	logs     raft.LogStore
	closeLog func()
	trans    *raft.NetworkTransport
	quiet    *quietTransport
	hasState bool
	// publish asks publishCommits to tell the followers the commit index
	// (see ApplyRaw).
	publish chan struct{}
	// The leaders this node saw (watchLeaders): the current one, the one
	// it followed before, and its last contact with that one.
	stopWatch   chan struct{}
	curLeader   string
	prevLeader  string
	prevContact time.Time
}

// New returns a Store for cfg; call Open to start it.
func New(cfg Config) *Store {
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Timing == (Timing{}) {
		cfg.Timing = DefaultTiming()
	}
	return &Store{reader: reader{newFSM(cfg.Logger.With("component", "fsm"))}, cfg: cfg, log: cfg.Logger}
}

// openLog opens the Raft log (and stable store) in dir and reads every
// entry once: raft panics at start on an entry it cannot read, and a
// damaged log deserves an error that says what it is. raft-wal v0.4.0
// marked a segment sealed when a follower cut its log's tail (raft's
// "clearing log suffix") without writing the segment's index, and the next
// start failed on "sealed segment has no index block"; v0.4.1 writes it
// (TestLogSurvivesTailTruncation), but a log damaged before stays so.
func openLog(dir string, hl hclog.Logger) (*wal.WAL, func(), error) {
	meta := &metadb.BoltMetaDB{} // wal.Close does not close its meta store; we do
	w, err := wal.Open(dir, wal.WithLogger(hl.Named("wal")), wal.WithMetaStore(meta))
	if err != nil {
		meta.Close()
		return nil, nil, fmt.Errorf("open raft log %s: %w", dir, err)
	}
	closeLog := func() { w.Close(); meta.Close() }
	if err := checkLog(w); err != nil {
		closeLog()
		return nil, nil, fmt.Errorf("raft log %s: %w", dir, err)
	}
	return w, closeLog, nil
}

// checkLog reads every entry of a log once.
func checkLog(logs raft.LogStore) error {
	first, err1 := logs.FirstIndex()
	last, err2 := logs.LastIndex()
	if err := errors.Join(err1, err2); err != nil {
		return err
	}
	for i := first; i > 0 && i <= last; i++ {
		var l raft.Log
		if err := logs.GetLog(i, &l); err != nil {
			return fmt.Errorf("%w: entry %d of %d-%d unreadable: %v; this host cannot start with it: "+
				"remove it from the cluster (corralctl host rm) and join it again with an empty data_dir",
				ErrLogDamaged, i, first, last, err)
		}
	}
	return nil
}

// ErrLogDamaged: the Raft log on disk cannot be read back.
var ErrLogDamaged = errors.New("damaged raft log")

// Open creates the data directories, opens the log and snapshot stores, and
// starts Raft. A node with existing state resumes from it.
func (s *Store) Open() error {
	walDir := filepath.Join(s.cfg.Dir, "wal")
	snapDir := filepath.Join(s.cfg.Dir, "snapshots")
	for _, d := range []string{walDir, snapDir} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return fmt.Errorf("raft data dir: %w", err)
		}
	}
	hl := logadapt.Hclog(s.log, "raft")
	w, closeLog, err := openLog(walDir, hl)
	if err != nil {
		return err
	}
	snaps, err := raft.NewFileSnapshotStoreWithLogger(snapDir, 3, hl.Named("snapshot"))
	if err != nil {
		closeLog()
		return fmt.Errorf("open snapshot store %s: %w", snapDir, err)
	}
	has, err := raft.HasExistingState(w, w, snaps)
	if err != nil {
		closeLog()
		return fmt.Errorf("read raft state: %w", err)
	}
	stream, err := newStreamLayer(s.cfg.BindAddr, s.cfg.AdvertiseAddr, s.cfg.ServerTLS, s.cfg.ClientTLS, s.cfg.DialTLS)
	if err != nil {
		closeLog()
		return err
	}
	trans := raft.NewNetworkTransportWithConfig(&raft.NetworkTransportConfig{
		Stream: stream, MaxPool: poolSize, Timeout: 10 * time.Second, Logger: hl.Named("net"),
	})

	installTimerSink()
	rc := raft.DefaultConfig()
	rc.LocalID = raft.ServerID(s.cfg.ID)
	rc.Logger = hl
	rc.ShutdownOnRemove = false // a removed host stays a passive follower and can be re-added
	t := s.cfg.Timing
	rc.HeartbeatTimeout, rc.ElectionTimeout = t.HeartbeatTimeout, t.ElectionTimeout
	rc.LeaderLeaseTimeout, rc.CommitTimeout = t.LeaderLeaseTimeout, t.CommitTimeout
	rc.SnapshotInterval, rc.SnapshotThreshold, rc.TrailingLogs = t.SnapshotInterval, t.SnapshotThreshold, t.TrailingLogs

	window := t.QuietWindow
	if window <= 0 {
		window = t.LeaderLeaseTimeout / 2
	}
	quiet := newQuietTransport(trans, window)
	prompt := newElectionPrompt(t.HeartbeatTimeout)
	// Recent entries from memory: the leader reads each entry back to
	// replicate it to every follower, a follower to apply it; from the WAL
	// each read was a pread of its own (NewLogCache fails only on a
	// capacity below 1).
	logs, _ := raft.NewLogCache(logCacheSize, noteLog{w, s.fsm, prompt})
	r, err := raft.NewRaft(rc, s.fsm, logs, w, snaps, quiet)
	if err != nil {
		trans.Close()
		closeLog()
		return fmt.Errorf("start raft: %w", err)
	}
	// NewRaft restored the latest snapshot before it returned, so the
	// state holds every command up to raft's applied index now; a
	// snapshot from before the FSM recorded its index says 0, which this
	// makes good (unless an entry was applied meanwhile, which set it).
	s.fsm.applied.CompareAndSwap(0, r.AppliedIndex())
	s.mu.Lock()
	s.raft, s.logs, s.closeLog, s.trans, s.quiet, s.hasState = r, w, closeLog, trans, quiet, has
	s.stopWatch = make(chan struct{})
	s.publish = make(chan struct{}, 1)
	s.mu.Unlock()
	leaders := make(chan struct{}, 1)
	s.watchLeaders(r, s.stopWatch, leaders)
	go s.publishCommits(r, s.publish, s.stopWatch)
	go s.promptElections(r, prompt, s.stopWatch, leaders)
	s.log.Info("raft started", "id", s.cfg.ID, "addr", s.cfg.AdvertiseAddr, "existing_state", has)
	return nil
}

// logCacheSize is how many recent entries raft reads from memory.
const logCacheSize = 64

// noteLog is the WAL as raft writes to it, noting each Renewals entry as
// it is stored here (fsm.noteStored): on a follower that is when the
// leader replicates it, before the entry is known to have committed, and
// on a new leader up to a heartbeat earlier than when it applies the
// last entries of the old leader, which it learns committed only after
// its election. Each store also pushes back a follower's next look at
// its leader's silence (electionPrompt). The embedded WAL answers the rest
// (IsMonotonic too).
type noteLog struct {
	*wal.WAL
	fsm    *fsm
	prompt *electionPrompt // a follower's stored entries are its leader's word
}

func (n noteLog) StoreLog(l *raft.Log) error { return n.StoreLogs([]*raft.Log{l}) }

func (n noteLog) StoreLogs(logs []*raft.Log) error {
	if err := n.WAL.StoreLogs(logs); err != nil {
		return err
	}
	n.fsm.noteStored(logs)
	n.prompt.heard()
	return nil
}

// LogBytes sums the payload bytes of the log's entries from..to (those
// still in the log), for measurements of log growth: the WAL's files say
// nothing of it, since it allocates segments ahead.
func (s *Store) LogBytes(from, to uint64) (int64, error) {
	s.mu.Lock()
	logs := s.logs
	s.mu.Unlock()
	if logs == nil {
		return 0, errors.New("raft is not open")
	}
	var n int64
	for i := from; i <= to; i++ {
		var l raft.Log
		if err := logs.GetLog(i, &l); err != nil {
			if errors.Is(err, raft.ErrLogNotFound) {
				continue
			}
			return n, err
		}
		n += int64(len(l.Data))
	}
	return n, nil
}

// Close shuts Raft down and closes its stores.
func (s *Store) Close() error {
	s.mu.Lock()
	r, closeLog, trans, quiet := s.raft, s.closeLog, s.trans, s.quiet
	s.raft = nil
	if s.stopWatch != nil {
		close(s.stopWatch)
		s.stopWatch = nil
	}
	s.mu.Unlock()
	if r == nil {
		return nil
	}
	quiet.stopHolding()
	err := r.Shutdown().Error()
	trans.Close()
	closeLog()
	return err
}

func (s *Store) r() (*raft.Raft, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.raft == nil {
		return nil, fmt.Errorf("raft is not running: %w", model.ErrUnavailable)
	}
	return s.raft, nil
}

// HasState reports whether this node belongs to a cluster already: it had
// Raft state when opened, has bootstrapped, or has received log entries.
func (s *Store) HasState() bool {
	s.mu.Lock()
	has, r := s.hasState, s.raft
	s.mu.Unlock()
	return has || r != nil && r.LastIndex() > 0
}

// Bootstrap forms a new cluster with the given voters. Call it on one node
// only, with no existing state.
func (s *Store) Bootstrap(servers []raftlog.Server) error {
	r, err := s.r()
	if err != nil {
		return err
	}
	var conf raft.Configuration
	for _, sv := range servers {
		suffrage := raft.Voter
		if !sv.Voter {
			suffrage = raft.Nonvoter
		}
		conf.Servers = append(conf.Servers, raft.Server{ID: raft.ServerID(sv.ID), Address: raft.ServerAddress(sv.Address), Suffrage: suffrage})
	}
	if err := r.BootstrapCluster(conf).Error(); err != nil {
		return fmt.Errorf("bootstrap: %w", err)
	}
	s.mu.Lock()
	s.hasState = true
	s.mu.Unlock()
	return nil
}

// Apply writes c through Raft and returns what the FSM returned: a refusal
// by the state rules comes back as the error. Only the leader can apply;
// others get model.ErrNotLeader.
func (s *Store) Apply(ctx context.Context, c raftlog.Command) (any, error) {
	data, err := raftlog.Encode(c)
	if err != nil {
		return nil, err
	}
	return s.ApplyRaw(ctx, data)
}

// ApplyRaw is Apply for an already encoded entry. The entry must decode
// as a command this daemon knows (a batch: every entry in it), or it is
// refused before it reaches the log: the leader appends nothing its own
// FSM would refuse to read.
func (s *Store) ApplyRaw(ctx context.Context, data []byte) (any, error) {
	if err := checkEntry(data, true); err != nil {
		return nil, err
	}
	r, err := s.r()
	if err != nil {
		return nil, err
	}
	f := r.Apply(data, timeout(ctx))
	if err := f.Error(); err != nil {
		return nil, mapRaftErr(err)
	}
	if raftlog.Type(data[0]) != raftlog.TypeRenewals {
		s.publishCommit()
	}
	res := f.Response()
	if err, ok := res.(error); ok {
		return nil, err
	}
	return res, nil
}

// checkEntry decodes an entry, and a batch's entries, refusing unknown
// types even when skippable.
func checkEntry(data []byte, top bool) error {
	c, err := raftlog.Decode(data)
	if err != nil {
		return fmt.Errorf("%w: %w", raftlog.ErrBadEntry, err)
	}
	if c == nil {
		return fmt.Errorf("%w: entry type %d is not one this daemon writes", raftlog.ErrBadEntry, data[0])
	}
	if b, ok := c.(raftlog.Batch); ok {
		if !top {
			return fmt.Errorf("%w: nested batch", raftlog.ErrBadEntry)
		}
		for _, e := range b.Entries {
			if err := checkEntry(e, false); err != nil {
				return err
			}
		}
	}
	return nil
}

// ApplyBatch writes cmds as one Batch entry and returns one error per command.
func (s *Store) ApplyBatch(ctx context.Context, cmds []raftlog.Command) (raftlog.BatchResult, error) {
	b := raftlog.Batch{Entries: make([][]byte, len(cmds))}
	for i, c := range cmds {
		data, err := raftlog.Encode(c)
		if err != nil {
			return nil, err
		}
		b.Entries[i] = data
	}
	res, err := s.Apply(ctx, b)
	if err != nil {
		return nil, err
	}
	return res.(raftlog.BatchResult), nil
}

func timeout(ctx context.Context) time.Duration {
	if dl, ok := ctx.Deadline(); ok {
		if d := time.Until(dl); d > 0 {
			return d
		}
		return time.Millisecond
	}
	return 10 * time.Second
}

func mapRaftErr(err error) error {
	switch {
	case errors.Is(err, raft.ErrNotLeader), errors.Is(err, raft.ErrLeadershipLost),
		errors.Is(err, raft.ErrLeadershipTransferInProgress):
		return fmt.Errorf("%v: %w", err, model.ErrNotLeader)
	case errors.Is(err, raft.ErrRaftShutdown), errors.Is(err, raft.ErrEnqueueTimeout):
		return fmt.Errorf("%v: %w", err, model.ErrUnavailable)
	}
	return err
}

// Barrier waits until every entry committed before the call is applied to
// the local FSM. A new leader calls it before acting on state.
func (s *Store) Barrier(ctx context.Context) error {
	r, err := s.r()
	if err != nil {
		return err
	}
	return mapRaftErr(r.Barrier(timeout(ctx)).Error())
}

// Followers learn that an entry has committed only from the next
// AppendEntries the leader sends them, which carries its commit index: the
// next entry's replication, or, with no entry to send, one hashicorp/raft
// sends after CommitTimeout (1 s here, see DefaultTiming). An entry a host
// acts on (a VM placed on it, a guest to stop, a host declared dead) must
// not wait for either: once such an entry has committed, ApplyRaw asks
// publishCommits to append a Barrier, whose replication carries the new
// commit index to every follower at once. Requests coalesce: one barrier
// (one commit round trip) runs at a time, and those asked for meanwhile
// share the next. Renewals entries ask for none: no follower waits for
// their commit (a replica notes a renewal when it stores the entry).
func (s *Store) publishCommit() {
	s.mu.Lock()
	ch := s.publish
	s.mu.Unlock()
	select {
	case ch <- struct{}{}:
	default: // one is asked for already
	}
}

func (s *Store) publishCommits(r *raft.Raft, ask <-chan struct{}, stop <-chan struct{}) {
	for {
		select {
		case <-stop:
			return
		case <-ask:
		}
		if r.State() != raft.Leader {
			continue
		}
		// Best effort: when it fails (leadership lost, shutdown), the
		// followers learn the commit index with the next entry, as
		// without it.
		_ = r.Barrier(s.cfg.Timing.HeartbeatTimeout).Error()
	}
}

// Snapshot takes a snapshot of the local state now (Raft also takes them
// by itself, every SnapshotInterval once SnapshotThreshold entries have
// accumulated); a restart then restores it before replaying the log.
func (s *Store) Snapshot() error {
	r, err := s.r()
	if err != nil {
		return err
	}
	return r.Snapshot().Error()
}

// IsLeader reports whether this node is the Raft leader.
func (s *Store) IsLeader() bool {
	r, err := s.r()
	return err == nil && r.State() == raft.Leader
}

// Leader returns the ID and address of the current leader, empty if none is
// known.
func (s *Store) Leader() (id, addr string) {
	r, err := s.r()
	if err != nil {
		return "", ""
	}
	a, i := r.LeaderWithID()
	return string(i), string(a)
}

// LeaderCh delivers true when this node becomes leader and false when it
// stops being leader. It has one consumer: the leader loop.
func (s *Store) LeaderCh() <-chan bool {
	r, err := s.r()
	if err != nil {
		return nil
	}
	return r.LeaderCh()
}

// Servers returns the latest Raft configuration known to this node.
func (s *Store) Servers() ([]raftlog.Server, error) {
	r, err := s.r()
	if err != nil {
		return nil, err
	}
	f := r.GetConfiguration()
	if err := f.Error(); err != nil {
		return nil, mapRaftErr(err)
	}
	var out []raftlog.Server
	for _, sv := range f.Configuration().Servers {
		out = append(out, raftlog.Server{ID: string(sv.ID), Address: string(sv.Address), Voter: sv.Suffrage == raft.Voter})
	}
	return out, nil
}

// AddVoter adds a voter, or promotes an existing non-voter.
func (s *Store) AddVoter(ctx context.Context, id, addr string) error {
	r, err := s.r()
	if err != nil {
		return err
	}
	return mapRaftErr(r.AddVoter(raft.ServerID(id), raft.ServerAddress(addr), 0, timeout(ctx)).Error())
}

// AddNonvoter adds a non-voting member that receives the log.
func (s *Store) AddNonvoter(ctx context.Context, id, addr string) error {
	r, err := s.r()
	if err != nil {
		return err
	}
	return mapRaftErr(r.AddNonvoter(raft.ServerID(id), raft.ServerAddress(addr), 0, timeout(ctx)).Error())
}

// RemoveServer removes a member from the configuration.
func (s *Store) RemoveServer(ctx context.Context, id string) error {
	r, err := s.r()
	if err != nil {
		return err
	}
	return mapRaftErr(r.RemoveServer(raft.ServerID(id), 0, timeout(ctx)).Error())
}

// Status returns a summary of the local node.
func (s *Store) Status() Status {
	r, err := s.r()
	if err != nil {
		return Status{State: "Shutdown"}
	}
	return Status{
		State:        r.State().String(),
		Term:         r.CurrentTerm(),
		LastIndex:    r.LastIndex(),
		CommitIndex:  r.CommitIndex(),
		AppliedIndex: s.appliedIndex(r),
		LastContact:  r.LastContact(),
	}
}

// watchLeaders follows raft's leader changes until stop closes, so that
// PreviousLeader can say which leader this node followed before and when
// it last heard from it.
func (s *Store) watchLeaders(r *raft.Raft, stop chan struct{}, changed chan<- struct{}) {
	ch := make(chan raft.Observation, 16)
	obs := raft.NewObserver(ch, false, func(o *raft.Observation) bool {
		_, ok := o.Data.(raft.LeaderObservation)
		return ok
	})
	r.RegisterObserver(obs)
	go func() {
		defer r.DeregisterObserver(obs)
		for {
			select {
			case <-stop:
				return
			case o := <-ch:
				id := string(o.Data.(raft.LeaderObservation).LeaderID)
				s.mu.Lock()
				if s.curLeader != "" && s.curLeader != s.cfg.ID && id != s.curLeader {
					// Raft sets lastContact when it hears from a leader (or
					// grants a vote): no earlier than the last word of the
					// leader it has just lost.
					s.prevLeader, s.prevContact = s.curLeader, r.LastContact()
				}
				s.curLeader = id
				s.mu.Unlock()
				select { // promptElections looks again
				case changed <- struct{}{}:
				default:
				}
			}
		}
	}()
}

// PreviousLeader returns, on the leader, the host that led before it and
// the last time this node heard from it (or granted a vote since, which
// only makes the time later). ok is false when this node is not known to
// lead yet or followed no other leader. A leader with a fence command uses
// it to start fencing a killed leader's host without waiting out its own
// election (daemon/controller/DESIGN.md).
func (s *Store) PreviousLeader() (id string, lastContact time.Time, ok bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.raft == nil || s.curLeader != s.cfg.ID || s.prevLeader == "" || s.prevContact.IsZero() {
		return "", time.Time{}, false
	}
	return s.prevLeader, s.prevContact, true
}

// CommitIndex is the latest index known committed (on the leader: by a
// quorum).
func (s *Store) CommitIndex() uint64 {
	r, err := s.r()
	if err != nil {
		return 0
	}
	return r.CommitIndex()
}

// AppliedIndex is the latest index applied to the local state: every
// command at or below it is in the state this host reads. A host compares
// it with the leader's commit index before it acts on its state (starts
// guests), so it must never run ahead of the state.
func (s *Store) AppliedIndex() uint64 {
	r, err := s.r()
	if err != nil {
		return 0
	}
	return s.appliedIndex(r)
}

// maxAppliedScan bounds the entries appliedIndex reads from the log.
const maxAppliedScan = 4096

// appliedIndex: raft's applied index counts entries handed to the FSM's
// queue, which the FSM applies later (after a restart it replays many), so
// it can run ahead of the state; the FSM's own index stops at the last
// command, below no-ops and configuration entries that never reach it,
// which a leader's commit index often is (a new term starts with a
// no-op). The truth lies between: the FSM's index, raised over the
// entries after it up to raft's that are not commands.
func (s *Store) appliedIndex(r *raft.Raft) uint64 {
	queued := r.AppliedIndex()
	done := s.fsm.applied.Load()
	if done >= queued {
		return queued
	}
	s.mu.Lock()
	logs := s.logs
	s.mu.Unlock()
	if logs == nil || queued-done > maxAppliedScan {
		return done
	}
	for i := done + 1; i <= queued; i++ {
		var l raft.Log
		if err := logs.GetLog(i, &l); err != nil || l.Type == raft.LogCommand {
			return i - 1 // a command the FSM has not applied yet (or unknown)
		}
	}
	return queued
}

package raftstore

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/raft"

	"github.com/corralhq/corral/internal/notify"
	"github.com/corralhq/corral/model"
	"github.com/corralhq/corral/raftlog"
)

// fsm is the raft.FSM over State. Reads take the read lock and copy out.
type fsm struct {
	mu    sync.RWMutex
	state *State
	log   *slog.Logger
	// applied: every command at or below this index is in state. Raft's
	// own applied index is not that: it counts entries handed to the
	// FSM's queue, which the FSM may not have applied yet (a restarted
	// host replays hundreds), and entries that never reach it (no-ops).
	applied atomic.Uint64
	// slow, set by tests, runs before each command is applied (an FSM
	// that falls behind raft's queue).
	slow func()

	changes notify.Hub

	// What this replica knows of lease renewals (Renewals entries), on its
	// own monotonic clock: when it applied each host's latest one, and
	// since when it has applied every one a leader granted (zero: it
	// cannot tell; see Renewals). Not state: times differ per replica.
	leaseMu     sync.Mutex
	renewed     map[string]time.Time
	renewedIdx  map[string]uint64 // the log index renewed was noted from
	leasesSince time.Time
	now         func() time.Time
}

func newFSM(log *slog.Logger) *fsm {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &fsm{state: newState(), log: log, renewed: map[string]time.Time{}, renewedIdx: map[string]uint64{}, now: time.Now}
}

// Apply implements raft.FSM. An entry this daemon cannot decode (a
// corrupt or forged entry, or a newer daemon's entry not marked
// IgnoreUnknown) changes nothing and returns an error wrapping
// ErrBadEntry, logged: every host decodes the same bytes alike, so all
// refuse it alike, and none crash-loops on it after a restart.
func (f *fsm) Apply(l *raft.Log) any {
	quiet := false // a renewal: no watcher is woken (noteRenewals)
	defer func() {
		if f.raiseApplied(l.Index) && !quiet {
			f.changes.Signal()
		}
	}()
	if l.Type != raft.LogCommand {
		return nil
	}
	c, err := raftlog.Decode(l.Data)
	if err != nil {
		err = fmt.Errorf("raft entry %d: %w: %w", l.Index, raftlog.ErrBadEntry, err)
		f.log.Error("refused a raft entry; state unchanged (a forged entry, or one from a newer corrald: upgrade this host)", "index", l.Index, "err", err)
		return err
	}
	if c == nil { // unknown type with raftlog.IgnoreUnknown
		return nil
	}
	if r, ok := c.(raftlog.Renewals); ok {
		f.noteRenewals(r.Hosts, l.Index, false)
		quiet = true
		return nil
	}
	if f.slow != nil {
		f.slow()
	}
	f.mu.Lock()
	res := f.state.apply(c)
	committed := raftlog.FeatureCommittedLeases.Enabled(f.state.cluster)
	f.mu.Unlock()
	if committed {
		f.leaseMu.Lock()
		if f.leasesSince.IsZero() {
			f.leasesSince = f.now()
		}
		f.leaseMu.Unlock()
	}
	f.changes.Signal()
	return res
}

// noteStored notes the Renewals entries among logs, which this replica
// has just written to its log (noteLog).
func (f *fsm) noteStored(logs []*raft.Log) {
	for _, l := range logs {
		if l.Type != raft.LogCommand || len(l.Data) == 0 || raftlog.Type(l.Data[0]) != raftlog.TypeRenewals {
			continue
		}
		if c, err := raftlog.Decode(l.Data); err == nil {
			if r, ok := c.(raftlog.Renewals); ok {
				f.noteRenewals(r.Hosts, l.Index, true)
			}
		}
	}
}

// noteRenewals records that hosts renewed now, as far as this replica can
// tell: the renewals were sent before the leader wrote the entry, and so
// before this replica stored it (stored) or applied it. The first of the
// two counts: an entry applied at or below the index noted when it was
// stored is skipped. A store always counts, even of an index noted
// before (a new leader's entry that replaced an old one): now is later
// than any note, so it can only err late, never early. Names not in state
// are not kept (the map stays bounded by the hosts). A renewal changes no
// state, so watchers are not woken for it: a waiter for its index polls
// (renewals come several times a second and would otherwise wake every
// loop).
func (f *fsm) noteRenewals(hosts []string, index uint64, stored bool) {
	f.mu.RLock()
	known := f.state.hosts
	f.leaseMu.Lock()
	now := f.now()
	for _, h := range hosts {
		if _, ok := known[h]; !ok || !stored && index <= f.renewedIdx[h] {
			continue
		}
		f.renewed[h], f.renewedIdx[h] = now, index
	}
	f.leaseMu.Unlock()
	f.mu.RUnlock()
}

// renewals returns what this replica knows of lease renewals: since when
// it has applied every renewal any leader granted (zero when it cannot
// tell: FeatureCommittedLeases is not enabled in its state), and when it
// applied each host's latest one since then.
func (f *fsm) renewals() (since time.Time, at map[string]time.Time) {
	f.leaseMu.Lock()
	defer f.leaseMu.Unlock()
	if f.leasesSince.IsZero() {
		return time.Time{}, nil
	}
	at = make(map[string]time.Time, len(f.renewed))
	for h, t := range f.renewed {
		if t.After(f.leasesSince) {
			at[h] = t
		}
	}
	return f.leasesSince, at
}

// setApplied raises applied to index (never lowers it), after the state
// has taken the entry, and wakes the watchers: a waiter for an index sees
// it once the state holds it.
func (f *fsm) setApplied(index uint64) {
	if f.raiseApplied(index) {
		f.changes.Signal()
	}
}

// raiseApplied raises applied to index; false if it was there already.
func (f *fsm) raiseApplied(index uint64) bool {
	for {
		cur := f.applied.Load()
		if index <= cur {
			return false
		}
		if f.applied.CompareAndSwap(cur, index) {
			return true
		}
	}
}

// read runs fn with the state under the read lock.
func (f *fsm) read(fn func(*State)) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	fn(f.state)
}

// Snapshot implements raft.FSM. It copies the maps (not the values, which
// are immutable) so that Apply can continue while Persist writes.
func (f *fsm) Snapshot() (raft.FSMSnapshot, error) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	return &fsmSnapshot{state: f.state.clone(), applied: f.applied.Load()}, nil
}

// Restore implements raft.FSM: it builds a new State from the snapshot and
// swaps it in only when the whole snapshot decoded.
func (f *fsm) Restore(rc io.ReadCloser) error {
	defer rc.Close()
	s, applied, err := readSnapshot(rc)
	if err != nil {
		return err
	}
	f.mu.Lock()
	f.state = s
	committed := raftlog.FeatureCommittedLeases.Enabled(s.cluster)
	f.mu.Unlock()
	// The snapshot holds no renewals: every one in it was sent before now,
	// so this replica knows all renewals from now on, and none before.
	f.leaseMu.Lock()
	clear(f.renewed)
	clear(f.renewedIdx)
	f.leasesSince = time.Time{}
	if committed {
		f.leasesSince = f.now()
	}
	f.leaseMu.Unlock()
	// A snapshot is never older than the state it replaces, so the index
	// only rises; one from before the field holds 0 (Store.Open makes up
	// for it at start).
	f.setApplied(applied)
	return nil
}

const snapshotFormat = 1

type snapHeader struct {
	Format   int           `json:"format"`
	Hosts    int           `json:"hosts"`
	VMs      int           `json:"vms"`
	Networks int           `json:"networks"`
	Images   int           `json:"images"`
	Events   int           `json:"events"`
	EventSeq uint64        `json:"event_seq"`
	Cluster  model.Cluster `json:"cluster"`
	// Applied is the FSM's applied index when the snapshot was taken (0:
	// a snapshot from before it was written).
	Applied uint64 `json:"applied,omitempty"`
}

type fsmSnapshot struct {
	state   *State
	applied uint64
}

// Persist writes a header and then one JSON record per object.
func (s *fsmSnapshot) Persist(sink raft.SnapshotSink) error {
	if err := writeSnapshot(sink, s.state, s.applied); err != nil {
		sink.Cancel()
		return err
	}
	return sink.Close()
}

func (s *fsmSnapshot) Release() {}

func writeSnapshot(w io.Writer, s *State, applied uint64) error {
	bw := bufio.NewWriterSize(w, 1<<16)
	enc := json.NewEncoder(bw)
	err := enc.Encode(snapHeader{Format: snapshotFormat, Hosts: len(s.hosts), VMs: len(s.vms), Networks: len(s.networks),
		Images: len(s.images), Events: len(s.events), EventSeq: s.eventSeq, Cluster: s.cluster, Applied: applied})
	for _, h := range s.hosts {
		if err != nil {
			break
		}
		err = enc.Encode(h)
	}
	for _, v := range s.vms {
		if err != nil {
			break
		}
		err = enc.Encode(v)
	}
	for _, n := range s.networks {
		if err != nil {
			break
		}
		err = enc.Encode(n)
	}
	for _, im := range s.images {
		if err != nil {
			break
		}
		err = enc.Encode(im)
	}
	for _, e := range s.events {
		if err != nil {
			break
		}
		err = enc.Encode(e)
	}
	if err != nil {
		return fmt.Errorf("write snapshot: %w", err)
	}
	return bw.Flush()
}

func readSnapshot(r io.Reader) (*State, uint64, error) {
	dec := json.NewDecoder(bufio.NewReaderSize(r, 1<<16))
	var hdr snapHeader
	if err := dec.Decode(&hdr); err != nil {
		return nil, 0, fmt.Errorf("read snapshot header: %w", err)
	}
	if hdr.Format != snapshotFormat {
		return nil, 0, fmt.Errorf("snapshot format %d, this daemon reads %d", hdr.Format, snapshotFormat)
	}
	if hdr.Hosts < 0 || hdr.VMs < 0 || hdr.Networks < 0 || hdr.Images < 0 || hdr.Events < 0 || hdr.Events > maxEvents {
		return nil, 0, fmt.Errorf("snapshot header: bad counts (hosts %d, vms %d, networks %d, images %d, events %d of at most %d)",
			hdr.Hosts, hdr.VMs, hdr.Networks, hdr.Images, hdr.Events, maxEvents)
	}
	s := newState()
	for i := 0; i < hdr.Hosts; i++ {
		var h model.Host
		if err := dec.Decode(&h); err != nil {
			return nil, 0, fmt.Errorf("read snapshot host %d: %w", i, err)
		}
		s.hosts[h.Name] = h
	}
	for i := 0; i < hdr.VMs; i++ {
		var v model.VM
		if err := dec.Decode(&v); err != nil {
			return nil, 0, fmt.Errorf("read snapshot vm %d: %w", i, err)
		}
		s.vms[v.Name] = v
		s.vmIDs[v.ID] = v.Name
	}
	for i := 0; i < hdr.Networks; i++ {
		var n model.Network
		if err := dec.Decode(&n); err != nil {
			return nil, 0, fmt.Errorf("read snapshot network %d: %w", i, err)
		}
		s.networks[n.Name] = n
	}
	for i := 0; i < hdr.Images; i++ {
		var im model.Image
		if err := dec.Decode(&im); err != nil {
			return nil, 0, fmt.Errorf("read snapshot image %d: %w", i, err)
		}
		s.images[im.Name] = im
	}
	s.events = make([]model.Event, hdr.Events)
	for i := range s.events {
		if err := dec.Decode(&s.events[i]); err != nil {
			return nil, 0, fmt.Errorf("read snapshot event %d: %w", i, err)
		}
	}
	s.eventSeq = hdr.EventSeq
	s.cluster = hdr.Cluster
	return s, hdr.Applied, nil
}

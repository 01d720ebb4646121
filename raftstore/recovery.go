package raftstore

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"time"

	"github.com/hashicorp/raft"

	"github.com/corralhq/corral/internal/logadapt"
	"github.com/corralhq/corral/model"
	"github.com/corralhq/corral/raftlog"
)

// A cluster backup is the state machine's snapshot (the same stream Raft
// snapshots hold) behind one header line that says what it is and holds
// the SHA-256 of the rest, so a damaged or cut file is refused before
// anything is built from it.

const backupMagic = "corral-cluster-backup"

// BackupHeader is the first line of a cluster backup.
type BackupHeader struct {
	Magic    string    `json:"magic"`
	Format   int       `json:"format"`
	TakenAt  time.Time `json:"taken_at"`
	Host     string    `json:"host"`
	Applied  uint64    `json:"applied"`
	Protocol int       `json:"protocol"`
	Hosts    int       `json:"hosts"`
	VMs      int       `json:"vms"`
	Size     int64     `json:"size"`
	SHA256   string    `json:"sha256"`
}

// maxClusterBackup bounds what a backup may make us read.
const maxClusterBackup = 1 << 30

// WriteBackup writes a consistent copy of the state as this host has
// applied it. Gossip keys are left out: a recovered cluster makes new
// ones. The rest, secrets of backup targets included, is in it.
func (s *Store) WriteBackup(w io.Writer, host string, now time.Time) (BackupHeader, error) {
	var st *State
	var applied uint64
	s.fsm.read(func(cur *State) { st, applied = cur.clone(), s.fsm.applied.Load() })
	st.cluster.GossipKeys = nil
	var body bytes.Buffer
	if err := writeSnapshot(&body, st, applied); err != nil {
		return BackupHeader{}, err
	}
	sum := sha256.Sum256(body.Bytes())
	h := BackupHeader{Magic: backupMagic, Format: snapshotFormat, TakenAt: now.UTC(), Host: host, Applied: applied,
		Protocol: raftlog.ClusterProtocol(st.cluster), Hosts: len(st.hosts), VMs: len(st.vms),
		Size: int64(body.Len()), SHA256: hex.EncodeToString(sum[:])}
	line, err := json.Marshal(h)
	if err != nil {
		return BackupHeader{}, err
	}
	if _, err := w.Write(append(line, '\n')); err != nil {
		return BackupHeader{}, err
	}
	if _, err := w.Write(body.Bytes()); err != nil {
		return BackupHeader{}, err
	}
	return h, nil
}

// ReadBackup reads and checks a cluster backup.
func ReadBackup(r io.Reader) (BackupHeader, *State, error) {
	br := bufio.NewReaderSize(io.LimitReader(r, maxClusterBackup+64<<10), 64<<10)
	line, err := br.ReadSlice('\n')
	if err != nil {
		return BackupHeader{}, nil, fmt.Errorf("not a corral cluster backup (no header line): %w", model.ErrInvalid)
	}
	var h BackupHeader
	if err := json.Unmarshal(line, &h); err != nil || h.Magic != backupMagic {
		return BackupHeader{}, nil, fmt.Errorf("not a corral cluster backup: %w", model.ErrInvalid)
	}
	if h.Format != snapshotFormat || h.Size < 0 || h.Size > maxClusterBackup {
		return BackupHeader{}, nil, fmt.Errorf("cluster backup of format %d and %d bytes: this corrald reads format %d up to %d bytes: %w",
			h.Format, h.Size, snapshotFormat, maxClusterBackup, model.ErrInvalid)
	}
	body := make([]byte, h.Size)
	if _, err := io.ReadFull(br, body); err != nil {
		return BackupHeader{}, nil, fmt.Errorf("cluster backup cut short (%d bytes expected): %w", h.Size, model.ErrInvalid)
	}
	if n, _ := br.Read(make([]byte, 1)); n != 0 {
		return BackupHeader{}, nil, fmt.Errorf("cluster backup longer than its header says: %w", model.ErrInvalid)
	}
	if sum := sha256.Sum256(body); hex.EncodeToString(sum[:]) != h.SHA256 {
		return BackupHeader{}, nil, fmt.Errorf("cluster backup damaged: its SHA-256 is not the one its header records: %w", model.ErrInvalid)
	}
	st, _, err := readSnapshot(bytes.NewReader(body))
	if err != nil {
		return BackupHeader{}, nil, fmt.Errorf("cluster backup: %v: %w", err, model.ErrInvalid)
	}
	return h, st, nil
}

// Recover makes dir the Raft data of a new one-voter cluster (self at
// addr) whose state is the backup's, in recovery (model.Recovery): every
// host of the state, self included, is waited for, and HA is disarmed
// until the recovery ends. dir must hold no Raft state.
func Recover(dir string, h BackupHeader, st *State, self, addr string, now time.Time) (model.Recovery, error) {
	if _, ok := st.hosts[self]; !ok {
		return model.Recovery{}, fmt.Errorf("host %q is not in the backup (it has %d hosts): recover on one of its hosts, under its name: %w",
			self, len(st.hosts), model.ErrInvalid)
	}
	if h.Protocol > raftlog.Protocol {
		return model.Recovery{}, fmt.Errorf("the backup is of cluster protocol %d, this corrald speaks %d: %w", h.Protocol, raftlog.Protocol, raftlog.ErrProtocol)
	}
	walDir, snapDir := filepath.Join(dir, "wal"), filepath.Join(dir, "snapshots")
	for _, d := range []string{walDir, snapDir} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return model.Recovery{}, fmt.Errorf("raft data dir: %w", err)
		}
	}
	hl := logadapt.Hclog(slog.New(slog.DiscardHandler), "raft")
	w, closeLog, err := openLog(walDir, hl)
	if err != nil {
		return model.Recovery{}, err
	}
	defer closeLog()
	snaps, err := raft.NewFileSnapshotStoreWithLogger(snapDir, 3, hl.Named("snapshot"))
	if err != nil {
		return model.Recovery{}, fmt.Errorf("open snapshot store %s: %w", snapDir, err)
	}
	if has, err := raft.HasExistingState(w, w, snaps); err != nil || has {
		return model.Recovery{}, fmt.Errorf("%s holds raft state already (%v): recover only into an empty data_dir: %w", dir, err, model.ErrConflict)
	}
	rec := st.enterRecovery(self, h, now)

	// The state as a Raft snapshot at the backup's index, in a
	// configuration of this host alone: raft starts from it as it would
	// after raft.RecoverCluster.
	index := max(h.Applied, 1)
	conf := raft.Configuration{Servers: []raft.Server{{ID: raft.ServerID(self), Address: raft.ServerAddress(addr), Suffrage: raft.Voter}}}
	_, trans := raft.NewInmemTransport(raft.ServerAddress(addr))
	sink, err := snaps.Create(raft.SnapshotVersionMax, index, 1, conf, index, trans)
	if err != nil {
		return model.Recovery{}, fmt.Errorf("create snapshot: %w", err)
	}
	if err := writeSnapshot(sink, st, index); err != nil {
		sink.Cancel()
		return model.Recovery{}, err
	}
	if err := sink.Close(); err != nil {
		return model.Recovery{}, fmt.Errorf("write snapshot: %w", err)
	}
	if err := w.SetUint64([]byte("CurrentTerm"), 1); err != nil {
		return model.Recovery{}, fmt.Errorf("set term: %w", err)
	}
	return rec, nil
}

// enterRecovery puts st in recovery, as Recover leaves it.
func (st *State) enterRecovery(self string, h BackupHeader, now time.Time) model.Recovery {
	rec := model.Recovery{At: now.UTC(), By: self, BackupAt: h.TakenAt, BackupIndex: h.Applied, HAWasArmed: !st.cluster.HADisarmed}
	for name := range st.hosts {
		rec.Waiting = append(rec.Waiting, name)
	}
	slices.Sort(rec.Waiting)
	c := st.cluster
	c.Recovery = &rec
	c.HADisarmed, c.HAChangedAt = true, now.UTC()
	// The old cluster's tokens and keys name a CA that is gone.
	c.JoinTokens, c.GossipKeys = nil, nil
	c.Protocol = raftlog.Protocol
	st.cluster = c
	// Nothing moves until the hosts have told what they run.
	for name, v := range st.vms {
		if v.Migration != nil {
			v.Migration = nil
			st.vms[name] = v
		}
	}
	return rec
}

// adoptGuests applies a host's inventory in a recovered cluster.
func (s *State) adoptGuests(c raftlog.AdoptGuests) error {
	rec := s.cluster.Recovery
	if !raftlog.FeatureRecovery.Enabled(s.cluster) || rec == nil {
		return fmt.Errorf("the cluster is not recovering: %w", model.ErrConflict)
	}
	if !rec.Waits(c.Host) {
		return nil // sent again: the first one counted
	}
	if len(c.Guests) > raftlog.MaxAdoptedGuests {
		return fmt.Errorf("inventory of %d guests, at most %d: %w", len(c.Guests), raftlog.MaxAdoptedGuests, model.ErrInvalid)
	}
	r := rec.Clone()
	vms := map[string]model.VM{}
	for _, g := range c.Guests {
		v, ok := s.vms[g.Name]
		if cur, seen := vms[g.Name]; seen {
			v = cur
		}
		switch {
		case !ok || v.ID != g.VMID:
			if g.Running {
				r.Unknown = addForeign(r.Unknown, model.ForeignGuest{Host: c.Host, Name: g.Name, VMID: g.VMID, Why: "not in the recovered state"})
			}
			continue
		case g.Running && v.Adopted:
			// A second copy: keep the first, leave this one to the operator.
			r.Unknown = addForeign(r.Unknown, model.ForeignGuest{Host: c.Host, Name: g.Name, VMID: g.VMID, Why: "runs on " + v.Host + " too"})
			continue
		}
		if len(g.Layers) > 0 {
			changed, err := v.AdoptChain(g.Layers)
			if err != nil {
				return err
			}
			if changed {
				r.Rechained++
			}
		}
		if g.Running {
			v.Adopted = true
			r.Adopted++
			if v.Host != c.Host {
				r.Moved++
				v.Host = c.Host
				v.Generation++
			}
			v.Desired = model.PowerRunning
		}
		vms[g.Name] = v
	}
	for name, v := range vms {
		s.vms[name] = v
	}
	r.Waiting = slices.DeleteFunc(r.Waiting, func(h string) bool { return h == c.Host })
	s.cluster.Recovery = r
	return nil
}

func addForeign(list []model.ForeignGuest, g model.ForeignGuest) []model.ForeignGuest {
	if len(list) >= model.MaxUnknownGuests || slices.Contains(list, g) {
		return list
	}
	return append(list, g)
}

// endRecovery ends a recovery: HA is armed again if the backup had it.
func (s *State) endRecovery(c raftlog.EndRecovery) error {
	rec := s.cluster.Recovery
	if rec == nil {
		return fmt.Errorf("the cluster is not recovering: %w", model.ErrConflict)
	}
	if len(rec.Waiting) > 0 && !c.Force {
		return fmt.Errorf("hosts %v have not told what they run: start their corrald, or make sure they run no guest (power them off) and end with force: %w",
			rec.Waiting, model.ErrConflict)
	}
	s.cluster.Recovery = nil
	if rec.HAWasArmed {
		s.cluster.HADisarmed, s.cluster.HAChangedAt = false, c.Time
	}
	for name, v := range s.vms {
		if v.Adopted {
			v.Adopted = false
			s.vms[name] = v
		}
	}
	return nil
}

var errRecovering = errors.New("the cluster is recovering from a backup of its state")

package raftstore

import (
	"context"
	"time"

	"github.com/corralhq/corral/model"

	"github.com/corralhq/corral/raftlog"
	"github.com/hashicorp/raft"
)

// Memory applies commands straight to an in-memory FSM, with no Raft and
// no disk. It behaves like a single-node Store that is always the leader,
// for tests of the logic above the store.
type Memory struct {
	reader
	index uint64
}

// NewMemory returns an empty in-memory store.
func NewMemory() *Memory { return &Memory{reader: reader{newFSM(nil)}} }

// SetNow sets the clock the FSM notes lease renewals with (Renewals):
// tests that drive the leader on a fake clock give it the same one.
func (m *Memory) SetNow(now func() time.Time) {
	m.fsm.leaseMu.Lock()
	defer m.fsm.leaseMu.Unlock()
	m.fsm.now = now
}

// Apply encodes c, applies it and returns the FSM's result, exactly as a
// committed entry would be applied.
func (m *Memory) Apply(ctx context.Context, c raftlog.Command) (any, error) {
	data, err := raftlog.Encode(c)
	if err != nil {
		return nil, err
	}
	m.fsm.mu.Lock()
	m.index++
	idx := m.index
	m.fsm.mu.Unlock()
	res := m.fsm.Apply(&raft.Log{Index: idx, Type: raft.LogCommand, Data: data})
	if err, ok := res.(error); ok {
		return nil, err
	}
	return res, nil
}

// Recover puts the state in recovery as corrald recover leaves it, with
// self the recovering host (tests of the recovery above the store).
func (m *Memory) Recover(self string, now time.Time) model.Recovery {
	m.fsm.mu.Lock()
	defer m.fsm.mu.Unlock()
	return m.fsm.state.enterRecovery(self, BackupHeader{TakenAt: now, Applied: m.index}, now)
}

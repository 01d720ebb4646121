package raftstore

import (
	"errors"
	"testing"
	"time"

	"github.com/corralhq/corral/model"
	"github.com/corralhq/corral/raftlog"
)

// Backups in the state machine: a target; a job takes its anchor
// snapshot; a finished job enters the catalog and drops the VM's earlier
// anchor to the target; an incremental needs its parent's anchor; a
// backup another builds on stays; removing one drops its anchor; failed
// attempts are retried, then given up with the anchor gone.
func TestBackupEntries(t *testing.T) {
	f := newFSM(nil)
	at := time.Unix(1000, 0).UTC()
	vm := testVM("db")
	vm.Desired = model.PowerStopped
	stats := model.BackupStats{Read: 10, Stored: 5, DiskSizes: []int64{64 << 20}}
	job := func(id, kind, parent string) raftlog.StartBackup {
		return raftlog.StartBackup{Name: "db", Time: at, Job: model.BackupJob{ID: id, Target: "t1", Kind: kind, Parent: parent, Host: "h1"}}
	}
	done := func(id string) raftlog.FinishBackup {
		return raftlog.FinishBackup{Name: "db", ID: id, Host: "h1", Time: at, Stats: stats}
	}
	res := applyAll(t, f,
		raftlog.PutBackupTarget{Target: model.BackupTarget{Name: "t1", Dir: "/srv/backups"}}, // 0: below protocol 8
		raftlog.SetProtocol{Protocol: raftlog.Protocol},
		raftlog.PutBackupTarget{Target: model.BackupTarget{Name: "t1", Dir: "/srv/backups"}},
		raftlog.PutBackupTarget{Target: model.BackupTarget{Name: "t2", Dir: "relative"}}, // 3: bad dir
		raftlog.RegisterHost{Host: model.Host{Name: "h1", Addr: "10.0.0.1", RaftAddr: "10.0.0.1:1", RPCAddr: "10.0.0.1:2"}},
		raftlog.CreateVM{VM: vm},
		job("b1", model.BackupIncremental, "b0"), // 6: no such parent
		job("b1", model.BackupFull, ""),
		job("b2", model.BackupFull, ""), // 8: one at a time
		done("b1"),
		job("b2", model.BackupIncremental, "b1"),
		done("b2"),
		raftlog.DeleteBackup{ID: "b1"},         // 12: b2 builds on it
		raftlog.DeleteBackupTarget{Name: "t1"}, // 13: holds backups
	)
	for i, want := range []error{model.ErrConflict, nil, nil, model.ErrInvalid, nil, nil, model.ErrConflict, nil, model.ErrConflict, nil, nil, nil, model.ErrConflict, model.ErrConflict} {
		err, _ := res[i].(error)
		if !errors.Is(err, want) || want == nil && err != nil {
			t.Fatalf("command %d: %v, want %v", i, err, want)
		}
	}
	v := f.state.vms["db"]
	names := func() (out []string) {
		for _, s := range f.state.vms["db"].Chain.Snapshots {
			out = append(out, s.Name)
		}
		return out
	}
	if got := names(); len(got) != 1 || got[0] != "backup-b2" || v.Backup != nil {
		t.Fatalf("snapshots %v, job %+v: want only the newest anchor", got, v.Backup)
	}
	if c := f.state.cluster.Backups; len(c) != 2 || c[1].Parent != "b1" || c[1].Size != 64<<20 || c[1].Spec.MemoryMiB != 256 {
		t.Fatalf("catalog %+v", c)
	}
	// Failed attempts: retried, then given up with their anchor.
	res = applyAll(t, f,
		job("b3", model.BackupIncremental, "b2"),
		raftlog.FinishBackup{Name: "db", ID: "b3", Host: "h2", Time: at, Error: "x"}, // 1: not its host
		raftlog.FinishBackup{Name: "db", ID: "b3", Host: "h1", Time: at, Error: "disk full", RetryAt: at.Add(time.Minute)},
		raftlog.AssignBackup{Name: "db", ID: "b3", Host: "h1"},
		raftlog.FinishBackup{Name: "db", ID: "b3", Host: "h1", Time: at, Error: "disk full"},
		raftlog.AssignBackup{Name: "db", ID: "b3", Host: "h1"},
		raftlog.FinishBackup{Name: "db", ID: "b3", Host: "h1", Time: at, Error: "disk full"},
	)
	for i, want := range []error{nil, model.ErrConflict, nil, nil, nil, nil, nil} {
		err, _ := res[i].(error)
		if !errors.Is(err, want) || want == nil && err != nil {
			t.Fatalf("failures, command %d: %v, want %v", i, err, want)
		}
	}
	if got := names(); len(got) != 1 || f.state.vms["db"].Backup != nil || len(f.state.cluster.Backups) != 2 {
		t.Fatalf("after 3 failures: snapshots %v, job %+v, catalog %d", got, f.state.vms["db"].Backup, len(f.state.cluster.Backups))
	}
	// Removing the newest backup drops its anchor; then the full can go.
	res = applyAll(t, f, raftlog.DeleteBackup{ID: "b2"}, raftlog.DeleteBackup{ID: "b1"})
	for i, r := range res {
		if err, _ := r.(error); err != nil {
			t.Fatalf("delete %d: %v", i, err)
		}
	}
	if got := names(); len(got) != 0 || len(f.state.cluster.Backups) != 0 {
		t.Fatalf("after removing both: snapshots %v, catalog %+v", got, f.state.cluster.Backups)
	}
}

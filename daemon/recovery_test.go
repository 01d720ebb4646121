package daemon

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/corralhq/corral/model"
	"github.com/corralhq/corral/raftstore"
)

// TestClusterBackupAndRecoverCommand: a follower answers cluster backup
// with the whole state, which daemon.Recover (corrald recover) turns into
// a data_dir, refusing one that holds state already.
func TestClusterBackupAndRecoverCommand(t *testing.T) {
	tc := newTestCluster(t, 3, []int{0, 1, 2}, nil)
	tc.startAll()
	tc.waitConverged(3, 0)
	f := tc.followers()[0]
	b, err := f.client.ClusterBackup(ctxT(t))
	if err != nil {
		t.Fatal(err)
	}
	h, st, err := raftstore.ReadBackup(bytes.NewReader(b.Data))
	if err != nil || h.Hosts != 3 || b.Hosts != 3 || h.SHA256 != b.SHA256 || b.Host != f.cfg.Name || st == nil {
		t.Fatalf("backup %+v: %+v %v", b, h, err)
	}
	if r, err := f.client.Recovery(ctxT(t)); err != nil || r != nil {
		t.Fatalf("recovery of a cluster that is not recovering: %+v %v", r, err)
	}
	file := filepath.Join(t.TempDir(), "state.backup")
	if err := os.WriteFile(file, b.Data, 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := f.cfg
	cfg.DataDir = t.TempDir()
	if _, _, _, err := Recover(cfg, file); err != nil {
		t.Fatalf("recover: %v", err)
	}
	if _, err := os.Stat(filepath.Join(cfg.IdentityDir(), "ca.key")); err != nil {
		t.Fatalf("no new identity: %v", err)
	}
	if _, _, _, err := Recover(cfg, file); !errors.Is(err, model.ErrConflict) {
		t.Fatalf("recover into a data_dir with state: %v", err)
	}
	damaged := bytes.Clone(b.Data)
	damaged[len(damaged)/2] ^= 0xff
	os.WriteFile(file, damaged, 0o600)
	cfg.DataDir = t.TempDir()
	if _, _, _, err := Recover(cfg, file); !errors.Is(err, model.ErrInvalid) {
		t.Fatalf("recover from a damaged file: %v", err)
	}
}

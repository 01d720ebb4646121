package daemon

import (
	"bytes"
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/corralhq/corral/api"
	"github.com/corralhq/corral/daemon/controller"
	"github.com/corralhq/corral/model"
)

// holdEngine is the real backup engine whose backups never end.
type holdEngine struct{ backupEngine }

func (holdEngine) Backup(ctx context.Context, _ model.BackupTarget, _ controller.BackupWork, _ func(done, total int64)) (model.BackupStats, error) {
	<-ctx.Done()
	return model.BackupStats{}, ctx.Err()
}

// TestBackupAPIAcrossInProcessCluster drives backup targets and a VM's
// backup through a follower of a 3-host cluster: the leader records them,
// and what a write answered the same host shows at once. The job is only
// started, never finished (holdEngine).
func TestBackupAPIAcrossInProcessCluster(t *testing.T) {
	// The fake driver's volumes are no files to copy: jobs are held under
	// way on their host until the test ends (the real engine failed the
	// first attempt at once, which raced the answer's check of its host).
	tc := newTestCluster(t, 3, []int{0, 1, 2}, func(_ int, c *Config) { c.Tuning.Backups = holdEngine{} })
	tc.startAll()
	tc.waitConverged(3, 0)
	f := tc.followers()[0]
	c := f.client
	ctx := ctxT(t)
	dir := t.TempDir()

	// Targets: added and removed through the follower, listed there at once.
	tg, err := c.CreateBackupTarget(ctx, api.BackupTargetCreateRequest{Name: "t1", Dir: dir})
	if err != nil || tg.Name != "t1" || tg.Dir != dir || tg.CreatedAt.IsZero() {
		t.Fatalf("add t1: %+v %v", tg, err)
	}
	if list, err := c.BackupTargets(ctx); err != nil || len(list) != 1 || list[0] != tg {
		t.Fatalf("targets after add: %+v %v", list, err)
	}
	if _, err := c.CreateBackupTarget(ctx, api.BackupTargetCreateRequest{Name: "t1", Dir: dir}); !errors.Is(err, api.ErrConflict) {
		t.Fatalf("second t1: %v", err)
	}
	if _, err := c.CreateBackupTarget(ctx, api.BackupTargetCreateRequest{Name: "t2", Dir: dir + "/other"}); err != nil {
		t.Fatal(err)
	}
	gone, err := c.DeleteBackupTarget(ctx, "t2", false)
	if err != nil || gone.Name != "t2" || gone.Dir != dir+"/other" {
		t.Fatalf("rm t2: %+v %v", gone, err)
	}
	if list, err := c.BackupTargets(ctx); err != nil || len(list) != 1 || list[0].Name != "t1" {
		t.Fatalf("targets after rm: %+v %v", list, err)
	}
	if _, err := c.DeleteBackupTarget(ctx, "t2", false); !errors.Is(err, api.ErrNotFound) {
		t.Fatalf("rm of no target: %v", err)
	}

	// A backup: the job, as answered, is on the VM at once.
	if _, err := c.ImportImage(ctx, "base", bytes.NewReader(qcow2(1<<20)), 1024); err != nil {
		t.Fatal(err)
	}
	req := vmReq("bk")
	req.Stopped = true
	if _, err := c.CreateVM(ctx, req); err != nil {
		t.Fatal(err)
	}
	waitVM(t, c, "bk", "stopped")
	if _, err := c.BackupVM(ctx, "bk", api.VMBackupRequest{Target: "nope"}); !errors.Is(err, api.ErrNotFound) {
		t.Fatalf("backup to no target: %v", err)
	}
	j, err := c.BackupVM(ctx, "bk", api.VMBackupRequest{Target: "t1", BytesPerSec: 50 << 20})
	if err != nil || model.ValidateBackupID(j.ID) != nil || j.Target != "t1" || j.Kind != model.BackupFull || j.Parent != "" ||
		j.BytesPerSec != 50<<20 || j.StartedAt.IsZero() || j.Host == "" {
		t.Fatalf("backup: %+v %v", j, err)
	}
	v, err := c.VM(ctx, "bk")
	if err != nil || v.Backup == nil || v.Backup.ID != j.ID || v.Backup.Target != "t1" || v.Backup.Kind != model.BackupFull {
		t.Fatalf("vm after backup: %+v %v", v.Backup, err)
	}
	anchor := false
	for _, s := range v.Snapshots {
		anchor = anchor || s.Name == model.BackupSnapshotPrefix+j.ID
	}
	if !anchor {
		t.Fatalf("no anchor snapshot of %s: %+v", j.ID, v.Snapshots)
	}
	if _, err := c.BackupVM(ctx, "bk", api.VMBackupRequest{Target: "t1"}); !errors.Is(err, api.ErrConflict) || !strings.Contains(err.Error(), "under way") {
		t.Fatalf("second backup while one is under way: %v", err)
	}
	if _, err := c.DeleteBackupTarget(ctx, "t1", true); !errors.Is(err, api.ErrConflict) || !strings.Contains(err.Error(), "under way") {
		t.Fatalf("rm of the job's target: %v", err)
	}

	// The catalog is empty: nothing is complete.
	if list, err := c.Backups(ctx, "", ""); err != nil || len(list) != 0 {
		t.Fatalf("catalog: %+v %v", list, err)
	}
	if _, err := c.Backup(ctx, j.ID); !errors.Is(err, api.ErrNotFound) {
		t.Fatalf("show of the unfinished backup: %v", err)
	}
	if _, err := c.DeleteBackup(ctx, j.ID); !errors.Is(err, api.ErrNotFound) {
		t.Fatalf("rm of the unfinished backup: %v", err)
	}
	if _, err := c.RestoreBackup(ctx, j.ID, api.RestoreRequest{As: "bk2"}); !errors.Is(err, api.ErrNotFound) {
		t.Fatalf("restore of the unfinished backup: %v", err)
	}
}

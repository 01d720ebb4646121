package daemon

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"time"

	"github.com/corralhq/corral/daemon/backup"
	"github.com/corralhq/corral/daemon/backup/s3target"
	"github.com/corralhq/corral/daemon/controller"
	"github.com/corralhq/corral/model"
)

// backupEngine is the controller's BackupEngine over daemon/backup, with
// directory targets (a local disk or an NFS export, at the same path on
// every host).
type backupEngine struct{}

var _ controller.BackupEngine = backupEngine{}

func (backupEngine) target(t model.BackupTarget) (backup.Target, error) {
	if s := t.S3; s != nil {
		return s3target.New(s3target.Config{Endpoint: s.Endpoint, Bucket: s.Bucket, Prefix: s.Prefix, Region: s.Region,
			AccessKey: s.AccessKey, SecretKey: s.SecretKey, Insecure: s.Insecure})
	}
	if err := os.MkdirAll(t.Dir, 0o700); err != nil {
		return nil, fmt.Errorf("backup target %s: %w", t.Name, err)
	}
	return backup.DirTarget{Root: t.Dir}, nil
}

// Check says whether this host can use the target: a directory it can
// create and write, a bucket that exists and takes objects.
func (e backupEngine) Check(ctx context.Context, t model.BackupTarget) error {
	tg, err := e.target(t)
	if err != nil {
		return err
	}
	if s3, ok := tg.(*s3target.Target); ok {
		if err := s3.Check(ctx); err != nil {
			return err
		}
	}
	const probe = "probe/corral"
	if err := tg.Put(ctx, probe, strings.NewReader("corral"), 6); err != nil {
		return err
	}
	return tg.Delete(ctx, probe)
}

// Backup copies each disk's chain, then writes the manifest.
func (e backupEngine) Backup(ctx context.Context, t model.BackupTarget, w controller.BackupWork, progress func(done, total int64)) (model.BackupStats, error) {
	var st model.BackupStats
	tg, err := e.target(t)
	if err != nil {
		return st, err
	}
	var chains []*backup.Chain
	defer func() {
		for _, c := range chains {
			c.Close()
		}
	}()
	var total int64
	for i, top := range w.Tops {
		c, err := backup.OpenChain(top, w.StopAt[i])
		if err != nil {
			return st, fmt.Errorf("disk %d: %w", i, err)
		}
		chains = append(chains, c)
		total += c.Size()
	}
	progress(0, total)
	var disks []backup.DiskManifest
	var base int64
	for i, c := range chains {
		dm, s, err := backup.Write(ctx, tg, c, backup.Options{BytesPerSec: w.BytesPerSec, Incremental: w.Kind == model.BackupIncremental,
			Progress: func(done, _ int64) { progress(base+done, total) }})
		if err != nil {
			return st, fmt.Errorf("disk %d: %w", i, err)
		}
		disks = append(disks, dm)
		st.Read += s.Read
		st.Stored += s.Stored
		st.DiskSizes = append(st.DiskSizes, c.Size())
		base += c.Size()
	}
	spec, err := json.Marshal(w.Spec)
	if err != nil {
		return st, err
	}
	m := backup.Manifest{Version: 1, ID: w.ID, VM: w.VM, VMID: w.VMID, Parent: w.Parent, Kind: w.Kind,
		Created: time.Now().UTC(), Spec: spec, Disks: disks}
	if err := backup.PutManifest(ctx, tg, m); err != nil {
		return st, err
	}
	progress(total, total)
	return st, nil
}

// Restore writes disk of the last backup of chain into a new qcow2 image
// at dst: every chunk is checked before it is written to a raw image next
// to dst, which qemu-img converts; dst appears only when complete, and a
// dst that exists is kept (restored already).
func (e backupEngine) Restore(ctx context.Context, t model.BackupTarget, chain []string, disk int, dst string, progress func(done, total int64)) error {
	if _, err := os.Stat(dst); err == nil {
		return nil
	}
	tg, err := e.target(t)
	if err != nil {
		return err
	}
	var ms []backup.Manifest
	for _, id := range chain {
		m, err := backup.GetManifest(ctx, tg, id)
		if err != nil {
			return err
		}
		ms = append(ms, m)
	}
	raw, tmp := dst+".restore-raw", dst+".restore-tmp"
	os.Remove(raw)
	os.Remove(tmp)
	defer os.Remove(raw)
	if _, err := backup.Restore(ctx, tg, ms, disk, raw, backup.RestoreOptions{Progress: progress}); err != nil {
		return err
	}
	out, err := exec.CommandContext(ctx, "qemu-img", "convert", "-q", "-f", "raw", "-O", "qcow2", raw, tmp).CombinedOutput()
	if err != nil {
		os.Remove(tmp)
		return fmt.Errorf("qemu-img convert: %v: %s", err, bytes.TrimSpace(out))
	}
	return os.Rename(tmp, dst)
}

// Collect deletes the backups of the target that keep does not list, and
// the chunks only they used.
func (e backupEngine) Collect(ctx context.Context, t model.BackupTarget, keep []string) error {
	tg, err := e.target(t)
	if err != nil {
		return err
	}
	ids, err := backup.ListBackups(ctx, tg)
	if err != nil {
		return err
	}
	wanted := map[string]bool{}
	var kept []backup.Manifest
	for _, id := range keep {
		wanted[id] = true
		m, err := backup.GetManifest(ctx, tg, id)
		if err != nil {
			return fmt.Errorf("backup %s, which stays: %w", id, err)
		}
		kept = append(kept, m)
	}
	var errs []error
	for _, id := range ids {
		if !wanted[id] {
			errs = append(errs, backup.DeleteBackup(ctx, tg, id, kept))
		}
	}
	return errors.Join(errs...)
}

package backup

import (
	"context"
	"os"
	"strings"
	"syscall"
	"testing"
)

// TestBackupToAFullTarget: a directory target on a file system that fills
// up (a 1 MiB tmpfs) fails the backup with the system's reason, and leaves
// no manifest: nothing is listed, nothing can be restored from it.
func TestBackupToAFullTarget(t *testing.T) {
	if testing.Short() {
		t.Skip("mounts a tmpfs (root); skipped with -short")
	}
	if os.Geteuid() != 0 {
		t.Fatal("this test mounts a tmpfs: run it as root (make test), or with -short")
	}
	im := buildImages(t)
	root := t.TempDir()
	if err := syscall.Mount("tmpfs", root, "tmpfs", 0, "size=1m"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { syscall.Unmount(root, syscall.MNT_DETACH) })
	tg := DirTarget{Root: root}
	ctx := context.Background()
	_, _, err := Write(ctx, tg, openChain(t, im.ov1, ""), Options{})
	if err == nil || !strings.Contains(err.Error(), "no space left on the backup target") {
		t.Fatalf("backup to a full target: %v", err)
	}
	t.Logf("backup to a full target: %v", err)
	if ids, err := ListBackups(ctx, tg); err != nil || len(ids) != 0 {
		t.Fatalf("backups listed after a failed one: %v %v", ids, err)
	}
}

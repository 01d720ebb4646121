package s3target

import (
	"bytes"
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"

	"github.com/corralhq/corral/daemon/backup"
	"github.com/corralhq/corral/internal/testutil"
)

// A real S3 server (versitygw over a directory) on loopback: objects go
// in and out under the prefix; a backup (full, then incremental) of a
// real qcow2 chain restores byte for byte; a corrupted chunk is refused;
// a missing bucket is refused when the target is checked.
func TestS3TargetAgainstVersityGW(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: builds and runs an S3 server (versitygw)")
	}
	for _, tool := range []string{"qemu-img", "qemu-io"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("%s is not installed (apt-get install qemu-utils): %v", tool, err)
		}
	}
	srv := testutil.StartS3(t, "127.0.0.1")
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	mc, err := minio.New(srv.Endpoint, &minio.Options{Creds: credentials.NewStaticV4(srv.AccessKey, srv.SecretKey, "")})
	if err != nil {
		t.Fatal(err)
	}
	if err := mc.MakeBucket(ctx, "backups", minio.MakeBucketOptions{}); err != nil {
		t.Fatal(err)
	}
	cfg := Config{Endpoint: srv.Endpoint, Bucket: "backups", Prefix: "rack1/", AccessKey: srv.AccessKey, SecretKey: srv.SecretKey, Insecure: true}
	tg, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := tg.Check(ctx); err != nil {
		t.Fatal(err)
	}
	missing := cfg
	missing.Bucket = "nope"
	if m, _ := New(missing); m.Check(ctx) == nil {
		t.Fatal("a missing bucket passed the check")
	}
	wrong := cfg
	wrong.SecretKey = "wrong"
	if w, _ := New(wrong); w.Put(ctx, "x", strings.NewReader("x"), 1) == nil {
		t.Fatal("a wrong secret key could put")
	}

	// Objects.
	if err := tg.Put(ctx, "a/b", strings.NewReader("hello"), 5); err != nil {
		t.Fatal(err)
	}
	if n, err := tg.Stat(ctx, "a/b"); n != 5 || err != nil {
		t.Fatalf("stat: %d %v", n, err)
	}
	if _, err := tg.Stat(ctx, "a/c"); !errors.Is(err, backup.ErrNotFound) {
		t.Fatalf("stat of a missing object: %v", err)
	}
	if _, err := tg.Get(ctx, "a/c"); !errors.Is(err, backup.ErrNotFound) {
		t.Fatalf("get of a missing object: %v", err)
	}
	if keys, err := tg.List(ctx, "a/"); err != nil || len(keys) != 1 || keys[0] != "a/b" {
		t.Fatalf("list: %v %v", keys, err)
	}
	if _, err := os.Stat(filepath.Join(srv.Dir, "backups", "rack1", "a", "b")); err != nil {
		t.Fatalf("the object is not under the prefix in the bucket: %v", err)
	}
	if err := tg.Delete(ctx, "a/b"); err != nil {
		t.Fatal(err)
	}

	// A backup and its restore.
	dir := t.TempDir()
	base := filepath.Join(dir, "base.qcow2")
	top := filepath.Join(dir, "top.qcow2")
	run := func(name string, args ...string) {
		t.Helper()
		if out, err := exec.Command(name, args...).CombinedOutput(); err != nil {
			t.Fatalf("%s %v: %v %s", name, args, err, out)
		}
	}
	run("qemu-img", "create", "-q", "-f", "qcow2", base, "64M")
	run("qemu-io", "-f", "qcow2", "-c", "write -P 0x11 0 8M", "-c", "write -P 0x22 32M 1M", base)
	run("qemu-img", "create", "-q", "-f", "qcow2", "-b", base, "-F", "qcow2", top)
	run("qemu-io", "-f", "qcow2", "-c", "write -P 0x33 4M 128k", top)
	backupOf := func(id, parent, kind, topFile, stopAt string) backup.Manifest {
		t.Helper()
		c, err := backup.OpenChain(topFile, stopAt)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		dm, _, err := backup.Write(ctx, tg, c, backup.Options{Incremental: stopAt != ""})
		if err != nil {
			t.Fatal(err)
		}
		m := backup.Manifest{ID: id, Parent: parent, Kind: kind, Created: time.Now(), Disks: []backup.DiskManifest{dm}}
		if err := backup.PutManifest(ctx, tg, m); err != nil {
			t.Fatal(err)
		}
		got, err := backup.GetManifest(ctx, tg, id)
		if err != nil {
			t.Fatal(err)
		}
		return got
	}
	full := backupOf("b1", "", backup.KindFull, base, "")
	incr := backupOf("b2", "b1", backup.KindIncremental, top, base)
	dst := filepath.Join(dir, "restored.raw")
	if _, err := backup.Restore(ctx, tg, []backup.Manifest{full, incr}, 0, dst, backup.RestoreOptions{}); err != nil {
		t.Fatal(err)
	}
	want := filepath.Join(dir, "want.raw")
	run("qemu-img", "convert", "-O", "raw", top, want)
	a, _ := os.ReadFile(dst)
	b, _ := os.ReadFile(want)
	if !bytes.Equal(a, b) {
		t.Fatal("the restore from S3 differs from the disk")
	}
	// A corrupted chunk in the bucket: refused, and nothing written.
	keys, err := tg.List(ctx, "chunks/")
	if err != nil || len(keys) == 0 {
		t.Fatalf("chunks: %v %v", keys, err)
	}
	obj := filepath.Join(srv.Dir, "backups", "rack1", filepath.FromSlash(keys[0]))
	data, err := os.ReadFile(obj)
	if err != nil {
		t.Fatal(err)
	}
	data[len(data)/2] ^= 1
	if err := os.WriteFile(obj, data, 0o644); err != nil {
		t.Fatal(err)
	}
	bad := filepath.Join(dir, "bad.raw")
	if _, err := backup.Restore(ctx, tg, []backup.Manifest{full, incr}, 0, bad, backup.RestoreOptions{}); err == nil {
		t.Fatal("a corrupted chunk was restored")
	}
	if _, err := os.Stat(bad); !os.IsNotExist(err) {
		t.Fatalf("a refused restore left %s: %v", bad, err)
	}
	// The server gone: a backup fails, saying it cannot reach it.
	srv.Stop()
	c, err := backup.OpenChain(top, "")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, _, err := backup.Write(ctx, tg, c, backup.Options{}); err == nil || !strings.Contains(err.Error(), "connection refused") {
		t.Fatalf("backup to a stopped server: %v", err)
	} else {
		t.Logf("backup to a stopped server: %v", err)
	}
}

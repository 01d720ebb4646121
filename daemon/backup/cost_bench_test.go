package backup

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"
)

// BenchmarkBackupCost measures what issue 14 asks of backups, on a 4 GiB
// qcow2 disk with 1 GiB of random data written (1 MiB every 4 MiB):
//
//   - a full backup to a directory target, against qemu-img convert of the
//     same disk (convert_s / full_s: the goal is >= 0.8);
//   - an incremental after 1 % of the 64 KiB clusters changed, against the
//     full (incr_s / full_s: the goal is < 0.1);
//   - the restore of the full (MB/s of virtual size and of data);
//   - bytes stored for a full and 7 daily incrementals (1 % a day) against
//     7 fulls without deduplication, and 7 fulls with it.
//
// It runs once whatever -benchtime says: make bench-backup. Scratch space:
// about 8 GiB in $TMPDIR.
func BenchmarkBackupCost(b *testing.B) {
	needQemu(b)
	const (
		size    = 4 << 30
		piece   = 1 << 20
		stride  = 4 << 20
		cluster = 64 << 10
		days    = 7
	)
	dir := b.TempDir()
	rng := rand.New(rand.NewPCG(1, 2))
	fill := func(p []byte) {
		for i := 0; i+8 <= len(p); i += 8 {
			v := rng.Uint64()
			for k := range 8 {
				p[i+k] = byte(v >> (8 * k))
			}
		}
	}
	raw := filepath.Join(dir, "disk.raw")
	f, err := os.Create(raw)
	if err != nil {
		b.Fatal(err)
	}
	if err := f.Truncate(size); err != nil {
		b.Fatal(err)
	}
	buf := make([]byte, piece)
	for off := int64(0); off < size; off += stride {
		fill(buf)
		if _, err := f.WriteAt(buf, off); err != nil {
			b.Fatal(err)
		}
	}
	base := filepath.Join(dir, "day0.qcow2")
	run(b, "qemu-img", "convert", "-O", "qcow2", raw, base)
	// Each day's overlay holds the 1 % of clusters the day changed, each
	// new random data (written by qemu-io from a file of its own).
	layers := []string{base}
	clusterBuf := make([]byte, cluster)
	for d := 1; d <= days; d++ {
		ov := filepath.Join(dir, fmt.Sprintf("day%d.qcow2", d))
		mkOverlay(b, ov, layers[d-1], "qcow2")
		var cmds []string
		for i := range size / cluster / 100 {
			fill(clusterBuf)
			src := filepath.Join(dir, fmt.Sprintf("w%d", i))
			if err := os.WriteFile(src, clusterBuf, 0o600); err != nil {
				b.Fatal(err)
			}
			cmds = append(cmds, fmt.Sprintf("write -q -s %s %d %d", src, rng.Int64N(size/cluster)*cluster, cluster))
		}
		qemuIO(b, ov, "qcow2", cmds...)
		layers = append(layers, ov)
	}
	f.Close()
	os.Remove(raw)

	ctx := context.Background()
	// Each measure starts with the page cache dropped (when this process
	// may) and ends once what it wrote is on disk: a backup reads a disk
	// nobody read lately and is done when it is durable.
	cold := dropCaches()
	syncDir := func(d string) {
		if err := (DirTarget{Root: d}).Sync(ctx); err != nil {
			b.Fatal(err)
		}
	}
	timed := func(fn func()) float64 {
		syncDir(dir)
		if cold {
			dropCaches()
		}
		start := time.Now()
		fn()
		syncDir(dir)
		return time.Since(start).Seconds()
	}

	backupTo := func(t Target, top, stopAt string) (DiskManifest, Stats) {
		c, err := OpenChain(top, stopAt)
		if err != nil {
			b.Fatal(err)
		}
		defer c.Close()
		m, st, err := Write(ctx, t, c, Options{Incremental: stopAt != ""})
		if err != nil {
			b.Fatal(err)
		}
		return m, st
	}
	// Median of 3, alternating, each full into a target of its own.
	var converts, fulls []float64
	for i := range 3 {
		converts = append(converts, timed(func() { run(b, "qemu-img", "convert", "-O", "qcow2", base, filepath.Join(dir, "copy.qcow2")) }))
		os.Remove(filepath.Join(dir, "copy.qcow2"))
		scratch := DirTarget{Root: filepath.Join(dir, fmt.Sprintf("scratch%d", i))}
		fulls = append(fulls, timed(func() { backupTo(scratch, base, "") }))
		os.RemoveAll(scratch.Root)
	}
	slices.Sort(converts)
	slices.Sort(fulls)
	convert := converts[1]
	chained := DirTarget{Root: filepath.Join(dir, "chained")}
	var fullM DiskManifest
	var fullSt Stats
	timed(func() { fullM, fullSt = backupTo(chained, base, "") })
	full := fulls[1]
	var incrSt Stats
	incr := timed(func() { _, incrSt = backupTo(chained, layers[1], base) })
	for d := 2; d <= days; d++ {
		backupTo(chained, layers[d], layers[d-1])
	}
	stored := dirBytes(b, chained.Root)

	// Restore of the full.
	m := Manifest{Version: ManifestVersion, ID: "full", Kind: KindFull, Created: time.Now(), Disks: []DiskManifest{fullM}}
	if err := PutManifest(ctx, chained, m); err != nil {
		b.Fatal(err)
	}
	got, err := GetManifest(ctx, chained, "full")
	if err != nil {
		b.Fatal(err)
	}
	dst := filepath.Join(dir, "restored.raw")
	restore := timed(func() {
		if _, err := Restore(ctx, chained, []Manifest{got}, 0, dst, RestoreOptions{}); err != nil {
			b.Fatal(err)
		}
	})
	os.Remove(dst)

	// Seven fulls, one a day: without deduplication each stores all its
	// data; in one target, what the days share is stored once.
	dedup := DirTarget{Root: filepath.Join(dir, "fulls")}
	var fullsLogical int64
	for d := 1; d <= days; d++ {
		_, st := backupTo(dedup, layers[d], "")
		fullsLogical += st.Read
	}
	fullsDedup := dirBytes(b, dedup.Root)

	mib := func(n int64) float64 { return float64(n) / (1 << 20) }
	if !cold {
		b.Logf("the page cache could not be dropped (not root?): reads come from memory")
	}
	b.ReportMetric(convert/full, "full/convert")
	b.ReportMetric(incr/full, "incr/full")
	b.ReportMetric(float64(size)/(1<<20)/restore, "restore_MB/s")
	b.Logf("runs: qemu-img convert %.2f %.2f %.2f s; full backup %.2f %.2f %.2f s", converts[0], converts[1], converts[2], fulls[0], fulls[1], fulls[2])
	b.Logf("qemu-img convert %.2fs; full backup %.2fs (read %.0f MiB, stored %.0f MiB): ratio %.2f (goal >= 0.8)",
		convert, full, mib(fullSt.Read), mib(fullSt.Stored), convert/full)
	b.Logf("incremental after 1%% changed: %.3fs, read %.1f MiB, stored %.1f MiB: %.3f of the full's time (goal < 0.1)",
		incr, mib(incrSt.Read), mib(incrSt.Stored), incr/full)
	b.Logf("restore of the full: %.2fs, %.0f MB/s of the 4 GiB disk, %.0f MB/s of its data",
		restore, float64(size)/1e6/restore, float64(fullSt.Read)/1e6/restore)
	b.Logf("stored: full + %d daily incrementals %.0f MiB; %d fulls without deduplication %.0f MiB, with it %.0f MiB",
		days, mib(stored), days, mib(fullsLogical), mib(fullsDedup))
	for b.Loop() {
	}
}

// dropCaches asks the kernel to drop the page cache; false if it may not.
func dropCaches() bool {
	return os.WriteFile("/proc/sys/vm/drop_caches", []byte("3\n"), 0o200) == nil
}

// dirBytes sums the sizes of the files under root.
func dirBytes(b *testing.B, root string) int64 {
	var n int64
	err := filepath.Walk(root, func(_ string, fi os.FileInfo, err error) error {
		if err == nil && !fi.IsDir() {
			n += fi.Size()
		}
		return err
	})
	if err != nil {
		b.Fatal(err)
	}
	return n
}

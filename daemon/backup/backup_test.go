package backup

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// backupOf writes chain into t and stores its manifest as backup id.
func backupOf(t *testing.T, tg Target, top, stopAt, id, parent string, opt Options) (Manifest, Stats) {
	t.Helper()
	c := openChain(t, top, stopAt)
	opt.Incremental = parent != ""
	dm, st, err := Write(context.Background(), tg, c, opt)
	if err != nil {
		t.Fatal(err)
	}
	m := Manifest{ID: id, VM: "web", VMID: "vm-1", Parent: parent, Kind: KindFull, Created: time.Now(),
		Spec: json.RawMessage(`{"cpus": 2, "note": "<&>"}`), Disks: []DiskManifest{dm}}
	if parent != "" {
		m.Kind = KindIncremental
	}
	if err := PutManifest(context.Background(), tg, m); err != nil {
		t.Fatal(err)
	}
	got, err := GetManifest(context.Background(), tg, id)
	if err != nil {
		t.Fatal(err)
	}
	return got, st
}

func restoreOf(t *testing.T, tg Target, chain []Manifest) []byte {
	t.Helper()
	dst := filepath.Join(t.TempDir(), "restored.raw")
	if _, err := Restore(context.Background(), tg, chain, 0, dst, RestoreOptions{}); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(dst)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestBackupRestore(t *testing.T) {
	im := buildImages(t)
	tg := DirTarget{Root: t.TempDir()}
	ctx := context.Background()

	var calls [][2]int64
	full, st := backupOf(t, tg, im.ov1, "", "b1", "", Options{Progress: func(d, n int64) { calls = append(calls, [2]int64{d, n}) }})
	if len(calls) == 0 || calls[len(calls)-1] != [2]int64{diskSize, diskSize} {
		t.Errorf("progress calls %v", calls)
	}
	d := full.Disks[0]
	if d.VirtualSize != diskSize || d.ChunkSize != DefaultChunkSize || st.Read == 0 || st.Stored == 0 || st.ZeroBytes == 0 {
		t.Fatalf("full: size %d chunk %d, stats %+v", d.VirtualSize, d.ChunkSize, st)
	}
	// Unallocated in the whole chain is not read.
	if st.Read >= diskSize {
		t.Errorf("full backup read %d bytes of a %d-byte disk with holes", st.Read, diskSize)
	}
	t.Logf("full: %d extents, %+v", len(d.Extents), st)
	want1 := qemuRaw(t, im.ov1)
	sameBytes(t, "restore of the full backup", restoreOf(t, tg, []Manifest{full}), want1)

	// An incremental reads only what ov2 wrote.
	incr, st := backupOf(t, tg, im.ov2, im.ov1, "b2", "b1", Options{})
	if st.Read < ov2Written || st.Read > ov2Written+512<<10 {
		t.Errorf("incremental read %d bytes; ov2 wrote %d", st.Read, ov2Written)
	}
	var covered int64
	for _, e := range incr.Disks[0].Extents {
		covered += e.Len
	}
	if covered != ov2Written+512<<10 {
		t.Errorf("incremental covers %d bytes: %+v", covered, incr.Disks[0].Extents)
	}
	t.Logf("incremental: %+v, stats %+v", incr.Disks[0].Extents, st)
	want2 := qemuRaw(t, im.ov2)
	sameBytes(t, "restore of full+incremental", restoreOf(t, tg, []Manifest{full, incr}), want2)
	if err := Verify(ctx, tg, []Manifest{full, incr}, 0); err != nil {
		t.Fatal(err)
	}

	// A second full backup of the same disk stores nothing new.
	again, st := backupOf(t, tg, im.ov1, "", "b3", "", Options{})
	if st.Stored != 0 || st.Deduped == 0 {
		t.Errorf("second full backup: %+v", st)
	}
	sameBytes(t, "restore of the second full", restoreOf(t, tg, []Manifest{again}), want1)

	// A full backup of the whole ov2 chain gives the same disk.
	full2, _ := backupOf(t, tg, im.ov2, "", "b4", "", Options{ChunkSize: 64 << 10})
	sameBytes(t, "restore of a full of ov2", restoreOf(t, tg, []Manifest{full2}), want2)

	// A raw base.
	rawFull, _ := backupOf(t, tg, im.rawOv, "", "b5", "", Options{})
	sameBytes(t, "restore over a raw base", restoreOf(t, tg, []Manifest{rawFull}), qemuRaw(t, im.rawOv))

	ids, err := ListBackups(ctx, tg)
	if err != nil || strings.Join(ids, ",") != "b1,b2,b3,b4,b5" {
		t.Errorf("backups %v %v", ids, err)
	}

	// Bad chains.
	for name, chain := range map[string][]Manifest{
		"empty":            nil,
		"incremental only": {incr},
		"wrong parent":     {again, incr},
		"two fulls":        {full, again},
	} {
		dst := filepath.Join(t.TempDir(), "x.raw")
		if _, err := Restore(ctx, tg, chain, 0, dst, RestoreOptions{}); err == nil {
			t.Errorf("%s: restored", name)
		}
		if _, err := os.Stat(dst); err == nil {
			t.Errorf("%s: left %s", name, dst)
		}
	}
	if _, err := Restore(ctx, tg, []Manifest{full}, 1, filepath.Join(t.TempDir(), "x"), RestoreOptions{}); err == nil {
		t.Error("disk 1 restored")
	}
	exists := filepath.Join(t.TempDir(), "exists")
	os.WriteFile(exists, []byte("keep me"), 0o600)
	if _, err := Restore(ctx, tg, []Manifest{full}, 0, exists, RestoreOptions{}); err == nil {
		t.Error("restored over an existing file")
	}
	if b, _ := os.ReadFile(exists); string(b) != "keep me" {
		t.Error("existing file changed")
	}
}

func TestRestoreDamagedChunk(t *testing.T) {
	im := buildImages(t)
	tg := DirTarget{Root: t.TempDir()}
	ctx := context.Background()
	full, _ := backupOf(t, tg, im.ov1, "", "b1", "", Options{})
	// Damage the last data chunk, so that the restore has written
	// others before.
	var last ManifestExtent
	for _, e := range full.Disks[0].Extents {
		if !e.Zero {
			last = e
		}
	}
	p := filepath.Join(tg.Root, ChunkKey(last.SHA256))
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	for name, damage := range map[string][]byte{
		"flipped":   append([]byte{b[0] ^ 1}, b[1:]...),
		"truncated": b[:len(b)-1],
		"longer":    append(bytes.Clone(b), 0),
	} {
		if err := os.WriteFile(p, damage, 0o644); err != nil {
			t.Fatal(err)
		}
		dst := filepath.Join(t.TempDir(), "restored.raw")
		var done int64
		_, err := Restore(ctx, tg, []Manifest{full}, 0, dst, RestoreOptions{Progress: func(d, _ int64) { done = d }})
		if err == nil || !strings.Contains(err.Error(), last.SHA256) || !strings.Contains(err.Error(), "b1") {
			t.Errorf("%s: restore: %v", name, err)
		}
		t.Logf("%s: %v", name, err)
		if _, err := os.Stat(dst); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s: %s left behind", name, dst)
		}
		if done != 0 {
			t.Errorf("%s: progress reported the end", name)
		}
		if err := Verify(ctx, tg, []Manifest{full}, 0); err == nil || !strings.Contains(err.Error(), last.SHA256) {
			t.Errorf("%s: verify: %v", name, err)
		}
	}
	os.Remove(p)
	if _, err := Restore(ctx, tg, []Manifest{full}, 0, filepath.Join(t.TempDir(), "r"), RestoreOptions{}); !errors.Is(err, ErrNotFound) {
		t.Errorf("missing chunk: %v", err)
	}
}

func TestManifestDamaged(t *testing.T) {
	im := buildImages(t)
	tg := DirTarget{Root: t.TempDir()}
	ctx := context.Background()
	m, _ := backupOf(t, tg, im.ov1, "", "b1", "", Options{})
	if m.Checksum == "" || m.Version != ManifestVersion || string(m.Spec) != `{"cpus":2,"note":"\u003c\u0026\u003e"}` {
		t.Fatalf("manifest: checksum %q version %d spec %s", m.Checksum, m.Version, m.Spec)
	}
	p := filepath.Join(tg.Root, ManifestKey("b1"))
	b, _ := os.ReadFile(p)
	for name, c := range map[string]struct {
		b    []byte
		want string
	}{
		"edited":      {bytes.Replace(b, []byte(`"vm":"web"`), []byte(`"vm":"wex"`), 1), "checksum mismatch"},
		"no checksum": {bytes.Replace(b, []byte(`"checksum":"`), []byte(`"checksun":"`), 1), "no checksum"},
		"truncated":   {b[:len(b)/2], "manifest b1"},
		"garbage":     {[]byte("\x00\x01"), "manifest b1"},
	} {
		os.WriteFile(p, c.b, 0o644)
		if _, err := GetManifest(ctx, tg, "b1"); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: %v", name, err)
		}
	}
	if _, err := GetManifest(ctx, tg, "nope"); !errors.Is(err, ErrNotFound) {
		t.Errorf("missing: %v", err)
	}
	for _, id := range []string{"", "../x", "A", "-x", strings.Repeat("a", 129), "a/b"} {
		if _, err := GetManifest(ctx, tg, id); err == nil {
			t.Errorf("id %q accepted", id)
		}
	}

	// A well-checksummed manifest with a bad structure is refused too.
	good := m
	for name, f := range map[string]func(m *Manifest){
		"unsorted":       func(m *Manifest) { e := m.Disks[0].Extents; e[0], e[1] = e[1], e[0] },
		"past the end":   func(m *Manifest) { m.Disks[0].VirtualSize = 1 << 20 },
		"bad hash":       func(m *Manifest) { m.Disks[0].Extents[1].SHA256 = strings.ToUpper(m.Disks[0].Extents[1].SHA256) },
		"chunk size":     func(m *Manifest) { m.Disks[0].ChunkSize = 1000 },
		"gap in full":    func(m *Manifest) { m.Disks[0].Extents = m.Disks[0].Extents[1:] },
		"full w/ parent": func(m *Manifest) { m.Parent = "b0" },
		"kind":           func(m *Manifest) { m.Kind = "partial" },
		"no disks":       func(m *Manifest) { m.Disks = nil },
		"crosses chunk": func(m *Manifest) {
			m.Disks[0].ChunkSize = ChunkAlign
		},
	} {
		m := good
		m.Disks = []DiskManifest{good.Disks[0]}
		m.Disks[0].Extents = append([]ManifestExtent(nil), good.Disks[0].Extents...)
		f(&m)
		m.Checksum, _ = m.sum()
		b, _ := json.Marshal(m)
		if _, err := ParseManifest("b1", b); err == nil {
			t.Errorf("%s: accepted", name)
		} else {
			t.Logf("%s: %v", name, err)
		}
	}
	// The good one still parses (the edits above did not leak into it).
	b, _ = json.Marshal(good)
	if _, err := ParseManifest("b1", b); err != nil {
		t.Fatal(err)
	}
	if _, err := ParseManifest("b2", b); err == nil {
		t.Error("manifest of b1 accepted as b2")
	}
}

func TestDeleteBackup(t *testing.T) {
	im := buildImages(t)
	tg := DirTarget{Root: t.TempDir()}
	ctx := context.Background()
	full, _ := backupOf(t, tg, im.ov1, "", "b1", "", Options{})
	incr, _ := backupOf(t, tg, im.ov2, im.ov1, "b2", "b1", Options{})
	other, _ := backupOf(t, tg, im.rawOv, "", "c1", "", Options{})
	chunks := func() map[string]bool {
		keys, err := tg.List(ctx, "chunks/")
		if err != nil {
			t.Fatal(err)
		}
		out := make(map[string]bool)
		for _, k := range keys {
			out[k] = true
		}
		return out
	}
	before := chunks()
	if err := DeleteBackup(ctx, tg, "b2", []Manifest{full, incr, other}); err == nil {
		t.Error("deleted a backup to keep")
	}
	if err := DeleteBackup(ctx, tg, "b2", []Manifest{full, other}); err != nil {
		t.Fatal(err)
	}
	after := chunks()
	for _, e := range incr.Disks[0].Extents {
		if !e.Zero && after[ChunkKey(e.SHA256)] {
			t.Errorf("chunk %s of b2 kept", e.SHA256)
		}
	}
	if len(after) >= len(before) {
		t.Errorf("%d chunks before, %d after", len(before), len(after))
	}
	sameBytes(t, "b1 after deleting b2", restoreOf(t, tg, []Manifest{full}), qemuRaw(t, im.ov1))
	if err := Verify(ctx, tg, []Manifest{other}, 0); err != nil {
		t.Fatal(err)
	}
	if err := DeleteBackup(ctx, tg, "b2", []Manifest{full, other}); !errors.Is(err, ErrNotFound) {
		t.Errorf("deleted twice: %v", err)
	}
	// A damaged manifest: its backup is deleted with every chunk not
	// kept.
	os.WriteFile(filepath.Join(tg.Root, ManifestKey("b1")), []byte("{}"), 0o644)
	if err := DeleteBackup(ctx, tg, "b1", []Manifest{other}); err != nil {
		t.Fatal(err)
	}
	if err := Verify(ctx, tg, []Manifest{other}, 0); err != nil {
		t.Fatal(err)
	}
	if ids, _ := ListBackups(ctx, tg); strings.Join(ids, ",") != "c1" {
		t.Errorf("left %v", ids)
	}
	for k := range chunks() {
		found := false
		for _, e := range other.Disks[0].Extents {
			found = found || !e.Zero && ChunkKey(e.SHA256) == k
		}
		if !found {
			t.Errorf("chunk %s left", k)
		}
	}
}

func TestWriteCancelAndLimit(t *testing.T) {
	im := buildImages(t)
	c := openChain(t, im.raw, "")
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, _, err := Write(ctx, DirTarget{Root: t.TempDir()}, c, Options{}); !errors.Is(err, context.Canceled) {
		t.Errorf("cancelled: %v", err)
	}
	// 64 MiB at 256 MiB/s with a 4 MiB burst: at least about 0.23 s.
	ctx, cancel = context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, _, err := Write(ctx, DirTarget{Root: t.TempDir()}, c, Options{BytesPerSec: 1 << 20})
	if !errors.Is(err, context.DeadlineExceeded) || time.Since(start) > time.Second {
		t.Errorf("deadline: %v after %v", err, time.Since(start))
	}
	start = time.Now()
	_, st, err := Write(context.Background(), DirTarget{Root: t.TempDir()}, c, Options{BytesPerSec: 256 << 20})
	if el := time.Since(start); err != nil || el < time.Duration(float64(st.Read-DefaultChunkSize)/(256<<20)*float64(time.Second)) {
		t.Errorf("limited to 256 MiB/s: read %d in %v: %v", st.Read, el, err)
	}
	for _, cs := range []int64{-1, 1000, 128 << 20} {
		if _, _, err := Write(context.Background(), DirTarget{Root: t.TempDir()}, c, Options{ChunkSize: cs}); err == nil {
			t.Errorf("chunk size %d accepted", cs)
		}
	}
}

func TestOverlaySegments(t *testing.T) {
	s := func(off, n int64, src int) seg { return seg{off: off, len: n, src: src} }
	base := []seg{s(0, 10, 0), s(10, 10, 0), s(20, 10, 0), s(40, 10, 0)}
	over := []seg{s(5, 3, 1), s(9, 2, 1), s(15, 10, 1), s(30, 5, 1), s(45, 10, 1)}
	got := overlay(base, over)
	want := []seg{s(0, 5, 0), s(5, 3, 1), s(8, 1, 0), s(9, 2, 1), s(11, 4, 0), s(15, 10, 1), s(25, 5, 0), s(30, 5, 1), s(40, 5, 0), s(45, 10, 1)}
	if len(got) != len(want) {
		t.Fatalf("got %v", got)
	}
	for i := range got {
		if got[i].off != want[i].off || got[i].len != want[i].len || got[i].src != want[i].src {
			t.Fatalf("got %v, want %v", got, want)
		}
	}
}

func TestDirTarget(t *testing.T) {
	ctx := context.Background()
	tg := DirTarget{Root: filepath.Join(t.TempDir(), ".hidden-root")}
	if err := tg.Put(ctx, "a/b/c.json", strings.NewReader("hello"), 5); err != nil {
		t.Fatal(err)
	}
	if n, err := tg.Stat(ctx, "a/b/c.json"); n != 5 || err != nil {
		t.Errorf("stat: %v %v", n, err)
	}
	if _, err := tg.Stat(ctx, "a/b/d"); !errors.Is(err, ErrNotFound) {
		t.Errorf("stat missing: %v", err)
	}
	if err := tg.Sync(ctx); err != nil {
		t.Errorf("sync: %v", err)
	}
	if err := tg.Put(ctx, "a/x", strings.NewReader("hello"), 6); err == nil {
		t.Error("short put accepted")
	}
	rc, err := tg.Get(ctx, "a/b/c.json")
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	buf.ReadFrom(rc)
	rc.Close()
	if buf.String() != "hello" {
		t.Errorf("got %q", buf.String())
	}
	os.WriteFile(filepath.Join(tg.Root, "a", ".tmp-123"), nil, 0o644)
	for prefix, want := range map[string]string{"": "a/b/c.json", "a/": "a/b/c.json", "a/b/c": "a/b/c.json", "b": "", "a/b/d": ""} {
		keys, err := tg.List(ctx, prefix)
		if err != nil || strings.Join(keys, ",") != want {
			t.Errorf("list %q: %v %v", prefix, keys, err)
		}
	}
	if _, err := tg.Get(ctx, "a/nope"); !errors.Is(err, ErrNotFound) {
		t.Errorf("get missing: %v", err)
	}
	if err := tg.Delete(ctx, "a/b/c.json"); err != nil {
		t.Fatal(err)
	}
	if err := tg.Delete(ctx, "a/b/c.json"); !errors.Is(err, ErrNotFound) {
		t.Errorf("delete missing: %v", err)
	}
	for _, k := range []string{"", "/a", "a/../b", "..", "a//b", "a/", "A", "a b", "a/.tmp", strings.Repeat("a", 2000)} {
		if err := tg.Put(ctx, k, strings.NewReader(""), 0); err == nil {
			t.Errorf("key %q accepted", k)
		}
	}
	for _, p := range []string{"/", "../", "a//", ".tmp", "a/.x"} {
		if _, err := tg.List(ctx, p); err == nil {
			t.Errorf("prefix %q accepted", p)
		}
	}
}

// BenchmarkBackupFull backs up a 256 MiB qcow2 disk with 64 MiB of
// (incompressible) data into a new directory; MB/s is of the data.
// BenchmarkQemuImgConvert copies the same disk with qemu-img convert, for
// comparison.
func BenchmarkBackupFull(b *testing.B) {
	img := benchImage(b)
	c := openChain(b, img, "")
	b.SetBytes(64 * mib)
	b.ResetTimer()
	for range b.N {
		b.StopTimer()
		dir := b.TempDir()
		b.StartTimer()
		_, st, err := Write(context.Background(), DirTarget{Root: dir}, c, Options{})
		if err != nil || st.Read != 64*mib {
			b.Fatalf("%+v %v", st, err)
		}
	}
}

func BenchmarkQemuImgConvert(b *testing.B) {
	img := benchImage(b)
	b.SetBytes(64 * mib)
	b.ResetTimer()
	for range b.N {
		b.StopTimer()
		out := filepath.Join(b.TempDir(), "out.raw")
		b.StartTimer()
		run(b, "qemu-img", "convert", "-O", "raw", img, out)
	}
}

func benchImage(b *testing.B) string {
	needQemu(b)
	dir := b.TempDir()
	raw, img := filepath.Join(dir, "b.raw"), filepath.Join(dir, "b.qcow2")
	f, err := os.Create(raw)
	if err != nil {
		b.Fatal(err)
	}
	if err := f.Truncate(256 * mib); err != nil {
		b.Fatal(err)
	}
	// 64 MiB of random data in four runs.
	data := make([]byte, 16*mib)
	for i := range 4 {
		randomFill(data, int64(i))
		if _, err := f.WriteAt(data, int64(i)*64*mib+3*mib); err != nil {
			b.Fatal(err)
		}
	}
	f.Close()
	run(b, "qemu-img", "convert", "-O", "qcow2", raw, img)
	os.Remove(raw)
	return img
}

// BenchmarkBackupReadHash is BenchmarkBackupFull into a target that
// keeps nothing: the reading and hashing alone, without the target's
// writes and syncs.
func BenchmarkBackupReadHash(b *testing.B) {
	img := benchImage(b)
	c := openChain(b, img, "")
	b.SetBytes(64 * mib)
	b.ResetTimer()
	for range b.N {
		if _, st, err := Write(context.Background(), discard{}, c, Options{}); err != nil || st.Read != 64*mib {
			b.Fatalf("%+v %v", st, err)
		}
	}
}

// discard is a Target that stores nothing.
type discard struct{}

func (discard) Stat(context.Context, string) (int64, error) { return 0, ErrNotFound }
func (discard) Sync(context.Context) error                  { return nil }
func (discard) Put(_ context.Context, _ string, r io.Reader, _ int64) error {
	_, err := io.Copy(io.Discard, r)
	return err
}
func (discard) Get(context.Context, string) (io.ReadCloser, error) { return nil, ErrNotFound }
func (discard) Delete(context.Context, string) error               { return nil }
func (discard) List(context.Context, string) ([]string, error)     { return nil, nil }

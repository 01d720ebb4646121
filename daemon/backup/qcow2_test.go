package backup

import (
	"bytes"
	"encoding/binary"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

func TestImageStatus(t *testing.T) {
	im := buildImages(t)
	top, err := OpenImage(im.ov1)
	if err != nil {
		t.Fatal(err)
	}
	defer top.Close()
	if top.Format() != "qcow2" || top.Size() != diskSize || top.ClusterSize() != 64<<10 || top.Backing() != im.comp || top.BackingFormat() != "qcow2" {
		t.Fatalf("ov1: format %s size %d cluster %d backing %q (%s)", top.Format(), top.Size(), top.ClusterSize(), top.Backing(), top.BackingFormat())
	}
	for _, c := range []struct {
		off  int64
		kind Kind
	}{
		{0, Unallocated}, {mib, Data}, {2*mib - 1, Data}, {2 * mib, Unallocated},
		{20 * mib, Zero}, {21*mib - 1, Zero}, {50 * mib, Data}, {50*mib + 64<<10, Unallocated},
		{63 * mib, Data}, {diskSize - 1, Unallocated},
	} {
		k, end, err := top.Status(c.off)
		wantEnd := min(c.off/(64<<10)*(64<<10)+64<<10, diskSize)
		if err != nil || k != c.kind || end != wantEnd {
			t.Errorf("Status(%d) = %v, %d, %v; want %v, %d", c.off, k, end, err, c.kind, wantEnd)
		}
	}
	if _, _, err := top.Status(diskSize); err == nil {
		t.Error("Status past the end: no error")
	}

	raw, err := OpenImage(im.raw)
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close()
	if k, end, err := raw.Status(diskSize - 1); raw.Format() != "raw" || raw.Backing() != "" || raw.Size() != diskSize || k != Data || end != diskSize || err != nil {
		t.Errorf("raw: %s backing %q size %d, Status %v %d %v", raw.Format(), raw.Backing(), raw.Size(), k, end, err)
	}

	// The compressed base really has compressed clusters, and reads as
	// the raw file it came from.
	comp, err := OpenImage(im.comp)
	if err != nil {
		t.Fatal(err)
	}
	defer comp.Close()
	compressed := 0
	for off := int64(0); off < comp.Size(); off += comp.ClusterSize() {
		m, err := comp.lookup(off)
		if err != nil {
			t.Fatal(err)
		}
		if m.compressed {
			compressed++
		}
	}
	if compressed < 100 {
		t.Errorf("%d compressed clusters in %s", compressed, im.comp)
	}
	want, _ := os.ReadFile(im.raw)
	got := make([]byte, diskSize)
	if n, err := comp.ReadAt(got, 0); n != diskSize || err != nil {
		t.Fatalf("compressed ReadAt: %d, %v", n, err)
	}
	sameBytes(t, "compressed image", got, want)
	// Unaligned small reads inside compressed clusters.
	for _, off := range []int64{1, 20*mib + 77, 40*mib + 65535, diskSize - 100} {
		p := make([]byte, 100)
		n, _ := comp.ReadAt(p, off)
		sameBytes(t, "small read", p[:n], want[off:off+int64(n)])
	}
}

// TestChainMatchesQemu: a chain reads as qemu-img reads it.
func TestChainMatchesQemu(t *testing.T) {
	im := buildImages(t)
	// A version 2 (compat 0.10) image too, and a chain over one.
	v2 := filepath.Join(im.dir, "v2.qcow2")
	run(t, "qemu-img", "convert", "-O", "qcow2", "-o", "compat=0.10", "-c", im.raw, v2)
	v2ov := filepath.Join(im.dir, "v2ov.qcow2")
	run(t, "qemu-img", "create", "-q", "-f", "qcow2", "-o", "compat=0.10", "-b", v2, "-F", "qcow2", v2ov)
	qemuIO(t, v2ov, "qcow2", "write -P 0x42 5M 100k", "write -z 20M 64k")
	// Other cluster sizes mixed in one chain.
	small := filepath.Join(im.dir, "small.qcow2")
	run(t, "qemu-img", "create", "-q", "-f", "qcow2", "-o", "cluster_size=512", "-b", im.ov2, "-F", "qcow2", small)
	qemuIO(t, small, "qcow2", "write -P 0x12 1000000 3000", "write -z 8M 4096")
	big := filepath.Join(im.dir, "big.qcow2")
	run(t, "qemu-img", "create", "-q", "-f", "qcow2", "-o", "cluster_size=2M", "-b", small, "-F", "qcow2", big)
	qemuIO(t, big, "qcow2", "write -P 0x13 7M 100")

	for _, top := range []string{im.raw, im.comp, im.ov1, im.ov2, im.rawOv, v2, v2ov, small, big} {
		t.Run(filepath.Base(top), func(t *testing.T) {
			c := openChain(t, top, "")
			sameBytes(t, top, chainBytes(t, c), qemuRaw(t, top))
			// Extents are in order, cover the disk, and agree with the
			// data: Zero and Unallocated runs read as zeros.
			data := chainBytes(t, c)
			next := int64(0)
			err := c.Extents(func(e Extent) error {
				if e.Off != next || e.Len <= 0 {
					t.Fatalf("extent %+v after %d", e, next)
				}
				if e.Kind != Data && !bytes.Equal(data[e.Off:e.Off+e.Len], make([]byte, e.Len)) {
					t.Fatalf("extent %+v does not read as zeros", e)
				}
				next = e.Off + e.Len
				return nil
			})
			if err != nil || next != c.Size() {
				t.Fatalf("extents end at %d of %d: %v", next, c.Size(), err)
			}
		})
	}
}

func TestOpenChainStop(t *testing.T) {
	im := buildImages(t)
	c := openChain(t, im.ov2, im.ov1)
	if len(c.Layers) != 1 || c.Layers[0].Path() != im.ov2 {
		t.Fatalf("layers %d", len(c.Layers))
	}
	c = openChain(t, im.ov2, im.comp)
	if len(c.Layers) != 2 {
		t.Fatalf("layers %d", len(c.Layers))
	}
	if _, err := OpenChain(im.ov2, im.rawOv); err == nil || !strings.Contains(err.Error(), "not in the chain") {
		t.Errorf("stop layer not in the chain: %v", err)
	}
	if _, err := OpenChain(im.ov2, im.ov2); err == nil {
		t.Error("stop at the top: no error")
	}
	if _, err := OpenChain(im.ov2, filepath.Join(im.dir, "nope")); err == nil {
		t.Error("missing stop layer: no error")
	}
	// A relative backing name is relative to the overlay's directory.
	rel := filepath.Join(im.dir, "rel.qcow2")
	run(t, "qemu-img", "create", "-q", "-f", "qcow2", "-b", "ov1.qcow2", "-F", "qcow2", rel)
	c = openChain(t, rel, "")
	if len(c.Layers) != 3 {
		t.Fatalf("relative: %d layers", len(c.Layers))
	}
	// A loop is refused.
	a, b := filepath.Join(im.dir, "a.qcow2"), filepath.Join(im.dir, "b.qcow2")
	run(t, "qemu-img", "create", "-q", "-f", "qcow2", "-u", "-b", b, "-F", "qcow2", a, "1M")
	run(t, "qemu-img", "create", "-q", "-f", "qcow2", "-u", "-b", a, "-F", "qcow2", b, "1M")
	if _, err := OpenChain(a, ""); err == nil || !strings.Contains(err.Error(), "loops") {
		t.Errorf("loop: %v", err)
	}
}

// TestRawBackingWithMagic: a raw base whose guest wrote the qcow2 magic is
// still read as raw when the overlay says so (else a guest could make the
// host read any file as its disk's backing).
func TestRawBackingWithMagic(t *testing.T) {
	needQemu(t)
	dir := t.TempDir()
	base, ov := filepath.Join(dir, "base.raw"), filepath.Join(dir, "ov.qcow2")
	run(t, "qemu-img", "create", "-q", "-f", "qcow2", "-b", "/etc/hostname", "-F", "raw", base, "1M")
	mkOverlay(t, ov, base, "raw")
	c := openChain(t, ov, "")
	if len(c.Layers) != 2 || c.Layers[1].Format() != "raw" {
		t.Fatalf("%d layers, base %s", len(c.Layers), c.Layers[len(c.Layers)-1].Format())
	}
	sameBytes(t, "chain", chainBytes(t, c), qemuRaw(t, ov))
}

// headerOf builds a qcow2 image with qemu-img and returns its bytes.
func headerOf(t testing.TB, opts ...string) []byte {
	t.Helper()
	p := filepath.Join(t.TempDir(), "h.qcow2")
	run(t, "qemu-img", append(append([]string{"create", "-q", "-f", "qcow2"}, opts...), p, "4M")...)
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func openBytes(b []byte) (*Image, error) {
	return newImage(bytes.NewReader(b), int64(len(b)), "test", "")
}

func TestOpenImageRefuses(t *testing.T) {
	needQemu(t)
	good := headerOf(t)
	if _, err := openBytes(good); err != nil {
		t.Fatal(err)
	}
	be := binary.BigEndian
	set := func(f func(b []byte)) []byte {
		b := bytes.Clone(good)
		f(b)
		return b
	}
	for name, c := range map[string]struct {
		img  []byte
		want string
	}{
		"encrypted":     {set(func(b []byte) { be.PutUint32(b[32:], 1) }), "encrypted"},
		"corrupt bit":   {set(func(b []byte) { b[79] |= incompatCorrupt }), "corrupt"},
		"data file":     {set(func(b []byte) { b[79] |= incompatDataFile }), "external data file"},
		"extended L2":   {set(func(b []byte) { b[79] |= incompatExtendedL2 }), "extended L2"},
		"unknown bit":   {set(func(b []byte) { b[72] |= 1 }), "unknown incompatible"},
		"version 4":     {set(func(b []byte) { be.PutUint32(b[4:], 4) }), "version 4"},
		"cluster bits":  {set(func(b []byte) { be.PutUint32(b[20:], 40) }), "cluster_bits"},
		"huge l1":       {set(func(b []byte) { be.PutUint32(b[36:], 1<<30) }), "l1_size"},
		"small l1":      {set(func(b []byte) { be.PutUint64(b[24:], 1<<40) }), "l1_size"},
		"huge size":     {set(func(b []byte) { be.PutUint64(b[24:], 1<<63) }), "virtual size"},
		"l1 past eof":   {set(func(b []byte) { be.PutUint64(b[40:], 1<<40) }), "L1 table"},
		"backing name":  {set(func(b []byte) { be.PutUint64(b[8:], 512); be.PutUint32(b[16:], 5000) }), "backing file name"},
		"backing eof":   {set(func(b []byte) { be.PutUint64(b[8:], 1<<40); be.PutUint32(b[16:], 10) }), "backing file name"},
		"header length": {set(func(b []byte) { be.PutUint32(b[100:], 1<<30) }), "header_length"},
		"short":         {good[:50], "shorter"},
		"short v3":      {good[:90], "shorter"},
	} {
		_, err := openBytes(c.img)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: %v, want an error with %q", name, err, c.want)
		}
	}
	zstd := filepath.Join(t.TempDir(), "zstd.qcow2")
	if err := exec.Command("qemu-img", "create", "-q", "-f", "qcow2", "-o", "compression_type=zstd", zstd, "1M").Run(); err != nil {
		t.Logf("this qemu-img cannot make zstd images: %v", err)
	} else if _, err := OpenImage(zstd); err == nil || !strings.Contains(err.Error(), "zstd") {
		t.Errorf("zstd: %v", err)
	}
}

// TestOpenImageDamaged: truncated or scribbled images give errors, never
// panics, wherever they are read.
func TestOpenImageDamaged(t *testing.T) {
	im := buildImages(t)
	for _, p := range []string{im.comp, im.ov1} {
		full, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		for _, n := range []int{0, 3, 4, 71, 72, 103, 104, 511, 4096, 65535, 65536, 200000, 300000, len(full) / 2, len(full) - 1} {
			if n > len(full) {
				continue
			}
			exercise(t, full[:n])
		}
		// Scribble over the metadata: every 8th byte of the first
		// clusters, one at a time.
		for i := 0; i < min(len(full), 4<<16); i += 4093 {
			b := bytes.Clone(full)
			b[i] ^= 0xff
			exercise(t, b)
		}
	}
}

// exercise opens image b and reads all of it; it must not panic.
func exercise(t testing.TB, b []byte) {
	im, err := openBytes(b)
	if err != nil {
		return
	}
	buf := make([]byte, 256<<10)
	steps := 0
	for off := int64(0); off < im.Size() && steps < 2000; steps++ {
		_, end, err := im.statusRun(off, off+int64(len(buf)))
		if err != nil {
			return
		}
		n := min(int64(len(buf)), end-off)
		if _, err := im.ReadAt(buf[:n], off); err != nil {
			return
		}
		off += n
	}
}

func FuzzOpenImage(f *testing.F) {
	if _, err := exec.LookPath("qemu-img"); err == nil {
		f.Add(headerOf(f))
		p := filepath.Join(f.TempDir(), "c.qcow2")
		raw := filepath.Join(f.TempDir(), "c.raw")
		run(f, "qemu-img", "create", "-q", "-f", "raw", raw, "1M")
		run(f, "qemu-io", "-f", "raw", "-c", "write -P 0x5a 0 100k", raw)
		run(f, "qemu-img", "convert", "-c", "-O", "qcow2", "-o", "cluster_size=4k", raw, p)
		b, err := os.ReadFile(p)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Add([]byte("QFI\xfb"))
	f.Add([]byte("not an image at all"))
	f.Fuzz(func(t *testing.T, b []byte) {
		exercise(t, b)
	})
}

package backup

import (
	"bytes"
	"math/rand"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// needQemu fails the test when qemu-img (and qemu-io) are not installed
// (make test installs them): the tests build real images with them. Only
// a -short run without them skips.
func needQemu(t testing.TB) {
	t.Helper()
	for _, tool := range []string{"qemu-img", "qemu-io"} {
		if _, err := exec.LookPath(tool); err != nil {
			if testing.Short() {
				t.Skipf("-short, and %s is not on PATH (apt-get install qemu-utils)", tool)
			}
			t.Fatalf("%s is not on PATH; these tests build real images with it (apt-get install qemu-utils, or make test)", tool)
		}
	}
}

func run(t testing.TB, name string, args ...string) string {
	t.Helper()
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}

// qemuIO runs qemu-io commands on file (of format) and fails on any error
// it prints.
func qemuIO(t testing.TB, file, format string, cmds ...string) {
	t.Helper()
	args := []string{"-f", format}
	for _, c := range cmds {
		args = append(args, "-c", c)
	}
	out := run(t, "qemu-io", append(args, file)...)
	if strings.Contains(out, "error") || strings.Contains(out, "Error") {
		t.Fatalf("qemu-io %v on %s: %s", cmds, file, out)
	}
}

func mkOverlay(t testing.TB, path, backing, backingFormat string) {
	t.Helper()
	run(t, "qemu-img", "create", "-q", "-f", "qcow2", "-b", backing, "-F", backingFormat, path)
}

// qemuRaw is the disk img shows, as qemu-img convert reads it.
func qemuRaw(t testing.TB, img string) []byte {
	t.Helper()
	out := filepath.Join(t.TempDir(), "out.raw")
	run(t, "qemu-img", "convert", "-O", "raw", img, out)
	b, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func chainBytes(t testing.TB, c *Chain) []byte {
	t.Helper()
	b := make([]byte, c.Size())
	n, err := c.ReadAt(b, 0)
	if err != nil || n != len(b) {
		t.Fatalf("chain read: %d of %d: %v", n, len(b), err)
	}
	return b
}

func openChain(t testing.TB, top, stopAt string) *Chain {
	t.Helper()
	c, err := OpenChain(top, stopAt)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// sameBytes fails if a and b differ, saying where.
func sameBytes(t testing.TB, what string, got, want []byte) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("%s: %d bytes, want %d", what, len(got), len(want))
	}
	if !bytes.Equal(got, want) {
		for i := range got {
			if got[i] != want[i] {
				t.Fatalf("%s: first difference at byte %d (%#x): %#x, want %#x", what, i, i, got[i], want[i])
			}
		}
	}
}

// Test images: a 64 MiB + 12 KiB disk (not a whole number of clusters).
const (
	mib      = 1 << 20
	diskSize = 64*mib + 12<<10
)

type images struct {
	dir      string
	raw      string // raw base
	comp     string // compressed qcow2 of raw
	ov1, ov2 string // overlays: comp <- ov1 <- ov2
	rawOv    string // overlay on raw
}

// ov2Written is what ov2 writes with data (not zeros).
const ov2Written = 4 * mib

// buildImages makes the test images.
func buildImages(t testing.TB) images {
	t.Helper()
	needQemu(t)
	dir := t.TempDir()
	im := images{
		dir:   dir,
		raw:   filepath.Join(dir, "base.raw"),
		comp:  filepath.Join(dir, "base.qcow2"),
		ov1:   filepath.Join(dir, "ov1.qcow2"),
		ov2:   filepath.Join(dir, "ov2.qcow2"),
		rawOv: filepath.Join(dir, "rawov.qcow2"),
	}
	run(t, "qemu-img", "create", "-q", "-f", "raw", im.raw, "67121152") // diskSize
	qemuIO(t, im.raw, "raw",
		"write -P 0x11 0 8M",
		"write -P 0x22 20M 3M",
		"write -P 0x99 62914660 1000", // 60M + 100: within a cluster
		"write -P 0x66 64M 12k")       // the last, partial cluster
	// Incompressible data, stored uncompressed by qemu-img convert -c.
	f, err := os.OpenFile(im.raw, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	rnd := make([]byte, 2*mib)
	rand.New(rand.NewSource(1)).Read(rnd)
	if _, err := f.WriteAt(rnd, 40*mib); err != nil {
		t.Fatal(err)
	}
	f.Close()
	run(t, "qemu-img", "convert", "-c", "-O", "qcow2", im.raw, im.comp)

	mkOverlay(t, im.ov1, im.comp, "qcow2")
	qemuIO(t, im.ov1, "qcow2",
		"write -P 0x5a 1M 1M",
		"write -z 20M 1M",
		"write -P 0x33 50M 64k",
		"write -P 0x3c 66064384 4096") // 63M + 4K: a partial cluster over the base
	mkOverlay(t, im.ov2, im.ov1, "qcow2")
	qemuIO(t, im.ov2, "qcow2",
		"write -P 0x77 30M 2M",
		"write -P 0x44 3M 2M", // crosses the 4 MiB chunk boundary
		"write -z 0 512k")
	mkOverlay(t, im.rawOv, im.raw, "raw")
	qemuIO(t, im.rawOv, "qcow2", "write -P 0xa5 10M 3M")
	return im
}

func randomFill(p []byte, seed int64) {
	rand.New(rand.NewSource(seed)).Read(p)
}

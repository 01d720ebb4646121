package images

import (
	"bytes"
	"encoding/binary"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/corralhq/corral/model"
)

func qcow2Header(virtual uint64, backing uint64) []byte {
	b := make([]byte, 512)
	copy(b, qcow2Magic)
	binary.BigEndian.PutUint32(b[4:], 3)
	binary.BigEndian.PutUint64(b[8:], backing)
	binary.BigEndian.PutUint64(b[24:], virtual)
	return b
}

func TestImport(t *testing.T) {
	dir := t.TempDir()
	im, err := Import(dir, "base", bytes.NewReader(qcow2Header(16<<20, 0)))
	if err != nil {
		t.Fatal(err)
	}
	if im.Format != "qcow2" || im.VirtualSizeBytes != 16<<20 || im.SizeBytes != 512 || len(im.SHA256) != 64 || im.Volume != "image-base" {
		t.Fatalf("image %+v", im)
	}
	raw, err := Import(dir, "raw1", bytes.NewReader([]byte("just bytes, not qcow2 at all.....")))
	if err != nil || raw.Format != "raw" || raw.VirtualSizeBytes != raw.SizeBytes {
		t.Fatalf("raw: %+v %v", raw, err)
	}
	for name, tc := range map[string]struct {
		img  string
		data []byte
		err  error
	}{
		"exists":   {"base", []byte("x"), model.ErrConflict},
		"backing":  {"child", qcow2Header(1, 100), model.ErrInvalid},
		"empty":    {"empty", nil, model.ErrInvalid},
		"bad name": {"a/b", []byte("x"), model.ErrInvalid},
	} {
		if _, err := Import(dir, tc.img, bytes.NewReader(tc.data)); !errors.Is(err, tc.err) {
			t.Errorf("%s: %v, want %v", name, err, tc.err)
		}
	}
	// An upload past the cap is refused, and leaves nothing.
	saved := MaxBytes
	MaxBytes = 1 << 20
	_, err = Import(dir, "huge", bytes.NewReader(make([]byte, 1<<20+1)))
	MaxBytes = saved
	if !errors.Is(err, model.ErrInvalid) {
		t.Errorf("upload past the cap: %v", err)
	}
	// Only the two good images are in the pool: no temporary files left.
	ents, _ := os.ReadDir(dir)
	if len(ents) != 2 {
		t.Fatalf("pool holds %d files", len(ents))
	}
	if err := Remove(dir, "base"); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(dir, "image-base")); !os.IsNotExist(err) {
		t.Fatal("not removed")
	}
}

// Package images writes base images into the storage pool: it streams an
// upload to a temporary file while hashing it, recognises qcow2 or raw,
// reads the virtual size from the qcow2 header, and renames the file into
// place only when all of that succeeded.
package images

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/corralhq/corral/model"
)

var qcow2Magic = []byte{'Q', 'F', 'I', 0xfb}

// MaxBytes caps an upload (512 GiB): the API streams images, so without a
// cap one request could fill the pool.
var MaxBytes int64 = 512 << 30

// Import writes r into dir as the pool volume of image name and returns the
// image's description. Nothing is left behind on failure.
func Import(dir, name string, r io.Reader) (model.Image, error) {
	if err := model.ValidateName("image", name); err != nil {
		return model.Image{}, err
	}
	final := filepath.Join(dir, model.ImageVolume(name))
	if _, err := os.Stat(final); err == nil {
		return model.Image{}, fmt.Errorf("image %q: file %s already exists: %w", name, final, model.ErrConflict)
	}
	f, err := os.CreateTemp(dir, ".upload-"+name+"-")
	if err != nil {
		return model.Image{}, err
	}
	tmp := f.Name()
	ok := false
	defer func() {
		if !ok {
			f.Close()
			os.Remove(tmp)
		}
	}()
	h := sha256.New()
	n, err := io.Copy(io.MultiWriter(f, h), io.LimitReader(r, MaxBytes+1))
	if err != nil {
		return model.Image{}, fmt.Errorf("image %q: upload: %w", name, err)
	}
	if n > MaxBytes {
		return model.Image{}, fmt.Errorf("image %q: larger than the %d GiB an upload may be: %w", name, MaxBytes>>30, model.ErrInvalid)
	}
	if n == 0 {
		return model.Image{}, fmt.Errorf("image %q: empty upload: %w", name, model.ErrInvalid)
	}
	if err := f.Sync(); err != nil {
		return model.Image{}, err
	}
	im := model.Image{Name: name, Volume: model.ImageVolume(name), SizeBytes: n, SHA256: hex.EncodeToString(h.Sum(nil))}
	if im.Format, im.VirtualSizeBytes, err = inspect(f, n); err != nil {
		return model.Image{}, fmt.Errorf("image %q: %w", name, err)
	}
	// Not world-readable: an image may hold secrets. libvirt hands it to
	// QEMU's user when a guest starts (dynamic ownership).
	if err := f.Chmod(0o600); err != nil {
		return model.Image{}, err
	}
	if err := f.Close(); err != nil {
		return model.Image{}, err
	}
	if err := os.Rename(tmp, final); err != nil {
		return model.Image{}, err
	}
	ok = true
	return im, nil
}

// inspect recognises qcow2 by its magic and reads its virtual size; any
// other content is a raw image whose virtual size is its length. A qcow2
// image with a backing file is refused: base images stand alone.
func inspect(f *os.File, size int64) (format string, virtual int64, err error) {
	var hdr [32]byte
	if _, err := f.ReadAt(hdr[:], 0); err != nil && size >= int64(len(hdr)) {
		return "", 0, err
	}
	if size < int64(len(hdr)) || string(hdr[:4]) != string(qcow2Magic) {
		return "raw", size, nil
	}
	version := binary.BigEndian.Uint32(hdr[4:8])
	backingOffset := binary.BigEndian.Uint64(hdr[8:16])
	virtual = int64(binary.BigEndian.Uint64(hdr[24:32]))
	if version < 2 || version > 3 {
		return "", 0, fmt.Errorf("qcow2 version %d not supported: %w", version, model.ErrInvalid)
	}
	if backingOffset != 0 {
		return "", 0, fmt.Errorf("qcow2 image has a backing file; flatten it first (qemu-img convert): %w", model.ErrInvalid)
	}
	return "qcow2", virtual, nil
}

// Remove deletes an image's pool volume; a missing file is fine.
func Remove(dir, name string) error {
	err := os.Remove(filepath.Join(dir, model.ImageVolume(name)))
	if os.IsNotExist(err) {
		return nil
	}
	return err
}

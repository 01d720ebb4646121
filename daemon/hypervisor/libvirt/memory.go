package libvirt

import (
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	golibvirt "github.com/digitalocean/go-libvirt"

	"github.com/corralhq/corral/daemon/hypervisor"
)

// Restore starts the defined domain name from memory, a save image (the
// RAM of a memory snapshot, SnapshotDisks), with the domain's persistent
// definition in place of the one saved in the image: the guest resumes on
// the disks it is defined on now. info is recorded in that definition's
// run element, as Start records it, so the running guest carries it from
// its first instant. libvirt refuses a definition whose devices differ
// from the saved one's (a resize since the snapshot).
func (d *Driver) Restore(ctx context.Context, name, memory string, info hypervisor.RunInfo) error {
	l, dom, err := d.lookup(name)
	if err != nil {
		return err
	}
	x, err := l.DomainGetXMLDesc(dom, golibvirt.DomainXMLInactive|golibvirt.DomainXMLSecure)
	if err != nil {
		return wrap("xml of "+name, err)
	}
	m := runMeta{Started: info.StartedAt.UTC().Format(time.RFC3339Nano), RestartSeq: info.RestartSeq, Layer: info.Layer}
	if strings.Count(x, "</metadata>") != 1 {
		return fmt.Errorf("restore %s: its definition has no corral metadata", name)
	}
	x = strings.Replace(x, "</metadata>", m.nsElement()+"</metadata>", 1)
	if err := os.MkdirAll("/var/log/libvirt/qemu", 0o755); err != nil {
		return err
	}
	if err := l.DomainRestoreFlags(memory, golibvirt.OptString{x}, uint32(golibvirt.DomainSaveRunning)); err != nil {
		return wrap("restore "+name+" from "+memory, err)
	}
	return nil
}

// Written reports whether a disk layer's qcow2 file holds anything of its
// own (see qcow2Written).
func (d *Driver) Written(ctx context.Context, path string) (bool, error) {
	return qcow2Written(path)
}

// qcow2Written reports whether a qcow2 image has any entry of its L1 table
// set. An overlay made by qemu-img (or libvirt) has none; the first write
// a guest makes to a range (data, or zeros: a zero cluster needs its L2
// table too) allocates that range's L2 table, and QEMU writes the L1 entry
// before it completes the write. It reads the header and the L1 table
// only, never the backing chain.
func qcow2Written(path string) (bool, error) {
	f, err := os.Open(path)
	if err != nil {
		return false, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return false, err
	}
	var h [48]byte
	if _, err := io.ReadFull(f, h[:]); err != nil {
		return false, fmt.Errorf("%s: qcow2 header: %w", path, err)
	}
	if string(h[:4]) != "QFI\xfb" {
		return false, fmt.Errorf("%s is not a qcow2 image", path)
	}
	bits := binary.BigEndian.Uint32(h[20:24])
	entries := uint64(binary.BigEndian.Uint32(h[36:40]))
	off := binary.BigEndian.Uint64(h[40:48])
	switch {
	case bits < 9 || bits > 21:
		return false, fmt.Errorf("%s: qcow2 cluster bits %d", path, bits)
	case entries == 0:
		return false, nil
	case entries > maxL1Entries || off%(1<<bits) != 0 || off+8*entries > uint64(fi.Size()):
		return false, fmt.Errorf("%s: qcow2 L1 table of %d entries at %d does not fit the file of %d bytes", path, entries, off, fi.Size())
	}
	l1 := make([]byte, 8*entries)
	if _, err := f.ReadAt(l1, int64(off)); err != nil {
		return false, fmt.Errorf("%s: qcow2 L1 table: %w", path, err)
	}
	for i := 0; i < len(l1); i += 8 {
		if binary.BigEndian.Uint64(l1[i:]) != 0 {
			return true, nil
		}
	}
	return false, nil
}

// maxL1Entries is QEMU's bound on an L1 table (QCOW_MAX_L1_SIZE, 32 MiB).
const maxL1Entries = 32 << 20 / 8

package fake

import (
	"context"
	"fmt"
	"strings"

	"github.com/corralhq/corral/daemon/hypervisor"
)

// The fake's memory snapshots: a memory image is a volume SnapshotDisks
// adds; a running guest writes to its disks' files at once, so a file a
// guest ran on reads as written (SetWritten marks one by hand).

// write marks the writable disk files of a running domain written.
// Callers hold mu.
func (d *Driver) write(dm *domain) {
	if d.written == nil {
		d.written = map[string]bool{}
	}
	for _, disk := range dm.spec.Disks {
		if !disk.ReadOnly {
			d.written[disk.Path] = true
		}
	}
}

// SetWritten marks a disk file written, as by a guest that ran on it.
func (d *Driver) SetWritten(path string) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.written == nil {
		d.written = map[string]bool{}
	}
	d.written[path] = true
}

// SetRestoreErr makes every Restore fail with err (nil clears).
func (d *Driver) SetRestoreErr(err error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.restoreErr = err
}

// Written implements the driver interface: whether a guest ran on the
// file (or SetWritten marked it).
func (d *Driver) Written(ctx context.Context, path string) (bool, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if err := d.call("Written"); err != nil {
		return false, err
	}
	return d.written[path], nil
}

// Restore implements the driver interface: the memory image must be a
// volume of the pool (a memory snapshot's).
func (d *Driver) Restore(ctx context.Context, name, memory string, info hypervisor.RunInfo) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if err := d.call("Restore"); err != nil {
		return err
	}
	if d.restoreErr != nil {
		return d.restoreErr
	}
	dm, err := d.lookup(name)
	if err != nil {
		return err
	}
	if dm.dom.State.Active() {
		return fmt.Errorf("restore %s: already running", name)
	}
	if _, ok := d.volumes[strings.TrimPrefix(memory, "/pool/")]; !ok {
		return fmt.Errorf("restore %s: no memory image %s", name, memory)
	}
	d.run(dm, "restored", info)
	return nil
}

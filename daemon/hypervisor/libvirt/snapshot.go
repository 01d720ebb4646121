package libvirt

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"os"
	"os/exec"
	"slices"
	"strings"
	"time"

	golibvirt "github.com/digitalocean/go-libvirt"
	"libvirt.org/go/libvirtxml"

	"github.com/corralhq/corral/daemon/hypervisor"
)

// writableDisks returns the target names and files of a running domain's
// writable file disks, in order, and the targets of its other disks.
func (d *Driver) writableDisks(l *golibvirt.Libvirt, dom golibvirt.Domain) (targets, files, others []string, err error) {
	st, _, err := l.DomainGetState(dom, 0)
	if err != nil {
		return nil, nil, nil, wrap("state of "+dom.Name, err)
	}
	if s, _ := stateOf(st, 0); !s.Active() {
		return nil, nil, nil, fmt.Errorf("%s: %w", dom.Name, hypervisor.ErrNotRunning)
	}
	x, err := l.DomainGetXMLDesc(dom, 0)
	if err != nil {
		return nil, nil, nil, wrap("xml of "+dom.Name, err)
	}
	var def libvirtxml.Domain
	if err := def.Unmarshal(x); err != nil {
		return nil, nil, nil, fmt.Errorf("xml of %s: %w", dom.Name, err)
	}
	if def.Devices == nil {
		return nil, nil, nil, nil
	}
	for _, disk := range def.Devices.Disks {
		if disk.Target == nil {
			continue
		}
		if disk.Device != "disk" || disk.ReadOnly != nil || disk.Source == nil || disk.Source.File == nil {
			others = append(others, disk.Target.Dev)
			continue
		}
		targets = append(targets, disk.Target.Dev)
		files = append(files, disk.Source.File.File)
	}
	return targets, files, others, nil
}

// DiskFiles returns the files a running guest's writable disks use.
func (d *Driver) DiskFiles(ctx context.Context, name string) ([]string, error) {
	l, dom, err := d.lookup(name)
	if err != nil {
		return nil, err
	}
	_, files, _, err := d.writableDisks(l, dom)
	return files, err
}

// SnapshotDisks moves a running guest's writable disks onto overlays (one
// for each, existing already, each on its disk's current file) in one
// atomic step: an external snapshot that reuses the overlays and leaves no
// snapshot metadata in libvirt (the chain is corral's to keep). With
// opts.Quiesce, the guest agent freezes the guest's file systems around
// it (disk-only). With opts.Memory, libvirt pauses the guest, saves its
// RAM and device state to that file (a save image, which Restore
// resumes), moves the disks, and lets the guest run on.
func (d *Driver) SnapshotDisks(ctx context.Context, name string, overlays []string, opts hypervisor.SnapshotOptions) error {
	if opts.Quiesce && opts.Memory != "" {
		return fmt.Errorf("snapshot %s: the guest's memory is saved paused, not quiesced", name)
	}
	l, dom, err := d.lookup(name)
	if err != nil {
		return err
	}
	targets, _, others, err := d.writableDisks(l, dom)
	if err != nil {
		return err
	}
	if len(targets) != len(overlays) {
		return fmt.Errorf("snapshot %s: %d writable disks, %d overlays", name, len(targets), len(overlays))
	}
	snap := libvirtxml.DomainSnapshot{Disks: &libvirtxml.DomainSnapshotDisks{}}
	flags := golibvirt.DomainSnapshotCreateReuseExt | golibvirt.DomainSnapshotCreateNoMetadata | golibvirt.DomainSnapshotCreateAtomic
	switch {
	case opts.Memory != "":
		snap.Memory = &libvirtxml.DomainSnapshotMemory{Snapshot: "external", File: opts.Memory}
	case opts.Quiesce:
		flags |= golibvirt.DomainSnapshotCreateDiskOnly | golibvirt.DomainSnapshotCreateQuiesce
	default:
		flags |= golibvirt.DomainSnapshotCreateDiskOnly
	}
	for i, t := range targets {
		snap.Disks.Disks = append(snap.Disks.Disks, libvirtxml.DomainSnapshotDisk{
			Name: t, Snapshot: "external",
			Driver: &libvirtxml.DomainDiskDriver{Type: "qcow2"},
			Source: &libvirtxml.DomainDiskSource{File: &libvirtxml.DomainDiskSourceFile{File: overlays[i]}},
		})
	}
	for _, t := range others { // the cloud-init seed
		snap.Disks.Disks = append(snap.Disks.Disks, libvirtxml.DomainSnapshotDisk{Name: t, Snapshot: "no"})
	}
	x, err := snap.Marshal()
	if err != nil {
		return err
	}
	if _, err := l.DomainSnapshotCreateXML(dom, x, uint32(flags)); err != nil {
		return wrap("snapshot "+name, err)
	}
	return nil
}

// SetLayer records the disk layer a running guest is on with it.
func (d *Driver) SetLayer(ctx context.Context, name string, layer uint64) error {
	l, dom, err := d.lookup(name)
	if err != nil {
		return err
	}
	hd, err := d.describe(l, dom)
	if err != nil {
		return err
	}
	return d.setRunInfo(l, dom, hypervisor.RunInfo{StartedAt: hd.StartedAt, RestartSeq: hd.RestartSeq, Layer: layer})
}

// liveChains returns, for a running domain, each writable disk's target
// and the files of its backing chain, top first.
func (d *Driver) liveChains(l *golibvirt.Libvirt, dom golibvirt.Domain) (map[string][]string, error) {
	x, err := l.DomainGetXMLDesc(dom, 0)
	if err != nil {
		return nil, wrap("xml of "+dom.Name, err)
	}
	var def libvirtxml.Domain
	if err := def.Unmarshal(x); err != nil {
		return nil, fmt.Errorf("xml of %s: %w", dom.Name, err)
	}
	out := map[string][]string{}
	if def.Devices == nil {
		return out, nil
	}
	for _, disk := range def.Devices.Disks {
		if disk.Device != "disk" || disk.ReadOnly != nil || disk.Source == nil || disk.Source.File == nil || disk.Target == nil {
			continue
		}
		chain := []string{disk.Source.File.File}
		for b := disk.BackingStore; b != nil && b.Source != nil && b.Source.File != nil; b = b.BackingStore {
			chain = append(chain, b.Source.File.File)
		}
		out[disk.Target.Dev] = chain
	}
	return out, nil
}

// CommitLayer commits each overlay from[i] into its backing file into[i],
// then points the overlays on it (children[i]) at into[i]. A disk whose
// running guest uses from[i] is committed by libvirt's block commit while
// the guest runs (libvirt moves the guest's chain); one whose guest has
// no longer from[i] in its chain but into[i] was committed already; any
// other (the guest stopped, or the layers on a branch it does not run on)
// with qemu-img.
func (d *Driver) CommitLayer(ctx context.Context, name string, into, from []string, children [][]string) error {
	chains := map[string][]string{}
	l, dom, err := d.lookup(name)
	switch {
	case err == nil:
		if st, _, err := l.DomainGetState(dom, 0); err != nil {
			return wrap("state of "+name, err)
		} else if s, _ := stateOf(st, 0); s.Active() {
			if chains, err = d.liveChains(l, dom); err != nil {
				return err
			}
		}
	case !isNoDomain(err):
		return err
	}
	for i := range from {
		target, live := "", []string(nil)
		for t, c := range chains {
			if slices.Contains(c, into[i]) || slices.Contains(c, from[i]) {
				target, live = t, c
			}
		}
		switch {
		case slices.Contains(live, from[i]):
			if err := d.blockCommit(ctx, l, dom, target, into[i], from[i]); err != nil {
				return err
			}
		case live != nil: // into[i] is in the guest's chain, from[i] no longer
		default:
			if err := qemuImg(ctx, "commit", "-q", "-d", "-b", into[i], from[i]); err != nil {
				return err
			}
		}
		for _, c := range children[i] {
			b, err := qcow2Backing(c)
			if err != nil {
				return err
			}
			if b == into[i] {
				continue
			}
			if err := qemuImg(ctx, "rebase", "-q", "-u", "-f", "qcow2", "-b", into[i], "-F", "qcow2", c); err != nil {
				return err
			}
		}
	}
	return nil
}

// blockCommit commits top into base on a running guest's disk and waits
// for the job to end; it checks that top left the guest's chain.
func (d *Driver) blockCommit(ctx context.Context, l *golibvirt.Libvirt, dom golibvirt.Domain, disk, base, top string) error {
	if err := l.DomainBlockCommit(dom, disk, golibvirt.OptString{base}, golibvirt.OptString{top}, 0, 0); err != nil {
		if strings.Contains(err.Error(), "is locked") {
			return fmt.Errorf("block commit of %s %s into %s: %w (%v)", dom.Name, disk, base, hypervisor.ErrDiskLocked, err)
		}
		return wrap("block commit of "+dom.Name+" "+disk, err)
	}
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for {
		found, _, _, cur, end, err := l.DomainGetBlockJobInfo(dom, disk, 0)
		if err != nil {
			return wrap("block job of "+dom.Name+" "+disk, err)
		}
		if found == 0 {
			break
		}
		d.log.Debug("block commit", "vm", dom.Name, "disk", disk, "done", cur, "of", end)
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-tick.C:
		}
	}
	chains, err := d.liveChains(l, dom)
	if err != nil {
		return err
	}
	if slices.Contains(chains[disk], top) {
		return fmt.Errorf("block commit of %s %s ended and %s is still in its chain (see libvirtd's log)", dom.Name, disk, top)
	}
	return nil
}

func qemuImg(ctx context.Context, args ...string) error {
	out, err := exec.CommandContext(ctx, "qemu-img", args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("qemu-img %s: %v: %s", strings.Join(args, " "), err, bytes.TrimSpace(out))
	}
	return nil
}

// qcow2Backing reads the backing file name in a qcow2 image's header.
func qcow2Backing(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	var h [20]byte
	if _, err := io.ReadFull(f, h[:]); err != nil {
		return "", fmt.Errorf("%s: qcow2 header: %w", path, err)
	}
	if string(h[:4]) != "QFI\xfb" {
		return "", fmt.Errorf("%s is not a qcow2 image", path)
	}
	off, size := binary.BigEndian.Uint64(h[8:16]), binary.BigEndian.Uint32(h[16:20])
	if off == 0 {
		return "", nil
	}
	if size > 4096 {
		return "", fmt.Errorf("%s: backing file name of %d bytes", path, size)
	}
	name := make([]byte, size)
	if _, err := f.ReadAt(name, int64(off)); err != nil {
		return "", fmt.Errorf("%s: backing file name: %w", path, err)
	}
	return string(name), nil
}

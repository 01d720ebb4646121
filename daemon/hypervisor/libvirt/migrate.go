package libvirt

import (
	"context"
	"time"

	golibvirt "github.com/digitalocean/go-libvirt"
)

// Migrate live-migrates a running domain to the libvirtd at destURI, peer to
// peer: this libvirtd talks to the target's, and QEMU streams memory to
// dataURI (tcp://ADDR). Disks stay where they are (shared storage); the
// definition moves with the guest, and its run metadata (start time)
// travels in the live XML. progress, if set, is called about twice a second
// with the bytes processed and the total; cancelling ctx aborts the job and
// leaves the guest running here.
func (d *Driver) Migrate(ctx context.Context, name, destURI, dataURI string, progress func(done, total uint64)) error {
	l, dom, err := d.lookup(name)
	if err != nil {
		return err
	}
	params := []golibvirt.TypedParam{{Field: golibvirt.MigrateParamURI, Value: *golibvirt.NewTypedParamValueString(dataURI)}}
	flags := golibvirt.MigrateLive | golibvirt.MigratePeer2peer | golibvirt.MigratePersistDest |
		golibvirt.MigrateUndefineSource | golibvirt.MigrateAbortOnError | golibvirt.MigrateAutoConverge
	if d.cfg.SharedStorage {
		flags |= golibvirt.MigrateUnsafe
	}
	done := make(chan error, 1)
	go func() {
		_, err := l.DomainMigratePerform3Params(dom, golibvirt.OptString{destURI}, params, nil, flags)
		done <- err
	}()
	tick := time.NewTicker(500 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case err := <-done:
			return wrap("migrate "+name+" to "+destURI, err)
		case <-ctx.Done():
			l.DomainAbortJob(dom)
			<-done
			return ctx.Err()
		case <-tick.C:
			if progress == nil {
				continue
			}
			_, _, _, total, processed, _, _, _, _, _, _, _, err := l.DomainGetJobInfo(dom)
			if err == nil && total > 0 {
				progress(processed, total)
			}
		}
	}
}

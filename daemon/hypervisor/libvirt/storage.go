package libvirt

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"

	golibvirt "github.com/digitalocean/go-libvirt"

	"github.com/corralhq/corral/daemon/hypervisor"
)

// ensurePool defines, builds and starts the directory pool if needed.
func (d *Driver) ensurePool(l *golibvirt.Libvirt) error {
	if err := os.MkdirAll(d.cfg.PoolDir, 0o755); err != nil {
		return err
	}
	pool, err := l.StoragePoolLookupByName(d.cfg.PoolName)
	if isCode(err, golibvirt.ErrNoStoragePool) {
		x, xerr := poolXML(d.cfg.PoolName, d.cfg.PoolDir)
		if xerr != nil {
			return xerr
		}
		if pool, err = l.StoragePoolDefineXML(x, 0); err != nil {
			return fmt.Errorf("define pool %s: %w", d.cfg.PoolName, err)
		}
		if err := l.StoragePoolSetAutostart(pool, 1); err != nil {
			return err
		}
		d.log.Info("storage pool defined", "pool", d.cfg.PoolName, "dir", d.cfg.PoolDir)
	} else if err != nil {
		return err
	}
	state, _, _, _, err := l.StoragePoolGetInfo(pool)
	if err != nil {
		return err
	}
	if state != uint8(golibvirt.StoragePoolRunning) {
		if err := l.StoragePoolCreate(pool, 0); err != nil {
			return fmt.Errorf("start pool %s: %w", d.cfg.PoolName, err)
		}
	}
	return nil
}

// VolumePath is the path of a volume in the pool.
func (d *Driver) VolumePath(name string) string { return filepath.Join(d.cfg.PoolDir, name) }

// PoolDir is the storage pool directory.
func (d *Driver) PoolDir() string { return d.cfg.PoolDir }

// pool looks the pool up. Callers hold volMu: libvirt refuses to refresh a
// pool while it creates a volume in it ("asynchronous jobs running").
func (d *Driver) pool() (*golibvirt.Libvirt, golibvirt.StoragePool, error) {
	l, err := d.c()
	if err != nil {
		return nil, golibvirt.StoragePool{}, err
	}
	p, err := l.StoragePoolLookupByName(d.cfg.PoolName)
	return l, p, wrap("storage pool", err)
}

// volume looks a volume up, rescanning the pool directory once if libvirt
// does not know it yet (another host created it on the shared directory).
func (d *Driver) volume(l *golibvirt.Libvirt, p golibvirt.StoragePool, name string) (golibvirt.StorageVol, error) {
	v, err := l.StorageVolLookupByName(p, name)
	if isCode(err, golibvirt.ErrNoStorageVol) {
		if err := l.StoragePoolRefresh(p, 0); err != nil {
			return v, wrap("refresh storage pool", err)
		}
		v, err = l.StorageVolLookupByName(p, name)
	}
	return v, wrap("volume "+name, err)
}

// Refresh makes libvirt rescan the pool directory.
func (d *Driver) Refresh(ctx context.Context) error {
	d.volMu.Lock()
	defer d.volMu.Unlock()
	l, p, err := d.pool()
	if err != nil {
		return err
	}
	return wrap("refresh storage pool", l.StoragePoolRefresh(p, 0))
}

// EnsureVolume creates a qcow2 volume unless it exists: an overlay on
// v.Backing or a blank disk. It returns the volume's path. An existing
// volume is kept as it is (it holds the guest's data; after recovery on
// another host it is the same file).
func (d *Driver) EnsureVolume(ctx context.Context, v hypervisor.Volume) (string, error) {
	path := d.VolumePath(v.Name)
	if _, err := os.Stat(path); err == nil {
		return path, nil
	}
	d.volMu.Lock()
	defer d.volMu.Unlock()
	l, p, err := d.pool()
	if err != nil {
		return "", err
	}
	size := uint64(v.SizeMiB) << 20
	backing := ""
	if v.Backing != "" {
		backing = d.VolumePath(v.Backing)
		bv, err := d.volume(l, p, v.Backing)
		if err != nil {
			return "", err
		}
		_, capacity, _, err := l.StorageVolGetInfo(bv)
		if err != nil {
			return "", wrap("base volume "+v.Backing, err)
		}
		size = max(size, capacity)
	}
	x, err := volumeXML(v.Name, size, backing, v.BackingFormat)
	if err != nil {
		return "", err
	}
	if _, err := l.StorageVolCreateXML(p, x, 0); err != nil {
		return "", wrap("create volume "+v.Name, err)
	}
	return path, nil
}

// EnsureSeed writes a cloud-init NoCloud seed (ISO 9660, volume label
// cidata, with user-data and meta-data) into the pool unless it exists,
// readable by root only.
func (d *Driver) EnsureSeed(ctx context.Context, name, userData, metaData string) (string, error) {
	path := d.VolumePath(name)
	if _, err := os.Stat(path); err == nil {
		return path, nil
	}
	mkiso, err := exec.LookPath("genisoimage")
	if err != nil {
		return "", fmt.Errorf("cloud-init seed needs genisoimage (Debian package genisoimage): %w", err)
	}
	dir, err := os.MkdirTemp("", "corral-seed-")
	if err != nil {
		return "", err
	}
	defer os.RemoveAll(dir)
	for f, body := range map[string]string{"user-data": userData, "meta-data": metaData} {
		if err := os.WriteFile(filepath.Join(dir, f), []byte(body), 0o600); err != nil {
			return "", err
		}
	}
	tmp := path + ".tmp"
	out, err := exec.CommandContext(ctx, mkiso, "-quiet", "-output", tmp, "-volid", "cidata", "-joliet", "-rock",
		filepath.Join(dir, "user-data"), filepath.Join(dir, "meta-data")).CombinedOutput()
	if err != nil {
		os.Remove(tmp)
		return "", fmt.Errorf("genisoimage: %v: %s", err, out)
	}
	// User data may hold secrets: root only; libvirt hands the file to
	// QEMU's user when the guest starts (dynamic ownership).
	if err := os.Chmod(tmp, 0o600); err != nil {
		os.Remove(tmp)
		return "", err
	}
	if err := os.Rename(tmp, path); err != nil {
		return "", err
	}
	return path, nil
}

// DeleteVolume removes a volume from the pool; a missing one is fine.
func (d *Driver) DeleteVolume(ctx context.Context, name string) error {
	if _, err := os.Stat(d.VolumePath(name)); os.IsNotExist(err) {
		return nil
	}
	d.volMu.Lock()
	defer d.volMu.Unlock()
	l, p, err := d.pool()
	if err != nil {
		return err
	}
	v, err := l.StorageVolLookupByName(p, name)
	if isCode(err, golibvirt.ErrNoStorageVol) {
		// Not known to this libvirtd (made by another host): the file is all.
		if err := os.Remove(d.VolumePath(name)); err != nil && !os.IsNotExist(err) {
			return err
		}
		return nil
	}
	if err != nil {
		return wrap("volume "+name, err)
	}
	return wrap("delete volume "+name, l.StorageVolDelete(v, 0))
}

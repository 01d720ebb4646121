package libvirt

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"

	golibvirt "github.com/digitalocean/go-libvirt"
	"libvirt.org/go/libvirtxml"

	"github.com/corralhq/corral/daemon/hypervisor"
)

// ensurePool makes the pool named PoolName a running directory pool at
// PoolDir: it defines it if missing, and moves it when it points elsewhere
// (storage_pool changed) unless a domain still uses a disk in its old
// directory. Callers hold volMu.
func (d *Driver) ensurePool(l *golibvirt.Libvirt) error {
	if err := os.MkdirAll(d.cfg.PoolDir, 0o755); err != nil {
		return err
	}
	pool, err := l.StoragePoolLookupByName(d.cfg.PoolName)
	missing := isCode(err, golibvirt.ErrNoStoragePool)
	if err == nil {
		if missing, err = d.movePool(l, pool); err != nil {
			return err
		}
	}
	if missing {
		if pool, err = d.definePool(l); err != nil {
			return err
		}
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

func (d *Driver) definePool(l *golibvirt.Libvirt) (golibvirt.StoragePool, error) {
	x, err := poolXML(d.cfg.PoolName, d.cfg.PoolDir)
	if err != nil {
		return golibvirt.StoragePool{}, err
	}
	pool, err := l.StoragePoolDefineXML(x, 0)
	if err != nil {
		return pool, fmt.Errorf("define pool %s: %w", d.cfg.PoolName, err)
	}
	if err := l.StoragePoolSetAutostart(pool, 1); err != nil {
		return pool, err
	}
	d.log.Info("storage pool defined", "pool", d.cfg.PoolName, "dir", d.cfg.PoolDir)
	return pool, nil
}

// movePool checks where an existing pool points. At PoolDir it is kept.
// Elsewhere, it is undefined (and movePool reports it gone, for the caller
// to define anew) when no domain uses a disk under its old directory;
// otherwise that is an error naming the domains: their disks would not be
// where storage_pool says, and moving disks is the operator's decision.
func (d *Driver) movePool(l *golibvirt.Libvirt, pool golibvirt.StoragePool) (gone bool, err error) {
	x, err := l.StoragePoolGetXMLDesc(pool, 0)
	if err != nil {
		return false, err
	}
	var def libvirtxml.StoragePool
	if err := def.Unmarshal(x); err != nil {
		return false, fmt.Errorf("pool %s: %w", d.cfg.PoolName, err)
	}
	old := ""
	if def.Target != nil {
		old = filepath.Clean(def.Target.Path)
	}
	if def.Type == "dir" && old == filepath.Clean(d.cfg.PoolDir) {
		return false, nil
	}
	users, err := domainsUsing(l, old)
	if err != nil {
		return false, err
	}
	if len(users) > 0 {
		return false, fmt.Errorf("libvirt pool %q points at %s (%s), not at storage_pool %s, and domains %s use disks there: "+
			"move their disks to %s (or set storage_pool back), then corrald moves the pool",
			d.cfg.PoolName, old, def.Type, d.cfg.PoolDir, someOf(users, 5), d.cfg.PoolDir)
	}
	if state, _, _, _, err := l.StoragePoolGetInfo(pool); err == nil && state == uint8(golibvirt.StoragePoolRunning) {
		if err := l.StoragePoolDestroy(pool); err != nil {
			return false, fmt.Errorf("stop pool %s at %s: %w", d.cfg.PoolName, old, err)
		}
	}
	if err := l.StoragePoolUndefine(pool); err != nil {
		return false, fmt.Errorf("undefine pool %s at %s: %w", d.cfg.PoolName, old, err)
	}
	d.log.Warn("storage pool pointed elsewhere; moving it to storage_pool (its old directory is left as it is)",
		"pool", d.cfg.PoolName, "old", old, "dir", d.cfg.PoolDir)
	return true, nil
}

// someOf lists at most n names, and says how many more there are.
func someOf(names []string, n int) string {
	if len(names) <= n {
		return strings.Join(names, ", ")
	}
	return fmt.Sprintf("%s and %d more", strings.Join(names[:n], ", "), len(names)-n)
}

// domainsUsing names the domains (corral's or not, running or only
// defined) with a disk whose file lies under dir.
func domainsUsing(l *golibvirt.Libvirt, dir string) ([]string, error) {
	if dir == "" || dir == "/" || dir == "." {
		return nil, nil
	}
	doms, _, err := l.ConnectListAllDomains(1, 0)
	if err != nil {
		return nil, err
	}
	var out []string
	for _, dom := range doms {
		x, err := l.DomainGetXMLDesc(dom, 0)
		if err != nil {
			continue // gone meanwhile
		}
		var def libvirtxml.Domain
		if def.Unmarshal(x) != nil || def.Devices == nil {
			continue
		}
		for _, disk := range def.Devices.Disks {
			if disk.Source == nil || disk.Source.File == nil {
				continue
			}
			if rel, err := filepath.Rel(dir, disk.Source.File.File); err == nil && rel != ".." && !strings.HasPrefix(rel, "../") {
				out = append(out, dom.Name)
				break
			}
		}
	}
	sort.Strings(out)
	return out, nil
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

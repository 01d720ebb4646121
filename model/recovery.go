package model

import (
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Recovery is the state of a cluster rebuilt from a backup of its state
// (corrald recover) until every host has told what it runs
// (raftlog.FeatureRecovery). The backup may be older than the guests:
// a VM may run elsewhere than it says, on a newer disk layer, or not be
// in it at all. So until a host has sent its inventory it does nothing,
// and no host starts, stops or removes anything until every host has
// (or the operator ends the wait): a guest can then run only where it
// already runs.
type Recovery struct {
	// At is when corrald recover ran, By on which host.
	At time.Time `json:"at"`
	By string    `json:"by"`
	// BackupAt is when the backup was taken, BackupIndex the state's
	// applied index then.
	BackupAt    time.Time `json:"backup_at"`
	BackupIndex uint64    `json:"backup_index"`
	// Waiting are the hosts whose inventory has not arrived, sorted.
	Waiting []string `json:"waiting,omitempty"`
	// Adopted counts the running guests adopted; Moved those found on
	// another host than the backup said; Rechained those whose disk chain
	// was newer than the backup's.
	Adopted   int `json:"adopted,omitempty"`
	Moved     int `json:"moved,omitempty"`
	Rechained int `json:"rechained,omitempty"`
	// Unknown are running guests the state does not know (created after
	// the backup, or a second copy): left running until the recovery ends.
	Unknown []ForeignGuest `json:"unknown,omitempty"`
	// HAWasArmed: HA was armed in the backup. Recovery disarms it (the
	// leases hosts held are unknown) and its end arms it again.
	HAWasArmed bool `json:"ha_was_armed,omitempty"`
}

// ForeignGuest is a corral guest found running that the recovered state
// does not place there.
type ForeignGuest struct {
	Host string `json:"host"`
	Name string `json:"name"`
	VMID string `json:"vm_id"`
	Why  string `json:"why"`
}

// MaxUnknownGuests bounds what a recovery records of guests it does not
// know (more are logged, not recorded).
const MaxUnknownGuests = 1000

// Waits reports whether host has yet to send its inventory.
func (r *Recovery) Waits(host string) bool {
	return r != nil && slices.Contains(r.Waiting, host)
}

// Keeps reports whether a guest of that ID on host must be left alone
// although the state does not place it there.
func (r *Recovery) Keeps(host, vmID string) bool {
	if r == nil {
		return false
	}
	return slices.ContainsFunc(r.Unknown, func(g ForeignGuest) bool { return g.Host == host && g.VMID == vmID })
}

// Clone returns a deep copy of r (nil for nil).
func (r *Recovery) Clone() *Recovery {
	if r == nil {
		return nil
	}
	c := *r
	c.Waiting = slices.Clone(r.Waiting)
	c.Unknown = slices.Clone(r.Unknown)
	return &c
}

// LayerOf returns the layer ID of disk 0 of v that file (a path or a
// volume name) holds: 0 for its own volume.
func (v VM) LayerOf(file string) (uint64, bool) {
	base := file[strings.LastIndexByte(file, '/')+1:]
	if base == v.DiskVolume(0) {
		return 0, true
	}
	prefix := fmt.Sprintf("vm-%s-%s-disk0-%s", v.Name, shortID(v.ID), snapshotLayerPrefix)
	rest, ok := strings.CutPrefix(base, prefix)
	if !ok {
		return 0, false
	}
	rest, ok = strings.CutSuffix(rest, ".qcow2")
	if !ok {
		return 0, false
	}
	id, err := strconv.ParseUint(rest, 10, 64)
	if err != nil || id == 0 || strconv.FormatUint(id, 10) != rest {
		return 0, false
	}
	return id, true
}

// AdoptChain makes v's chain agree with the layers its disks really use,
// layers of disk 0 top first down to 0 (found on the host after a
// recovery from an older backup). The top becomes the active layer; the
// path's layers take the parents the files name; layers and snapshots the
// state knew beside the path are kept (a snapshot may still hold them),
// and nothing is declared dead, since the state cannot know which files
// are left. It reports whether anything changed.
func (v *VM) AdoptChain(layers []uint64) (bool, error) {
	if len(layers) == 0 || layers[len(layers)-1] != 0 || len(layers) > MaxLayerDepth+1 {
		return false, fmt.Errorf("vm %q: disk chain %v does not end on its own volume within %d layers: %w", v.Name, layers, MaxLayerDepth, ErrInvalid)
	}
	for i, id := range layers {
		if slices.Contains(layers[i+1:], id) || i < len(layers)-1 && id == 0 {
			return false, fmt.Errorf("vm %q: disk chain %v repeats a layer: %w", v.Name, layers, ErrInvalid)
		}
	}
	c := v.Chain.Clone()
	if slices.Equal(c.path(c.Active), layers) {
		return false, nil
	}
	onPath := map[uint64]uint64{}
	for i := 0; i+1 < len(layers); i++ {
		onPath[layers[i]] = layers[i+1]
	}
	var kept []Layer
	for _, l := range c.Layers {
		if _, ok := onPath[l.ID]; !ok {
			kept = append(kept, l)
		}
	}
	for i := len(layers) - 2; i >= 0; i-- {
		kept = append(kept, Layer{ID: layers[i], Parent: layers[i+1]})
	}
	c.Layers = kept
	c.Active = layers[0]
	c.Seq = max(c.Seq, slices.Max(layers))
	c.Dead = slices.DeleteFunc(c.Dead, func(id uint64) bool { _, ok := onPath[id]; return ok })
	// A snapshot being taken when the backup was made never finished as
	// the state knew it.
	c.Snapshots = slices.DeleteFunc(c.Snapshots, func(s Snapshot) bool { return s.State == SnapshotCreating })
	// A resume from memory was for the layer the state knew: the guest
	// has run (and written) since.
	c.Resume = nil
	v.Chain = c
	return true, nil
}

// path lists id and the layers under it, down to 0.
func (c Chain) path(id uint64) []uint64 {
	out := []uint64{id}
	for id != 0 && len(out) <= MaxLayerDepth+1 {
		p, ok := c.Parent(id)
		if !ok {
			break
		}
		out = append(out, p)
		id = p
	}
	return out
}

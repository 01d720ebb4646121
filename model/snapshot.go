package model

import (
	"fmt"
	"slices"
	"time"
)

// A VM's disks are chains of qcow2 layers (raftlog.FeatureSnapshots).
// Layer 0 of disk i is the VM's own volume, DiskVolume(i) (an overlay on
// its image, or a blank disk); every later layer is an overlay on its
// parent layer, LayerVolume(i, id). All disks of a VM move through layers
// together, so one layer ID names a layer of every disk.
//
// A snapshot freezes the active layer: it becomes read-only, the snapshot
// names it, and a new overlay on it becomes the active layer, where the
// guest writes from then on. Reverting adds a new overlay on the
// snapshot's layer and makes it active. Layers that neither the active
// layer nor a snapshot reaches any more are dead: the VM's host deletes
// their files and the state forgets them.
//
// The chain lives in cluster state, so a VM started anywhere (restart,
// recovery, live migration) uses the same active layer. libvirt 9.0 cannot
// revert an external snapshot, and does not need to: corral never asks it
// to remember one (it defines the domain on the active layer each time).
//
// A memory snapshot (raftlog.FeatureMemorySnapshots) also holds the
// guest's RAM and device state, saved with its disks at one paused
// instant into a file of the pool (MemoryVolume). Reverting to one asks
// the VM's host to resume the guest from that file on the new layer
// (Chain.Resume) rather than boot it, which is safe only while no guest
// has written to that layer: the host checks, and boots cold when one has.

// Snapshot states.
const (
	// SnapshotCreating: recorded, and the VM's host has not yet frozen the
	// running guest's disks.
	SnapshotCreating = "creating"
	SnapshotReady    = "ready"
)

// How consistent a snapshot's disks are.
const (
	// ConsistencyFrozen: the guest agent froze the guest's file systems.
	ConsistencyFrozen = "frozen"
	// ConsistencyCrash: as after a power cut (no agent answered).
	ConsistencyCrash = "crash"
	// ConsistencyStopped: the guest was not running.
	ConsistencyStopped = "stopped"
	// ConsistencyMemory: the guest's RAM was saved with its disks, the
	// guest paused in between (a memory snapshot).
	ConsistencyMemory = "memory"
)

// Limits of a VM's disk chain.
const (
	MaxSnapshots = 64
	// MaxLayerDepth bounds how many layers a disk's active layer sits on.
	MaxLayerDepth       = 96
	MaxSnapshotMessage  = 256
	maxSnapshotNameLen  = maxNameLen
	snapshotLayerPrefix = "L"
	memoryVolumeInfix   = "mem"
)

// Layer is a disk layer other than layer 0, and the layer it overlays.
type Layer struct {
	ID     uint64 `json:"id"`
	Parent uint64 `json:"parent"`
}

// Snapshot is a named, frozen layer of a VM's disks.
type Snapshot struct {
	Name      string    `json:"name"`
	CreatedAt time.Time `json:"created_at"`
	// Layer holds the snapshot's content.
	Layer uint64 `json:"layer"`
	State string `json:"state"`
	// Consistency is ConsistencyFrozen, ConsistencyCrash,
	// ConsistencyStopped or (a memory snapshot) ConsistencyMemory once
	// ready.
	Consistency string `json:"consistency,omitempty"`
	// Message says more (why the guest was not frozen).
	Message string `json:"message,omitempty"`
	// Memory, when not 0, makes this a memory snapshot: the guest's RAM is
	// in MemoryVolume(Memory). It is the ID of the layer the snapshot made
	// active, so never reused: a merge may move Layer, and a failed
	// snapshot leaves its layer to be frozen again by the next.
	Memory uint64 `json:"memory,omitempty"`
}

// ResumeFrom asks the VM's host to start the guest on layer Layer by
// restoring the memory image of snapshot Snapshot (MemoryVolume(Memory))
// instead of booting it, once: set by a revert to a memory snapshot, and
// gone once the guest has run on Layer or the chain moved on.
type ResumeFrom struct {
	Layer    uint64 `json:"layer"`
	Snapshot string `json:"snapshot"`
	Memory   uint64 `json:"memory"`
}

// Chain is the disk chain of a VM.
type Chain struct {
	// Active is the layer the guest writes to.
	Active uint64 `json:"active,omitempty"`
	// Layers are the live layers but 0, oldest first.
	Layers []Layer `json:"layers,omitempty"`
	// Seq is the last layer ID handed out; IDs are never reused, so a
	// file left by a dead layer is never taken for a new one.
	Seq       uint64     `json:"seq,omitempty"`
	Snapshots []Snapshot `json:"snapshots,omitempty"`
	// Dead are layers nothing uses any more, whose files the VM's host
	// deletes.
	Dead []uint64 `json:"dead,omitempty"`
	// DeadMemory are the memory images (Snapshot.Memory) of snapshots gone
	// (removed, or failed), whose files the VM's host deletes.
	DeadMemory []uint64 `json:"dead_memory,omitempty"`
	// Resume: the guest is to be resumed from a memory snapshot.
	Resume *ResumeFrom `json:"resume,omitempty"`
}

// Clone returns a deep copy of c.
func (c Chain) Clone() Chain {
	c.Layers = slices.Clone(c.Layers)
	c.Snapshots = slices.Clone(c.Snapshots)
	c.Dead = slices.Clone(c.Dead)
	c.DeadMemory = slices.Clone(c.DeadMemory)
	if c.Resume != nil {
		r := *c.Resume
		c.Resume = &r
	}
	return c
}

// LayerVolume names the volume of layer id of disk i of the VM.
func (v VM) LayerVolume(disk int, id uint64) string {
	if id == 0 {
		return v.DiskVolume(disk)
	}
	return fmt.Sprintf("vm-%s-%s-disk%d-%s%d.qcow2", v.Name, shortID(v.ID), disk, snapshotLayerPrefix, id)
}

// MemoryVolume names the volume of memory image id (Snapshot.Memory) of
// the VM: the file in the pool that holds a memory snapshot's RAM, which
// any host can resume the guest from.
func (v VM) MemoryVolume(id uint64) string {
	return fmt.Sprintf("vm-%s-%s-%s%d.sav", v.Name, shortID(v.ID), memoryVolumeInfix, id)
}

// MemoryImages lists the memory images that may have files: the
// snapshots' and the dead ones.
func (c Chain) MemoryImages() []uint64 {
	var out []uint64
	for _, s := range c.Snapshots {
		if s.Memory != 0 {
			out = append(out, s.Memory)
		}
	}
	return append(out, c.DeadMemory...)
}

// Parent returns the layer id overlays; ok is false for layer 0 and for an
// ID that is not a live layer.
func (c Chain) Parent(id uint64) (parent uint64, ok bool) {
	for _, l := range c.Layers {
		if l.ID == id {
			return l.Parent, true
		}
	}
	return 0, false
}

// Depth is how many layers lie under id (0 for layer 0).
func (c Chain) Depth(id uint64) int {
	n := 0
	for id != 0 {
		p, ok := c.Parent(id)
		if !ok {
			break
		}
		id, n = p, n+1
	}
	return n
}

// Snapshot returns the snapshot called name.
func (c Chain) Snapshot(name string) (Snapshot, bool) {
	for _, s := range c.Snapshots {
		if s.Name == name {
			return s, true
		}
	}
	return Snapshot{}, false
}

// Creating returns the snapshot being taken, if any.
func (c Chain) Creating() (Snapshot, bool) {
	for _, s := range c.Snapshots {
		if s.State == SnapshotCreating {
			return s, true
		}
	}
	return Snapshot{}, false
}

// AllLayers lists every layer that may have files: 0, the live ones and
// the dead ones.
func (c Chain) AllLayers() []uint64 {
	return append(append([]uint64{0}, c.ids()...), c.Dead...)
}

// prune moves the layers that neither the active layer nor a snapshot
// reaches to Dead.
func (c *Chain) prune() {
	kept := map[uint64]bool{}
	reach := func(id uint64) {
		for !kept[id] {
			kept[id] = true
			p, ok := c.Parent(id)
			if !ok {
				return
			}
			id = p
		}
	}
	reach(c.Active)
	for _, s := range c.Snapshots {
		reach(s.Layer)
	}
	var live []Layer
	for _, l := range c.Layers {
		if kept[l.ID] {
			live = append(live, l)
		} else {
			c.Dead = append(c.Dead, l.ID)
		}
	}
	c.Layers = live
}

// newLayer adds a layer on parent and makes it active.
func (c *Chain) newLayer(parent uint64) {
	c.Seq++
	c.Layers = append(c.Layers, Layer{ID: c.Seq, Parent: parent})
	c.Active = c.Seq
}

// SnapshotOffline reports whether a snapshot or a revert of v needs no
// running guest's help: the VM is stopped and its host says so (or it is
// on no host).
func (v VM) SnapshotOffline() bool {
	return v.Desired == PowerStopped && !v.Deleting &&
		(v.Host == "" || v.Actual.State == StateStopped && v.Actual.Host == v.Host && v.Actual.Generation == v.Generation)
}

// snapshotLive reports whether the VM's guest runs where it is placed, as
// its host last said.
func (v VM) snapshotLive() bool {
	return v.Desired == PowerRunning && !v.Deleting && v.Migration == nil && v.Failed == "" &&
		v.Actual.State == StateRunning && v.Actual.Host == v.Host && v.Actual.Generation == v.Generation
}

// chainBusy refuses a change of the chain while a snapshot is being taken
// or the VM is being deleted.
func (v VM) chainBusy() error {
	if v.Deleting {
		return fmt.Errorf("vm %q is being deleted: %w", v.Name, ErrConflict)
	}
	if s, ok := v.Chain.Creating(); ok {
		return fmt.Errorf("vm %q: snapshot %q is being taken; try again when it is ready: %w", v.Name, s.Name, ErrConflict)
	}
	return nil
}

// TakeSnapshot records snapshot name of v taken at. A stopped VM's
// snapshot is ready at once; a running guest's is "creating" until its
// host has moved the guest's disks onto the new layer (FinishSnapshot).
// A VM starting, stopping or migrating is refused: try again.
func (v *VM) TakeSnapshot(name string, at time.Time) error {
	return v.takeSnapshot(name, at, false)
}

// TakeMemorySnapshot is TakeSnapshot with the guest's RAM
// (Snapshot.Memory): of a running guest only, "creating" until its host
// has saved the RAM and moved the disks.
func (v *VM) TakeMemorySnapshot(name string, at time.Time) error {
	return v.takeSnapshot(name, at, true)
}

func (v *VM) takeSnapshot(name string, at time.Time, memory bool) error {
	if err := ValidateName("snapshot", name); err != nil {
		return err
	}
	if err := v.chainBusy(); err != nil {
		return err
	}
	if len(v.Spec.Disks) == 0 {
		return fmt.Errorf("vm %q has no disks to snapshot: %w", v.Name, ErrInvalid)
	}
	c := &v.Chain
	if _, ok := c.Snapshot(name); ok {
		return fmt.Errorf("vm %q already has a snapshot %q: %w", v.Name, name, ErrConflict)
	}
	if len(c.Snapshots) >= MaxSnapshots {
		return fmt.Errorf("vm %q has %d snapshots, at most %d: remove some first: %w", v.Name, len(c.Snapshots), MaxSnapshots, ErrConflict)
	}
	if d := c.Depth(c.Active); d+1 > MaxLayerDepth {
		return fmt.Errorf("vm %q: its disks are %d layers deep, at most %d: remove older snapshots so that their layers are merged: %w",
			v.Name, d, MaxLayerDepth, ErrConflict)
	}
	s := Snapshot{Name: name, CreatedAt: at.UTC(), Layer: c.Active}
	switch {
	case memory && v.Desired == PowerStopped:
		return fmt.Errorf("vm %q is stopped: a memory snapshot needs a running guest: %w", v.Name, ErrInvalid)
	case v.SnapshotOffline():
		s.State, s.Consistency = SnapshotReady, ConsistencyStopped
	case v.snapshotLive():
		s.State = SnapshotCreating
	default:
		return fmt.Errorf("vm %q is %s: a snapshot is taken of a running or a stopped VM; try again: %w", v.Name, v.Actual.State, ErrConflict)
	}
	c.newLayer(s.Layer)
	if memory {
		s.Memory = c.Active
	}
	c.Snapshots = append(c.Snapshots, s)
	c.Resume = nil // the guest runs, or is stopped on the layer frozen now
	return nil
}

// FinishSnapshot records how the host took snapshot name: with failure
// set, the snapshot is dropped and the guest's disks stay on the layer
// they were on.
func (v *VM) FinishSnapshot(name, consistency, message, failure string) error {
	c := &v.Chain
	i := slices.IndexFunc(c.Snapshots, func(s Snapshot) bool { return s.Name == name })
	if i < 0 || c.Snapshots[i].State != SnapshotCreating {
		return fmt.Errorf("vm %q: no snapshot %q being taken: %w", v.Name, name, ErrConflict)
	}
	if failure != "" {
		c.Active = c.Snapshots[i].Layer
		c.dropMemory(c.Snapshots[i])
		c.Snapshots = slices.Delete(c.Snapshots, i, i+1)
		c.prune()
		return nil
	}
	switch memory := c.Snapshots[i].Memory != 0; consistency {
	case ConsistencyFrozen, ConsistencyCrash, ConsistencyStopped:
		if memory {
			return fmt.Errorf("vm %q: memory snapshot %q taken %s: %w", v.Name, name, consistency, ErrInvalid)
		}
	case ConsistencyMemory:
		if !memory {
			return fmt.Errorf("vm %q: snapshot %q of the disks only taken with memory: %w", v.Name, name, ErrInvalid)
		}
	default:
		return fmt.Errorf("vm %q: snapshot consistency %q: %w", v.Name, consistency, ErrInvalid)
	}
	s := &c.Snapshots[i]
	s.State, s.Consistency, s.Message = SnapshotReady, consistency, Clip(message, MaxSnapshotMessage)
	return nil
}

// RevertSnapshot makes a new layer on snapshot name's layer the active
// one. The guest's writes since the snapshot are lost (their layers die
// unless a snapshot holds them); a running guest is powered off and
// started on the new layer by its host. Reverting to a memory snapshot
// also asks for the guest to be resumed from its memory (Chain.Resume),
// so the VM is to run.
func (v *VM) RevertSnapshot(name string) error {
	if err := v.chainBusy(); err != nil {
		return err
	}
	if v.Migration != nil {
		return fmt.Errorf("vm %q is being migrated to %s: %w", v.Name, v.Migration.Target, ErrConflict)
	}
	s, ok := v.Chain.Snapshot(name)
	if !ok {
		return fmt.Errorf("vm %q has no snapshot %q: %w", v.Name, name, ErrNotFound)
	}
	v.Chain.newLayer(s.Layer)
	v.Chain.prune()
	v.Chain.Resume = nil
	if s.Memory != 0 {
		v.Chain.Resume = &ResumeFrom{Layer: v.Chain.Active, Snapshot: s.Name, Memory: s.Memory}
		v.Desired = PowerRunning
	}
	return nil
}

// dropMemory hands snapshot s's memory image, if any, to the host to
// delete; a resume from it is off.
func (c *Chain) dropMemory(s Snapshot) {
	if s.Memory == 0 {
		return
	}
	c.DeadMemory = append(c.DeadMemory, s.Memory)
	if c.Resume != nil && c.Resume.Memory == s.Memory {
		c.Resume = nil
	}
}

// Resumed records that the guest ran on layer: a resume onto it is done
// (or was passed over: the host booted it cold).
func (v *VM) Resumed(layer uint64) {
	if r := v.Chain.Resume; r != nil && r.Layer == layer {
		v.Chain.Resume = nil
	}
}

// DeleteSnapshot forgets snapshot name; its layer dies unless the guest's
// disks or another snapshot sit on it.
func (v *VM) DeleteSnapshot(name string) error {
	if err := v.chainBusy(); err != nil {
		return err
	}
	c := &v.Chain
	i := slices.IndexFunc(c.Snapshots, func(s Snapshot) bool { return s.Name == name })
	if i < 0 {
		return fmt.Errorf("vm %q has no snapshot %q: %w", v.Name, name, ErrNotFound)
	}
	if v.Backup != nil && v.Backup.Snapshot() == name {
		return fmt.Errorf("vm %q: snapshot %q is what backup %s reads: %w", v.Name, name, v.Backup.ID, ErrConflict)
	}
	c.dropMemory(c.Snapshots[i])
	c.Snapshots = slices.Delete(c.Snapshots, i, i+1)
	c.prune()
	return nil
}

// ForgetLayers drops dead layers whose files are gone.
func (v *VM) ForgetLayers(ids []uint64) {
	v.Chain.Dead = slices.DeleteFunc(v.Chain.Dead, func(id uint64) bool { return slices.Contains(ids, id) })
	if len(v.Chain.Dead) == 0 {
		v.Chain.Dead = nil
	}
}

// ForgetMemory drops dead memory images whose files are gone.
func (v *VM) ForgetMemory(ids []uint64) {
	v.Chain.DeadMemory = slices.DeleteFunc(v.Chain.DeadMemory, func(id uint64) bool { return slices.Contains(ids, id) })
	if len(v.Chain.DeadMemory) == 0 {
		v.Chain.DeadMemory = nil
	}
}

// children lists the live layers on id.
func (c Chain) children(id uint64) []uint64 {
	var out []uint64
	for _, l := range c.Layers {
		if l.Parent == id {
			out = append(out, l.ID)
		}
	}
	return out
}

// named reports whether a snapshot holds layer id.
func (c Chain) named(id uint64) bool {
	return slices.ContainsFunc(c.Snapshots, func(s Snapshot) bool { return s.Layer == id })
}

// Mergeable returns a pair of layers the VM's host may merge to keep the
// chain short: a layer (from) that is not active, committed into its
// parent (into), which no snapshot holds, is not active, and has no other
// child. The parent's content then becomes the child's, and the child's
// snapshots and children move onto it. A layer right under the active one
// that no snapshot holds stays (committing the active layer would move
// the guest's writes), so a chain is at most one layer deeper than its
// snapshots need. ok is false when there is nothing to merge, and while a
// snapshot is being taken.
func (c Chain) Mergeable() (into, from uint64, ok bool) {
	if pairs := c.MergeablePairs(); len(pairs) > 0 {
		return pairs[0][0], pairs[0][1], true
	}
	return 0, 0, false
}

// MergeablePairs lists every (into, from) pair Mergeable may return, in
// the order it prefers them.
func (c Chain) MergeablePairs() [][2]uint64 {
	var out [][2]uint64
	for _, x := range append([]uint64{0}, c.ids()...) {
		if kids := c.children(x); len(kids) == 1 && c.canMerge(x, kids[0]) {
			out = append(out, [2]uint64{x, kids[0]})
		}
	}
	return out
}

// canMerge reports whether layer from may be committed into layer into
// (Mergeable).
func (c Chain) canMerge(into, from uint64) bool {
	if _, busy := c.Creating(); busy {
		return false
	}
	p, ok := c.Parent(from)
	kids := c.children(into)
	return ok && p == into && into != c.Active && from != c.Active && !c.named(into) && len(kids) == 1 && kids[0] == from
}

// ids lists the live layers but 0.
func (c Chain) ids() []uint64 {
	var out []uint64
	for _, l := range c.Layers {
		out = append(out, l.ID)
	}
	return out
}

// MergeLayers records that the VM's host committed layer from into its
// parent into (Mergeable): from dies, and what was on it is on into.
func (v *VM) MergeLayers(into, from uint64) error {
	c := &v.Chain
	if !c.canMerge(into, from) {
		return fmt.Errorf("vm %q: layer %d may not be merged into layer %d now: %w", v.Name, from, into, ErrConflict)
	}
	for i := range c.Snapshots {
		if c.Snapshots[i].Layer == from {
			c.Snapshots[i].Layer = into
		}
	}
	var kept []Layer
	for _, l := range c.Layers {
		switch {
		case l.ID == from:
			continue
		case l.Parent == from:
			l.Parent = into
		}
		kept = append(kept, l)
	}
	c.Layers = kept
	c.Dead = append(c.Dead, from)
	return nil
}

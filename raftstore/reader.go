package raftstore

import (
	"fmt"
	"time"

	"github.com/corralhq/corral/model"
)

// reader is the read side shared by Store and Memory: copies out of the
// local FSM, and change notifications.
type reader struct{ fsm *fsm }

// Watch returns a channel that receives a value (coalesced) after every
// change to the state, and a function to stop watching.
func (r reader) Watch() (<-chan struct{}, func()) { return r.fsm.changes.Subscribe() }

// Renewals returns what this replica knows of lease renewals (Renewals
// entries): since when it has applied every renewal any leader granted,
// on its own monotonic clock (zero when it cannot tell, before
// raftlog.FeatureCommittedLeases), and when it applied each host's
// latest renewal since then. Each time is after the renewal was sent. A
// new leader counts each host's lease from them, once its Barrier has
// applied every entry of the terms before
// (daemon/controller/DESIGN.md, "Leases and fencing").
func (r reader) Renewals() (since time.Time, at map[string]time.Time) { return r.fsm.renewals() }

// Hosts returns all hosts, sorted by name.
func (r reader) Hosts() []model.Host {
	var out []model.Host
	r.fsm.read(func(st *State) { out = st.hostList() })
	return out
}

// Host returns one host or an error wrapping model.ErrNotFound.
func (r reader) Host(name string) (model.Host, error) {
	var (
		h   model.Host
		err error
	)
	r.fsm.read(func(st *State) { h, err = st.host(name) })
	return h, err
}

// VMs returns all VMs, sorted by name.
func (r reader) VMs() []model.VM {
	var out []model.VM
	r.fsm.read(func(st *State) { out = st.vmList() })
	return out
}

// EachVM calls fn with every VM in state, in no order, under the state's
// read lock: fn must not change the VM it is given (a shallow copy: its
// maps and slices are the state's own) nor call back into the store. It
// is the way to look at every VM without copying each (VMs); at 50,000
// VMs the leader's reconcile spent most of its time in those copies
// (test/sim).
func (r reader) EachVM(fn func(*model.VM)) {
	r.fsm.read(func(st *State) {
		for _, v := range st.vms {
			fn(&v)
		}
	})
}

// VM returns one VM or an error wrapping model.ErrNotFound.
func (r reader) VM(name string) (model.VM, error) {
	var (
		v   model.VM
		err error
	)
	r.fsm.read(func(st *State) { v, err = st.vm(name) })
	return v, err
}

// Images returns all images, sorted by name.
func (r reader) Images() []model.Image {
	var out []model.Image
	r.fsm.read(func(st *State) { out = st.imageList() })
	return out
}

// Image returns one image or an error wrapping model.ErrNotFound.
func (r reader) Image(name string) (model.Image, error) {
	var (
		im  model.Image
		err error
	)
	r.fsm.read(func(st *State) { im, err = st.image(name) })
	return im, err
}

// Events returns up to limit events with Seq greater than after (0 and 0:
// everything kept).
func (r reader) Events(after uint64, limit int) []model.Event {
	var out []model.Event
	r.fsm.read(func(st *State) { out = st.eventsAfter(after, limit) })
	return out
}

// Network returns one network or an error wrapping model.ErrNotFound.
func (r reader) Network(name string) (model.Network, error) {
	var (
		n  model.Network
		ok bool
	)
	r.fsm.read(func(st *State) { n, ok = st.networks[name] })
	if !ok {
		return n, fmt.Errorf("network %q: %w", name, model.ErrNotFound)
	}
	return n, nil
}

// Cluster returns the cluster-wide settings.
func (r reader) Cluster() model.Cluster {
	var c model.Cluster
	r.fsm.read(func(st *State) { c = st.cluster })
	return c
}

// Networks returns all networks, sorted by name.
func (r reader) Networks() []model.Network {
	var out []model.Network
	r.fsm.read(func(st *State) {
		for _, k := range model.SortedKeys(st.networks) {
			out = append(out, st.networks[k])
		}
	})
	return out
}

package raftstore

import (
	"fmt"
	"sort"

	"github.com/corralhq/corral/model"
)

// State is the replicated cluster state: the desired state of hosts, VMs and
// networks. Stored values are never modified in place; apply replaces them.
// That lets Snapshot copy the maps shallowly and persist them while Apply
// carries on.
type State struct {
	hosts    map[string]model.Host
	vms      map[string]model.VM
	vmIDs    map[string]string // VM ID -> name
	networks map[string]model.Network
	images   map[string]model.Image
	// events is a ring of the last maxEvents events; eventSeq numbers them.
	events   []model.Event
	eventSeq uint64
	cluster  model.Cluster
}

// maxEvents bounds the event log kept in state.
const maxEvents = 2000

func newState() *State {
	return &State{
		hosts:    map[string]model.Host{},
		vms:      map[string]model.VM{},
		vmIDs:    map[string]string{},
		networks: map[string]model.Network{},
		images:   map[string]model.Image{},
	}
}

// clone copies the maps, not the values (values are immutable once stored).
func (s *State) clone() *State {
	c := &State{
		hosts:    make(map[string]model.Host, len(s.hosts)),
		vms:      make(map[string]model.VM, len(s.vms)),
		vmIDs:    make(map[string]string, len(s.vmIDs)),
		networks: make(map[string]model.Network, len(s.networks)),
		images:   make(map[string]model.Image, len(s.images)),
		events:   append([]model.Event(nil), s.events...),
		eventSeq: s.eventSeq,
		cluster:  s.cluster,
	}
	for k, v := range s.hosts {
		c.hosts[k] = v
	}
	for k, v := range s.vms {
		c.vms[k] = v
	}
	for k, v := range s.vmIDs {
		c.vmIDs[k] = v
	}
	for k, v := range s.networks {
		c.networks[k] = v
	}
	for k, v := range s.images {
		c.images[k] = v
	}
	return c
}

func (s *State) host(name string) (model.Host, error) {
	h, ok := s.hosts[name]
	if !ok {
		return model.Host{}, fmt.Errorf("host %q: %w", name, model.ErrNotFound)
	}
	return h.Clone(), nil
}

func (s *State) hostList() []model.Host {
	out := make([]model.Host, 0, len(s.hosts))
	for _, h := range s.hosts {
		out = append(out, h.Clone())
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

func (s *State) vm(name string) (model.VM, error) {
	v, ok := s.vms[name]
	if !ok {
		return model.VM{}, fmt.Errorf("vm %q: %w", name, model.ErrNotFound)
	}
	return v.Clone(), nil
}

func (s *State) vmList() []model.VM {
	// Sorting the names and not the VMs: a VM is a large struct, and at
	// 50,000 of them moving VMs made up most of the sort (test/sim).
	names := make([]string, 0, len(s.vms))
	for name := range s.vms {
		names = append(names, name)
	}
	sort.Strings(names)
	out := make([]model.VM, 0, len(names))
	for _, name := range names {
		out = append(out, s.vms[name].Clone())
	}
	return out
}

func (s *State) image(name string) (model.Image, error) {
	im, ok := s.images[name]
	if !ok {
		return model.Image{}, fmt.Errorf("image %q: %w", name, model.ErrNotFound)
	}
	return im, nil
}

func (s *State) imageList() []model.Image {
	out := make([]model.Image, 0, len(s.images))
	for _, im := range s.images {
		out = append(out, im)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// eventsAfter returns up to limit events with Seq > after, oldest first.
func (s *State) eventsAfter(after uint64, limit int) []model.Event {
	i := sort.Search(len(s.events), func(i int) bool { return s.events[i].Seq > after })
	out := s.events[i:]
	if limit > 0 && len(out) > limit {
		out = out[len(out)-limit:]
	}
	return append([]model.Event(nil), out...)
}

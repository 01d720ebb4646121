package raftstore

import (
	"fmt"

	"github.com/corralhq/corral/model"
)

// BatchResult is what Apply returns for a Batch: one error (or nil) per
// entry, in order.
type BatchResult []error

// apply runs one decoded command against s and returns nil, an error value
// for a command refused by the state rules, or a BatchResult. It is
// deterministic: it reads no clock, draws no random numbers, does no I/O and
// does not depend on map iteration order.
func (s *State) apply(c Command) any {
	switch c := c.(type) {
	case RegisterHost:
		return s.registerHost(c)
	case SetHostLabels:
		return s.setHostLabels(c)
	case SetHostMode:
		return s.setHostMode(c)
	case RemoveHost:
		return s.removeHost(c)
	case CreateVM:
		return s.createVM(c)
	case PlaceVM:
		return s.placeVM(c)
	case DeleteVM:
		return s.deleteVM(c)
	case Batch:
		res := make(BatchResult, len(c.Entries))
		for i, e := range c.Entries {
			sub, err := Decode(e)
			if err != nil {
				panic(fmt.Sprintf("raftstore: undecodable entry %d in batch: %v", i, err))
			}
			if _, nested := sub.(Batch); nested {
				res[i] = fmt.Errorf("nested batch: %w", model.ErrInvalid)
				continue
			}
			if sub == nil { // unknown but skippable
				continue
			}
			if r, ok := s.apply(sub).(error); ok {
				res[i] = r
			}
		}
		return res
	}
	panic(fmt.Sprintf("raftstore: no apply rule for %T", c))
}

func (s *State) registerHost(c RegisterHost) error {
	h := c.Host.Clone()
	if err := h.Validate(); err != nil {
		return err
	}
	if old, ok := s.hosts[h.Name]; ok {
		h.Labels = old.Labels
		h.Mode = old.Mode
		h.RegisteredAt = old.RegisteredAt
	} else if h.Mode == "" {
		h.Mode = model.ModeActive
	}
	s.hosts[h.Name] = h
	return nil
}

func (s *State) setHostLabels(c SetHostLabels) error {
	h, err := s.host(c.Name)
	if err != nil {
		return err
	}
	labels := model.CloneLabels(h.Labels)
	if labels == nil {
		labels = map[string]string{}
	}
	for _, k := range c.Remove {
		delete(labels, k)
	}
	for k, v := range c.Set {
		labels[k] = v
	}
	if err := model.ValidateLabels(labels); err != nil {
		return fmt.Errorf("host %q: %w", c.Name, err)
	}
	if len(labels) == 0 {
		labels = nil
	}
	h.Labels = labels
	s.hosts[h.Name] = h
	return nil
}

func (s *State) setHostMode(c SetHostMode) error {
	h, err := s.host(c.Name)
	if err != nil {
		return err
	}
	if !c.Mode.Valid() {
		return fmt.Errorf("host %q: unknown mode %q: %w", c.Name, c.Mode, model.ErrInvalid)
	}
	h.Mode = c.Mode
	s.hosts[h.Name] = h
	return nil
}

func (s *State) removeHost(c RemoveHost) error {
	if _, err := s.host(c.Name); err != nil {
		return err
	}
	n := 0
	for _, v := range s.vms {
		if v.Host == c.Name {
			n++
		}
	}
	if n > 0 {
		return fmt.Errorf("host %q still has %d VMs assigned: %w", c.Name, n, model.ErrConflict)
	}
	delete(s.hosts, c.Name)
	return nil
}

func (s *State) createVM(c CreateVM) error {
	v := c.VM.Clone()
	if err := model.ValidateName("vm", v.Name); err != nil {
		return err
	}
	if v.ID == "" {
		return fmt.Errorf("vm %q: empty id: %w", v.Name, model.ErrInvalid)
	}
	if err := v.Spec.Validate(v.Name); err != nil {
		return err
	}
	if _, ok := s.vms[v.Name]; ok {
		return fmt.Errorf("vm %q already exists: %w", v.Name, model.ErrConflict)
	}
	if other, ok := s.vmIDs[v.ID]; ok {
		return fmt.Errorf("vm id %q is taken by %q: %w", v.ID, other, model.ErrConflict)
	}
	if v.Desired == "" {
		v.Desired = model.PowerRunning
	}
	if !v.Desired.Valid() {
		return fmt.Errorf("vm %q: unknown power state %q: %w", v.Name, v.Desired, model.ErrInvalid)
	}
	v.Generation = 0
	if v.Host != "" {
		if _, err := s.host(v.Host); err != nil {
			return fmt.Errorf("vm %q: %w", v.Name, err)
		}
		v.Generation = 1
	}
	s.vms[v.Name] = v
	s.vmIDs[v.ID] = v.Name
	return nil
}

func (s *State) placeVM(c PlaceVM) error {
	v, err := s.vm(c.Name)
	if err != nil {
		return err
	}
	if v.Generation != c.Generation {
		return fmt.Errorf("vm %q: placement generation is %d, not %d: %w", c.Name, v.Generation, c.Generation, model.ErrConflict)
	}
	if c.Host != "" {
		if _, err := s.host(c.Host); err != nil {
			return fmt.Errorf("vm %q: %w", c.Name, err)
		}
	}
	v.Host = c.Host
	v.Generation++
	s.vms[v.Name] = v
	return nil
}

func (s *State) deleteVM(c DeleteVM) error {
	v, ok := s.vms[c.Name]
	if !ok {
		return fmt.Errorf("vm %q: %w", c.Name, model.ErrNotFound)
	}
	delete(s.vms, c.Name)
	delete(s.vmIDs, v.ID)
	return nil
}

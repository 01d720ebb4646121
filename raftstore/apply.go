package raftstore

import (
	"fmt"
	"reflect"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/corralhq/corral/model"
	"github.com/corralhq/corral/raftlog"
)

// apply runs one decoded command against s and returns nil, an error value
// for a command refused by the state rules, or a BatchResult. It is
// deterministic: it reads no clock, draws no random numbers, does no I/O and
// does not depend on map iteration order.
func (s *State) apply(c raftlog.Command) any {
	switch c := c.(type) {
	case raftlog.RegisterHost:
		return s.registerHost(c)
	case raftlog.SetHostLabels:
		return s.setHostLabels(c)
	case raftlog.SetHostMode:
		return s.setHostMode(c)
	case raftlog.RemoveHost:
		return s.removeHost(c)
	case raftlog.CreateVM:
		return s.createVM(c)
	case raftlog.PlaceVM:
		return s.placeVM(c)
	case raftlog.DeleteVM:
		return s.deleteVM(c)
	case raftlog.SetVMPower:
		return s.setVMPower(c)
	case raftlog.RestartVM:
		return s.updateVM(c.Name, func(v *model.VM) error { v.RestartSeq++; return nil })
	case raftlog.ResizeVM:
		return s.resizeVM(c)
	case raftlog.MarkVMDelete:
		return s.updateVM(c.Name, func(v *model.VM) error {
			v.Deleting = true
			v.Desired = model.PowerStopped
			return nil
		})
	case raftlog.ReportVMs:
		return s.reportVMs(c)
	case raftlog.FailVM:
		return s.failVM(c)
	case raftlog.PutImage:
		return s.putImage(c)
	case raftlog.DeleteImage:
		return s.deleteImage(c)
	case raftlog.AddEvents:
		s.addEvents(c.Events)
		return nil
	case raftlog.TakeSnapshot:
		return s.chainOp(c.Name, func(v *model.VM) error {
			if c.Memory {
				return s.takeMemorySnapshot(v, c)
			}
			if !c.Slot.IsZero() {
				return v.TakeScheduledSnapshot(c.Slot, c.Time)
			}
			return v.TakeSnapshot(c.Snapshot, c.Time)
		})
	case raftlog.PutBackupTarget:
		return s.backupOp(func() error { return s.putBackupTarget(c) })
	case raftlog.DeleteBackupTarget:
		return s.backupOp(func() error { return s.deleteBackupTarget(c) })
	case raftlog.StartBackup:
		return s.backupOp(func() error { return s.startBackup(c) })
	case raftlog.BackupProgress:
		return s.backupOp(func() error {
			return s.backupJob(c.Name, c.ID, func(v *model.VM, j *model.BackupJob) error {
				if j.Host != c.Host || c.Done < 0 || c.Total < 0 {
					return fmt.Errorf("vm %q: backup %s: progress from %s: %w", c.Name, c.ID, c.Host, model.ErrConflict)
				}
				j.Done, j.Total = c.Done, c.Total
				return nil
			})
		})
	case raftlog.AssignBackup:
		return s.backupOp(func() error {
			if _, err := s.host(c.Host); err != nil {
				return err
			}
			return s.backupJob(c.Name, c.ID, func(v *model.VM, j *model.BackupJob) error {
				j.Host, j.Done, j.Total = c.Host, 0, 0
				return nil
			})
		})
	case raftlog.FinishBackup:
		return s.backupOp(func() error { return s.finishBackup(c) })
	case raftlog.DeleteBackup:
		return s.backupOp(func() error { return s.deleteBackup(c) })
	case raftlog.SetBackupPolicy:
		return s.backupOp(func() error { return s.setBackupPolicy(c) })
	case raftlog.SetProjectBackupPolicy:
		return s.backupOp(func() error { return s.setProjectBackupPolicy(c) })
	case raftlog.SetSnapshotPolicy:
		return s.chainOp(c.Name, func(v *model.VM) error { return v.SetSnapshotPolicy(c.Schedule, c.Time) })
	case raftlog.FinishSnapshot:
		return s.chainOp(c.Name, func(v *model.VM) error {
			if v.Host != c.Host || v.Generation != c.Generation {
				return fmt.Errorf("vm %q: not placed on %s at generation %d: %w", c.Name, c.Host, c.Generation, model.ErrConflict)
			}
			return v.FinishSnapshot(c.Snapshot, c.Consistency, c.Message, model.Clip(c.Error, model.MaxSnapshotMessage))
		})
	case raftlog.RevertSnapshot:
		return s.chainOp(c.Name, func(v *model.VM) error { return v.RevertSnapshot(c.Snapshot) })
	case raftlog.DeleteSnapshot:
		return s.chainOp(c.Name, func(v *model.VM) error { return v.DeleteSnapshot(c.Snapshot) })
	case raftlog.ForgetLayers:
		return s.chainOp(c.Name, func(v *model.VM) error {
			v.ForgetLayers(c.Layers)
			if raftlog.FeatureMemorySnapshots.Enabled(s.cluster) {
				v.ForgetMemory(c.Memory)
			}
			return nil
		})
	case raftlog.MergeLayers:
		return s.chainOp(c.Name, func(v *model.VM) error { return v.MergeLayers(c.Into, c.From) })
	case raftlog.FenceHost:
		return s.updateHost(c.Name, func(h *model.Host) error {
			if h.Mode != model.ModeFenced {
				h.Mode, h.FencedAt, h.FenceReason, h.Draining = model.ModeFenced, c.Time, c.Reason, false
			}
			return nil
		})
	case raftlog.SetHostDraining:
		return s.updateHost(c.Name, func(h *model.Host) error { h.Draining = c.Draining; return nil })
	case raftlog.SetHostStopped:
		return s.updateHost(c.Name, func(h *model.Host) error { h.StoppedAt = c.At; return nil })
	case raftlog.StartMigration:
		return s.startMigration(c)
	case raftlog.FinishMigration:
		return s.finishMigration(c)
	case raftlog.AbortMigration:
		return s.updateVM(c.Name, func(v *model.VM) error {
			if v.Generation != c.Generation || v.Migration == nil {
				return fmt.Errorf("vm %q: no migration at generation %d: %w", c.Name, c.Generation, model.ErrConflict)
			}
			v.Migration = nil
			return nil
		})
	case raftlog.CreateNetwork:
		return s.createNetwork(c)
	case raftlog.DeleteNetwork:
		return s.deleteNetwork(c)
	case raftlog.SetHA:
		if r := s.cluster.Recovery; !c.Disarmed && r != nil && len(r.Waiting) > 0 {
			return fmt.Errorf("%v: HA is armed again when every host has told what it runs (waiting for %v): %w", errRecovering, r.Waiting, model.ErrConflict)
		}
		s.cluster.HADisarmed, s.cluster.HAChangedAt = c.Disarmed, c.Time
		return nil
	case raftlog.AdoptGuests:
		return s.adoptGuests(c)
	case raftlog.EndRecovery:
		return s.endRecovery(c)
	case raftlog.AddJoinToken:
		return s.addJoinToken(c)
	case raftlog.SetGossipKeys:
		if len(c.Keys) < 1 || len(c.Keys) > 4 {
			return fmt.Errorf("gossip keyring of %d keys, want 1 to 4: %w", len(c.Keys), model.ErrInvalid)
		}
		for _, k := range c.Keys {
			if n := len(k); n != 16 && n != 24 && n != 32 {
				return fmt.Errorf("gossip key of %d bytes: %w", n, model.ErrInvalid)
			}
		}
		s.cluster.GossipKeys = c.Keys
		return nil
	case raftlog.SetProtocol:
		return s.setProtocol(c)
	case raftlog.SetProject:
		return s.setProject(c)
	case raftlog.DeleteProject:
		return s.deleteProject(c)
	case raftlog.SetGroup:
		return s.setGroup(c)
	case raftlog.DeleteGroup:
		return s.deleteGroup(c)
	case raftlog.AddAPIToken:
		return s.addAPIToken(c)
	case raftlog.RevokeAPIToken:
		kept, ok := without(s.cluster.APITokens, func(t model.APIToken) bool { return t.Name == c.Name })
		if !ok {
			return fmt.Errorf("API token %q: %w", c.Name, model.ErrNotFound)
		}
		s.cluster.APITokens = kept
		return nil
	case raftlog.RevokeJoinToken:
		kept, ok := without(s.cluster.JoinTokens, func(t model.JoinToken) bool { return t.ID == c.ID })
		if !ok {
			return fmt.Errorf("join token %q: %w", c.ID, model.ErrNotFound)
		}
		s.cluster.JoinTokens = kept
		return nil
	case raftlog.Renewals:
		// Only the FSM notes renewals (fsm.noteRenewals), and only from a
		// top-level entry; in a batch, which no leader writes, it is
		// nothing.
		return nil
	case raftlog.Batch:
		res := make(raftlog.BatchResult, len(c.Entries))
		for i, e := range c.Entries {
			sub, err := raftlog.Decode(e)
			if err != nil {
				res[i] = fmt.Errorf("batch entry %d: %w: %w", i, raftlog.ErrBadEntry, err)
				continue
			}
			if _, nested := sub.(raftlog.Batch); nested {
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
	return fmt.Errorf("%w: no apply rule for %T", raftlog.ErrBadEntry, c)
}

func (s *State) registerHost(c raftlog.RegisterHost) error {
	h := c.Host.Clone()
	if err := h.Validate(); err != nil {
		return err
	}
	if old, ok := s.hosts[h.Name]; ok {
		h.Labels = old.Labels
		h.Mode, h.FencedAt, h.FenceReason, h.Draining = old.Mode, old.FencedAt, old.FenceReason, old.Draining
		h.RegisteredAt = old.RegisteredAt
	} else if h.Mode == "" {
		h.Mode = model.ModeActive
	}
	s.hosts[h.Name] = h
	return nil
}

func (s *State) setHostLabels(c raftlog.SetHostLabels) error {
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

func (s *State) setHostMode(c raftlog.SetHostMode) error {
	if !c.Mode.Valid() {
		return fmt.Errorf("host %q: unknown mode %q: %w", c.Name, c.Mode, model.ErrInvalid)
	}
	if c.Mode == model.ModeStandby {
		if !raftlog.FeatureBalance.Enabled(s.cluster) {
			return fmt.Errorf("host %q: standby needs cluster protocol %d: %w", c.Name, raftlog.FeatureBalance.Since, model.ErrConflict)
		}
		// Only an empty host goes to standby: nothing placed there, nothing
		// arriving.
		for _, v := range s.vms {
			if v.Host == c.Name || v.Migration != nil && v.Migration.Target == c.Name {
				return fmt.Errorf("host %q: vm %q is placed there or arriving; only an empty host goes to standby: %w", c.Name, v.Name, model.ErrConflict)
			}
		}
	}
	return s.updateHost(c.Name, func(h *model.Host) error {
		h.Mode = c.Mode
		if c.Mode != model.ModeFenced {
			h.FencedAt, h.FenceReason = time.Time{}, ""
		}
		if c.Mode == model.ModeActive {
			h.Draining = false
		}
		return nil
	})
}

// updateHost applies fn to a copy of the host and stores it if fn succeeds.
func (s *State) updateHost(name string, fn func(*model.Host) error) error {
	h, err := s.host(name)
	if err != nil {
		return err
	}
	if err := fn(&h); err != nil {
		return err
	}
	s.hosts[name] = h
	return nil
}

func (s *State) startMigration(c raftlog.StartMigration) error {
	if _, err := s.host(c.Target); err != nil {
		return fmt.Errorf("migration target: %w", err)
	}
	if err := s.notStandby(c.Target, c.Name); err != nil {
		return err
	}
	return s.updateVM(c.Name, func(v *model.VM) error {
		switch {
		case v.Generation != c.Generation:
			return fmt.Errorf("vm %q: generation is %d, not %d: %w", c.Name, v.Generation, c.Generation, model.ErrConflict)
		case v.Migration != nil:
			return fmt.Errorf("vm %q is already migrating to %s: %w", c.Name, v.Migration.Target, model.ErrConflict)
		case v.Deleting:
			return fmt.Errorf("vm %q is being deleted: %w", c.Name, model.ErrConflict)
		case v.Host == "" || v.Host == c.Target:
			return fmt.Errorf("vm %q: cannot migrate from %q to %q: %w", c.Name, v.Host, c.Target, model.ErrInvalid)
		}
		if snap, ok := v.Chain.Creating(); ok {
			return fmt.Errorf("vm %q: snapshot %q is being taken: %w", c.Name, snap.Name, model.ErrConflict)
		}
		v.Migration = &model.Migration{Target: c.Target, Reason: c.Reason, StartedAt: c.Time}
		return nil
	})
}

func (s *State) finishMigration(c raftlog.FinishMigration) error {
	return s.updateVM(c.Name, func(v *model.VM) error {
		if v.Generation != c.Generation || v.Migration == nil || v.Migration.Target != c.Target {
			return fmt.Errorf("vm %q: no migration to %s at generation %d: %w", c.Name, c.Target, c.Generation, model.ErrConflict)
		}
		switch v.Migration.Reason {
		case "drain":
			if v.Home == "" {
				v.Home = v.Host
			}
		case "failback":
			v.Home = ""
		}
		v.Host = c.Target
		v.Generation++
		v.Migration = nil
		v.Actual.Host, v.Actual.Generation = c.Target, v.Generation
		if raftlog.FeatureRestartTimes.Enabled(s.cluster) { // protocol 1 replicas keep the count
			v.Actual.Restarts, v.Actual.RestartTimes = 0, nil // the target counts its own
		}
		return nil
	})
}

// setProtocol raises the cluster's protocol; it is never lowered. A
// protocol newer than this build's is recorded all the same (the state
// must not depend on the binary): the daemon then stops (CheckProtocol).
func (s *State) setProtocol(c raftlog.SetProtocol) error {
	if c.Protocol < 1 {
		return fmt.Errorf("cluster protocol %d: %w", c.Protocol, model.ErrInvalid)
	}
	if have := raftlog.ClusterProtocol(s.cluster); c.Protocol < have {
		return fmt.Errorf("cluster protocol %d is below the recorded %d, and it is never lowered: %w", c.Protocol, have, model.ErrConflict)
	}
	s.cluster.Protocol = c.Protocol
	return nil
}

func (s *State) removeHost(c raftlog.RemoveHost) error {
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
	if !c.Time.IsZero() {
		kept := []model.RevokedHost{}
		for _, r := range s.cluster.Revoked {
			if r.Name != c.Name && c.Time.Sub(r.Before) < model.RevocationKeep {
				kept = append(kept, r)
			}
		}
		s.cluster.Revoked = append(kept, model.RevokedHost{Name: c.Name, Before: c.Time})
	}
	return nil
}

func (s *State) createVM(c raftlog.CreateVM) (err error) {
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
	if v.Spec.Health != nil && !raftlog.FeatureHealthChecks.Enabled(s.cluster) {
		return fmt.Errorf("vm %q: health checks need cluster protocol %d: %w", v.Name, raftlog.FeatureHealthChecks.Since, model.ErrConflict)
	}
	if err := softRulesAllowed(s.cluster, "vm", v.Name, v.Spec); err != nil {
		return err
	}
	if _, ok := s.vms[v.Name]; ok {
		return fmt.Errorf("vm %q already exists: %w", v.Name, model.ErrConflict)
	}
	if err := s.notStandby(v.Host, v.Name); err != nil {
		return err
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
	v.SpecVersion = 1
	v.RestartSeq, v.Deleting, v.Failed, v.Relocations = 0, false, "", 0
	v.Actual = model.Actual{State: model.StatePending}
	if v.Host != "" {
		if _, err := s.host(v.Host); err != nil {
			return fmt.Errorf("vm %q: %w", v.Name, err)
		}
		v.Generation = 1
	}
	if v.Project, err = s.projectRef(v.Project); err != nil {
		return fmt.Errorf("vm %q: %w", v.Name, err)
	}
	if v.Group != "" {
		g, ok := model.GroupByName(s.cluster.Groups, v.Group)
		if !ok {
			return fmt.Errorf("vm %q: group %q: %w", v.Name, v.Group, model.ErrNotFound)
		}
		if _, ok := model.MemberIndex(g.Name, v.Name); !ok || g.Project != v.Project {
			return fmt.Errorf("vm %q is no member name of group %q in project %s: %w", v.Name, g.Name, model.ProjectOf(g.Project), model.ErrInvalid)
		}
	}
	project := model.ProjectOf(v.Project)
	// usage reads every VM: only a project with a quota pays for it (at
	// 50,000 VMs, creating them all took minutes; test/sim).
	if q := s.quota(project); q.Limited() {
		before := s.usage(project)
		if err := q.Exceeds(project, before, before.Add(v.Spec, s.imageMiB)); err != nil {
			return err
		}
	}
	if raftlog.FeatureProjectBackups.Enabled(s.cluster) && (v.BackupPolicy == nil || v.BackupPolicy.FromProject) {
		v.BackupPolicy = nil // its project's, if it has one
		v.FollowProjectBackups(s.projectBackupPolicy(project), v.CreatedAt)
	}
	s.vms[v.Name] = v
	s.vmIDs[v.ID] = v.Name
	return nil
}

func (s *State) placeVM(c raftlog.PlaceVM) error {
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
		if err := s.notStandby(c.Host, c.Name); err != nil {
			return err
		}
	}
	if c.Relocation {
		v.Relocations++
	}
	v.Host = c.Host
	v.Generation++
	v.Actual = model.Actual{State: model.StatePending}
	s.vms[v.Name] = v
	return nil
}

func (s *State) deleteVM(c raftlog.DeleteVM) error {
	v, ok := s.vms[c.Name]
	if !ok {
		return fmt.Errorf("vm %q: %w", c.Name, model.ErrNotFound)
	}
	delete(s.vms, c.Name)
	delete(s.vmIDs, v.ID)
	return nil
}

// chainOp changes a VM's disk chain (raftlog.FeatureSnapshots).
func (s *State) chainOp(name string, fn func(*model.VM) error) error {
	if !raftlog.FeatureSnapshots.Enabled(s.cluster) {
		return fmt.Errorf("vm %q: snapshots need cluster protocol %d: %w", name, raftlog.FeatureSnapshots.Since, model.ErrConflict)
	}
	return s.updateVM(name, fn)
}

// updateVM applies fn to a copy of the VM and stores it if fn succeeds.
func (s *State) updateVM(name string, fn func(*model.VM) error) error {
	v, err := s.vm(name)
	if err != nil {
		return err
	}
	if err := fn(&v); err != nil {
		return err
	}
	s.vms[name] = v
	return nil
}

func (s *State) setVMPower(c raftlog.SetVMPower) error {
	if !c.Desired.Valid() {
		return fmt.Errorf("vm %q: unknown power state %q: %w", c.Name, c.Desired, model.ErrInvalid)
	}
	return s.updateVM(c.Name, func(v *model.VM) error {
		if v.Deleting {
			return fmt.Errorf("vm %q is being deleted: %w", c.Name, model.ErrConflict)
		}
		v.Desired = c.Desired
		if c.ClearFailed {
			v.Failed = ""
			v.Relocations = 0
			if raftlog.FeatureRestartTimes.Enabled(s.cluster) { // protocol 1 replicas keep the count
				v.Actual.Restarts, v.Actual.RestartTimes = 0, nil
			}
		}
		return nil
	})
}

func (s *State) resizeVM(c raftlog.ResizeVM) error {
	return s.updateVM(c.Name, func(v *model.VM) error {
		old := *v
		v.Spec.VCPUs, v.Spec.MemoryMiB = c.VCPUs, c.MemoryMiB
		if err := v.Spec.Validate(v.Name); err != nil {
			return err
		}
		project := model.ProjectOf(v.Project)
		if q := s.quota(project); q.Limited() {
			before := s.usage(project)
			after := before
			after.VCPUs += v.Spec.VCPUs - old.Spec.VCPUs
			after.MemoryMiB += v.Spec.MemoryMiB - old.Spec.MemoryMiB
			if err := q.Exceeds(project, before, after); err != nil {
				return err
			}
		}
		v.SpecVersion++
		return nil
	})
}

// reportVMs applies the reports that match the VM's current placement and
// returns how many it applied. Restart times come from the network: more
// than the VM's max_restart refuse the whole command before anything
// changes. Below FeatureRestartTimes they are ignored, as a protocol 1
// replica ignores them.
func (s *State) reportVMs(c raftlog.ReportVMs) any {
	current := func(r raftlog.VMReport) (model.VM, bool) {
		v, ok := s.vms[r.Name]
		return v, ok && v.Host == c.Host && v.Generation == r.Generation
	}
	times := raftlog.FeatureRestartTimes.Enabled(s.cluster)
	health := raftlog.FeatureHealthChecks.Enabled(s.cluster)
	for _, r := range c.Reports {
		if v, ok := current(r); ok && times && len(r.RestartTimes) > v.Spec.HA.MaxRestart {
			return fmt.Errorf("vm %q: report has %d restart times, max_restart is %d: %w",
				r.Name, len(r.RestartTimes), v.Spec.HA.MaxRestart, model.ErrInvalid)
		}
		switch r.Health {
		case "", model.HealthStarting, model.HealthHealthy, model.HealthUnhealthy:
		default:
			return fmt.Errorf("vm %q: report has health %q: %w", r.Name, r.Health, model.ErrInvalid)
		}
	}
	applied := 0
	for _, r := range c.Reports {
		v, ok := current(r)
		if !ok {
			continue // stale: the VM moved, was replaced or is gone
		}
		if r.State == model.StateDeleted {
			if v.Deleting {
				delete(s.vms, v.Name)
				delete(s.vmIDs, v.ID)
				applied++
			}
			continue
		}
		v = v.Clone()
		v.Actual = model.Actual{
			State: r.State, Host: c.Host, Generation: r.Generation, Since: r.Since, Message: r.Message,
			Restarts: r.Restarts, SpecVersion: r.SpecVersion, UpdatedAt: c.Time,
		}
		if times {
			v.Actual.RestartTimes = slices.Clone(r.RestartTimes)
		}
		if health && v.Spec.Health != nil {
			v.Actual.Health = r.Health
			v.Actual.HealthDetail = model.Clip(r.HealthDetail, model.MaxHealthDetail)
		}
		if r.State == model.StateRunning {
			v.Restore = nil // its disks exist: restored
			if raftlog.FeatureMemorySnapshots.Enabled(s.cluster) {
				v.Resumed(r.Layer)
			}
		}
		s.vms[v.Name] = v
		applied++
	}
	return applied
}

func (s *State) failVM(c raftlog.FailVM) error {
	return s.updateVM(c.Name, func(v *model.VM) error {
		if v.Generation != c.Generation {
			return fmt.Errorf("vm %q: generation is %d, not %d: %w", c.Name, v.Generation, c.Generation, model.ErrConflict)
		}
		v.Failed = c.Reason
		v.Actual.State = model.StateFailed
		v.Actual.Message = c.Reason
		return nil
	})
}

func (s *State) putImage(c raftlog.PutImage) error {
	im := c.Image
	if err := model.ValidateName("image", im.Name); err != nil {
		return err
	}
	if im.Format != "qcow2" && im.Format != "raw" {
		return fmt.Errorf("image %q: format %q, want qcow2 or raw: %w", im.Name, im.Format, model.ErrInvalid)
	}
	if _, ok := s.images[im.Name]; ok {
		return fmt.Errorf("image %q already exists: %w", im.Name, model.ErrConflict)
	}
	var err error
	if im.Project, err = s.projectRef(im.Project); err != nil {
		return fmt.Errorf("image %q: %w", im.Name, err)
	}
	s.images[im.Name] = im
	return nil
}

func (s *State) deleteImage(c raftlog.DeleteImage) error {
	if _, err := s.image(c.Name); err != nil {
		return err
	}
	for _, name := range model.SortedKeys(s.vms) {
		for _, d := range s.vms[name].Spec.Disks {
			if d.Image == c.Name {
				return fmt.Errorf("image %q is used by vm %q: %w", c.Name, name, model.ErrConflict)
			}
		}
	}
	delete(s.images, c.Name)
	return nil
}

func (s *State) addEvents(evs []model.Event) {
	// An event of a VM carries the VM's project: the one the leader names
	// (a VM already gone), else the one in state; nothing before the
	// cluster has projects, as a replica from before them would keep.
	projects := raftlog.FeatureProjects.Enabled(s.cluster)
	for i := range evs {
		switch {
		case !projects:
			evs[i].Project = ""
		case evs[i].Project == "" && evs[i].VM != "":
			evs[i].Project = s.vms[evs[i].VM].Project
		case evs[i].Project == model.DefaultProject:
			evs[i].Project = ""
		}
	}
	for _, e := range evs {
		s.eventSeq++
		e.Seq = s.eventSeq
		s.events = append(s.events, e)
	}
	if over := len(s.events) - maxEvents; over > 0 {
		s.events = append([]model.Event(nil), s.events[over:]...)
	}
}

func (s *State) createNetwork(c raftlog.CreateNetwork) error {
	n := c.Network
	if err := n.Validate(); err != nil {
		return err
	}
	if _, ok := s.networks[n.Name]; ok {
		return fmt.Errorf("network %q already exists: %w", n.Name, model.ErrConflict)
	}
	var err error
	if n.Project, err = s.projectRef(n.Project); err != nil {
		return fmt.Errorf("network %q: %w", n.Name, err)
	}
	for _, name := range model.SortedKeys(s.networks) {
		o := s.networks[name]
		// Another project's network is not named: its name is not the
		// asker's to learn.
		owner := fmt.Sprintf("network %q", o.Name)
		if o.Project != n.Project {
			owner = "a network of another project"
		}
		if n.Kind == model.NetVXLAN && o.Kind == model.NetVXLAN && o.VNI == n.VNI {
			return fmt.Errorf("vni %d is taken by %s: %w", n.VNI, owner, model.ErrConflict)
		}
		if n.Kind == model.NetVLAN && o.Kind == model.NetVLAN && o.VLAN == n.VLAN {
			return fmt.Errorf("vlan %d is taken by %s: %w", n.VLAN, owner, model.ErrConflict)
		}
	}
	s.networks[n.Name] = n
	return nil
}

func (s *State) deleteNetwork(c raftlog.DeleteNetwork) error {
	if _, ok := s.networks[c.Name]; !ok {
		return fmt.Errorf("network %q: %w", c.Name, model.ErrNotFound)
	}
	var users []string
	for _, name := range model.SortedKeys(s.vms) {
		for _, nic := range s.vms[name].Spec.NICs {
			if nic.Network == c.Name {
				users = append(users, name)
				break
			}
		}
	}
	if len(users) > 0 {
		return fmt.Errorf("network %q is used by %d VMs (%s): %w", c.Name, len(users), strings.Join(users, ", "), model.ErrConflict)
	}
	delete(s.networks, c.Name)
	return nil
}

// without returns a new slice of the elements of s that drop does not
// match (stored slices are never changed in place), and whether any did.
func without[T any](s []T, drop func(T) bool) ([]T, bool) {
	kept := make([]T, 0, len(s))
	for _, e := range s {
		if !drop(e) {
			kept = append(kept, e)
		}
	}
	return kept, len(kept) < len(s)
}

// projectRef checks that the project a resource names exists, and
// returns how the resource keeps it: empty for the default project.
func (s *State) projectRef(p string) (string, error) {
	if p == "" || p == model.DefaultProject {
		return "", nil
	}
	if _, ok := s.project(p); !ok {
		return "", fmt.Errorf("project %q: %w", p, model.ErrNotFound)
	}
	return p, nil
}

// project returns a configured project (the default one only once it
// has been set).
func (s *State) project(name string) (model.Project, bool) {
	for _, p := range s.cluster.Projects {
		if p.Name == name {
			return p, true
		}
	}
	return model.Project{}, false
}

func (s *State) quota(project string) model.Quota {
	p, _ := s.project(project)
	return p.Quota
}

// imageMiB is an image's virtual size in MiB, rounded up (0 when the
// image is unknown).
func (s *State) imageMiB(name string) int64 {
	return (s.images[name].VirtualSizeBytes + 1<<20 - 1) >> 20
}

// usage adds up the VMs of a project, all of them whatever their state.
func (s *State) usage(project string) model.Usage {
	var u model.Usage
	for _, v := range s.vms {
		if model.ProjectOf(v.Project) == project {
			u = u.Add(v.Spec, s.imageMiB)
		}
	}
	return u
}

// setProject creates or updates a project; the slice is replaced, kept
// sorted by name.
func (s *State) setProject(c raftlog.SetProject) (err error) {
	p := c.Project
	if err := p.Validate(); err != nil {
		return err
	}
	old, exists := s.project(p.Name)
	switch {
	case c.Create && (exists || p.Name == model.DefaultProject):
		return fmt.Errorf("project %q exists: %w", p.Name, model.ErrConflict)
	case !c.Create && !exists && p.Name != model.DefaultProject:
		return fmt.Errorf("project %q: %w", p.Name, model.ErrNotFound)
	case exists:
		p.CreatedAt = old.CreatedAt
	}
	p.BackupPolicy = old.BackupPolicy // set by SetProjectBackupPolicy alone
	s.cluster.Projects, err = putSorted(s.cluster.Projects, p, func(q model.Project) string { return q.Name }, model.MaxProjects, "projects")
	return err
}

// putSorted returns list with item in place of the one of its name (or
// added), sorted by name; an addition beyond limit is refused. The list is
// a new slice: stored values are never modified in place.
func putSorted[T any](list []T, item T, name func(T) string, limit int, what string) ([]T, error) {
	kept, _ := without(list, func(o T) bool { return name(o) == name(item) })
	if len(kept) >= limit {
		return list, fmt.Errorf("%d %s, at most %d: %w", len(kept), what, limit, model.ErrInvalid)
	}
	kept = append(kept, item)
	sort.Slice(kept, func(i, j int) bool { return name(kept[i]) < name(kept[j]) })
	return kept, nil
}

// setGroup creates or updates a group; the slice is replaced, kept sorted
// by name. A group keeps its project and creation time.
func (s *State) setGroup(c raftlog.SetGroup) (err error) {
	if c.CountOnly {
		g, ok := model.GroupByName(s.cluster.Groups, c.Group.Name)
		if !ok {
			return fmt.Errorf("group %q: %w", c.Group.Name, model.ErrNotFound)
		}
		g.Count = c.Group.Count
		c = raftlog.SetGroup{Group: g, CountOnly: true}
	}
	g := c.Group
	g.Template = g.Template.Clone()
	if err := g.Validate(); err != nil {
		return err
	}
	if g.Template.Health != nil && !raftlog.FeatureHealthChecks.Enabled(s.cluster) {
		return fmt.Errorf("group %q: health checks need cluster protocol %d: %w", g.Name, raftlog.FeatureHealthChecks.Since, model.ErrConflict)
	}
	if err := softRulesAllowed(s.cluster, "group", g.Name, g.Template); err != nil {
		return err
	}
	if g.Project, err = s.projectRef(g.Project); err != nil {
		return fmt.Errorf("group %q: %w", g.Name, err)
	}
	old, exists := model.GroupByName(s.cluster.Groups, g.Name)
	switch {
	case c.Create && exists:
		return fmt.Errorf("group %q exists: %w", g.Name, model.ErrConflict)
	case !c.Create && !exists:
		return fmt.Errorf("group %q: %w", g.Name, model.ErrNotFound)
	case exists:
		if old.Project != g.Project {
			return fmt.Errorf("group %q belongs to project %s: %w", g.Name, model.ProjectOf(old.Project), model.ErrInvalid)
		}
		if g.Version != 0 && g.Version != old.Version {
			return fmt.Errorf("group %q changed meanwhile (template %d, not %d): read it again: %w", g.Name, old.Version, g.Version, model.ErrConflict)
		}
		if !c.CountOnly {
			// The count changes only by CountOnly, so an update read
			// before a scale (or the autoscaler's) does not undo it.
			g.Count = old.Count
		}
		g.CreatedAt = old.CreatedAt
		g.Version, g.Previous = old.Version, old.Previous
		if !reflect.DeepEqual(old.Template, g.Template) {
			// A new template: members of older ones are rolled out.
			prev := old.Template
			g.Version, g.Previous = old.Version+1, &prev
		}
	default:
		g.Version, g.Previous = 1, nil
	}
	s.cluster.Groups, err = putSorted(s.cluster.Groups, g, func(o model.Group) string { return o.Name }, model.MaxGroups, "groups")
	return err
}

// deleteGroup removes a group and marks its members for deletion, or,
// with KeepVMs, leaves them as VMs of no group.
func (s *State) deleteGroup(c raftlog.DeleteGroup) error {
	kept, ok := without(s.cluster.Groups, func(g model.Group) bool { return g.Name == c.Name })
	if !ok {
		return fmt.Errorf("group %q: %w", c.Name, model.ErrNotFound)
	}
	for _, name := range model.SortedKeys(s.vms) {
		if s.vms[name].Group != c.Name {
			continue
		}
		s.updateVM(name, func(v *model.VM) error {
			if c.KeepVMs {
				v.Group = ""
			} else {
				v.Deleting, v.Desired = true, model.PowerStopped
			}
			return nil
		})
	}
	s.cluster.Groups = kept
	return nil
}

// deleteProject removes a project that holds nothing.
func (s *State) deleteProject(c raftlog.DeleteProject) error {
	if c.Name == model.DefaultProject {
		return fmt.Errorf("the default project cannot be removed: %w", model.ErrInvalid)
	}
	if _, ok := s.project(c.Name); !ok {
		return fmt.Errorf("project %q: %w", c.Name, model.ErrNotFound)
	}
	var vms, nets, images, tokens int
	for _, v := range s.vms {
		if v.Project == c.Name {
			vms++
		}
	}
	for _, n := range s.networks {
		if n.Project == c.Name {
			nets++
		}
	}
	for _, im := range s.images {
		if im.Project == c.Name {
			images++
		}
	}
	for _, t := range s.cluster.APITokens {
		if t.Project == c.Name {
			tokens++
		}
	}
	groups := 0
	for _, g := range s.cluster.Groups {
		if g.Project == c.Name {
			groups++
		}
	}
	if vms+nets+images+tokens+groups > 0 {
		return fmt.Errorf("project %q holds %d VMs, %d groups, %d networks, %d images and %d API tokens: delete or revoke them first: %w",
			c.Name, vms, groups, nets, images, tokens, model.ErrConflict)
	}
	s.cluster.Projects, _ = without(s.cluster.Projects, func(p model.Project) bool { return p.Name == c.Name })
	return nil
}

// addAPIToken, like addJoinToken, replaces the slice. Names are unique
// among live tokens, and so are hashes (a repeated hash would be a
// repeated secret: two names for one bearer).
func (s *State) addAPIToken(c raftlog.AddAPIToken) error {
	if err := c.Token.Validate(); err != nil {
		return err
	}
	// A token keeps "default" as it is: its empty Project means every
	// project.
	if p := c.Token.Project; p != "" && p != model.DefaultProject {
		if _, err := s.projectRef(p); err != nil {
			return fmt.Errorf("API token %q: %w", c.Token.Name, err)
		}
	}
	kept := make([]model.APIToken, 0, len(s.cluster.APITokens)+1)
	for _, t := range s.cluster.APITokens {
		if t.Name == c.Token.Name {
			return fmt.Errorf("API token %q exists: revoke it first: %w", t.Name, model.ErrConflict)
		}
		if t.Hash == c.Token.Hash {
			return fmt.Errorf("API token %q: its secret is token %q's: %w", c.Token.Name, t.Name, model.ErrConflict)
		}
		if !t.Expired(c.Time) {
			kept = append(kept, t)
		}
	}
	if len(kept) >= model.MaxAPITokens {
		return fmt.Errorf("%d API tokens are live, at most %d: revoke some: %w", len(kept), model.MaxAPITokens, model.ErrInvalid)
	}
	s.cluster.APITokens = append(kept, c.Token)
	return nil
}

// addJoinToken replaces the token slice rather than appending to it in
// place: stored values are immutable (a snapshot may hold the old one).
func (s *State) addJoinToken(c raftlog.AddJoinToken) error {
	if err := c.Token.Validate(); err != nil {
		return err
	}
	kept := make([]model.JoinToken, 0, len(s.cluster.JoinTokens)+1)
	for _, t := range s.cluster.JoinTokens {
		if t.ID == c.Token.ID {
			return fmt.Errorf("join token %q exists: %w", t.ID, model.ErrConflict)
		}
		if t.Expires.After(c.Time) {
			kept = append(kept, t)
		}
	}
	if len(kept) >= model.MaxJoinTokens {
		return fmt.Errorf("%d join tokens are live, at most %d: revoke some: %w", len(kept), model.MaxJoinTokens, model.ErrInvalid)
	}
	s.cluster.JoinTokens = append(kept, c.Token)
	return nil
}

// softRulesAllowed refuses soft placement rules below their protocol: a
// protocol 6 replica would drop them and hold another spec.
func softRulesAllowed(c model.Cluster, what, name string, spec model.VMSpec) error {
	if (len(spec.Prefer) > 0 || len(spec.Avoid) > 0) && !raftlog.FeatureSoftRules.Enabled(c) {
		return fmt.Errorf("%s %q: soft placement rules need cluster protocol %d: %w", what, name, raftlog.FeatureSoftRules.Since, model.ErrConflict)
	}
	return nil
}

// notStandby refuses a VM on a host in standby: it is powered off on
// purpose and nothing would run the guest (placement passes such hosts by;
// this catches a placement decided before the host went to standby).
func (s *State) notStandby(host, vm string) error {
	if h, ok := s.hosts[host]; ok && h.Mode == model.ModeStandby {
		return fmt.Errorf("vm %q: host %q is in standby: %w", vm, host, model.ErrConflict)
	}
	return nil
}

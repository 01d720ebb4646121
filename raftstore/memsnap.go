package raftstore

import (
	"fmt"

	"github.com/corralhq/corral/model"
	"github.com/corralhq/corral/raftlog"
)

// takeMemorySnapshot applies a TakeSnapshot with the guest's memory
// (raftlog.FeatureMemorySnapshots): below that protocol a replica would
// drop the field and take the disks alone, so it is refused; schedules
// take disk snapshots only.
func (s *State) takeMemorySnapshot(v *model.VM, c raftlog.TakeSnapshot) error {
	if !raftlog.FeatureMemorySnapshots.Enabled(s.cluster) {
		return fmt.Errorf("vm %q: memory snapshots need cluster protocol %d: %w", c.Name, raftlog.FeatureMemorySnapshots.Since, model.ErrConflict)
	}
	if !c.Slot.IsZero() {
		return fmt.Errorf("vm %q: scheduled snapshots are of the disks only: %w", c.Name, model.ErrInvalid)
	}
	return v.TakeMemorySnapshot(c.Snapshot, c.Time)
}

package daemon

import (
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/corralhq/corral/api"
	"github.com/corralhq/corral/internal/testutil"
	"github.com/corralhq/corral/model"
)

// TestMemorySnapshotsAcrossInProcessCluster drives a memory snapshot
// through a follower of a 3-host cluster, of a VM placed on the other
// follower: refused for the stopped VM, taken of the running guest by its
// host, resumed from on a revert, and its image deleted with it.
func TestMemorySnapshotsAcrossInProcessCluster(t *testing.T) {
	api1, drv := stoppedVMOnFollower(t, "mem")
	c := api1.client
	ctx := ctxT(t)
	memory := api.SnapshotCreateRequest{Name: "m1", Memory: true}
	if _, err := c.TakeSnapshot(ctx, "mem", memory); !errors.Is(err, api.ErrInvalid) || !strings.Contains(err.Error(), "a memory snapshot needs a running guest") {
		t.Fatalf("memory snapshot of the stopped VM: %v", err)
	}

	if _, err := c.StartVM(ctx, "mem"); err != nil {
		t.Fatal(err)
	}
	waitVM(t, c, "mem", "running")
	m1, err := c.TakeSnapshot(ctx, "mem", memory)
	if err != nil || m1.State != model.SnapshotCreating || !m1.Memory {
		t.Fatalf("memory snapshot of the running VM: %+v %v", m1, err)
	}
	testutil.Eventually(t, 20*time.Second, func() error {
		list, err := c.Snapshots(ctx, "mem")
		if err != nil {
			return err
		}
		if len(list) != 1 || list[0].State != model.SnapshotReady || list[0].Consistency != model.ConsistencyMemory || !list[0].Memory {
			return fmt.Errorf("snapshots %+v", list)
		}
		return nil
	})
	vm, _ := api1.d.store.VM("mem")
	image := vm.MemoryVolume(vm.Chain.Snapshots[0].Memory)
	if _, ok := drv.Volume(image); !ok {
		t.Fatalf("no memory image %s on the VM's host: %v", image, drv.Volumes())
	}

	// Revert: the guest resumes from its memory, and says so.
	if _, err := c.RevertSnapshot(ctx, "mem", "m1"); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, 20*time.Second, func() error {
		v, err := c.VM(ctx, "mem")
		if err != nil {
			return err
		}
		if v.State != "running" || !strings.Contains(v.Message, `resumed from the memory of snapshot "m1"`) {
			return fmt.Errorf("%s: %s", v.State, v.Message)
		}
		return nil
	})
	if n := drv.Calls("Restore"); n != 1 {
		t.Fatalf("%d restores", n)
	}

	// Removed: its image goes too.
	if _, err := c.DeleteSnapshot(ctx, "mem", "m1"); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, 20*time.Second, func() error {
		if _, ok := drv.Volume(image); ok {
			return fmt.Errorf("memory image %s still there", image)
		}
		return nil
	})
}

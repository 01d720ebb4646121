// Package hwmon watches this host's hardware with gopsutil (v4) and reports
// its capacity and health. It is the only importer of gopsutil.
package hwmon

import (
	"fmt"

	"github.com/shirou/gopsutil/v4/cpu"
	"github.com/shirou/gopsutil/v4/mem"

	"github.com/corralhq/corral/model"
)

// Capacity returns the host's logical CPU count and total memory.
func Capacity() (model.Capacity, error) {
	n, err := cpu.Counts(true)
	if err != nil {
		return model.Capacity{}, fmt.Errorf("cpu count: %w", err)
	}
	vm, err := mem.VirtualMemory()
	if err != nil {
		return model.Capacity{VCPUs: n}, fmt.Errorf("memory: %w", err)
	}
	return model.Capacity{VCPUs: n, MemoryMiB: int64(vm.Total >> 20)}, nil
}

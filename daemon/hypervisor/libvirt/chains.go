package libvirt

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"

	"github.com/corralhq/corral/daemon/hypervisor"
)

// DiskChain returns the files of a running guest's first writable disk,
// its active file first and then each backing file, as the guest's QEMU
// uses them.
func (d *Driver) DiskChain(ctx context.Context, name string) ([]string, error) {
	l, dom, err := d.lookup(name)
	if err != nil {
		return nil, err
	}
	targets, _, _, err := d.writableDisks(l, dom)
	if err != nil || len(targets) == 0 {
		return nil, err
	}
	chains, err := d.liveChains(l, dom)
	if err != nil {
		return nil, err
	}
	return chains[targets[0]], nil
}

// BackingChain returns file and the files under it, top first, as their
// qcow2 headers name them (hypervisor.ErrNoVolume when file does not
// exist).
func (d *Driver) BackingChain(ctx context.Context, file string) ([]string, error) {
	if _, err := os.Stat(file); errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("%s: %w", file, hypervisor.ErrNoVolume)
	}
	out, err := exec.CommandContext(ctx, "qemu-img", "info", "-U", "--backing-chain", "--output=json", file).Output()
	if err != nil {
		return nil, fmt.Errorf("qemu-img info %s: %v", file, err)
	}
	var infos []struct {
		Filename string `json:"filename"`
	}
	if err := json.Unmarshal(out, &infos); err != nil {
		return nil, fmt.Errorf("qemu-img info %s: %v", file, err)
	}
	files := make([]string, 0, len(infos))
	for _, i := range infos {
		files = append(files, i.Filename)
	}
	return files, nil
}

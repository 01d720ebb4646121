package libvirt

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/corralhq/corral/daemon/hypervisor"
	"github.com/corralhq/corral/internal/testutil"
	"github.com/corralhq/corral/model"
)

// An overlay qemu-img made reads as unwritten; any write a guest makes
// to it, data or zeros, as written; a file that is not qcow2 is an error.
func TestQcow2Written(t *testing.T) {
	for _, tool := range []string{"qemu-img", "qemu-io"} {
		if _, err := exec.LookPath(tool); err != nil {
			if testing.Short() {
				t.Skipf("-short, and %s is not on PATH (apt-get install qemu-utils)", tool)
			}
			t.Fatalf("%s is not on PATH; this test makes real images with it (apt-get install qemu-utils, or make test)", tool)
		}
	}
	dir := t.TempDir()
	run := func(name string, args ...string) {
		t.Helper()
		out, err := exec.Command(name, args...).CombinedOutput()
		if err != nil || strings.Contains(string(out), "rror") {
			t.Fatalf("%s %v: %v %s", name, args, err, out)
		}
	}
	base := filepath.Join(dir, "base.qcow2")
	run("qemu-img", "create", "-q", "-f", "qcow2", base, "64M")
	run("qemu-io", "-f", "qcow2", "-c", "write -P 7 0 1M", base)
	overlay := func(name string) string {
		p := filepath.Join(dir, name)
		run("qemu-img", "create", "-q", "-f", "qcow2", "-b", base, "-F", "qcow2", p)
		return p
	}
	fresh, data, zeros := overlay("fresh.qcow2"), overlay("data.qcow2"), overlay("zeros.qcow2")
	run("qemu-io", "-f", "qcow2", "-c", "write -P 1 40M 4k", data)
	run("qemu-io", "-f", "qcow2", "-c", "write -z 0 64k", zeros)
	for path, want := range map[string]bool{base: true, fresh: false, data: true, zeros: true} {
		got, err := qcow2Written(path)
		if err != nil || got != want {
			t.Errorf("%s: written %v, %v; want %v", filepath.Base(path), got, err, want)
		}
	}
	raw := filepath.Join(dir, "raw")
	if err := os.WriteFile(raw, make([]byte, 4096), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := qcow2Written(raw); err == nil {
		t.Error("a raw file read as a qcow2 image")
	}
}

// TestMemorySnapshotAgainstLibvirtd takes a memory snapshot of the running
// test guest in a lab host, then destroys the guest and resumes it from
// the memory image onto a fresh overlay on the snapshot's disk, as a
// revert does: what the guest held in RAM (a file in its initramfs) is as
// it was at the snapshot, and it never booted again.
func TestMemorySnapshotAgainstLibvirtd(t *testing.T) {
	if !inGuestLab(t) {
		return
	}
	ctx, d := connectedDriver(t)
	base, _ := os.ReadFile(os.Getenv("T_BASE"))
	if err := os.WriteFile(d.VolumePath("image-base"), base, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := d.Refresh(ctx); err != nil {
		t.Fatal(err)
	}
	layer := func(name, on string) string {
		t.Helper()
		p, err := d.EnsureVolume(ctx, hypervisor.Volume{Name: name, Backing: on, BackingFormat: "qcow2"})
		if err != nil {
			t.Fatal(err)
		}
		return p
	}
	disk := layer("vm-m1-disk0.qcow2", "image-base")
	// A cloud-init seed too: read-only, left out of the snapshot.
	seed, err := d.EnsureSeed(ctx, "vm-m1-seed.iso", "#cloud-config\nhostname: m1\n", "instance-id: m1\n")
	if err != nil {
		t.Fatal(err)
	}
	spec := hypervisor.DomainSpec{
		VMID: "6f1c2a3b-0000-4000-8000-0000000000b1", Name: "m1", Generation: 1, SpecVersion: 1, VCPUs: 1, MemoryMiB: 128,
		Kernel: &model.KernelBoot{Kernel: os.Getenv("T_KERNEL"), Initrd: os.Getenv("T_INITRD"), Cmdline: "console=ttyS0 quiet corral.name=m1"},
		Disks:  []hypervisor.Disk{{Path: disk, Format: "qcow2"}, {Path: seed, Format: "raw", ReadOnly: true}},
	}
	if err := d.Define(ctx, spec); err != nil {
		t.Fatal(err)
	}
	if err := d.Start(ctx, "m1", hypervisor.RunInfo{StartedAt: time.Now(), RestartSeq: 3}); err != nil {
		t.Fatal(err)
	}
	waitLog(t, "m1", `CORRAL-BOOT host=m1`)
	sh := func(cmd string) string {
		t.Helper()
		var out string
		testutil.Eventually(t, 60*time.Second, func() error {
			res, err := d.AgentExec(ctx, "m1", []string{"/bin/sh", "-c", cmd}, 10*time.Second)
			if err != nil {
				return err
			}
			if res.ExitCode != 0 {
				t.Fatalf("%q in the guest: %+v", cmd, res)
			}
			out = strings.TrimSpace(res.Output)
			return nil
		})
		return out
	}
	sh("echo before-snapshot > /tmp/marker") // the initramfs: RAM

	// The snapshot: the RAM into the pool, the disk onto a new overlay,
	// the guest paused in between and running after.
	overlay := layer("vm-m1-disk0-L1.qcow2", "vm-m1-disk0.qcow2")
	mem := d.VolumePath("vm-m1-mem1.sav")
	pre := tickCounter(t, d, "m1")
	start := time.Now()
	if err := d.SnapshotDisks(ctx, "m1", []string{overlay}, hypervisor.SnapshotOptions{Memory: mem, Quiesce: true}); err == nil {
		t.Fatal("a memory snapshot with quiesce was taken")
	}
	if err := d.SnapshotDisks(ctx, "m1", []string{overlay}, hypervisor.SnapshotOptions{Memory: mem}); err != nil {
		t.Fatalf("memory snapshot: %v", err)
	}
	saved := time.Since(start)
	fi, err := os.Stat(mem)
	if err != nil || fi.Size() == 0 {
		t.Fatalf("memory image %v %v", fi, err)
	}
	t.Logf("memory snapshot of a %d MiB guest (%s): %v, image of %d MiB", spec.MemoryMiB, d.DomainType(), saved.Round(time.Millisecond), fi.Size()>>20)
	if files, err := d.DiskFiles(ctx, "m1"); err != nil || len(files) != 1 || files[0] != overlay {
		t.Fatalf("disk files after the snapshot: %v %v", files, err)
	}
	if dom := getDomain(t, d, "m1"); dom.State != hypervisor.Running {
		t.Fatalf("after the snapshot: %+v", dom)
	}
	if got := sh("cat /tmp/marker; echo after-snapshot > /tmp/marker"); got != "before-snapshot" {
		t.Fatalf("marker %q", got)
	}
	ticks := tickCounter(t, d, "m1")
	testutil.Eventually(t, 30*time.Second, func() error {
		if n := tickCounter(t, d, "m1"); n < ticks+3 {
			return fmt.Errorf("counter %d, was %d after the snapshot", n, ticks)
		}
		return nil
	})
	if w, err := qcow2Written(overlay); err != nil || !w {
		t.Fatalf("the guest's layer since the snapshot: written %v, %v", w, err)
	}

	// The revert: the guest gone, a fresh overlay on the snapshot's disk,
	// the RAM restored onto it.
	if err := d.PowerOff(ctx, "m1"); err != nil {
		t.Fatal(err)
	}
	fresh := layer("vm-m1-disk0-L2.qcow2", "vm-m1-disk0.qcow2")
	if w, err := d.Written(ctx, fresh); err != nil || w {
		t.Fatalf("fresh overlay: written %v, %v", w, err)
	}
	spec.Disks[0].Path = fresh
	if err := d.Define(ctx, spec); err != nil {
		t.Fatal(err)
	}
	counter := tickCounter(t, d, "m1")
	before, _ := d.ConsoleLog(ctx, "m1", 0)
	resumedAt := time.Now().Truncate(time.Millisecond)
	start = time.Now()
	if err := d.Restore(ctx, "m1", mem, hypervisor.RunInfo{StartedAt: resumedAt, RestartSeq: 4, Layer: 2}); err != nil {
		t.Fatalf("restore: %v", err)
	}
	t.Logf("restore of the %d MiB guest: %v", spec.MemoryMiB, time.Since(start).Round(time.Millisecond))
	dom := getDomain(t, d, "m1")
	if dom.State != hypervisor.Running || dom.Reason != "restored" || !dom.StartedAt.Equal(resumedAt) || dom.RestartSeq != 4 || dom.Layer != 2 {
		t.Fatalf("after the restore: %+v", dom)
	}
	if files, err := d.DiskFiles(ctx, "m1"); err != nil || len(files) != 1 || files[0] != fresh {
		t.Fatalf("disk files after the restore: %v %v", files, err)
	}
	if got := sh("cat /tmp/marker"); got != "before-snapshot" {
		t.Fatalf("marker %q after the restore, want the snapshot's", got)
	}
	// It goes on counting from what its RAM held at the snapshot (below
	// what it had counted up to), without booting.
	testutil.Eventually(t, 30*time.Second, func() error {
		b, _ := d.ConsoleLog(ctx, "m1", 0)
		since := string(b[len(before):])
		if strings.Contains(since, "CORRAL-BOOT") {
			t.Fatalf("the restored guest booted:\n%s", since)
		}
		m := regexp.MustCompile(`CORRAL-TICK counter=(\d+)`).FindStringSubmatch(since)
		if m == nil {
			return errors.New("no tick since the restore yet")
		}
		if n, _ := strconv.Atoi(m[1]); n <= pre || n > ticks+1 || n > counter {
			t.Fatalf("first tick after the restore counted %d: the snapshot was taken between %d and %d, the guest had counted %d", n, pre, ticks, counter)
		}
		return nil
	})
	if w, err := d.Written(ctx, fresh); err != nil || !w {
		t.Fatalf("the resumed guest's layer: written %v, %v", w, err)
	}

	if err := d.Destroy(ctx, "m1"); err != nil {
		t.Fatal(err)
	}
	if err := d.Undefine(ctx, "m1"); err != nil {
		t.Fatal(err)
	}
	for _, v := range []string{"vm-m1-mem1.sav", "vm-m1-disk0-L2.qcow2", "vm-m1-disk0-L1.qcow2", "vm-m1-disk0.qcow2", "vm-m1-seed.iso"} {
		if err := d.DeleteVolume(ctx, v); err != nil {
			t.Fatal(err)
		}
	}
}

package libvirt

import (
	"bytes"
	"log/slog"
	"os"

	"golang.org/x/sys/unix"
)

const (
	kvmGetAPIVersion = 0xAE00
	kvmCreateVM      = 0xAE01
)

// chooseDomainType resolves "auto": kvm when /dev/kvm opens, speaks API 12
// and creates a VM, and this host is not itself a virtual machine (nested
// KVM is often present but broken, and guests then hang at boot); qemu
// (TCG) otherwise. "kvm" and "qemu" are taken as given.
func chooseDomainType(want string, log *slog.Logger) string {
	if want == "kvm" || want == "qemu" {
		return want
	}
	why := kvmUsable()
	if why == "" {
		return "kvm"
	}
	log.Info("using TCG (domain type qemu) for guests", "reason", why)
	return "qemu"
}

// kvmUsable returns "" when KVM can run guests here, else why not.
func kvmUsable() string {
	f, err := os.OpenFile("/dev/kvm", os.O_RDWR, 0)
	if err != nil {
		return "cannot open /dev/kvm: " + err.Error()
	}
	defer f.Close()
	v, err := unix.IoctlRetInt(int(f.Fd()), kvmGetAPIVersion)
	if err != nil || v != 12 {
		return "unexpected KVM API version"
	}
	vm, err := unix.IoctlRetInt(int(f.Fd()), kvmCreateVM)
	if err != nil {
		return "KVM cannot create a VM: " + err.Error()
	}
	unix.Close(vm)
	if cpu, err := os.ReadFile("/proc/cpuinfo"); err == nil && bytes.Contains(cpu, []byte(" hypervisor")) {
		return "this host is a virtual machine; nested KVM is not trusted (set domain_type = \"kvm\" to force it)"
	}
	return ""
}

// Package kvm tells whether KVM can run guests on this machine. The libvirt
// driver uses it to pick the domain type, and test helpers that boot QEMU
// directly use it to pick the accelerator.
package kvm

import (
	"bytes"
	"os"

	"golang.org/x/sys/unix"
)

const (
	kvmGetAPIVersion = 0xAE00
	kvmCreateVM      = 0xAE01
)

// Usable returns "" when KVM can run guests here, else why not: /dev/kvm
// must open, speak API 12 and create a VM, and this host must not itself be
// a virtual machine (nested KVM is often present but broken, and guests then
// hang at boot).
func Usable() string {
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

package model

import (
	"errors"
	"strings"
	"testing"
)

func TestValidateName(t *testing.T) {
	for _, tc := range []struct {
		name string
		ok   bool
	}{
		{"web-1", true}, {"a", true}, {"db_2.prod", true}, {strings.Repeat("a", 63), true},
		{"", false}, {strings.Repeat("a", 64), false}, {"a/b", false}, {"Web", false},
		{"-x", false}, {"x y", false}, {"../etc", false}, {"é", false},
	} {
		err := ValidateName("vm", tc.name)
		if (err == nil) != tc.ok || (err != nil && !errors.Is(err, ErrInvalid)) {
			t.Errorf("%q: %v", tc.name, err)
		}
	}
}

func TestValidateHostName(t *testing.T) {
	for _, tc := range []struct {
		name string
		ok   bool
	}{
		{"rack1-07", true}, {"H1.example.org", true}, {"_svc", true}, {"7", true},
		{"", false}, {"--help", false}, {"-x", false}, {".hidden", false}, {"a b", false}, {"a/../b", false},
		{strings.Repeat("a", 254), false},
	} {
		err := ValidateHostName(tc.name)
		if (err == nil) != tc.ok || (err != nil && !errors.Is(err, ErrInvalid)) {
			t.Errorf("%q: %v", tc.name, err)
		}
	}
}

func TestValidateLabels(t *testing.T) {
	for _, tc := range []struct {
		labels map[string]string
		ok     bool
	}{
		{map[string]string{"rack": "r1", "corral.io/zone": "a"}, true},
		{map[string]string{"k": ""}, true},
		{map[string]string{"": "v"}, false},
		{map[string]string{"K": "v"}, false},
		{map[string]string{"k": "a=b"}, false},
		{map[string]string{"k": "a,b"}, false},
		{map[string]string{"k": "line\nbreak"}, false},
		{map[string]string{"k": strings.Repeat("v", 64)}, false},
	} {
		err := ValidateLabels(tc.labels)
		if (err == nil) != tc.ok {
			t.Errorf("%v: %v", tc.labels, err)
		}
	}
}

func TestVMSpecLimits(t *testing.T) {
	disk := []DiskSpec{{SizeMiB: 64}}
	for _, tc := range []struct {
		spec VMSpec
		ok   bool
	}{
		{VMSpec{VCPUs: 1, MemoryMiB: 128, Disks: disk}, true},
		{VMSpec{VCPUs: 1, MemoryMiB: 128}, false}, // nothing to boot
		{VMSpec{VCPUs: 1, MemoryMiB: 128, Kernel: &KernelBoot{Kernel: "/k"}}, true},
		{VMSpec{VCPUs: 1, MemoryMiB: 128, Kernel: &KernelBoot{Kernel: "k"}}, false},
		{VMSpec{VCPUs: 0, MemoryMiB: 128, Disks: disk}, false},
		{VMSpec{VCPUs: 1, MemoryMiB: 0, Disks: disk}, false},
		{VMSpec{VCPUs: 1, MemoryMiB: 1 << 40, Disks: disk}, false},
		{VMSpec{VCPUs: 100000, MemoryMiB: 128, Disks: disk}, false},
		{VMSpec{VCPUs: 1, MemoryMiB: 128, Disks: []DiskSpec{{}}}, false},
		{VMSpec{VCPUs: 1, MemoryMiB: 128, Disks: disk, NICs: []NICSpec{{Network: "lan", MAC: "01:00:00:00:00:01"}}}, false},
		{VMSpec{VCPUs: 1, MemoryMiB: 128, Disks: disk, HA: HAPolicy{MaxRestart: -1}}, false},
	} {
		if err := tc.spec.Validate("v"); (err == nil) != tc.ok {
			t.Errorf("%+v: %v", tc.spec, err)
		}
	}
}

func TestCheckKernelDir(t *testing.T) {
	for _, tc := range []struct {
		k  *KernelBoot
		ok bool
	}{
		{nil, true},
		{&KernelBoot{Kernel: "/srv/k/vmlinuz", Initrd: "/srv/k/sub/initrd.img"}, true},
		{&KernelBoot{Kernel: "/etc/shadow"}, false},
		{&KernelBoot{Kernel: "/srv/k/vmlinuz", Initrd: "/dev/sda"}, false},
		{&KernelBoot{Kernel: "/srv/k/../../etc/shadow"}, false},
		{&KernelBoot{Kernel: "/srv/kernels-not/vmlinuz"}, false},
		{&KernelBoot{Kernel: "/srv/k"}, false},
	} {
		err := tc.k.CheckKernelDir("/srv/k/")
		if (err == nil) != tc.ok || (err != nil && !errors.Is(err, ErrInvalid)) {
			t.Errorf("%+v: %v", tc.k, err)
		}
	}
}

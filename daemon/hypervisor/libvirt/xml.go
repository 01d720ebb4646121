package libvirt

import (
	"encoding/xml"
	"fmt"
	"time"

	"libvirt.org/go/libvirtxml"

	"github.com/corralhq/corral/daemon/hypervisor"
	"github.com/corralhq/corral/internal/guestproc"
)

// Metadata namespaces. The vm element is part of the persistent definition;
// the run element is set on the live domain when corral starts it, so it
// lives exactly as long as that QEMU (and migrates with it).
const (
	vmNS   = guestproc.MetadataNS // the fencer finds corral's guests by it
	vmKey  = "corral"
	runNS  = "https://corral.dev/xmlns/run/1"
	runKey = "corralrun"
)

// guestArch is the architecture of every guest corral defines.
const guestArch = "x86_64"

type vmMeta struct {
	XMLName     xml.Name `xml:"vm"`
	ID          string   `xml:"id,attr"`
	Generation  uint64   `xml:"generation,attr"`
	SpecVersion uint64   `xml:"spec-version,attr"`
}

type runMeta struct {
	XMLName    xml.Name `xml:"run"`
	Started    string   `xml:"started,attr"`
	RestartSeq uint64   `xml:"restart-seq,attr"`
	Layer      uint64   `xml:"layer,attr,omitempty"`
}

func (m runMeta) element() string {
	return fmt.Sprintf(`<run started=%q restart-seq="%d" layer="%d"/>`, m.Started, m.RestartSeq, m.Layer)
}

// nsElement is element in its namespace, as libvirt keeps it in a
// domain's <metadata> once set there (for a definition given whole).
func (m runMeta) nsElement() string {
	return fmt.Sprintf(`<%s:run xmlns:%s=%q started=%q restart-seq="%d" layer="%d"/>`, runKey, runKey, runNS, m.Started, m.RestartSeq, m.Layer)
}

func parseVMMeta(s string) (vmMeta, error) {
	var m vmMeta
	err := xml.Unmarshal([]byte(s), &m)
	return m, err
}

func parseRunMeta(s string) (hypervisor.RunInfo, error) {
	var m runMeta
	if err := xml.Unmarshal([]byte(s), &m); err != nil {
		return hypervisor.RunInfo{}, err
	}
	t, _ := time.Parse(time.RFC3339Nano, m.Started)
	return hypervisor.RunInfo{StartedAt: t, RestartSeq: m.RestartSeq, Layer: m.Layer}, nil
}

// consoleLog is where the serial console of a domain is logged (by
// virtlogd), on the host that runs it.
func consoleLog(name string) string { return "/var/log/libvirt/qemu/" + name + "-console.log" }

// domainXML builds the domain definition of spec with libvirtxml.
func domainXML(spec hypervisor.DomainSpec, domType string) (string, error) {
	meta := vmMeta{ID: spec.VMID, Generation: spec.Generation, SpecVersion: spec.SpecVersion}
	d := &libvirtxml.Domain{
		Type:     domType,
		Name:     spec.Name,
		UUID:     spec.VMID,
		Metadata: &libvirtxml.DomainMetadata{XML: fmt.Sprintf(`<corral:vm xmlns:corral=%q id=%q generation="%d" spec-version="%d"/>`, vmNS, meta.ID, meta.Generation, meta.SpecVersion)},
		Memory:   &libvirtxml.DomainMemory{Value: uint(spec.MemoryMiB), Unit: "MiB"},
		VCPU:     &libvirtxml.DomainVCPU{Value: uint(spec.VCPUs)},
		OS: &libvirtxml.DomainOS{
			Type: &libvirtxml.DomainOSType{Type: "hvm", Arch: guestArch},
		},
		Features:   &libvirtxml.DomainFeatureList{ACPI: &libvirtxml.DomainFeature{}, APIC: &libvirtxml.DomainFeatureAPIC{}},
		OnPoweroff: "destroy",
		OnReboot:   "restart",
		OnCrash:    "destroy",
		Devices:    &libvirtxml.DomainDeviceList{},
	}
	if domType == "kvm" {
		d.CPU = &libvirtxml.DomainCPU{Mode: "host-model"}
	}
	if k := spec.Kernel; k != nil {
		d.OS.Kernel, d.OS.Initrd, d.OS.Cmdline = k.Kernel, k.Initrd, k.Cmdline
	} else {
		d.OS.BootDevices = []libvirtxml.DomainBootDevice{{Dev: "hd"}}
	}
	for i, disk := range spec.Disks {
		dd := libvirtxml.DomainDisk{
			Device: "disk",
			// cache=none: no host page cache, so the image is consistent on
			// shared storage and live migration is safe.
			Driver: &libvirtxml.DomainDiskDriver{Name: "qemu", Type: disk.Format, Cache: "none", IO: "native"},
			Source: &libvirtxml.DomainDiskSource{File: &libvirtxml.DomainDiskSourceFile{File: disk.Path}},
			Target: &libvirtxml.DomainDiskTarget{Dev: "vd" + string(rune('a'+i)), Bus: "virtio"},
		}
		if disk.ReadOnly {
			dd.ReadOnly = &libvirtxml.DomainDiskReadOnly{}
			dd.Driver.Cache, dd.Driver.IO = "", ""
		}
		d.Devices.Disks = append(d.Devices.Disks, dd)
	}
	for _, nic := range spec.NICs {
		d.Devices.Interfaces = append(d.Devices.Interfaces, libvirtxml.DomainInterface{
			MAC:    &libvirtxml.DomainInterfaceMAC{Address: nic.MAC},
			Source: &libvirtxml.DomainInterfaceSource{Bridge: &libvirtxml.DomainInterfaceSourceBridge{Bridge: nic.Bridge}},
			Model:  &libvirtxml.DomainInterfaceModel{Type: "virtio"},
		})
	}
	port := uint(0)
	d.Devices.Serials = []libvirtxml.DomainSerial{{
		Source: &libvirtxml.DomainChardevSource{Pty: &libvirtxml.DomainChardevSourcePty{}},
		Target: &libvirtxml.DomainSerialTarget{Port: &port},
		Log:    &libvirtxml.DomainChardevLog{File: consoleLog(spec.Name), Append: "on"},
	}}
	d.Devices.Consoles = []libvirtxml.DomainConsole{{
		Source: &libvirtxml.DomainChardevSource{Pty: &libvirtxml.DomainChardevSourcePty{}},
		Target: &libvirtxml.DomainConsoleTarget{Type: "serial", Port: &port},
	}}
	// The guest agent's port (health checks run commands through it);
	// libvirt picks the socket's path.
	d.Devices.Channels = []libvirtxml.DomainChannel{{
		Source: &libvirtxml.DomainChardevSource{UNIX: &libvirtxml.DomainChardevSourceUNIX{Mode: "bind"}},
		Target: &libvirtxml.DomainChannelTarget{VirtIO: &libvirtxml.DomainChannelTargetVirtIO{Name: agentChannel}},
	}}
	// A guest kernel panic is reported through pvpanic and ends the domain
	// (on_crash=destroy), so corral sees a crash and restarts it.
	d.Devices.Panics = []libvirtxml.DomainPanic{{Model: "isa"}}
	d.Devices.MemBalloon = &libvirtxml.DomainMemBalloon{Model: "none"}
	displayDevices(d.Devices)
	return d.Marshal()
}

// poolXML defines the directory storage pool.
func poolXML(name, dir string) (string, error) {
	p := &libvirtxml.StoragePool{
		Type:   "dir",
		Name:   name,
		Target: &libvirtxml.StoragePoolTarget{Path: dir},
	}
	return p.Marshal()
}

// volumeXML defines a qcow2 volume, blank or on a backing file.
func volumeXML(name string, sizeBytes uint64, backingPath, backingFormat string) (string, error) {
	v := &libvirtxml.StorageVolume{
		Name:     name,
		Capacity: &libvirtxml.StorageVolumeSize{Value: sizeBytes, Unit: "bytes"},
		Target:   &libvirtxml.StorageVolumeTarget{Format: &libvirtxml.StorageVolumeTargetFormat{Type: "qcow2"}},
	}
	if backingPath != "" {
		v.BackingStore = &libvirtxml.StorageVolumeBackingStore{
			Path:   backingPath,
			Format: &libvirtxml.StorageVolumeTargetFormat{Type: backingFormat},
		}
	}
	return v.Marshal()
}

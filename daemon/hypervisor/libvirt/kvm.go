package libvirt

import (
	"log/slog"

	"github.com/corralhq/corral/internal/kvm"
)

// chooseDomainType resolves "auto": kvm when kvm.Usable says KVM works here,
// qemu (TCG) otherwise. "kvm" and "qemu" are taken as given.
func chooseDomainType(want string, log *slog.Logger) string {
	if want == "kvm" || want == "qemu" {
		return want
	}
	why := kvm.Usable()
	if why == "" {
		return "kvm"
	}
	log.Info("using TCG (domain type qemu) for guests", "reason", why)
	return "qemu"
}

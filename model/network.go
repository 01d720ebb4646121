package model

import (
	"fmt"
	"time"
)

// NetKind is how a network reaches the physical network.
type NetKind string

const (
	// NetVXLAN tunnels the network between hosts (UDP 4789) with one VNI.
	NetVXLAN NetKind = "vxlan"
	// NetVLAN bridges a VLAN sub-interface of an uplink on every host.
	NetVLAN NetKind = "vlan"
)

// Network is a layer-2 network present on every host as a bridge.
type Network struct {
	Name string  `json:"name"`
	Kind NetKind `json:"kind"`
	VNI  int     `json:"vni,omitempty"`
	VLAN int     `json:"vlan,omitempty"`
	// Uplink is the interface carrying a VLAN network on every host.
	Uplink string `json:"uplink,omitempty"`
	// MTU of the bridge; 0 means the largest the uplink allows.
	MTU       int       `json:"mtu,omitempty"`
	CreatedAt time.Time `json:"created_at"`
	// Project holds the network; empty: DefaultProject.
	Project string `json:"project,omitempty"`
}

// Validate checks a network's own fields.
func (n Network) Validate() error {
	if err := ValidateName("network", n.Name); err != nil {
		return err
	}
	bad := func(format string, args ...any) error {
		return fmt.Errorf("network %q: %s: %w", n.Name, fmt.Sprintf(format, args...), ErrInvalid)
	}
	switch n.Kind {
	case NetVXLAN:
		if n.VNI < 1 || n.VNI > 1<<24-1 {
			return bad("vni %d out of range 1..%d", n.VNI, 1<<24-1)
		}
		if n.VLAN != 0 || n.Uplink != "" {
			return bad("a vxlan network takes no vlan or uplink")
		}
	case NetVLAN:
		if n.VLAN < 1 || n.VLAN > 4094 {
			return bad("vlan %d out of range 1..4094", n.VLAN)
		}
		if n.Uplink == "" || len(n.Uplink) > 15 {
			return bad("uplink %q: give the interface that carries the VLAN (at most 15 characters)", n.Uplink)
		}
		if n.VNI != 0 {
			return bad("a vlan network takes no vni")
		}
	default:
		return bad("kind %q: use vxlan or vlan", n.Kind)
	}
	if n.MTU != 0 && (n.MTU < 576 || n.MTU > 9000) {
		return bad("mtu %d out of range 576..9000", n.MTU)
	}
	return nil
}

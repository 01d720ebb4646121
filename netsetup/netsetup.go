// Package netsetup builds corral networks on a host with netlink: for every
// network a bridge, joined to the physical network either through a VLAN
// sub-interface of an uplink or through a VXLAN device (UDP 4789, local
// address = the host's advertise address) whose peers are the other hosts,
// kept as unicast FDB entries (head-end replication, no multicast). It is
// idempotent: Ensure creates what is missing and fixes what drifted, Observe
// reports, Remove deletes. Everything it creates carries the link alias
// "corral:<network>", and it touches nothing that does not. It is the only
// importer of vishvananda/netlink.
package netsetup

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sort"
	"strings"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/corralhq/corral/model"
)

// VXLANPort is the IANA VXLAN port.
const VXLANPort = 4789

// vxlanOverhead is what VXLAN over IPv4 adds to a frame: outer Ethernet is
// not counted by MTU; IPv4 20 + UDP 8 + VXLAN 8 + inner Ethernet 14.
const vxlanOverhead = 50

const aliasPrefix = "corral:"

// ErrNotOurs is returned when a link with a name corral would use exists and
// was not created by corral.
var ErrNotOurs = errors.New("link exists and is not managed by corral")

// Names of the links of a network: derived from its VNI or VLAN ID, which
// state keeps unique, and short enough for the 15-character limit.
func BridgeName(n model.Network) string {
	if n.Kind == model.NetVXLAN {
		return fmt.Sprintf("cbx%d", n.VNI)
	}
	return fmt.Sprintf("cbv%d", n.VLAN)
}

// UnderlayName is the VXLAN device or VLAN sub-interface of a network.
func UnderlayName(n model.Network) string {
	if n.Kind == model.NetVXLAN {
		return fmt.Sprintf("cvx%d", n.VNI)
	}
	return fmt.Sprintf("cvl%d", n.VLAN)
}

// Manager manages the links of one network namespace.
type Manager struct {
	h   *netlink.Handle
	log *slog.Logger
}

// New returns a manager for the network namespace at nsPath (a bind-mounted
// namespace file such as /run/netns/NAME), or for this process's namespace
// when nsPath is empty.
func New(nsPath string, log *slog.Logger) (*Manager, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	// Only rtnetlink: without a family list netlink also opens XFRM and
	// netfilter sockets, which fail where those modules are not loaded.
	var h *netlink.Handle
	var err error
	if nsPath == "" {
		h, err = netlink.NewHandle(unix.NETLINK_ROUTE)
	} else {
		ns, nerr := netns.GetFromPath(nsPath)
		if nerr != nil {
			return nil, fmt.Errorf("network namespace %s: %w", nsPath, nerr)
		}
		defer ns.Close()
		h, err = netlink.NewHandleAt(ns, unix.NETLINK_ROUTE)
	}
	if err != nil {
		return nil, fmt.Errorf("netlink: %w", err)
	}
	return &Manager{h: h, log: log}, nil
}

// Close releases the netlink handle.
func (m *Manager) Close() { m.h.Close() }

// State is what exists of a network on this host.
type State struct {
	Bridge   string   `json:"bridge"`
	Underlay string   `json:"underlay"`
	MTU      int      `json:"mtu"`
	Up       bool     `json:"up"`
	Peers    []string `json:"peers,omitempty"` // VXLAN FDB flood entries
}

// Plan is a network as this host must build it.
type Plan struct {
	Network model.Network
	// Local is this host's advertise address: the VXLAN source, and the
	// way to find the uplink that carries VXLAN.
	Local net.IP
	// Peers are the other hosts' advertise addresses (VXLAN only).
	Peers []net.IP
}

func (m *Manager) linkByName(name string) (netlink.Link, error) {
	l, err := m.h.LinkByName(name)
	var nf netlink.LinkNotFoundError
	if errors.As(err, &nf) {
		return nil, nil
	}
	return l, err
}

func owned(l netlink.Link, network string) bool {
	return l.Attrs().Alias == aliasPrefix+network
}

// linkFor returns the existing link called name if it is ours for network,
// nil if there is none, and ErrNotOurs if someone else's is there.
func (m *Manager) linkFor(name, network string) (netlink.Link, error) {
	l, err := m.linkByName(name)
	if err != nil || l == nil {
		return nil, err
	}
	if !owned(l, network) {
		return nil, fmt.Errorf("%s (alias %q): %w", name, l.Attrs().Alias, ErrNotOurs)
	}
	return l, nil
}

// uplinkFor finds the link that carries addr (the VXLAN underlay).
func (m *Manager) uplinkFor(addr net.IP) (netlink.Link, error) {
	links, err := m.h.LinkList()
	if err != nil {
		return nil, err
	}
	for _, l := range links {
		addrs, err := m.h.AddrList(l, netlink.FAMILY_V4)
		if err != nil {
			continue
		}
		for _, a := range addrs {
			if a.IP.Equal(addr) {
				return l, nil
			}
		}
	}
	return nil, fmt.Errorf("no interface has address %s", addr)
}

// mtu works out the network's MTU and the underlay link it rides on.
func (m *Manager) mtu(p Plan) (int, netlink.Link, error) {
	n := p.Network
	var under netlink.Link
	var err error
	overhead := 0
	if n.Kind == model.NetVXLAN {
		under, err = m.uplinkFor(p.Local)
		overhead = vxlanOverhead
	} else {
		under, err = m.h.LinkByName(n.Uplink)
		if err != nil {
			err = fmt.Errorf("uplink %q: %w", n.Uplink, err)
		}
	}
	if err != nil {
		return 0, nil, err
	}
	max := under.Attrs().MTU - overhead
	mtu := n.MTU
	if mtu == 0 {
		mtu = max
	}
	if mtu > max {
		return 0, nil, fmt.Errorf("network %q: mtu %d does not fit on %s (mtu %d, %d bytes of overhead): %w",
			n.Name, mtu, under.Attrs().Name, under.Attrs().MTU, overhead, model.ErrInvalid)
	}
	return mtu, under, nil
}

// Ensure makes the network exist as planned and reports whether it changed
// anything.
func (m *Manager) Ensure(p Plan) (bool, error) {
	n := p.Network
	mtu, under, err := m.mtu(p)
	if err != nil {
		return false, err
	}
	changed := false
	br, err := m.linkFor(BridgeName(n), n.Name)
	if err != nil {
		return false, err
	}
	if br == nil {
		attrs := netlink.NewLinkAttrs()
		attrs.Name, attrs.MTU = BridgeName(n), mtu
		if err := m.h.LinkAdd(&netlink.Bridge{LinkAttrs: attrs}); err != nil {
			return false, fmt.Errorf("create bridge %s: %w", attrs.Name, err)
		}
		if br, err = m.h.LinkByName(attrs.Name); err != nil {
			return false, err
		}
		if err := m.h.LinkSetAlias(br, aliasPrefix+n.Name); err != nil {
			return false, err
		}
		changed = true
		m.log.Info("bridge created", "network", n.Name, "bridge", attrs.Name)
	}
	dev, err := m.linkFor(UnderlayName(n), n.Name)
	if err != nil {
		return changed, err
	}
	if dev != nil && !matches(dev, n, p.Local, under) {
		// Ours but built for other parameters: rebuild it.
		if err := m.h.LinkDel(dev); err != nil {
			return changed, err
		}
		dev, changed = nil, true
	}
	if dev == nil {
		attrs := netlink.NewLinkAttrs()
		attrs.Name, attrs.MTU = UnderlayName(n), mtu
		var link netlink.Link
		if n.Kind == model.NetVXLAN {
			link = &netlink.Vxlan{LinkAttrs: attrs, VxlanId: n.VNI, SrcAddr: p.Local, Port: VXLANPort,
				VtepDevIndex: under.Attrs().Index, Learning: true}
		} else {
			attrs.ParentIndex = under.Attrs().Index
			link = &netlink.Vlan{LinkAttrs: attrs, VlanId: n.VLAN}
		}
		if err := m.h.LinkAdd(link); err != nil {
			return changed, fmt.Errorf("create %s: %w", attrs.Name, err)
		}
		if dev, err = m.h.LinkByName(attrs.Name); err != nil {
			return changed, err
		}
		if err := m.h.LinkSetAlias(dev, aliasPrefix+n.Name); err != nil {
			return changed, err
		}
		changed = true
		m.log.Info("underlay created", "network", n.Name, "link", attrs.Name, "kind", n.Kind)
	}
	for _, l := range []netlink.Link{br, dev} {
		if l.Attrs().MTU != mtu {
			if err := m.h.LinkSetMTU(l, mtu); err != nil {
				return changed, err
			}
			changed = true
		}
	}
	if dev.Attrs().MasterIndex != br.Attrs().Index {
		if err := m.h.LinkSetMaster(dev, br); err != nil {
			return changed, err
		}
		changed = true
	}
	for _, l := range []netlink.Link{dev, br} {
		if l.Attrs().Flags&net.FlagUp == 0 {
			if err := m.h.LinkSetUp(l); err != nil {
				return changed, err
			}
			changed = true
		}
	}
	if n.Kind == model.NetVXLAN {
		c, err := m.syncPeers(dev, p.Local, p.Peers)
		if err != nil {
			return changed, err
		}
		changed = changed || c
	}
	return changed, nil
}

func matches(dev netlink.Link, n model.Network, local net.IP, under netlink.Link) bool {
	switch d := dev.(type) {
	case *netlink.Vxlan:
		return n.Kind == model.NetVXLAN && d.VxlanId == n.VNI && d.SrcAddr.Equal(local) && d.Port == VXLANPort
	case *netlink.Vlan:
		return n.Kind == model.NetVLAN && d.VlanId == n.VLAN && d.Attrs().ParentIndex == under.Attrs().Index
	}
	return false
}

var zeroMAC = net.HardwareAddr{0, 0, 0, 0, 0, 0}

// floodPeers lists the VXLAN device's all-zeros FDB entries: where broadcast
// and unknown unicast go.
func (m *Manager) floodPeers(dev netlink.Link) (map[string]netlink.Neigh, error) {
	neighs, err := m.h.NeighList(dev.Attrs().Index, unix.AF_BRIDGE)
	if err != nil {
		return nil, err
	}
	out := map[string]netlink.Neigh{}
	for _, n := range neighs {
		if n.HardwareAddr.String() == zeroMAC.String() && n.IP != nil {
			out[n.IP.String()] = n
		}
	}
	return out, nil
}

// syncPeers makes the flood entries exactly the peers (never this host).
func (m *Manager) syncPeers(dev netlink.Link, local net.IP, peers []net.IP) (bool, error) {
	have, err := m.floodPeers(dev)
	if err != nil {
		return false, err
	}
	want := map[string]net.IP{}
	for _, p := range peers {
		if !p.Equal(local) {
			want[p.String()] = p
		}
	}
	changed := false
	for ip, p := range want {
		if _, ok := have[ip]; ok {
			continue
		}
		err := m.h.NeighAppend(&netlink.Neigh{LinkIndex: dev.Attrs().Index, Family: unix.AF_BRIDGE,
			Flags: netlink.NTF_SELF, State: netlink.NUD_PERMANENT, HardwareAddr: zeroMAC, IP: p})
		if err != nil {
			return changed, fmt.Errorf("add vxlan peer %s on %s: %w", ip, dev.Attrs().Name, err)
		}
		changed = true
	}
	for ip, n := range have {
		if _, ok := want[ip]; ok {
			continue
		}
		n := n
		if err := m.h.NeighDel(&n); err != nil {
			return changed, fmt.Errorf("remove vxlan peer %s on %s: %w", ip, dev.Attrs().Name, err)
		}
		changed = true
	}
	return changed, nil
}

// Observe reports what exists of a network; ok is false when its bridge is
// missing.
func (m *Manager) Observe(n model.Network) (State, bool, error) {
	br, err := m.linkFor(BridgeName(n), n.Name)
	if err != nil || br == nil {
		return State{}, false, err
	}
	st := State{Bridge: br.Attrs().Name, MTU: br.Attrs().MTU, Up: br.Attrs().Flags&net.FlagUp != 0}
	dev, err := m.linkFor(UnderlayName(n), n.Name)
	if err != nil {
		return st, true, err
	}
	if dev != nil {
		st.Underlay = dev.Attrs().Name
		if n.Kind == model.NetVXLAN {
			peers, err := m.floodPeers(dev)
			if err != nil {
				return st, true, err
			}
			for ip := range peers {
				st.Peers = append(st.Peers, ip)
			}
			sort.Strings(st.Peers)
		}
	}
	return st, true, nil
}

// Remove deletes a network's links that corral made; others of the same
// name are left alone.
func (m *Manager) Remove(n model.Network) error {
	var errs []error
	for _, name := range []string{UnderlayName(n), BridgeName(n)} {
		l, err := m.linkFor(name, n.Name)
		if errors.Is(err, ErrNotOurs) {
			m.log.Warn("not removing a link corral did not make", "link", name, "err", err)
			continue
		}
		if err != nil || l == nil {
			errs = append(errs, err)
			continue
		}
		if err := m.h.LinkDel(l); err != nil {
			errs = append(errs, fmt.Errorf("delete %s: %w", name, err))
			continue
		}
		m.log.Info("link removed", "network", n.Name, "link", name)
	}
	return errors.Join(errs...)
}

// Owned lists the networks that have corral-made links here, by name, with
// the links, so that networks gone from state can be removed.
func (m *Manager) Owned() (map[string][]string, error) {
	links, err := m.h.LinkList()
	if err != nil {
		return nil, err
	}
	out := map[string][]string{}
	for _, l := range links {
		if name, ok := strings.CutPrefix(l.Attrs().Alias, aliasPrefix); ok {
			out[name] = append(out[name], l.Attrs().Name)
		}
	}
	return out, nil
}

// RemoveLinks deletes links by name, checking each is corral's; underlays
// first, since they are enslaved to the bridge.
func (m *Manager) RemoveLinks(network string, names []string) error {
	var errs []error
	for _, bridges := range []bool{false, true} {
		for _, name := range names {
			if strings.HasPrefix(name, "cb") != bridges {
				continue
			}
			l, err := m.linkFor(name, network)
			if err != nil || l == nil {
				errs = append(errs, err)
				continue
			}
			if err := m.h.LinkDel(l); err != nil {
				errs = append(errs, err)
			}
		}
	}
	return errors.Join(errs...)
}

package controller

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"sort"
	"sync"
	"time"

	"github.com/corralhq/corral/internal/clock"
	"github.com/corralhq/corral/model"
	"github.com/corralhq/corral/raftlog"
)

// Networker builds corral networks on this host (netsetup implements it).
type Networker interface {
	EnsureNetwork(n model.Network, local net.IP, peers []net.IP) (changed bool, err error)
	RemoveNetwork(name string) error
	OwnedNetworks() ([]string, error)
}

// NetStore is the state the network loop reads.
type NetStore interface {
	Networks() []model.Network
	Hosts() []model.Host
	Watch() (<-chan struct{}, func())
}

// NetStatus is how one network stands on this host.
type NetStatus struct {
	Network string    `json:"network"`
	OK      bool      `json:"ok"`
	Error   string    `json:"error,omitempty"`
	Checked time.Time `json:"checked"`
}

// NetLoop makes this host's bridges, VLAN and VXLAN devices match the
// networks in state, with every other host as a VXLAN peer, and removes the
// networks that are gone. It runs on every state change (a network or a host
// added or removed) and every interval; netsetup is idempotent, so a pass
// over an unchanged state changes nothing on the host.
type NetLoop struct {
	self     string
	store    NetStore
	nets     Networker
	interval time.Duration
	clock    Clock
	log      *slog.Logger

	mu     sync.Mutex
	status map[string]NetStatus
}

// NewNetLoop returns a network loop; Run starts it. A nil clk is the
// system clock.
func NewNetLoop(self string, store NetStore, nets Networker, interval time.Duration, clk Clock, log *slog.Logger) *NetLoop {
	if clk == nil {
		clk = clock.Real{}
	}
	return &NetLoop{self: self, store: store, nets: nets, interval: interval, clock: clk, log: log, status: map[string]NetStatus{}}
}

// Run reconciles until ctx ends.
func (n *NetLoop) Run(ctx context.Context) error {
	changes, stop := n.store.Watch()
	defer stop()
	tick := n.clock.NewTicker(n.interval)
	defer tick.Stop()
	for {
		n.reconcile()
		select {
		case <-ctx.Done():
			return nil
		case <-changes:
		case <-tick.C():
		}
	}
}

func (n *NetLoop) reconcile() {
	var local net.IP
	var peers []net.IP
	for _, h := range n.store.Hosts() {
		ip := net.ParseIP(h.Addr)
		if h.Name == n.self {
			local = ip
		} else if ip != nil {
			peers = append(peers, ip)
		}
	}
	if local == nil {
		return // not registered yet: no address to build VXLAN from
	}
	want := map[string]bool{}
	now := n.clock.Now()
	for _, netw := range n.store.Networks() {
		want[netw.Name] = true
		changed, err := n.nets.EnsureNetwork(netw, local, peers)
		st := NetStatus{Network: netw.Name, OK: err == nil, Checked: now}
		if err != nil {
			st.Error = err.Error()
			n.log.Warn("network not ready", "network", netw.Name, "err", err)
		} else if changed {
			n.log.Info("network set up", "network", netw.Name, "kind", netw.Kind, "peers", len(peers))
		}
		n.mu.Lock()
		n.status[netw.Name] = st
		n.mu.Unlock()
	}
	owned, err := n.nets.OwnedNetworks()
	if err != nil {
		n.log.Warn("list corral networks", "err", err)
		return
	}
	for _, name := range owned {
		if want[name] {
			continue
		}
		if err := n.nets.RemoveNetwork(name); err != nil {
			n.log.Warn("remove network", "network", name, "err", err)
			continue
		}
		n.mu.Lock()
		delete(n.status, name)
		n.mu.Unlock()
		n.log.Info("network removed", "network", name)
	}
}

// Status reports how each network stands on this host.
func (n *NetLoop) Status() []NetStatus {
	n.mu.Lock()
	defer n.mu.Unlock()
	var out []NetStatus
	for _, s := range n.status {
		out = append(out, s)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Network < out[j].Network })
	return out
}

// CreateNetworkRequest creates a network.
type CreateNetworkRequest struct {
	Network model.Network `json:"network"`
}

// CreateNetwork records a network; every host builds it.
func (l *Leader) CreateNetwork(ctx context.Context, req CreateNetworkRequest) (model.Network, error) {
	if err := l.ready(); err != nil {
		return model.Network{}, err
	}
	n := req.Network
	n.CreatedAt = l.clock.Now().UTC()
	if err := n.Validate(); err != nil {
		return n, err
	}
	if err := l.projectGate(n.Project); err != nil {
		return n, err
	}
	if _, err := l.store.Apply(ctx, raftlog.CreateNetwork{Network: n}); err != nil {
		return n, err
	}
	what := fmt.Sprintf("vxlan vni %d", n.VNI)
	if n.Kind == model.NetVLAN {
		what = fmt.Sprintf("vlan %d on %s", n.VLAN, n.Uplink)
	}
	l.event(ctx, "network", "", "", "network %s created (%s)", n.Name, what)
	return l.store.Network(n.Name)
}

// DeleteNetwork removes a network no VM uses; every host removes its links.
func (l *Leader) DeleteNetwork(ctx context.Context, req NameRequest) (model.Network, error) {
	if err := l.ready(); err != nil {
		return model.Network{}, err
	}
	n, err := l.store.Network(req.Name)
	if err != nil {
		return n, err
	}
	if _, err := l.store.Apply(ctx, raftlog.DeleteNetwork{Name: req.Name}); err != nil {
		return n, err
	}
	l.event(ctx, "network", "", "", "network %s deleted", n.Name)
	return n, nil
}

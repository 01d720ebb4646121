package daemon

import (
	"context"
	"log/slog"
	"net"
	"sync"

	"github.com/corralhq/corral/api"
	"github.com/corralhq/corral/daemon/adminapi"
	"github.com/corralhq/corral/daemon/controller"
	"github.com/corralhq/corral/model"
	"github.com/corralhq/corral/netsetup"
)

// netsetupNetworker adapts netsetup to the controller's Networker. It opens
// its netlink handle on first use, so that daemon.New opens nothing.
type netsetupNetworker struct {
	log  *slog.Logger
	once sync.Once
	m    *netsetup.Manager
	err  error
}

func (n *netsetupNetworker) mgr() (*netsetup.Manager, error) {
	n.once.Do(func() { n.m, n.err = netsetup.New("", n.log) })
	return n.m, n.err
}

func (n *netsetupNetworker) EnsureNetwork(netw model.Network, local net.IP, peers []net.IP) (bool, error) {
	m, err := n.mgr()
	if err != nil {
		return false, err
	}
	return m.Ensure(netsetup.Plan{Network: netw, Local: local, Peers: peers})
}

func (n *netsetupNetworker) RemoveNetwork(name string) error {
	m, err := n.mgr()
	if err != nil {
		return err
	}
	owned, err := m.Owned()
	if err != nil {
		return err
	}
	return m.RemoveLinks(name, owned[name])
}

func (n *netsetupNetworker) OwnedNetworks() ([]string, error) {
	m, err := n.mgr()
	if err != nil {
		return nil, err
	}
	owned, err := m.Owned()
	var out []string
	for name := range owned {
		out = append(out, name)
	}
	return out, err
}

// bridgeOf names the bridge a VM NIC on network attaches to.
func (d *Daemon) bridgeOf(network string) string {
	n, err := d.store.Network(network)
	if err != nil {
		return "corral-missing-" + network
	}
	return netsetup.BridgeName(n)
}

func networkView(n model.Network, st map[string]controller.NetStatus) api.Network {
	out := api.Network{Name: n.Name, Kind: string(n.Kind), VNI: n.VNI, VLAN: n.VLAN, Uplink: n.Uplink, MTU: n.MTU,
		Bridge: netsetup.BridgeName(n), CreatedAt: n.CreatedAt, Project: model.ProjectOf(n.Project)}
	if s, ok := st[n.Name]; ok {
		out.LocalOK, out.LocalError = s.OK, s.Error
	}
	return out
}

func (b backend) netStatus() map[string]controller.NetStatus {
	out := map[string]controller.NetStatus{}
	if b.d.netloop != nil {
		for _, s := range b.d.netloop.Status() {
			out[s.Network] = s
		}
	}
	return out
}

func (b backend) Networks(ctx context.Context) ([]api.Network, error) {
	st := b.netStatus()
	scope := adminapi.Scope(ctx)
	out := []api.Network{}
	for _, n := range b.d.store.Networks() {
		if shared(scope, n.Project) {
			out = append(out, networkView(n, st))
		}
	}
	return out, nil
}

func (b backend) CreateNetwork(ctx context.Context, req api.NetworkCreateRequest) (api.Network, error) {
	project, err := inProject(ctx, req.Project)
	if err != nil {
		return api.Network{}, err
	}
	n := model.Network{Name: req.Name, Kind: model.NetKind(req.Kind), VNI: req.VNI, VLAN: req.VLAN, Uplink: req.Uplink, MTU: req.MTU, Project: project}
	if _, err := forward(ctx, b.d, mNetCreate, controller.CreateNetworkRequest{Network: n}); err != nil {
		return api.Network{}, err
	}
	b.d.waitState(ctx, func() bool { _, err := b.d.store.Network(req.Name); return err == nil })
	cur, err := b.d.store.Network(req.Name)
	return networkView(cur, b.netStatus()), err
}

func (b backend) DeleteNetwork(ctx context.Context, name string) error {
	if scope := adminapi.Scope(ctx); scope != "" {
		n, err := b.d.store.Network(name)
		if err != nil {
			return err
		}
		if err := mayDelete(scope, "network", name, n.Project); err != nil {
			return err
		}
	}
	if _, err := forward(ctx, b.d, mNetDelete, controller.NameRequest{Name: name}); err != nil {
		return err
	}
	b.d.waitState(ctx, func() bool { _, err := b.d.store.Network(name); return err != nil })
	return nil
}

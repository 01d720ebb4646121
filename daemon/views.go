package daemon

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sort"
	"strings"
	"time"

	"github.com/corralhq/corral/api"
	"github.com/corralhq/corral/daemon/controller"
	"github.com/corralhq/corral/daemon/membership"
	"github.com/corralhq/corral/daemon/rpc"
	"github.com/corralhq/corral/internal/version"
	"github.com/corralhq/corral/model"
	"github.com/corralhq/corral/raftlog"
)

// backend answers the admin API: reads from this host's copy of the state
// and gossip view, writes forwarded to the leader.
type backend struct{ d *Daemon }

func (b backend) Status(ctx context.Context) (api.Status, error) {
	d := b.d
	st := d.store.Status()
	leader, _ := d.store.Leader()
	out := api.Status{
		Host:    d.cfg.Name,
		Version: version.Version,
		Leader:  leader,
		Raft: api.RaftStatus{State: st.State, Term: st.Term, LastIndex: st.LastIndex,
			CommitIndex: st.CommitIndex, AppliedIndex: st.AppliedIndex, LastContact: st.LastContact},
		Voters:       []string{},
		Nonvoters:    []string{},
		Members:      map[string]int{},
		Joined:       d.members.Joined(),
		HAArmed:      !d.store.Cluster().HADisarmed,
		Lease:        "none",
		Protocol:     raftlog.ClusterProtocol(d.store.Cluster()),
		ThisProtocol: d.protocol(),
	}
	for _, h := range d.store.Hosts() {
		if p := raftlog.HostProtocol(h); out.HostsProtocol == 0 || p < out.HostsProtocol {
			out.HostsProtocol = p
		}
	}
	switch {
	case d.lease.Valid():
		out.Lease, out.LeaseRemainingMs = "held", d.lease.Remaining().Milliseconds()
	case d.lease.Fencing():
		out.Lease = "fencing"
	}
	out.Exposures = d.exposures()
	if r := d.store.Cluster().Recovery; r != nil {
		switch {
		case len(r.Waiting) > 0:
			out.Recovery = "waiting for " + strings.Join(r.Waiting, ", ") + " to tell what they run: no guest starts or stops meanwhile"
		default:
			out.Recovery = fmt.Sprintf("%d unknown guests run on until the recovery ends (corralctl cluster recovery end)", len(r.Unknown))
		}
	}
	if d.cfg.APIAddr != "" {
		out.API, out.APIFingerprint = d.apiURL(), d.apiFingerprint
	}
	out.Fencer = "none"
	if d.fencer != nil {
		out.Fencer = "unreachable"
		if st, ok := d.fencer.Status(); ok {
			out.Fencer = string(st.Mode)
		}
	}
	if servers, err := d.store.Servers(); err == nil {
		for _, s := range servers {
			if s.Voter {
				out.Voters = append(out.Voters, s.ID)
			} else {
				out.Nonvoters = append(out.Nonvoters, s.ID)
			}
		}
	}
	for _, m := range d.members.Members() {
		out.Members[string(m.State)]++
	}
	return out, nil
}

// leaseAges asks the leader for its view of every host's lease; nil when
// no leader answers quickly.
func (b backend) leaseAges(ctx context.Context) map[string]controller.LeaseAge {
	ctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	var ages []controller.LeaseAge
	var err error
	if b.d.store.IsLeader() {
		ages, err = b.d.leader.LeaseAges(ctx, struct{}{})
	} else if addr := b.d.leaderRPCAddr(); addr != "" {
		ages, err = rpc.Call(ctx, b.d.rpcCli, addr, mLeaseAges.Method, struct{}{})
	} else {
		return nil
	}
	if err != nil {
		return nil
	}
	out := map[string]controller.LeaseAge{}
	for _, a := range ages {
		out[a.Host] = a
	}
	return out
}

func withLease(h api.Host, ages map[string]controller.LeaseAge) api.Host {
	a, ok := ages[h.Name]
	switch {
	case !ok:
		h.Lease = "unknown"
	case a.Suspected:
		h.Lease, h.LeaseAgeMs = "late", a.Age.Milliseconds()
		if h.Gossip == "alive" {
			h.Gossip = "suspect" // gossip still hears it; the leader does not
		}
	default:
		h.Lease, h.LeaseAgeMs = "ok", a.Age.Milliseconds()
	}
	return h
}

func (b backend) Hosts(ctx context.Context) ([]api.Host, error) {
	d := b.d
	roles := b.raftRoles()
	ages := b.leaseAges(ctx)
	members := map[string]membership.Member{}
	for _, m := range d.members.Members() {
		members[m.Name] = m
	}
	var out []api.Host
	seen := map[string]bool{}
	for _, h := range d.store.Hosts() {
		m, ok := members[h.Name]
		out = append(out, hostView(h, m, ok, roles))
		seen[h.Name] = true
	}
	// Hosts gossip knows but the leader has not recorded yet.
	for _, m := range d.members.Members() {
		if !seen[m.Name] {
			out = append(out, hostView(model.Host{Name: m.Name}, m, true, roles))
		}
	}
	sortHosts(out)
	vms := d.store.VMs()
	for i := range out {
		out[i] = b.withAllocation(withLease(out[i], ages), vms)
	}
	return out, nil
}

// withAllocation adds what placement may use on the host and what its VMs
// take.
func (b backend) withAllocation(h api.Host, vms []model.VM) api.Host {
	p := b.d.cfg
	h.Allocatable = api.Capacity{
		VCPUs:     max(int(float64(h.Capacity.VCPUs-p.ReservedVCPUs)*p.CPUOvercommit), 0),
		MemoryMiB: max(int64(float64(h.Capacity.MemoryMiB-p.ReservedMemoryMiB)*p.MemoryOvercommit), 0),
	}
	for _, v := range vms {
		if v.Host == h.Name && !v.Deleting {
			h.VMs++
			h.Allocated.VCPUs += v.Spec.VCPUs
			h.Allocated.MemoryMiB += v.Spec.MemoryMiB
		}
	}
	return h
}

func (b backend) Host(ctx context.Context, name string) (api.Host, error) {
	d := b.d
	h, err := d.store.Host(name)
	m, ok := d.members.Member(name)
	if err != nil && !ok {
		return api.Host{}, err
	}
	return b.withAllocation(withLease(hostView(h, m, ok, b.raftRoles()), b.leaseAges(ctx)), d.store.VMs()), nil
}

func (b backend) DrainHost(ctx context.Context, name string) (api.Host, error) {
	if _, err := forward(ctx, b.d, mHostDrain, controller.NameRequest{Name: name}); err != nil {
		return api.Host{}, err
	}
	b.d.waitState(ctx, func() bool { h, err := b.d.store.Host(name); return err == nil && h.Mode == model.ModeMaintenance })
	return b.Host(ctx, name)
}

func (b backend) RemoveHost(ctx context.Context, name string, force bool) error {
	req := controller.RemoveHostRequest{Name: name, Force: force}
	// Before forwarding: the leader may be of an older protocol.
	if err := req.Gate(b.d.store.Cluster(), b.d.store.Hosts()); err != nil {
		return err
	}
	if _, err := forward(ctx, b.d, mHostRemove, req); err != nil {
		return err
	}
	b.d.waitState(ctx, func() bool { _, err := b.d.store.Host(name); return errors.Is(err, model.ErrNotFound) })
	return nil
}

func (b backend) RestoreHost(ctx context.Context, name string, req api.HostRestoreRequest) (api.Host, error) {
	if _, err := forward(ctx, b.d, mHostRestore, controller.HostRestoreRequest{Name: name, Failback: req.Failback}); err != nil {
		return api.Host{}, err
	}
	b.d.waitState(ctx, func() bool { h, err := b.d.store.Host(name); return err == nil && h.Mode == model.ModeActive })
	return b.Host(ctx, name)
}

func (b backend) SetHA(ctx context.Context, req api.HARequest) (api.Status, error) {
	if _, err := forward(ctx, b.d, mClusterHA, controller.HARequest{Armed: req.Armed}); err != nil {
		return api.Status{}, err
	}
	b.d.waitState(ctx, func() bool { return b.d.store.Cluster().HADisarmed == !req.Armed })
	return b.Status(ctx)
}

func (b backend) Balance(ctx context.Context, req api.BalanceRequest) (api.BalanceResult, error) {
	if err := raftlog.FeatureBalance.Check(b.d.store.Cluster(), b.d.store.Hosts()); err != nil {
		return api.BalanceResult{}, err // an older leader would not know the method
	}
	res, err := forward(ctx, b.d, mBalance, controller.BalanceRequest{Goal: req.Goal, Apply: req.Apply})
	if err != nil {
		return api.BalanceResult{}, err
	}
	out := api.BalanceResult{Goal: string(res.Plan.Goal), Moves: []api.BalanceMove{}, Freed: res.Plan.Freed, Notes: res.Plan.Notes,
		Blocked: res.Blocked, Started: res.Started}
	for _, m := range res.Plan.Moves {
		out.Moves = append(out.Moves, api.BalanceMove(m))
	}
	return out, nil
}

func (b backend) JoinTokens(ctx context.Context) ([]api.JoinToken, error) {
	now := time.Now()
	out := []api.JoinToken{}
	for _, t := range b.d.store.Cluster().JoinTokens {
		out = append(out, api.JoinToken{ID: t.ID, Description: t.Description, Created: t.Created, Expires: t.Expires, Expired: !now.Before(t.Expires)})
	}
	return out, nil
}

func (b backend) CreateJoinToken(ctx context.Context, req api.JoinTokenCreateRequest) (api.JoinTokenCreated, error) {
	var ttl time.Duration
	if req.TTL != "" {
		var err error
		if ttl, err = time.ParseDuration(req.TTL); err != nil {
			return api.JoinTokenCreated{}, fmt.Errorf("ttl %q: %v: %w", req.TTL, err, model.ErrInvalid)
		}
	}
	c, err := forward(ctx, b.d, mTokenCreate, TokenCreateRequest{TTL: ttl, Description: req.Description})
	if err != nil {
		return api.JoinTokenCreated{}, err
	}
	r := c.Record
	b.d.waitState(ctx, func() bool {
		for _, t := range b.d.store.Cluster().JoinTokens {
			if t.ID == r.ID {
				return true
			}
		}
		return false
	})
	return api.JoinTokenCreated{Token: c.Token, JoinToken: api.JoinToken{ID: r.ID, Description: r.Description, Created: r.Created, Expires: r.Expires}}, nil
}

func (b backend) RotateGossipKey(ctx context.Context) (api.GossipKeyRotation, error) {
	// Three Raft writes and a wait for every live host after each.
	ctx, cancel := context.WithTimeout(ctx, 4*rotateStepTimeout)
	defer cancel()
	r, err := forwardFor(ctx, b.d, mGossipRotate, struct{}{}, 4*rotateStepTimeout)
	if err != nil {
		return api.GossipKeyRotation{}, err
	}
	return api.GossipKeyRotation{Key: r.Key, Hosts: r.Hosts, Seconds: r.Took.Seconds()}, nil
}

func (b backend) RevokeJoinToken(ctx context.Context, id string) error {
	if _, err := forward(ctx, b.d, mTokenRevoke, TokenRevokeRequest{ID: id}); err != nil {
		return err
	}
	b.d.waitState(ctx, func() bool {
		for _, t := range b.d.store.Cluster().JoinTokens {
			if t.ID == id {
				return false
			}
		}
		return true
	})
	return nil
}

func (b backend) SetHostLabels(ctx context.Context, name string, req api.HostLabelsRequest) (api.Host, error) {
	_, err := forward(ctx, b.d, mHostLabels, controller.HostLabels{Name: name, Set: req.Set, Remove: req.Remove})
	if err != nil {
		return api.Host{}, err
	}
	// Read back from the local copy once it has caught up with the write.
	b.d.waitState(ctx, func() bool {
		h, err := b.d.store.Host(name)
		return err == nil && labelsApplied(h, req)
	})
	return b.Host(ctx, name)
}

func labelsApplied(h model.Host, req api.HostLabelsRequest) bool {
	for k, v := range req.Set {
		if h.Labels[k] != v {
			return false
		}
	}
	for _, k := range req.Remove {
		if _, ok := h.Labels[k]; ok {
			return false
		}
	}
	return true
}

// raftRoles maps host name to leader, voter or nonvoter.
func (b backend) raftRoles() map[string]string {
	roles := map[string]string{}
	servers, err := b.d.store.Servers()
	if err != nil {
		return roles
	}
	leader, _ := b.d.store.Leader()
	for _, s := range servers {
		switch {
		case s.ID == leader:
			roles[s.ID] = "leader"
		case s.Voter:
			roles[s.ID] = "voter"
		default:
			roles[s.ID] = "nonvoter"
		}
	}
	return roles
}

func hostView(h model.Host, m membership.Member, inGossip bool, roles map[string]string) api.Host {
	out := api.Host{
		Name:          h.Name,
		Addresses:     api.HostAddresses{Advertise: h.Addr, Raft: h.RaftAddr, RPC: h.RPCAddr},
		Gossip:        "unknown",
		RaftRole:      "none",
		Version:       h.Version,
		Protocol:      raftlog.HostProtocol(h),
		Capacity:      api.Capacity{VCPUs: h.Capacity.VCPUs, MemoryMiB: h.Capacity.MemoryMiB},
		Labels:        h.Labels,
		Mode:          string(h.Mode),
		RegisteredAt:  h.RegisteredAt,
		Draining:      h.Draining,
		FencedAt:      h.FencedAt,
		FenceReason:   h.FenceReason,
		StoppedAt:     h.StoppedAt,
		Health:        string(h.Health.State),
		HealthReasons: h.Health.Reasons,
	}
	if r, ok := roles[h.Name]; ok {
		out.RaftRole = r
	}
	if inGossip {
		out.Gossip, out.GossipSince = string(m.State), m.Since
		out.Addresses.Gossip = m.Addr
		out.CPUPercent, out.MemoryAvailableMiB = m.Meta.CPUPercent, m.Meta.MemAvailMiB
		out.PowerWatts, out.PowerSource = m.Meta.PowerWatts, m.Meta.PowerSource
		// Until the leader records the host, gossip is all we know.
		if out.Addresses.Advertise == "" {
			host, _, _ := net.SplitHostPort(m.Addr)
			out.Addresses.Advertise = host
			out.Addresses.Raft, out.Addresses.RPC = m.Meta.RaftAddr, m.Meta.RPCAddr
			out.Version, out.Protocol = m.Meta.Version, max(m.Meta.Protocol, 1)
			out.Capacity = api.Capacity{VCPUs: m.Meta.VCPUs, MemoryMiB: m.Meta.MemoryMiB}
		}
	}
	return out
}

func sortHosts(hs []api.Host) {
	sort.Slice(hs, func(i, j int) bool { return hs[i].Name < hs[j].Name })
}

package controller

import (
	"context"
	"fmt"

	"github.com/corralhq/corral/raftlog"
)

// The cluster protocol (raftlog/protocol.go): hosts gossip the protocol
// their corrald speaks, the leader records it with each host
// (RegisterHost), and once every host runs a protocol above the one in
// state it raises the cluster's (SetProtocol). Features of a protocol are
// used only from then on. The cluster's protocol is never lowered, so a
// host gossiping one below it is not registered: a downgrade below it is
// refused (a corrald that knows the rule refuses to start by itself).

// raiseProtocol writes SetProtocol once every host in state and every
// alive host in gossip (one about to be registered) runs a protocol above
// the cluster's, up to the leader's own. A dead host in state holds it
// back: it may return with its old corrald (upgrade it, or host rm it).
func (l *Leader) raiseProtocol(ctx context.Context, peers []Peer) error {
	hosts := l.store.Hosts()
	if len(hosts) == 0 {
		return nil
	}
	have := raftlog.ClusterProtocol(l.store.Cluster())
	low := l.cfg.Protocol
	for _, h := range hosts {
		low = min(low, raftlog.HostProtocol(h))
	}
	for _, p := range peers {
		if p.State == PeerAlive {
			low = min(low, max(p.Protocol, 1))
		}
	}
	if low <= have {
		return nil
	}
	if _, err := l.store.Apply(ctx, raftlog.SetProtocol{Protocol: low}); err != nil {
		return fmt.Errorf("raise the cluster protocol to %d: %w", low, err)
	}
	l.log.Info("cluster protocol raised", "from", have, "to", low)
	l.event(ctx, "protocol", "", "", "cluster protocol raised from %d to %d: every host runs it; from now on a host with a corrald of an older protocol is not registered, and such a corrald does not start", have, low)
	return nil
}

// refuseProtocol leaves a host whose protocol is below the cluster's
// unregistered (its record in state, if any, stays as it was) and says so
// once, in the log and as an event: its corrald is a release older than
// the cluster, such as a downgrade that predates the start-up check.
func (l *Leader) refuseProtocol(ctx context.Context, p Peer, proto, cluster int) {
	said := fmt.Sprintf("%s %d %d", p.Version, proto, cluster)
	if l.refused[p.Name] == said {
		return
	}
	if l.refused == nil {
		l.refused = map[string]string{}
	}
	l.refused[p.Name] = said
	msg := fmt.Sprintf("host %s runs corrald %s, which speaks cluster protocol %d, below the cluster's %d: not registered "+
		"(a cluster never goes back below its protocol; install a corral release of protocol %d or later on it)",
		p.Name, orDash(p.Version), proto, cluster, cluster)
	l.log.Warn("host refused: its protocol is below the cluster's", "host", p.Name, "version", p.Version, "protocol", proto, "cluster_protocol", cluster)
	l.event(ctx, "protocol-refused", p.Name, "", "%s", msg)
}

// forgetRefused drops what was said about names gossip no longer lists.
func (l *Leader) forgetRefused(peers []Peer) {
	known := map[string]bool{}
	for _, p := range peers {
		known[p.Name] = true
	}
	for name := range l.refused {
		if !known[name] {
			delete(l.refused, name)
		}
	}
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

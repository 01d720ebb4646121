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
// used only from then on; the cluster's protocol is never lowered.

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
	l.event(ctx, "protocol", "", "", "cluster protocol raised from %d to %d: every host runs it", have, low)
	return nil
}

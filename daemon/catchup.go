package daemon

import (
	"context"
	"time"

	"github.com/corralhq/corral/daemon/rpc"
)

// commitIndex is the answer of the raft.commit RPC.
type commitIndex struct {
	Index uint64 `json:"index"`
}

// waitCaughtUp returns once this host's copy of the state holds everything
// the leader had committed when asked: after a restart the FSM replays its
// log and snapshot from empty, and a host loop acting on a half-replayed
// state would take its own guests for strays. While no leader answers it
// keeps waiting, and the guests keep running untouched.
func (d *Daemon) waitCaughtUp(ctx context.Context) error {
	backoff := 50 * time.Millisecond
	for {
		var target uint64
		var err error
		if d.store.IsLeader() {
			bctx, cancel := context.WithTimeout(ctx, 5*time.Second)
			err = d.store.Barrier(bctx)
			cancel()
			if err == nil {
				return nil
			}
		} else if addr := d.leaderRPCAddr(); addr != "" {
			cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
			var ci commitIndex
			ci, err = rpc.Call(cctx, d.rpcCli, addr, mRaftCommit, struct{}{})
			cancel()
			target = ci.Index
			if err == nil {
				d.waitState(ctx, func() bool { return d.store.Status().AppliedIndex >= target })
				if d.store.Status().AppliedIndex >= target {
					d.log.Info("state caught up with the leader", "index", target)
					return nil
				}
			}
		}
		if err != nil {
			d.log.Debug("waiting to catch up with the leader", "err", err)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 2*time.Second)
	}
}

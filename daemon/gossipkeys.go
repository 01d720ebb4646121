package daemon

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/corralhq/corral/daemon/controller"
	"github.com/corralhq/corral/daemon/identity"
	"github.com/corralhq/corral/daemon/membership"
	"github.com/corralhq/corral/daemon/rpc"
	"github.com/corralhq/corral/model"
	"github.com/corralhq/corral/raftlog"
)

// Gossip key rotation. The cluster's keyring is in Raft state once it has
// been rotated (model.Cluster.GossipKeys); every host makes its memberlist
// keyring match it (keyLoop) and keeps it in its identity. The leader
// rotates in three steps, each taken by every live host before the next:
// install the new key beside the old, use the new one, remove the old. A
// host that is down meanwhile gossips with its old key when it returns
// until Raft, which does not need gossip, brings it the new keyring.

// event records an event of the daemon's own leader-only operations
// (tokens, gossip keys), with who asked for it.
func (d *Daemon) event(ctx context.Context, kind, format string, args ...any) {
	ev := model.Event{Time: time.Now().UTC(), Kind: kind, Message: fmt.Sprintf(format, args...)}
	controller.StampEvent(ctx, d.store.Cluster(), &ev)
	if _, err := d.store.Apply(ctx, raftlog.AddEvents{Events: []model.Event{ev}}); err != nil {
		d.log.Warn("record event", "kind", kind, "err", err)
	}
}

// rotateStepTimeout bounds how long the leader waits for the live hosts to
// take one rotation step.
const rotateStepTimeout = time.Minute

// GossipRotation reports a finished rotation.
type GossipRotation struct {
	// Key is the fingerprint of the new key.
	Key   string        `json:"key"`
	Hosts []string      `json:"hosts"`
	Took  time.Duration `json:"took"`
}

// keyFingerprints names keys without showing them.
func keyFingerprints(keys [][]byte) []string {
	out := make([]string, len(keys))
	for i, k := range keys {
		sum := sha256.Sum256(k)
		out[i] = hex.EncodeToString(sum[:8])
	}
	return out
}

// keyLoop makes this host's gossip keyring follow the one in state.
func (d *Daemon) keyLoop(ctx context.Context) error {
	if d.id == nil {
		return nil
	}
	changes, cancel := d.store.Watch()
	defer cancel()
	for {
		want := d.store.Cluster().GossipKeys
		if len(want) > 0 && !slices.EqualFunc(want, d.members.Keys(), bytes.Equal) {
			if err := d.members.SetKeys(want); err != nil {
				d.log.Warn("gossip keyring", "err", err)
			} else if err := d.id.SetGossipKeys(want); err != nil {
				d.log.Warn("gossip keyring: save", "err", err)
			} else {
				d.log.Info("gossip keyring updated", "keys", keyFingerprints(want))
			}
		}
		select {
		case <-ctx.Done():
			return nil
		case <-changes:
		}
	}
}

// gossipKeys reports this host's keyring by fingerprint, the key in use
// first (served to the leader during a rotation).
func (d *Daemon) gossipKeys(ctx context.Context, _ struct{}) ([]string, error) {
	return keyFingerprints(d.members.Keys()), nil
}

// rotateGossipKey replaces the cluster's gossip key (leader only).
func (d *Daemon) rotateGossipKey(ctx context.Context, _ struct{}) (GossipRotation, error) {
	if !d.store.IsLeader() {
		return GossipRotation{}, fmt.Errorf("ask the leader: %w", model.ErrNotLeader)
	}
	if d.id == nil {
		return GossipRotation{}, fmt.Errorf("gossip runs without a key (no cluster identity): %w", model.ErrInvalid)
	}
	start := time.Now()
	old := d.members.Keys()
	if cur := d.store.Cluster().GossipKeys; len(cur) > 0 {
		old = cur
	}
	if len(old) > 1 {
		// A rotation that did not finish: finish it with its new key.
		old = old[:1]
	}
	key := identity.NewGossipKey()
	steps := []struct {
		what string
		keys [][]byte
	}{
		{"install", [][]byte{old[0], key}},
		{"use", [][]byte{key, old[0]}},
		{"remove", [][]byte{key}},
	}
	var hosts []string
	for _, st := range steps {
		if _, err := d.store.Apply(ctx, raftlog.SetGossipKeys{Keys: st.keys}); err != nil {
			return GossipRotation{}, fmt.Errorf("gossip key rotation, step %s: %w", st.what, err)
		}
		var err error
		if hosts, err = d.waitKeys(ctx, keyFingerprints(st.keys)); err != nil {
			return GossipRotation{}, fmt.Errorf("gossip key rotation, step %s: %w (run it again once they are back, or remove them)", st.what, err)
		}
		d.log.Info("gossip key rotation", "step", st.what, "hosts", len(hosts))
	}
	fp := keyFingerprints([][]byte{key})[0]
	d.event(ctx, "gossip-key", "gossip key rotated to %s on %s", fp, strings.Join(hosts, ", "))
	return GossipRotation{Key: fp, Hosts: hosts, Took: time.Since(start).Round(time.Millisecond)}, nil
}

// waitKeys waits until every registered host that gossip sees alive holds
// exactly want, and returns their names.
func (d *Daemon) waitKeys(ctx context.Context, want []string) ([]string, error) {
	ctx, cancel := context.WithTimeout(ctx, rotateStepTimeout)
	defer cancel()
	for {
		var done, lagging []string
		for _, h := range d.store.Hosts() {
			m, ok := d.members.Member(h.Name)
			if !ok || m.State != membership.Alive {
				continue
			}
			var have []string
			var err error
			if h.Name == d.cfg.Name {
				have = keyFingerprints(d.members.Keys())
			} else {
				cctx, ccancel := context.WithTimeout(ctx, 5*time.Second)
				have, err = rpc.Call(cctx, d.rpcCli, h.RPCAddr, mGossipKeys, struct{}{})
				ccancel()
			}
			if err == nil && slices.Equal(have, want) {
				done = append(done, h.Name)
			} else {
				lagging = append(lagging, h.Name)
			}
		}
		if len(lagging) == 0 {
			return done, nil
		}
		select {
		case <-ctx.Done():
			// Conflict, not unavailable: forwarding retries the latter, and
			// a retry would start another rotation.
			return nil, fmt.Errorf("hosts %s did not take it: %w", strings.Join(lagging, ", "), model.ErrConflict)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

package daemon

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"github.com/corralhq/corral/api"
	"github.com/corralhq/corral/daemon/controller"
	"github.com/corralhq/corral/daemon/identity"
	"github.com/corralhq/corral/model"
	"github.com/corralhq/corral/raftlog"
	"github.com/corralhq/corral/raftstore"
)

// Recovery of the control plane: `corralctl cluster backup` saves the
// state, `corrald recover --from FILE` rebuilds a cluster from it on one
// host whose voters are all lost, and the hosts then tell what they run
// (controller/recovery.go). docs/recovery.md is the runbook.

func (b backend) ClusterBackup(ctx context.Context) (api.ClusterBackup, error) {
	// The state as this host has applied it, after catching up with the
	// leader if one answers soon: a backup taken on a lagging follower
	// would miss what it has not applied. Without a leader (quorum lost)
	// it is this host's last state: consistent, maybe not the newest.
	cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	b.d.waitCaughtUp(cctx)
	cancel()
	var buf bytes.Buffer
	h, err := b.d.store.WriteBackup(&buf, b.d.cfg.Name, time.Now())
	if err != nil {
		return api.ClusterBackup{}, err
	}
	b.d.log.Info("cluster state backed up", "applied", h.Applied, "hosts", h.Hosts, "vms", h.VMs, "bytes", buf.Len())
	return api.ClusterBackup{TakenAt: h.TakenAt, Host: h.Host, Applied: h.Applied, Protocol: h.Protocol, Hosts: h.Hosts, VMs: h.VMs,
		SHA256: h.SHA256, Data: buf.Bytes()}, nil
}

func (b backend) Recovery(ctx context.Context) (*api.Recovery, error) {
	r := b.d.store.Cluster().Recovery
	if r == nil {
		return nil, nil
	}
	out := &api.Recovery{At: r.At, By: r.By, BackupAt: r.BackupAt, BackupIndex: r.BackupIndex, Waiting: append([]string{}, r.Waiting...),
		Adopted: r.Adopted, Moved: r.Moved, Rechained: r.Rechained, Unknown: []api.ForeignGuest{}, HAWasArmed: r.HAWasArmed}
	for _, g := range r.Unknown {
		out.Unknown = append(out.Unknown, api.ForeignGuest(g))
	}
	return out, nil
}

func (b backend) EndRecovery(ctx context.Context, req api.RecoveryEndRequest) error {
	if _, err := forward(ctx, b.d, mRecoveryEnd, controller.RecoveryEnd{Force: req.Force}); err != nil {
		return err
	}
	b.d.waitState(ctx, func() bool { return b.d.store.Cluster().Recovery == nil })
	return nil
}

func (r reporter) Adopt(ctx context.Context, req raftlog.AdoptGuests) error {
	return tell(ctx, r.d, mRecoveryAdopt, req)
}

// mayRejoin reports whether a host of that name, in state already, may
// join again: a recovered cluster waits for it (its identity went with the
// old cluster's CA).
func (d *Daemon) mayRejoin(name string) bool {
	return d.store.Cluster().Recovery.Waits(name)
}

// Recover makes this host the first of a cluster rebuilt from a backup of
// the state (file): a new identity as `corrald init` makes (the old CA is
// gone with the lost hosts, and a backup holds no private key), and Raft
// data holding the backup's state in recovery. It returns the first join
// token, which the other hosts use to come back.
func Recover(cfg Config, file string) (raftstore.BackupHeader, model.Recovery, string, error) {
	if err := cfg.Validate(); err != nil {
		return raftstore.BackupHeader{}, model.Recovery{}, "", err
	}
	f, err := os.Open(file)
	if err != nil {
		return raftstore.BackupHeader{}, model.Recovery{}, "", err
	}
	defer f.Close()
	h, st, err := raftstore.ReadBackup(f)
	if err != nil {
		return h, model.Recovery{}, "", fmt.Errorf("%s: %w", file, err)
	}
	raftDir := filepath.Join(cfg.DataDir, "raft")
	if entries, err := os.ReadDir(raftDir); err == nil && len(entries) > 0 {
		return h, model.Recovery{}, "", fmt.Errorf("%s is not empty: recover only into an empty data_dir (move the old one aside): %w", raftDir, model.ErrConflict)
	}
	if _, err := os.Stat(cfg.IdentityDir()); err == nil {
		return h, model.Recovery{}, "", fmt.Errorf("%s exists: recover only into an empty data_dir (move the old one aside): %w", cfg.IdentityDir(), model.ErrConflict)
	}
	addr := net.JoinHostPort(cfg.AdvertiseAddr, strconv.Itoa(cfg.RaftPort))
	rec, err := raftstore.Recover(raftDir, h, st, cfg.Name, addr, time.Now())
	if err != nil {
		return h, rec, "", err
	}
	_, tok, err := identity.Init(cfg.IdentityDir(), cfg.Name, time.Now())
	if err != nil {
		return h, rec, "", err
	}
	return h, rec, tok.String(), nil
}

package daemon

import (
	"context"
	"fmt"

	"github.com/corralhq/corral/api"
	"github.com/corralhq/corral/daemon/controller"
	"github.com/corralhq/corral/daemon/rpc"
	"github.com/corralhq/corral/model"
	"github.com/corralhq/corral/raftlog"
)

// The cluster RPC, each method declared once: its name and types
// (rpc.Method) and, for a leader-only method, the Leader function that
// serves it. The server's registration and every caller use these, so a
// name cannot be written two ways, and registering one twice panics.

// leaderMethod is a leader-only operation: a follower forwards it to the
// leader (forward), which serves it with fn.
type leaderMethod[Req, Resp any] struct {
	rpc.Method[Req, Resp]
	fn func(*Daemon, context.Context, Req) (Resp, error)
	// speaker, when set, names the host a request speaks for (its lease,
	// its guests' reports): over mutual TLS only that host may send it.
	speaker func(*Daemon, Req) string
}

func leaderOnly[Req, Resp any](name string, fn func(*controller.Leader, context.Context, Req) (Resp, error)) leaderMethod[Req, Resp] {
	return leaderMethod[Req, Resp]{Method: rpc.Method[Req, Resp]{Name: name},
		fn: func(d *Daemon, ctx context.Context, req Req) (Resp, error) { return fn(d.leader, ctx, req) }}
}

// daemonLeaderOnly is a leader-only operation the daemon serves itself (it
// needs the cluster identity, which the controller does not hold); fn
// refuses when this host does not lead.
func daemonLeaderOnly[Req, Resp any](name string, fn func(*Daemon, context.Context, Req) (Resp, error)) leaderMethod[Req, Resp] {
	return leaderMethod[Req, Resp]{Method: rpc.Method[Req, Resp]{Name: name}, fn: fn}
}

// spokenBy binds a method to the host its requests speak for.
func (m leaderMethod[Req, Resp]) spokenBy(host func(*Daemon, Req) string) leaderMethod[Req, Resp] {
	m.speaker = host
	return m
}

func (m leaderMethod[Req, Resp]) register(d *Daemon) {
	rpc.Register(d.rpcSrv, m.Method, func(ctx context.Context, req Req) (Resp, error) {
		if m.speaker != nil {
			if peer, ok := rpc.Peer(ctx); ok {
				if host := m.speaker(d, req); host != peer {
					var zero Resp
					return zero, fmt.Errorf("%s: host %q may not speak for host %q: %w", m.Name, peer, host, model.ErrForbidden)
				}
			}
		}
		return m.fn(d, ctx, req)
	})
}

var (
	mVMCreate     = leaderOnly("vm.create", (*controller.Leader).CreateVM)
	mVMPower      = leaderOnly("vm.power", (*controller.Leader).SetVMPower)
	mVMRestart    = leaderOnly("vm.restart", (*controller.Leader).RestartVM)
	mVMResize     = leaderOnly("vm.resize", (*controller.Leader).ResizeVM)
	mVMDelete     = leaderOnly("vm.delete", (*controller.Leader).DeleteVM)
	mVMReport     = leaderOnly("vm.report", (*controller.Leader).ReportVMs).spokenBy(func(_ *Daemon, r raftlog.ReportVMs) string { return r.Host })
	mVMRelocate   = leaderOnly("vm.relocate", (*controller.Leader).RelocateVM).spokenBy(func(_ *Daemon, r controller.RelocateRequest) string { return r.Host })
	mVMMigrate    = leaderOnly("vm.migrate", (*controller.Leader).MigrateVM)
	mVMMigrated   = leaderOnly("vm.migrated", (*controller.Leader).MigrationDone).spokenBy(vmHostOf(func(r controller.MigrationResult) string { return r.Name }))
	mImagePut     = leaderOnly("image.put", (*controller.Leader).PutImage)
	mImageDelete  = leaderOnly("image.delete", (*controller.Leader).DeleteImage)
	mHostDrain    = leaderOnly("host.drain", (*controller.Leader).DrainHost)
	mHostRestore  = leaderOnly("host.restore", (*controller.Leader).RestoreHost)
	mHostRemove   = leaderOnly("host.remove", (*controller.Leader).RemoveHost)
	mHostLabels   = leaderOnly("host.labels", (*controller.Leader).SetHostLabels)
	mLeaseRenew   = leaderOnly("lease.renew", (*controller.Leader).Renew).spokenBy(func(_ *Daemon, r controller.LeaseRequest) string { return r.Host })
	mLeaseAges    = leaderOnly("lease.ages", (*controller.Leader).LeaseAges)
	mClusterHA    = leaderOnly("cluster.ha", (*controller.Leader).SetHA)
	mBalance      = leaderOnly("cluster.balance", (*controller.Leader).Balance)
	mNetCreate    = leaderOnly("net.create", (*controller.Leader).CreateNetwork)
	mNetDelete    = leaderOnly("net.delete", (*controller.Leader).DeleteNetwork)
	mTokenCreate  = daemonLeaderOnly("token.create", (*Daemon).createToken)
	mTokenRevoke  = daemonLeaderOnly("token.revoke", (*Daemon).revokeToken)
	mTokenRecord  = daemonLeaderOnly("token.record", (*Daemon).recordToken)
	mGossipRotate = daemonLeaderOnly("gossip.rotate", (*Daemon).rotateGossipKey)
	// API tokens: only with FeatureAPITokens (checked before forwarding),
	// so a leader that does not know them is never asked.
	mAPITokenAdd    = daemonLeaderOnly("apitoken.add", (*Daemon).addAPIToken)
	mAPITokenRevoke = daemonLeaderOnly("apitoken.revoke", (*Daemon).revokeAPIToken)
	mProjectSet     = daemonLeaderOnly("project.set", (*Daemon).setProject)
	mProjectDelete  = daemonLeaderOnly("project.delete", (*Daemon).deleteProject)
	// Groups: only with FeatureGroups (checked before forwarding).
	mGroupSet    = leaderOnly("group.set", (*controller.Leader).SetGroup)
	mGroupDelete = leaderOnly("group.delete", (*controller.Leader).DeleteGroup)
	mGroupScale  = leaderOnly("group.scale", (*controller.Leader).ScaleGroup)
	// Snapshots: only with FeatureSnapshots (checked before forwarding).
	// The VM's host reports how it took a running guest's snapshot, which
	// dead layers' files it deleted and which layers it merged.
	mVMSnapshot       = leaderOnly("vm.snapshot", (*controller.Leader).TakeSnapshot)
	mVMSnapshotRevert = leaderOnly("vm.snapshot.revert", (*controller.Leader).RevertSnapshot)
	mVMSnapshotDelete = leaderOnly("vm.snapshot.delete", (*controller.Leader).DeleteSnapshot)
	mVMSnapshotDone   = leaderOnly("vm.snapshot.done", (*controller.Leader).SnapshotDone).spokenBy(vmHostOf(func(r controller.SnapshotResult) string { return r.Name }))
	mVMLayersForget   = leaderOnly("vm.layers.forget", (*controller.Leader).ForgetLayers).spokenBy(vmHostOf(func(r controller.ForgetLayersRequest) string { return r.Name }))
	mVMLayersMerged   = leaderOnly("vm.layers.merged", (*controller.Leader).LayersMerged).spokenBy(vmHostOf(func(r controller.MergeRequest) string { return r.Name }))
	mVMSnapSchedule   = leaderOnly("vm.snapshot.schedule", (*controller.Leader).SetSnapshotSchedule)
	// Backups: only with FeatureBackups (checked before forwarding). The
	// host running a job reports its progress and how it ended.
	mBackupTargetPut    = leaderOnly("backup.target.put", (*controller.Leader).PutBackupTarget)
	mBackupTargetDelete = leaderOnly("backup.target.delete", (*controller.Leader).DeleteBackupTarget)
	mVMBackup           = leaderOnly("vm.backup", (*controller.Leader).StartBackup)
	mVMBackupProgress   = leaderOnly("vm.backup.progress", (*controller.Leader).BackupProgress).spokenBy(func(_ *Daemon, r controller.BackupProgressRequest) string { return r.Host })
	mVMBackupDone       = leaderOnly("vm.backup.done", (*controller.Leader).BackupDone).spokenBy(func(_ *Daemon, r controller.BackupResult) string { return r.Host })
	mBackupDelete       = leaderOnly("backup.delete", (*controller.Leader).DeleteBackup)
	mVMRestore          = leaderOnly("vm.restore", (*controller.Leader).RestoreVM)
	mVMBackupSchedule   = leaderOnly("vm.backup.schedule", (*controller.Leader).SetBackupSchedule)
	// Backup schedules of projects: only with FeatureProjectBackups.
	mProjectBackupSchedule = leaderOnly("project.backup.schedule", (*controller.Leader).SetProjectBackupSchedule)
	// Recovery (FeatureRecovery): a recovered cluster's hosts tell what
	// they run; an admin ends it.
	mRecoveryAdopt = leaderOnly("recovery.adopt", (*controller.Leader).AdoptGuests).spokenBy(func(_ *Daemon, r raftlog.AdoptGuests) string { return r.Host })
	mRecoveryEnd   = leaderOnly("recovery.end", (*controller.Leader).EndRecovery)

	// Served by every host, to callers without a certificate too: a host
	// joining (followers pass it to the leader).
	mClusterJoin = rpc.Method[JoinRequest, JoinResponse]{Name: "cluster.join"}
	// Served by the leader to the host that calls it (never forwarded: the
	// certificate is for the caller's name).
	mCertRenew = rpc.Method[CertRenewRequest, CertRenewResponse]{Name: "cert.renew"}
	// Served by every host about itself: its gossip keyring by fingerprint.
	mGossipKeys = rpc.Method[struct{}, []string]{Name: "gossip.keys"}

	// Served by every host about itself.
	mBootstrapView = rpc.Method[struct{}, controller.BootstrapView]{Name: "bootstrap.view"}
	mRaftCommit    = rpc.Method[struct{}, commitIndex]{Name: "raft.commit"}
	// Served by the host a VM is placed on (onHost).
	mVMConsole = rpc.Method[hostRead, api.ConsoleLog]{Name: "vm.console"}
	mVMStats   = rpc.Method[hostRead, api.VMStats]{Name: "vm.stats"}
)

// leaderMethods are registered on every host: any may be the leader.
var leaderMethods = []interface{ register(*Daemon) }{
	mVMCreate, mVMPower, mVMRestart, mVMResize, mVMDelete, mVMReport, mVMRelocate, mVMMigrate, mVMMigrated,
	mImagePut, mImageDelete, mHostDrain, mHostRestore, mHostRemove, mHostLabels, mLeaseRenew, mLeaseAges, mClusterHA,
	mNetCreate, mNetDelete, mTokenCreate, mTokenRevoke, mTokenRecord, mGossipRotate, mAPITokenAdd, mAPITokenRevoke,
	mProjectSet, mProjectDelete, mGroupSet, mGroupDelete, mGroupScale, mBalance,
	mVMSnapshot, mVMSnapshotRevert, mVMSnapshotDelete, mVMSnapshotDone, mVMLayersForget, mVMLayersMerged, mVMSnapSchedule,
	mBackupTargetPut, mBackupTargetDelete, mVMBackup, mVMBackupProgress, mVMBackupDone, mBackupDelete, mVMRestore, mVMBackupSchedule,
	mProjectBackupSchedule,
	mRecoveryAdopt, mRecoveryEnd,
}

// vmHostOf names, for a request about the VM that vm names, the host the
// VM is placed on: the one that reports its migration and its snapshots.
func vmHostOf[Req any](vm func(Req) string) func(*Daemon, Req) string {
	return func(d *Daemon, r Req) string { return vmHost(d, vm(r)) }
}

// vmHost is the host the VM called name is placed on ("" when there is no
// such VM).
func vmHost(d *Daemon, name string) string {
	v, err := d.store.VM(name)
	if err != nil {
		return ""
	}
	return v.Host
}

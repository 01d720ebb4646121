package daemon

import (
	"context"

	"github.com/corralhq/corral/api"
	"github.com/corralhq/corral/daemon/controller"
	"github.com/corralhq/corral/daemon/rpc"
)

// The cluster RPC, each method declared once: its name and types
// (rpc.Method) and, for a leader-only method, the Leader function that
// serves it. The server's registration and every caller use these, so a
// name cannot be written two ways, and registering one twice panics.

// leaderMethod is a leader-only operation: a follower forwards it to the
// leader (forward), which serves it with fn.
type leaderMethod[Req, Resp any] struct {
	rpc.Method[Req, Resp]
	fn func(*controller.Leader, context.Context, Req) (Resp, error)
}

func leaderOnly[Req, Resp any](name string, fn func(*controller.Leader, context.Context, Req) (Resp, error)) leaderMethod[Req, Resp] {
	return leaderMethod[Req, Resp]{Method: rpc.Method[Req, Resp]{Name: name}, fn: fn}
}

func (m leaderMethod[Req, Resp]) register(d *Daemon) {
	rpc.Register(d.rpcSrv, m.Method, func(ctx context.Context, req Req) (Resp, error) { return m.fn(d.leader, ctx, req) })
}

var (
	mVMCreate    = leaderOnly("vm.create", (*controller.Leader).CreateVM)
	mVMPower     = leaderOnly("vm.power", (*controller.Leader).SetVMPower)
	mVMRestart   = leaderOnly("vm.restart", (*controller.Leader).RestartVM)
	mVMResize    = leaderOnly("vm.resize", (*controller.Leader).ResizeVM)
	mVMDelete    = leaderOnly("vm.delete", (*controller.Leader).DeleteVM)
	mVMReport    = leaderOnly("vm.report", (*controller.Leader).ReportVMs)
	mVMRelocate  = leaderOnly("vm.relocate", (*controller.Leader).RelocateVM)
	mVMMigrate   = leaderOnly("vm.migrate", (*controller.Leader).MigrateVM)
	mVMMigrated  = leaderOnly("vm.migrated", (*controller.Leader).MigrationDone)
	mImagePut    = leaderOnly("image.put", (*controller.Leader).PutImage)
	mImageDelete = leaderOnly("image.delete", (*controller.Leader).DeleteImage)
	mHostDrain   = leaderOnly("host.drain", (*controller.Leader).DrainHost)
	mHostRestore = leaderOnly("host.restore", (*controller.Leader).RestoreHost)
	mHostLabels  = leaderOnly("host.labels", (*controller.Leader).SetHostLabels)
	mLeaseRenew  = leaderOnly("lease.renew", (*controller.Leader).Renew)
	mLeaseAges   = leaderOnly("lease.ages", (*controller.Leader).LeaseAges)
	mClusterHA   = leaderOnly("cluster.ha", (*controller.Leader).SetHA)
	mNetCreate   = leaderOnly("net.create", (*controller.Leader).CreateNetwork)
	mNetDelete   = leaderOnly("net.delete", (*controller.Leader).DeleteNetwork)

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
	mImagePut, mImageDelete, mHostDrain, mHostRestore, mHostLabels, mLeaseRenew, mLeaseAges, mClusterHA,
	mNetCreate, mNetDelete,
}

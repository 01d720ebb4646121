// Package daemon is corrald's composition root: it builds every subsystem
// from a Config (New), runs them (Run) and shuts them down in reverse order.
// It also adapts the subsystems to each other's interfaces: gossip members
// to controller peers, the store and gossip to admin API views, and writes
// to the leader through the cluster RPC.
package daemon

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/corralhq/corral/daemon/adminapi"
	"github.com/corralhq/corral/daemon/console"
	"github.com/corralhq/corral/daemon/controller"
	"github.com/corralhq/corral/daemon/hypervisor/libvirt"
	"github.com/corralhq/corral/daemon/identity"
	"github.com/corralhq/corral/daemon/membership"
	"github.com/corralhq/corral/daemon/metrics"
	"github.com/corralhq/corral/daemon/placement"
	"github.com/corralhq/corral/daemon/rpc"
	"github.com/corralhq/corral/fencer"
	"github.com/corralhq/corral/hwmon"
	"github.com/corralhq/corral/internal/version"
	"github.com/corralhq/corral/model"
	"github.com/corralhq/corral/raftstore"
	"github.com/corralhq/corral/web"
)

// Daemon is one corrald.
type Daemon struct {
	cfg Config
	log *slog.Logger

	store   *raftstore.Store
	id      *identity.Identity // nil: no cluster identity (loopback or insecure)
	members *membership.Membership
	rpcSrv  *rpc.Server
	rpcCli  *rpc.Client
	// directRenewal: when a renewal was last granted over the direct
	// path (a time.Time; renewer).
	directRenewal  atomic.Value
	relayedRenewal atomic.Bool // the last grant came through a relay
	leader         *controller.Leader
	backups        *controller.BackupRunner
	boot           *controller.Bootstrap
	admin          *adminapi.Server
	// apiFingerprint is the HTTPS API's certificate's (api_addr; set by
	// Run before the API serves, empty without it).
	apiFingerprint string
	driver         GuestDriver
	consoles       *console.Hub
	displays       displays
	host           *controller.HostLoop
	lease          *controller.Lease
	fencer         *fencer.Client // nil without fencer_socket
	netloop        *controller.NetLoop
	monitor        *hwmon.Monitor
	hw             hardware
	metrics        *metrics.Metrics

	ready chan struct{}
	// caughtUp is closed once the local state has caught up with the
	// leader after start (waitCaughtUp).
	caughtUp chan struct{}
}

// New validates cfg and builds the daemon. It starts nothing and opens no
// file or socket.
func New(cfg Config, log *slog.Logger) (*Daemon, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	id, err := loadIdentity(cfg)
	if err != nil {
		return nil, err
	}
	var (
		raftServerTLS, raftClientTLS, rpcServerTLS *tls.Config
		gossipKeys                                 [][]byte
	)
	if id != nil {
		raftServerTLS, raftClientTLS, rpcServerTLS = id.ServerTLS(true), id.ClientTLS(), id.ServerTLS(false)
		gossipKeys = id.GossipKeys()
	}
	if cfg.Tuning == (Tuning{}) {
		cfg.Tuning = DefaultTuning()
	}
	log = log.With("host", cfg.Name)
	d := &Daemon{cfg: cfg, id: id, log: log, ready: make(chan struct{}), caughtUp: make(chan struct{})}
	if id != nil {
		id.SetRevoked(func(name string, issued time.Time) bool { return d.store.Cluster().IsRevoked(name, issued) })
	}
	d.store = raftstore.New(raftstore.Config{
		ID:            cfg.Name,
		BindAddr:      net.JoinHostPort(cfg.BindAddr, strconv.Itoa(cfg.RaftPort)),
		AdvertiseAddr: d.raftAddr(),
		Dir:           filepath.Join(cfg.DataDir, "raft"),
		ServerTLS:     raftServerTLS,
		ClientTLS:     raftClientTLS,
		DialTLS:       d.raftDialTLS,
		Logger:        log.With("component", "raftstore"),
		Timing:        cfg.Tuning.Raft,
	})
	d.monitor = hwmon.NewMonitor(cfg.thresholds())
	d.metrics = metrics.New(metricsSource{d})
	d.members = membership.New(membership.Config{
		Name:             cfg.Name,
		BindAddr:         cfg.BindAddr,
		AdvertiseAddr:    cfg.AdvertiseAddr,
		Port:             cfg.GossipPort,
		Seeds:            cfg.Seeds,
		Keys:             gossipKeys,
		ReconnectTimeout: cfg.ReconnectAfter,
		Meta: membership.Meta{
			Version:  version.Version,
			RaftAddr: d.raftAddr(),
			RPCAddr:  d.rpcAddr(),
			Protocol: d.protocol(),
		},
		Logger: log.With("component", "membership"),
		Timing: cfg.Tuning.Gossip,
	})
	d.rpcSrv = rpc.NewServer(rpcServerTLS, log.With("component", "rpc"))
	d.rpcCli = rpc.NewClient(raftClientTLS)
	d.directRenewal.Store(time.Now())
	peers := peerView{d.members}
	d.leader = controller.NewLeader(controller.LeaderConfig{
		Self:              cfg.Name,
		Backups:           backupEngine{},
		RaftVoters:        cfg.RaftVoters,
		DeadVoterTimeout:  cfg.DeadVoterAfter,
		ReconcileInterval: cfg.Tuning.ReconcileInterval,
		Placement: placement.Options{
			Strategy: placement.Strategy(cfg.PlacementStrategy), CPUOvercommit: cfg.CPUOvercommit, MemoryOvercommit: cfg.MemoryOvercommit,
			ReservedVCPUs: cfg.ReservedVCPUs, ReservedMemoryMiB: cfg.ReservedMemoryMiB,
		},
		Liveness: controller.LivenessConfig{
			Interval: cfg.HeartbeatInterval, TTL: cfg.LeaseTTL, Margin: cfg.FenceMargin,
			FenceCommand: strings.Fields(cfg.FenceCommand), FenceAfter: cfg.FenceAfter, FenceTimeout: cfg.FenceTimeout,
			SharedStorage: cfg.SharedStorage, DrainParallel: cfg.DrainParallel, AutoEvacuate: cfg.AutoEvacuate,
			RenewalGather: cfg.Tuning.RenewalGather,
		},
		Balance: controller.BalanceConfig{Goal: placement.Goal(cfg.Balance), Interval: cfg.BalanceInterval, MinGain: cfg.BalanceMinGain,
			PowerOn: strings.Fields(cfg.PowerOnCommand), PowerOff: strings.Fields(cfg.PowerOffCommand), PowerTimeout: cfg.PowerTimeout},
		Recorder:  d.metrics,
		KernelDir: cfg.KernelDir,
		VerifyHost: func(ctx context.Context, h model.Host) error {
			return d.verifyHost(ctx, h.Name, h.RPCAddr, h.RaftAddr)
		},
		Protocol: d.protocol(),
	}, d.store, d.store, peers, controller.SystemClock{}, log.With("component", "leader"))
	d.driver = cfg.Tuning.Driver
	if d.driver == nil {
		d.driver = libvirt.New(libvirt.Config{
			URI: cfg.LibvirtURI, Socket: cfg.LibvirtSocket, PoolDir: cfg.StoragePool, DomainType: cfg.DomainType,
			SharedStorage: cfg.SharedStorage,
			Logger:        log.With("component", "libvirt"),
			OnProblem:     d.republish,
		})
	}
	var guard controller.Fencer
	if cfg.FencerSocket != "" {
		d.fencer = fencer.NewClient(cfg.FencerSocket, cfg.FenceKillBudget, log.With("component", "fencer"))
		guard = d.fencer
	}
	d.lease = controller.NewLease(controller.LeaseConfig{
		Self: cfg.Name, Interval: cfg.HeartbeatInterval, TTL: cfg.LeaseTTL, Watchdog: cfg.WatchdogDevice,
		KillBudget: cfg.FenceKillBudget, AlignRenewals: true,
	}, renewer{d}, controller.SystemClock{}, log.With("component", "lease"), func(string) { d.host.Fence() }, guard)
	var engine controller.BackupEngine = backupEngine{}
	if cfg.Tuning.Backups != nil {
		engine = cfg.Tuning.Backups
	}
	d.host = controller.NewHostLoop(controller.HostConfig{
		Self: cfg.Name, ResyncInterval: cfg.Tuning.HostResync, ShutdownTimeout: cfg.ShutdownTimeout,
		MayStart:     func() bool { return d.lease.MayStart(d.store.AppliedIndex()) },
		StartBlocked: func() string { return d.lease.StartBlocked(d.store.AppliedIndex()) },
		Fencing:      d.lease.Fencing,
		Bridge:       d.bridgeOf,
		MigrationURIs: func(addr string) (string, string) {
			return fmt.Sprintf(cfg.MigrationURI, addr), fmt.Sprintf(cfg.MigrationDataURI, addr)
		},
		KernelDir: cfg.KernelDir,
		Backups:   engine,
	}, d.store, d.driver, reporter{d}, controller.SystemClock{}, log.With("component", "host"))
	d.backups = &controller.BackupRunner{Self: cfg.Name, Store: d.store, Volumes: d.driver, Engine: engine,
		Reporter: reporter{d}, Clock: controller.SystemClock{}, Log: log.With("component", "backup")}
	d.boot = &controller.Bootstrap{
		Self:   cfg.Name,
		Expect: cfg.BootstrapExpect,
		Settle: cfg.Tuning.BootstrapSettle,
		Raft:   d.store,
		Peers:  peers,
		Ask: func(ctx context.Context, p controller.Peer) (controller.BootstrapView, error) {
			// Only a host that proves its name gets a seat in the first
			// Raft configuration.
			if err := d.verifyHost(ctx, p.Name, p.RPCAddr, p.RaftAddr); err != nil {
				return controller.BootstrapView{}, err
			}
			return rpc.Call(ctx, d.rpcCli, p.RPCAddr, mBootstrapView, struct{}{})
		},
		Clock: controller.SystemClock{},
		Log:   log.With("component", "bootstrap"),
	}
	if cfg.ManageNetworks {
		nets := cfg.Tuning.Networker
		if nets == nil {
			nets = &netsetupNetworker{log: log.With("component", "netsetup")}
		}
		d.netloop = controller.NewNetLoop(cfg.Name, d.store, nets, 10*time.Second, controller.SystemClock{}, log.With("component", "network"))
	}
	d.registerRPC()
	d.admin = adminapi.New(backend{d}, log.With("component", "adminapi"))
	return d, nil
}

func (d *Daemon) raftAddr() string {
	return net.JoinHostPort(d.cfg.AdvertiseAddr, strconv.Itoa(d.cfg.RaftPort))
}

func (d *Daemon) rpcAddr() string {
	return net.JoinHostPort(d.cfg.AdvertiseAddr, strconv.Itoa(d.cfg.RPCPort))
}

// warnExposures logs, now and every hour while running, what leaves the
// cluster plane open (Config.Exposures): a host daemon that is root on
// every machine must not trust its network silently.
func (d *Daemon) warnExposures(ctx context.Context) {
	ex := d.exposures()
	if len(ex) == 0 {
		return
	}
	warn := func() {
		for _, e := range ex {
			d.log.Warn("INSECURE: anyone who reaches this host's cluster ports can control the cluster", "exposure", e)
		}
	}
	warn()
	go func() {
		t := time.NewTicker(time.Hour)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
				warn()
			}
		}
	}()
}

// Ready is closed once every listener is open and every loop started.
func (d *Daemon) Ready() <-chan struct{} { return d.ready }

// Name returns this host's name.
func (d *Daemon) Name() string { return d.cfg.Name }

func (d *Daemon) registerRPC() {
	for _, m := range leaderMethods {
		m.register(d)
	}
	rpc.Register(d.rpcSrv, mBootstrapView, func(ctx context.Context, _ struct{}) (controller.BootstrapView, error) {
		return d.boot.View(), nil
	})
	rpc.Register(d.rpcSrv, mClusterJoin, d.serveJoin)
	rpc.Register(d.rpcSrv, mCertRenew, d.serveRenew)
	rpc.Register(d.rpcSrv, mGossipKeys, d.gossipKeys)
	d.rpcSrv.Public(mClusterJoin.Name)
	rpc.Register(d.rpcSrv, mRaftCommit, func(ctx context.Context, _ struct{}) (commitIndex, error) {
		if !d.store.IsLeader() {
			return commitIndex{}, fmt.Errorf("ask the leader: %w", model.ErrNotLeader)
		}
		return commitIndex{Index: d.store.Status().CommitIndex}, nil
	})
	d.rpcSrv.SetRelay(d.relayTarget)
	d.registerGuestRPC()
}

// task is a running component: cancel stops it, done yields its result.
type task struct {
	name   string
	cancel context.CancelFunc
	done   chan error
}

// Run starts everything, serves until ctx ends or a component fails, then
// shuts down in reverse order of start. It returns nil on a clean stop.
func (d *Daemon) Run(ctx context.Context) (err error) {
	access, err := adminapi.ResolveAccess(d.cfg.SocketGroup, d.cfg.SocketReadGroup)
	if err != nil {
		return err
	}
	d.admin.Access, d.admin.RateLimit, d.admin.Host = access, d.cfg.APIRateLimit, d.cfg.Name
	adminLn, err := adminapi.Listen(d.cfg.Socket, d.cfg.SocketGroup, d.cfg.SocketReadGroup != "")
	if err != nil {
		return err
	}
	defer adminLn.Close()
	rpcLn, err := net.Listen("tcp", net.JoinHostPort(d.cfg.BindAddr, strconv.Itoa(d.cfg.RPCPort)))
	if err != nil {
		return fmt.Errorf("cluster rpc: %w", err)
	}
	defer rpcLn.Close()
	var apiLn net.Listener
	if d.cfg.APIAddr != "" {
		if apiLn, err = d.listenAPI(); err != nil {
			return err
		}
		defer apiLn.Close()
	}
	var metricsLn net.Listener
	if d.cfg.MetricsAddr != "" {
		if metricsLn, err = net.Listen("tcp", d.cfg.MetricsAddr); err != nil {
			return fmt.Errorf("metrics_addr: %w", err)
		}
		defer metricsLn.Close()
	}
	if err := d.store.Open(); err != nil {
		return err
	}
	defer func() {
		if cerr := d.store.Close(); cerr != nil {
			d.log.Warn("raft shutdown", "err", cerr)
		}
	}()
	// The state restored from the last snapshot may already record a
	// protocol this corrald does not speak (a downgrade): refuse to start
	// before acting on it. Entries replayed later are checked by the
	// protocol task.
	if err := d.checkProtocol(); err != nil {
		return err
	}
	d.members.UpdateMeta(func(m *membership.Meta) { m.InCluster = d.store.HasState() })
	d.sampleOnce(ctx)
	d.warnExposures(ctx)
	if err := d.members.Start(); err != nil {
		return err
	}

	failed := make(chan error, 8)
	var tasks []*task
	start := func(name string, fn func(context.Context) error) {
		tctx, cancel := context.WithCancel(context.Background())
		t := &task{name: name, cancel: cancel, done: make(chan error, 1)}
		go func() {
			err := fn(tctx)
			if err != nil && tctx.Err() == nil {
				failed <- fmt.Errorf("%s: %w", name, err)
			}
			t.done <- err // nil before cancel: the task finished its job (bootstrap)
		}()
		tasks = append(tasks, t)
	}
	start("rpc", func(ctx context.Context) error { return d.rpcSrv.Serve(ctx, rpcLn) })
	start("gossip", d.members.Run)
	start("leader", d.leader.Run)
	start("bootstrap", d.boot.Run)
	start("identity", d.identityLoop)
	start("gossip-keys", d.keyLoop)
	start("meta", d.syncMeta)
	start("protocol", d.watchProtocol)
	start("hypervisor", d.driver.Run)
	start("hwmon", d.runHardware)
	if d.fencer != nil {
		start("fencer", d.fencer.Run)
	} else {
		d.log.Warn("no fencer_socket: guests of this host outlive a crashed or hung corrald, and only disk locks keep a recovered copy from running beside them")
	}
	start("lease", d.lease.Run)
	start("autoscale", d.runAutoscale)
	if d.netloop != nil {
		start("network", d.netloop.Run)
	}
	start("host", func(ctx context.Context) error {
		// Act on guests only with a state that has caught up (see waitCaughtUp).
		if err := d.waitCaughtUp(ctx); err != nil || ctx.Err() != nil {
			return err
		}
		close(d.caughtUp)
		return d.host.Run(ctx)
	})
	start("backups", func(ctx context.Context) error {
		select { // jobs run from a state that has caught up, as the host loop does
		case <-d.caughtUp:
		case <-ctx.Done():
			return nil
		}
		return d.backups.Run(ctx)
	})
	if metricsLn != nil {
		start("metrics", func(ctx context.Context) error {
			return d.metrics.Serve(ctx, metricsLn, d.log.With("component", "metrics"))
		})
	}
	start("adminapi", func(ctx context.Context) error { return d.admin.Serve(ctx, adminLn) })
	if apiLn != nil {
		d.admin.Tokens, d.admin.Certificates = d.lookupAPIToken, d.lookupAPICertificate
		d.admin.Portal, d.admin.PortalServes = web.Handler(), web.Serves
		start("api", func(ctx context.Context) error { return d.admin.ServeAPI(ctx, apiLn) })
		d.log.Info("HTTPS API listening", "addr", apiLn.Addr().String(), "fingerprint", d.apiFingerprint)
	}
	close(d.ready)
	d.log.Info("corrald running", "version", version.Version, "advertise", d.cfg.AdvertiseAddr,
		"socket", d.cfg.Socket, "seeds", d.cfg.Seeds)

	select {
	case <-ctx.Done():
	case err = <-failed:
		d.log.Error("component failed; shutting down", "err", err)
	}
	for i := len(tasks) - 1; i >= 0; i-- {
		t := tasks[i]
		t.cancel()
		select {
		case <-t.done:
		case <-time.After(10 * time.Second):
			d.log.Warn("component did not stop in time", "component", t.name)
		}
	}
	d.rpcCli.Close()
	d.log.Info("corrald stopped")
	return err
}

// syncMeta keeps the gossip metadata's InCluster flag in line with the
// store, so that bootstrap on other hosts sees this host join a cluster.
// The flag never goes back (HasState stays true for the process's life),
// so once it is set the loop stops polling: an idle corrald's every wake
// costs it CPU (docs/architecture.md, Measured).
func (d *Daemon) syncMeta(ctx context.Context) error {
	changes, stop := d.store.Watch()
	defer stop()
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for {
		in := d.store.HasState()
		d.members.UpdateMeta(func(m *membership.Meta) { m.InCluster = in })
		if in {
			<-ctx.Done()
			return nil
		}
		select {
		case <-ctx.Done():
			return nil
		case <-changes:
		case <-tick.C:
		}
	}
}

// peerView adapts gossip members to the controller's Peer type.
type peerView struct{ m *membership.Membership }

func (p peerView) Peers() []controller.Peer {
	members := p.m.Members()
	out := make([]controller.Peer, len(members))
	for i, m := range members {
		host, _, _ := net.SplitHostPort(m.Addr)
		out[i] = controller.Peer{
			Name: m.Name, State: controller.PeerState(m.State), Since: m.Since, Addr: host,
			RaftAddr: m.Meta.RaftAddr, RPCAddr: m.Meta.RPCAddr, Version: m.Meta.Version,
			Capacity:  model.Capacity{VCPUs: m.Meta.VCPUs, MemoryMiB: m.Meta.MemoryMiB},
			Health:    healthOf(m.Meta),
			InCluster: m.Meta.InCluster,
			Protocol:  m.Meta.Protocol,
		}
	}
	return out
}

func (p peerView) Changes() (<-chan struct{}, func()) { return p.m.Changes() }

// errNoLeader is returned by forwarded writes while no leader is known.
var errNoLeader = fmt.Errorf("no leader elected yet: %w", model.ErrNotLeader)

// forward runs a leader-only operation: locally when this host leads,
// otherwise over the cluster RPC on the leader. While there is no leader, or
// leadership moves, it retries with backoff until ctx (bounded by
// ForwardTimeout) ends.
func forward[Req, Resp any](ctx context.Context, d *Daemon, m leaderMethod[Req, Resp], req Req) (Resp, error) {
	return forwardFor(ctx, d, m, req, d.cfg.Tuning.ForwardTimeout)
}

// forwardFor is forward with its own time limit, for long operations.
func forwardFor[Req, Resp any](ctx context.Context, d *Daemon, m leaderMethod[Req, Resp], req Req, limit time.Duration) (Resp, error) {
	ctx, cancel := context.WithTimeout(ctx, limit)
	defer cancel()
	backoff := 25 * time.Millisecond
	for {
		var (
			resp Resp
			err  error
		)
		if d.store.IsLeader() {
			resp, err = m.fn(d, ctx, req)
		} else if addr := d.leaderRPCAddr(); addr != "" {
			resp, err = rpc.Call(ctx, d.rpcCli, addr, m.Method, req)
		} else {
			err = errNoLeader
		}
		if err == nil || !(errors.Is(err, model.ErrNotLeader) || errors.Is(err, model.ErrUnavailable)) {
			return resp, err
		}
		select {
		case <-ctx.Done():
			return resp, err
		case <-time.After(backoff):
		}
		backoff = min(backoff*2, time.Second)
	}
}

// leaderRPCAddr finds the leader's cluster RPC address through gossip, or
// cluster state when gossip does not know it.
func (d *Daemon) leaderRPCAddr() string {
	id, _ := d.store.Leader()
	if id == "" {
		return ""
	}
	return d.rpcAddrOf(id)
}

// rpcAddrOf returns host id's RPC address as gossip or, failing that,
// state knows it ("" if neither does).
func (d *Daemon) rpcAddrOf(id string) string {
	if m, ok := d.members.Member(id); ok && m.Meta.RPCAddr != "" {
		return m.Meta.RPCAddr
	}
	if h, err := d.store.Host(id); err == nil {
		return h.RPCAddr
	}
	return ""
}

// voterRPCAddrs returns the RPC addresses of the Raft voters other than
// this host, as far as gossip or state knows them.
func (d *Daemon) voterRPCAddrs() []string {
	servers, err := d.store.Servers()
	if err != nil {
		return nil
	}
	var addrs []string
	for _, s := range servers {
		if !s.Voter || s.ID == d.cfg.Name {
			continue
		}
		if addr := d.rpcAddrOf(s.ID); addr != "" {
			addrs = append(addrs, addr)
		}
	}
	return addrs
}

func healthOf(m membership.Meta) model.Health {
	h := model.Health{State: model.HealthState(m.Health)}
	if m.Reasons != "" {
		h.Reasons = strings.Split(m.Reasons, "; ")
	}
	return h
}

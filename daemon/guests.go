package daemon

import (
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/corralhq/corral/api"
	"github.com/corralhq/corral/daemon/adminapi"
	"github.com/corralhq/corral/daemon/console"
	"github.com/corralhq/corral/daemon/controller"
	"github.com/corralhq/corral/daemon/hypervisor"
	"github.com/corralhq/corral/daemon/images"
	"github.com/corralhq/corral/daemon/placement"
	"github.com/corralhq/corral/daemon/rpc"
	"github.com/corralhq/corral/model"
	"github.com/corralhq/corral/raftlog"
)

// GuestDriver is what the daemon needs from a hypervisor driver: what the
// host loop uses, plus its connection loop and the per-host reads the admin
// API serves (console log, stats).
type GuestDriver interface {
	controller.Driver
	Run(ctx context.Context) error
	ConsoleLog(ctx context.Context, name string, max int64) ([]byte, error)
	// OpenConsole attaches to a running guest's serial console.
	OpenConsole(ctx context.Context, name string) (io.ReadWriteCloser, error)
	displayOpener
	Stats(ctx context.Context, name string) (hypervisor.Stats, error)
	PoolDir() string
	Refresh(ctx context.Context) error
}

// reporter sends the host loop's findings to the leader.
type reporter struct{ d *Daemon }

// tell forwards a report to the leader; only its error matters.
func tell[Req, Resp any](ctx context.Context, d *Daemon, m leaderMethod[Req, Resp], req Req) error {
	_, err := forward(ctx, d, m, req)
	return err
}

func (r reporter) Report(ctx context.Context, rep raftlog.ReportVMs) error {
	return tell(ctx, r.d, mVMReport, rep)
}

func (r reporter) Relocate(ctx context.Context, req controller.RelocateRequest) error {
	return tell(ctx, r.d, mVMRelocate, req)
}

func (r reporter) MigrationDone(ctx context.Context, res controller.MigrationResult) error {
	return tell(ctx, r.d, mVMMigrated, res)
}

func (r reporter) SnapshotDone(ctx context.Context, res controller.SnapshotResult) error {
	return tell(ctx, r.d, mVMSnapshotDone, res)
}

func (r reporter) ForgetLayers(ctx context.Context, req controller.ForgetLayersRequest) error {
	return tell(ctx, r.d, mVMLayersForget, req)
}

func (r reporter) LayersMerged(ctx context.Context, req controller.MergeRequest) error {
	return tell(ctx, r.d, mVMLayersMerged, req)
}

func (r reporter) BackupProgress(ctx context.Context, req controller.BackupProgressRequest) error {
	return tell(ctx, r.d, mVMBackupProgress, req)
}

func (r reporter) BackupDone(ctx context.Context, res controller.BackupResult) error {
	return tell(ctx, r.d, mVMBackupDone, res)
}

// reporter also reports the backup jobs of this host's BackupRunner.
var _ controller.BackupReporter = reporter{}

// renewer sends lease renewals to the leader: one attempt, no retries (the
// lease loop sends the next one on its own schedule).
//
// While this host's Raft knows no leader, the renewal goes to every other
// voter at once: the leader among them grants it, the others refuse. A
// follower cut off for a moment (a network blip) turns candidate after one
// heartbeat timeout and learns the leader again only when the leader's
// replication, backed off exponentially while it failed, reaches it:
// measured, 3.4 s after a 3.8 s blip ended, by which time the lease had
// run out. The leader is very likely among the voters and answers the
// first renewal after the blip.
//
// Once no renewal has been granted over the direct path for 1.5
// intervals, each renewal also goes through every other voter, which
// tunnels it to the leader as it knows it (rpc.CallVia): one broken link
// between this host and the leader then fences nothing while the other
// voters hear both. (At 1.5 intervals, the relayed renewal lands before
// the leader calls the host suspected, at 2.5.) The tunnel carries this host's own TLS session, so the
// leader checks the same certificate as on a direct call, and the lease
// counts from the send as ever: a relay adds no trust and no time.
type renewer struct{ d *Daemon }

func (r renewer) Renew(ctx context.Context, req controller.LeaseRequest) (controller.LeaseGrant, error) {
	d := r.d
	if d.store.IsLeader() {
		return d.leader.Renew(ctx, req)
	}
	voters := d.voterRPCAddrs()
	type call struct {
		relay string // "": direct
		addr  string
	}
	var calls []call
	leader := d.leaderRPCAddr()
	if leader != "" {
		calls = append(calls, call{addr: leader})
	} else {
		for _, addr := range voters {
			calls = append(calls, call{addr: addr})
		}
	}
	if time.Since(d.directRenewal.Load().(time.Time)) > d.cfg.HeartbeatInterval*3/2 {
		for _, addr := range voters {
			if addr != leader {
				calls = append(calls, call{relay: addr})
			}
		}
	}
	if len(calls) == 0 {
		return controller.LeaseGrant{}, errNoLeader
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel() // the first grant ends the others
	type answer struct {
		g     controller.LeaseGrant
		relay string
		err   error
	}
	answers := make(chan answer, len(calls))
	for _, c := range calls {
		go func() {
			var a answer
			if c.relay == "" {
				a.g, a.err = rpc.Call(ctx, d.rpcCli, c.addr, mLeaseRenew.Method, req)
			} else {
				a.g, a.err = rpc.CallVia(ctx, d.rpcCli, c.relay, rpc.RelayLeader, mLeaseRenew.Method, req)
				a.relay = c.relay
			}
			answers <- a
		}()
	}
	err := errNoLeader
	for range calls {
		a := <-answers
		if a.err == nil {
			switch {
			case a.relay == "":
				d.directRenewal.Store(time.Now())
				if d.relayedRenewal.CompareAndSwap(true, false) {
					d.log.Info("lease renewed directly again", "leader", a.g.Leader)
				}
			case d.relayedRenewal.CompareAndSwap(false, true):
				d.log.Warn("lease renewed through a relay: no direct path to the leader", "leader", a.g.Leader, "relay", a.relay)
			}
			return a.g, nil
		}
		if !errors.Is(a.err, model.ErrNotLeader) {
			err = a.err
		}
	}
	return controller.LeaseGrant{}, err
}

// relayTarget resolves the tunnel target another host asks this one for
// (rpc.SetRelay): only the leader, as this host knows it.
func (d *Daemon) relayTarget(target string) (string, error) {
	if target != rpc.RelayLeader {
		return "", fmt.Errorf("only %q is relayed: %w", rpc.RelayLeader, model.ErrForbidden)
	}
	if d.store.IsLeader() {
		return d.rpcAddr(), nil
	}
	if addr := d.leaderRPCAddr(); addr != "" {
		return addr, nil
	}
	return "", errNoLeader
}

// hostRead is a read served by the host that runs a VM (its console log,
// its counters): locally when that is this host, else over the cluster RPC.
type hostRead struct {
	VM    string `json:"vm"`
	Bytes int64  `json:"bytes,omitempty"`
}

func (d *Daemon) registerGuestRPC() {
	d.consoles = console.New(d.cfg.Name, d.driver)
	d.rpcSrv.HandleStream("console", d.serveConsoleRPC)
	d.rpcSrv.HandleStream("display", d.serveDisplayRPC)
	rpc.Register(d.rpcSrv, mVMConsole, d.localConsole)
	rpc.Register(d.rpcSrv, mVMStats, d.localStats)
}

// maxConsoleBytes bounds what one console read returns.
const maxConsoleBytes = 4 << 20

// placedHere checks a host read that may come from the network: a valid
// VM name (so never a path), and a VM that state places on this host. No
// host answers for another host's VM. A host that restarted and is still
// replaying the log waits to catch up (at most 10 s) before it says no.
func (d *Daemon) placedHere(ctx context.Context, vm string) error {
	if err := model.ValidateName("vm", vm); err != nil {
		return err
	}
	v, err := d.store.VM(vm)
	if errors.Is(err, model.ErrNotFound) {
		select {
		case <-d.caughtUp: // caught up already: not found means not found
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(10 * time.Second):
		}
		v, err = d.store.VM(vm)
	}
	if err != nil {
		return err
	}
	if v.Host != d.cfg.Name {
		return fmt.Errorf("vm %q is placed on %q, not on %s: %w", vm, v.Host, d.cfg.Name, model.ErrConflict)
	}
	return nil
}

func (d *Daemon) localConsole(ctx context.Context, req hostRead) (api.ConsoleLog, error) {
	if err := d.placedHere(ctx, req.VM); err != nil {
		return api.ConsoleLog{}, err
	}
	if req.Bytes <= 0 || req.Bytes > maxConsoleBytes {
		req.Bytes = maxConsoleBytes
	}
	b, err := d.driver.ConsoleLog(ctx, req.VM, req.Bytes)
	return api.ConsoleLog{Host: d.cfg.Name, Log: string(b)}, err
}

func (d *Daemon) localStats(ctx context.Context, req hostRead) (api.VMStats, error) {
	if err := d.placedHere(ctx, req.VM); err != nil {
		return api.VMStats{}, err
	}
	st, err := d.driver.Stats(ctx, req.VM)
	if err != nil {
		return api.VMStats{}, err
	}
	out := api.VMStats{Host: d.cfg.Name, State: string(st.State), CPUTimeNs: st.CPUTime, VCPUs: st.VCPUs, MemoryKiB: st.MemoryKiB, MaxMemoryKiB: st.MaxMemoryKiB}
	for _, s := range st.Disks {
		out.Disks = append(out.Disks, api.DiskStats(s))
	}
	for _, s := range st.NICs {
		out.NICs = append(out.NICs, api.NICStats(s))
	}
	return out, nil
}

// onHost runs a host read on the VM's host.
func onHost[Resp any](ctx context.Context, d *Daemon, m rpc.Method[hostRead, Resp], vm string, req hostRead, local func(context.Context, hostRead) (Resp, error)) (Resp, error) {
	var resp Resp
	v, err := d.store.VM(vm)
	if err != nil {
		return resp, err
	}
	if v.Host == "" {
		return resp, fmt.Errorf("vm %q is not placed on any host: %w", vm, model.ErrConflict)
	}
	if v.Host == d.cfg.Name {
		return local(ctx, req)
	}
	h, err := d.store.Host(v.Host)
	if err != nil {
		return resp, err
	}
	return rpc.Call(ctx, d.rpcCli, h.RPCAddr, m, req)
}

func vmView(v model.VM) api.VM {
	out := api.VM{
		Name: v.Name, ID: v.ID, Host: v.Host, Desired: string(v.Desired), State: string(v.Actual.State), Message: v.Actual.Message,
		Generation: v.Generation, Since: v.Actual.Since, Restarts: v.Actual.Restarts, Relocations: v.Relocations,
		Failed: v.Failed, Deleting: v.Deleting, ReportedAt: v.Actual.UpdatedAt, CreatedAt: v.CreatedAt, Project: model.ProjectOf(v.Project),
		PendingRestart: v.Actual.State == model.StateRunning && v.Actual.SpecVersion != 0 && v.Actual.SpecVersion < v.SpecVersion,
		Spec:           specView(v.Spec), Group: v.Group, Snapshots: snapshotViews(v.Chain.Snapshots),
	}
	if v.Backup != nil {
		j := backupJobView(*v.Backup)
		out.Backup = &j
	}
	if v.Restore != nil {
		out.RestoringFrom = v.Restore.Backup
	}
	if p := v.SnapshotPolicy; p != nil {
		out.SnapshotSchedule, out.SnapshotScheduleLast = p.Schedule.String(), p.Last
	}
	if p := v.BackupPolicy; p != nil {
		out.BackupSchedule, out.BackupTarget, out.BackupScheduleLast = p.Schedule.String(), p.Target, p.Last
		if p.FromProject {
			out.BackupScheduleFrom = model.ProjectOf(v.Project)
		}
	}
	if v.Spec.Health != nil && v.Actual.State == model.StateRunning && !v.Deleting {
		out.Health, out.HealthDetail = v.Actual.Health, v.Actual.HealthDetail
		if out.Health == "" {
			out.Health = model.HealthStarting
		}
	}
	if v.Actual.State == "" {
		out.State = string(model.StatePending)
	}
	if v.Migration != nil {
		out.MigratingTo = v.Migration.Target
	}
	out.Home = v.Home
	if v.Deleting {
		out.State = string(model.StateDeleting)
	}
	return out
}

func specView(s model.VMSpec) api.VMSpec {
	out := api.VMSpec{
		VCPUs: s.VCPUs, MemoryMiB: s.MemoryMiB, UserData: s.UserData, Labels: s.Labels, AntiAffinity: s.AntiAffinity,
		Require: s.Require, HA: api.HAPolicy(s.HA),
	}
	for _, dk := range s.Disks {
		out.Disks = append(out.Disks, api.Disk(dk))
	}
	for _, n := range s.NICs {
		out.NICs = append(out.NICs, api.NIC(n))
	}
	if s.Kernel != nil {
		k := api.Kernel(*s.Kernel)
		out.Kernel = &k
	}
	if s.Health != nil {
		h := api.HealthCheck(*s.Health)
		out.Health = &h
	}
	for _, r := range s.Prefer {
		out.Prefer = append(out.Prefer, api.SoftRule(r))
	}
	for _, r := range s.Avoid {
		out.Avoid = append(out.Avoid, api.SoftRule(r))
	}
	return out
}

func specFromAPI(req api.VMCreateRequest) model.VMSpec {
	s := req.Spec
	out := model.VMSpec{
		VCPUs: s.VCPUs, MemoryMiB: s.MemoryMiB, UserData: s.UserData, Labels: s.Labels,
		AntiAffinity: s.AntiAffinity, Require: s.Require, HA: model.DefaultHA(),
	}
	if req.HA != nil {
		out.HA = model.HAPolicy(*req.HA)
	}
	for _, d := range s.Disks {
		out.Disks = append(out.Disks, model.DiskSpec(d))
	}
	for _, n := range s.NICs {
		out.NICs = append(out.NICs, model.NICSpec(n))
	}
	if s.Kernel != nil {
		k := model.KernelBoot(*s.Kernel)
		out.Kernel = &k
	}
	if s.Health != nil {
		h := model.HealthCheck(*s.Health)
		out.Health = &h
	}
	for _, r := range s.Prefer {
		out.Prefer = append(out.Prefer, model.SoftRule(r))
	}
	for _, r := range s.Avoid {
		out.Avoid = append(out.Avoid, model.SoftRule(r))
	}
	return out
}

func imageView(im model.Image) api.Image {
	return api.Image{Name: im.Name, Format: im.Format, SizeBytes: im.SizeBytes, VirtualSizeBytes: im.VirtualSizeBytes, SHA256: im.SHA256, CreatedAt: im.CreatedAt,
		Project: model.ProjectOf(im.Project)}
}

func (b backend) VMs(ctx context.Context) ([]api.VM, error) {
	scope := adminapi.Scope(ctx)
	vms := b.d.store.VMs()
	out := make([]api.VM, 0, len(vms))
	for _, v := range vms {
		if visible(scope, v.Project) {
			out = append(out, vmView(v))
		}
	}
	return out, nil
}

func (b backend) VM(ctx context.Context, name string) (api.VM, error) {
	v, err := b.d.store.VM(name)
	if err != nil {
		return api.VM{}, err
	}
	if !visible(adminapi.Scope(ctx), v.Project) {
		return api.VM{}, fmt.Errorf("vm %q: %w", name, model.ErrNotFound)
	}
	out := vmView(v)
	if h, err := b.d.store.Host(v.Host); err == nil {
		// Which of its rules its host meets: only that host and its VMs count.
		var here []model.VM
		for _, o := range b.d.store.VMs() {
			if o.Host == v.Host {
				here = append(here, o)
			}
		}
		x := placement.NewIndex([]placement.Candidate{{Host: h}}, here, placement.DefaultOptions())
		for _, rc := range x.Explain(v.Spec, v.Host) {
			out.Rules = append(out.Rules, api.RuleCheck(rc))
		}
	}
	return out, nil
}

// afterWrite answers a write with the VM as this host's copy of the state
// shows it once the write has reached it.
func (b backend) afterWrite(ctx context.Context, v model.VM, err error) (api.VM, error) {
	if err != nil {
		return api.VM{}, err
	}
	b.d.waitState(ctx, func() bool {
		cur, err := b.d.store.VM(v.Name)
		return err == nil && vmCaughtUp(cur, v)
	})
	return b.VM(ctx, v.Name)
}

// vmCaughtUp reports whether this host's copy cur of a VM shows a write
// whose result the leader answered with v.
func vmCaughtUp(cur, v model.VM) bool {
	return cur.Generation >= v.Generation && cur.SpecVersion >= v.SpecVersion &&
		cur.RestartSeq >= v.RestartSeq && cur.Desired == v.Desired && cur.Deleting == v.Deleting
}

func (b backend) CreateVM(ctx context.Context, req api.VMCreateRequest) (api.VM, error) {
	project, err := inProject(ctx, req.Project)
	if err != nil {
		return api.VM{}, err
	}
	if req.Host != "" && adminapi.Scope(ctx) != "" {
		return api.VM{}, fmt.Errorf("a client confined to a project may not pin a VM to a host: %w", model.ErrForbidden)
	}
	v, err := forward(ctx, b.d, mVMCreate, controller.CreateVMRequest{Name: req.Name, Spec: specFromAPI(req), Host: req.Host, Stopped: req.Stopped, Project: project})
	return b.afterWrite(ctx, v, err)
}

func (b backend) SetVMPower(ctx context.Context, name string, desired string) (api.VM, error) {
	if err := b.scopedVM(ctx, name); err != nil {
		return api.VM{}, err
	}
	v, err := forward(ctx, b.d, mVMPower, controller.VMPowerRequest{Name: name, Desired: model.PowerState(desired)})
	return b.afterWrite(ctx, v, err)
}

func (b backend) RestartVM(ctx context.Context, name string) (api.VM, error) {
	if err := b.scopedVM(ctx, name); err != nil {
		return api.VM{}, err
	}
	v, err := forward(ctx, b.d, mVMRestart, controller.NameRequest{Name: name})
	return b.afterWrite(ctx, v, err)
}

func (b backend) ResizeVM(ctx context.Context, name string, req api.VMResizeRequest) (api.VM, error) {
	if err := b.scopedVM(ctx, name); err != nil {
		return api.VM{}, err
	}
	v, err := forward(ctx, b.d, mVMResize, controller.ResizeVMRequest{Name: name, VCPUs: req.VCPUs, MemoryMiB: req.MemoryMiB, Restart: req.Restart})
	return b.afterWrite(ctx, v, err)
}

func (b backend) DeleteVM(ctx context.Context, name string, force bool) (api.VM, error) {
	if err := b.scopedVM(ctx, name); err != nil {
		return api.VM{}, err
	}
	v, err := forward(ctx, b.d, mVMDelete, controller.DeleteVMRequest{Name: name, Force: force})
	if err != nil {
		return api.VM{}, err
	}
	// Wait until this host's copy shows the deletion under way, or done.
	b.d.waitState(ctx, func() bool {
		cur, err := b.d.store.VM(name)
		return err != nil || cur.Deleting
	})
	if cur, err := b.d.store.VM(name); err == nil {
		return vmView(cur), nil
	}
	out := vmView(v)
	out.State, out.Deleting = string(model.StateDeleted), false
	return out, nil
}

func (b backend) MigrateVM(ctx context.Context, name string, req api.VMMigrateRequest) (api.VM, error) {
	if err := b.scopedVM(ctx, name); err != nil {
		return api.VM{}, err
	}
	v, err := forward(ctx, b.d, mVMMigrate, controller.MigrateVMRequest{Name: name, Target: req.Target})
	if err != nil {
		return api.VM{}, err
	}
	b.d.waitState(ctx, func() bool {
		cur, err := b.d.store.VM(name)
		return err != nil || cur.Migration != nil || cur.Generation > v.Generation
	})
	return b.VM(ctx, name)
}

func (b backend) ConsoleLog(ctx context.Context, name string, bytes int64) (api.ConsoleLog, error) {
	if err := b.scopedVM(ctx, name); err != nil {
		return api.ConsoleLog{}, err
	}
	return onHost(ctx, b.d, mVMConsole, name, hostRead{VM: name, Bytes: bytes}, b.d.localConsole)
}

func (b backend) VMStats(ctx context.Context, name string) (api.VMStats, error) {
	if err := b.scopedVM(ctx, name); err != nil {
		return api.VMStats{}, err
	}
	return onHost(ctx, b.d, mVMStats, name, hostRead{VM: name}, b.d.localStats)
}

func (b backend) Images(ctx context.Context) ([]api.Image, error) {
	scope := adminapi.Scope(ctx)
	var out []api.Image
	for _, im := range b.d.store.Images() {
		if shared(scope, im.Project) {
			out = append(out, imageView(im))
		}
	}
	return out, nil
}

// ImportImage streams an upload into the shared storage pool and records it
// through the leader; a refused record removes the file again.
func (b backend) ImportImage(ctx context.Context, name, project string, body io.Reader) (api.Image, error) {
	project, err := inProject(ctx, project)
	if err != nil {
		return api.Image{}, err
	}
	if _, err := b.d.store.Image(name); err == nil {
		return api.Image{}, fmt.Errorf("image %q already exists: %w", name, model.ErrConflict)
	}
	if project != "" {
		// Refused before the upload, not after it.
		if err := raftlog.FeatureProjects.Check(b.d.store.Cluster(), b.d.store.Hosts()); err != nil {
			return api.Image{}, err
		}
	}
	dir := b.d.driver.PoolDir()
	im, err := images.Import(dir, name, body)
	if err != nil {
		return api.Image{}, err
	}
	im.Project = project
	rec, err := forward(ctx, b.d, mImagePut, im)
	if err != nil {
		images.Remove(dir, name)
		return api.Image{}, err
	}
	if err := b.d.driver.Refresh(ctx); err != nil && !errors.Is(err, hypervisor.ErrDisconnected) {
		b.d.log.Warn("refresh storage pool", "err", err)
	}
	b.d.waitState(ctx, func() bool { _, err := b.d.store.Image(name); return err == nil })
	return imageView(rec), nil
}

func (b backend) DeleteImage(ctx context.Context, name string) error {
	if scope := adminapi.Scope(ctx); scope != "" {
		im, err := b.d.store.Image(name)
		if err != nil {
			return err
		}
		if err := mayDelete(scope, "image", name, im.Project); err != nil {
			return err
		}
	}
	if _, err := forward(ctx, b.d, mImageDelete, controller.NameRequest{Name: name}); err != nil {
		return err
	}
	return images.Remove(b.d.driver.PoolDir(), name)
}

// Events returns events after seq; with wait > 0 it waits up to wait for
// at least one.
func (b backend) Events(ctx context.Context, after uint64, limit int, wait time.Duration) ([]api.Event, error) {
	get := func() []api.Event {
		var out []api.Event
		scope := adminapi.Scope(ctx)
		if scope == "" {
			for _, e := range b.d.store.Events(after, limit) {
				out = append(out, api.Event(e))
			}
			return out
		}
		// A client confined to a project sees its VMs' events only: the
		// limit (the last so many) counts those, not the others.
		for _, e := range b.d.store.Events(after, 0) {
			if e.VM != "" && visible(scope, e.Project) {
				out = append(out, api.Event(e))
			}
		}
		if limit > 0 && len(out) > limit {
			out = out[len(out)-limit:]
		}
		return out
	}
	evs := get()
	if len(evs) > 0 || wait <= 0 {
		return evs, nil
	}
	wctx, cancel := context.WithTimeout(ctx, wait)
	defer cancel()
	b.d.waitState(wctx, func() bool { evs = get(); return len(evs) > 0 })
	return evs, nil
}

// waitState waits until cond holds on this host's copy of the state, or ctx
// ends (bounded by ForwardTimeout). It re-checks on every change and every
// 50 ms: Raft applies configuration and no-op entries without a change to
// watch, and conditions on the applied index must still see them.
func (d *Daemon) waitState(ctx context.Context, cond func() bool) {
	ctx, cancel := context.WithTimeout(ctx, d.cfg.Tuning.ForwardTimeout)
	defer cancel()
	changes, stop := d.store.Watch()
	defer stop()
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for !cond() {
		select {
		case <-ctx.Done():
			return
		case <-changes:
		case <-tick.C:
		}
	}
}

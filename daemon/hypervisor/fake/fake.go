// Package fake is an in-memory hypervisor driver for tests of the logic
// above it (the controller's host loop). Faults are injected through fields
// and methods, as Nomad's mock driver does: a start error, a slow start, a
// crash, a disconnection.
package fake

import (
	"context"
	"fmt"
	"io"
	"net/netip"
	"os"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/corralhq/corral/daemon/hypervisor"
)

// Driver is a fake hypervisor. The zero value is not usable; call New.
type Driver struct {
	mu        sync.Mutex
	domains   map[string]*domain
	volumes   map[string]hypervisor.Volume
	seeds     map[string]string
	connected bool
	problem   string
	events    chan hypervisor.Event

	poolDir    string
	peers      map[string]*Driver
	migrateErr error
	startErr   map[string]error
	startDelay time.Duration
	calls      map[string]int
	// load is the share of their vCPUs running domains use (SetCPULoad);
	// cpu accrues it per domain.
	load float64
	cpu  map[string]cpuUse
	// agent and addrs answer for the guest agents (SetAgent).
	agent func(name string, argv []string) (hypervisor.ExecResult, error)
	addrs func(name string) []netip.Addr
	// consoles are the open console sessions, by domain.
	consoles map[string][]*fakeConsole
	// snapErr fails SnapshotDisks (SetSnapshotErr).
	snapErr func(quiesce bool) error
	// written are the disk files guests wrote to (memory.go); restoreErr
	// fails Restore (SetRestoreErr).
	written    map[string]bool
	restoreErr error
	// listHook sees what List returns before its caller does (SetListHook).
	listHook func([]hypervisor.Domain)
}

// SetAgent makes running guests' agents answer: exec runs a command
// (AgentExec), addrs gives a guest's addresses (GuestAddrs). Nil, the
// default, is a guest without an agent (ErrNoAgent).
func (d *Driver) SetAgent(exec func(name string, argv []string) (hypervisor.ExecResult, error), addrs func(name string) []netip.Addr) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.agent, d.addrs = exec, addrs
}

// running says whether the named domain runs, and so has an agent to ask.
func (d *Driver) running(name string) error {
	dm, ok := d.domains[name]
	if !ok || dm.dom.State != hypervisor.Running {
		return fmt.Errorf("%s not running: %w", name, hypervisor.ErrNoDomain)
	}
	return nil
}

// AgentExec implements the driver interface through SetAgent's exec.
func (d *Driver) AgentExec(ctx context.Context, name string, argv []string, timeout time.Duration) (hypervisor.ExecResult, error) {
	d.mu.Lock()
	err := d.call("AgentExec")
	if err == nil {
		err = d.running(name)
	}
	fn := d.agent
	d.mu.Unlock()
	switch {
	case err != nil:
		return hypervisor.ExecResult{}, err
	case fn == nil:
		return hypervisor.ExecResult{}, fmt.Errorf("%s: %w", name, hypervisor.ErrNoAgent)
	}
	return fn(name, argv)
}

// GuestAddrs implements the driver interface through SetAgent's addrs.
func (d *Driver) GuestAddrs(ctx context.Context, name string) ([]netip.Addr, error) {
	d.mu.Lock()
	err := d.call("GuestAddrs")
	if err == nil {
		err = d.running(name)
	}
	fn := d.addrs
	d.mu.Unlock()
	switch {
	case err != nil:
		return nil, err
	case fn == nil:
		return nil, fmt.Errorf("%s: %w", name, hypervisor.ErrNoAgent)
	}
	return fn(name), nil
}

type cpuUse struct {
	ns uint64
	at time.Time
}

// SetCPULoad makes every running domain use this share of its vCPUs from
// now on (its cumulative CPU time in Stats grows accordingly).
func (d *Driver) SetCPULoad(load float64) {
	d.mu.Lock()
	defer d.mu.Unlock()
	now := time.Now()
	for name := range d.domains {
		d.accrue(name, now)
	}
	d.load = load
}

// accrue adds the CPU time a domain used since its last accrual (d.mu held).
func (d *Driver) accrue(name string, now time.Time) uint64 {
	if d.cpu == nil {
		d.cpu = map[string]cpuUse{}
	}
	u, ok := d.cpu[name]
	dm := d.domains[name]
	if ok && dm != nil && dm.dom.State == hypervisor.Running {
		u.ns += uint64(d.load * float64(dm.spec.VCPUs) * float64(now.Sub(u.at).Nanoseconds()))
	}
	u.at = now
	d.cpu[name] = u
	return u.ns
}

// SetStartErr makes Start of the named domain fail with err (nil clears).
func (d *Driver) SetStartErr(name string, err error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if err == nil {
		delete(d.startErr, name)
	} else {
		d.startErr[name] = err
	}
}

// SetStartDelay makes every Start take this long (a slow boot).
func (d *Driver) SetStartDelay(delay time.Duration) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.startDelay = delay
}

// Calls returns how often a method was called, e.g. Calls("Start").
func (d *Driver) Calls(method string) int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.calls[method]
}

type domain struct {
	spec hypervisor.DomainSpec
	dom  hypervisor.Domain
	// committed: the files a block commit wrote into while the guest
	// runs; as libvirt 9.0 does, a second commit into one is refused
	// (hypervisor.ErrDiskLocked) until the guest stops.
	committed map[string]bool
}

// New returns a connected fake driver with no domains.
func New() *Driver {
	return &Driver{
		domains: map[string]*domain{}, volumes: map[string]hypervisor.Volume{}, seeds: map[string]string{},
		connected: true, events: make(chan hypervisor.Event, 1024), startErr: map[string]error{}, calls: map[string]int{},
	}
}

func (d *Driver) emit(ev hypervisor.Event) {
	select {
	case d.events <- ev:
	default:
	}
}

func (d *Driver) call(name string) error {
	d.calls[name]++
	if !d.connected {
		return hypervisor.ErrDisconnected
	}
	return nil
}

// Events implements the driver interface.
func (d *Driver) Events() <-chan hypervisor.Event { return d.events }

// Connected implements the driver interface.
func (d *Driver) Connected() bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.calls["Connected"]++
	return d.connected
}

// Problem implements the driver interface.
func (d *Driver) Problem() string {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.problem
}

// SetProblem simulates a host where no guest can start, a storage pool
// that cannot be used say ("" fixes it).
func (d *Driver) SetProblem(p string) {
	d.mu.Lock()
	d.problem = p
	d.mu.Unlock()
	d.emit(hypervisor.Event{Kind: hypervisor.EventConnected})
}

// SetConnected simulates libvirtd going away and coming back.
func (d *Driver) SetConnected(c bool) {
	d.mu.Lock()
	d.connected = c
	d.mu.Unlock()
	if c {
		d.emit(hypervisor.Event{Kind: hypervisor.EventConnected})
	}
}

// List implements the driver interface.
func (d *Driver) List(ctx context.Context) ([]hypervisor.Domain, error) {
	d.mu.Lock()
	if err := d.call("List"); err != nil {
		d.mu.Unlock()
		return nil, err
	}
	var out []hypervisor.Domain
	for _, dm := range d.domains {
		out = append(out, dm.dom)
	}
	hook := d.listHook
	d.mu.Unlock()
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	if hook != nil {
		hook(out)
	}
	return out, nil
}

// SetListHook calls fn with what each List returns, before List returns
// it (nil: none). The driver goes on meanwhile: a hook that waits makes a
// listing stale by the time its caller reads it.
func (d *Driver) SetListHook(fn func([]hypervisor.Domain)) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.listHook = fn
}

// Domain returns one domain and whether it exists.
func (d *Driver) Domain(name string) (hypervisor.Domain, bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	dm, ok := d.domains[name]
	if !ok {
		return hypervisor.Domain{}, false
	}
	return dm.dom, true
}

// Spec returns the definition of a domain.
func (d *Driver) Spec(name string) (hypervisor.DomainSpec, bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	dm, ok := d.domains[name]
	if !ok {
		return hypervisor.DomainSpec{}, false
	}
	return dm.spec, true
}

// Define implements the driver interface.
func (d *Driver) Define(ctx context.Context, spec hypervisor.DomainSpec) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if err := d.call("Define"); err != nil {
		return err
	}
	dm, ok := d.domains[spec.Name]
	if ok && dm.dom.VMID != spec.VMID {
		return fmt.Errorf("define %s: domain belongs to vm id %s", spec.Name, dm.dom.VMID)
	}
	if !ok {
		dm = &domain{dom: hypervisor.Domain{Name: spec.Name, State: hypervisor.Shutoff, Reason: "unknown"}}
		d.domains[spec.Name] = dm
	}
	dm.spec = spec
	dm.dom.VMID, dm.dom.Generation, dm.dom.SpecVersion = spec.VMID, spec.Generation, spec.SpecVersion
	return nil
}

func (d *Driver) lookup(name string) (*domain, error) {
	dm, ok := d.domains[name]
	if !ok {
		return nil, fmt.Errorf("%s: %w", name, hypervisor.ErrNoDomain)
	}
	return dm, nil
}

// Start implements the driver interface.
func (d *Driver) Start(ctx context.Context, name string, info hypervisor.RunInfo) error {
	d.mu.Lock()
	delay := d.startDelay
	d.mu.Unlock()
	if delay > 0 {
		select {
		case <-time.After(delay):
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if err := d.call("Start"); err != nil {
		return err
	}
	if err := d.startErr[name]; err != nil {
		return err
	}
	dm, err := d.lookup(name)
	if err != nil {
		return err
	}
	if dm.dom.State.Active() {
		return fmt.Errorf("start %s: already running", name)
	}
	d.run(dm, "booted", info)
	return nil
}

// run makes a defined domain run with info; its guest writes to its
// disks from then on (Written). Callers hold mu.
func (d *Driver) run(dm *domain, reason string, info hypervisor.RunInfo) {
	dm.dom.State, dm.dom.Reason = hypervisor.Running, reason
	dm.dom.StartedAt, dm.dom.RestartSeq, dm.dom.Layer = info.StartedAt, info.RestartSeq, info.Layer
	d.write(dm)
	d.emit(hypervisor.Event{Name: dm.dom.Name, Kind: hypervisor.EventStarted})
}

func (d *Driver) stop(dm *domain, reason string) {
	dm.dom.State, dm.dom.Reason = hypervisor.Shutoff, reason
	dm.dom.StartedAt, dm.dom.RestartSeq, dm.dom.Layer = time.Time{}, 0, 0
	dm.committed = nil
	d.endConsoles(dm.dom.Name)
	d.emit(hypervisor.Event{Name: dm.dom.Name, Kind: hypervisor.EventStopped, Detail: reason})
}

// Shutdown implements the driver interface (the fake guest always obeys).
func (d *Driver) Shutdown(ctx context.Context, name string, timeout time.Duration) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if err := d.call("Shutdown"); err != nil {
		return err
	}
	dm, err := d.lookup(name)
	if err != nil {
		return err
	}
	if dm.dom.State.Active() {
		d.stop(dm, "shutdown")
	}
	return nil
}

// Destroy implements the driver interface.
func (d *Driver) Destroy(ctx context.Context, name string) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if err := d.call("Destroy"); err != nil {
		return err
	}
	dm, err := d.lookup(name)
	if err != nil {
		return err
	}
	if dm.dom.State.Active() {
		d.stop(dm, "destroyed")
	}
	return nil
}

// Undefine implements the driver interface.
func (d *Driver) Undefine(ctx context.Context, name string) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if err := d.call("Undefine"); err != nil {
		return err
	}
	if dm, ok := d.domains[name]; ok && dm.dom.State.Active() {
		return fmt.Errorf("undefine %s: running", name)
	}
	delete(d.domains, name)
	return nil
}

// Crash makes a running domain die as if QEMU were killed.
func (d *Driver) Crash(name string) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if dm, ok := d.domains[name]; ok && dm.dom.State.Active() {
		d.stop(dm, "crashed")
	}
}

// Adopt adds a domain as if it had been running before the consumer
// started (a corrald restart).
func (d *Driver) Adopt(spec hypervisor.DomainSpec, info hypervisor.RunInfo) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.domains[spec.Name] = &domain{spec: spec, dom: hypervisor.Domain{
		Name: spec.Name, VMID: spec.VMID, Generation: spec.Generation, SpecVersion: spec.SpecVersion,
		State: hypervisor.Running, Reason: "booted", StartedAt: info.StartedAt, RestartSeq: info.RestartSeq,
	}}
}

// EnsureVolume implements the driver interface.
func (d *Driver) EnsureVolume(ctx context.Context, v hypervisor.Volume) (string, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if err := d.call("EnsureVolume"); err != nil {
		return "", err
	}
	if _, ok := d.volumes[v.Name]; !ok {
		// An overlay on a VM's volume needs it there (images are not
		// volumes of the fake).
		if _, ok := d.volumes[v.Backing]; strings.HasPrefix(v.Backing, "vm-") && !ok {
			return "", fmt.Errorf("volume %s: backing volume %s not found", v.Name, v.Backing)
		}
		d.volumes[v.Name] = v
	}
	return "/pool/" + v.Name, nil
}

// VolumePath implements the driver interface.
func (d *Driver) VolumePath(name string) string { return "/pool/" + name }

// Volume returns a volume and whether it exists.
func (d *Driver) Volume(name string) (hypervisor.Volume, bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	v, ok := d.volumes[name]
	return v, ok
}

// SetSnapshotErr makes SnapshotDisks fail with what fn returns (nil: no
// failure); fn nil, the default, never fails.
func (d *Driver) SetSnapshotErr(fn func(quiesce bool) error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.snapErr = fn
}

// runningDomain counts a call of op on the named domain and returns it if it
// runs (hypervisor.ErrNotRunning if not). Callers hold mu.
func (d *Driver) runningDomain(op, name string) (*domain, error) {
	if err := d.call(op); err != nil {
		return nil, err
	}
	dm, err := d.lookup(name)
	if err != nil {
		return nil, err
	}
	if !dm.dom.State.Active() {
		return nil, fmt.Errorf("%s: %w", name, hypervisor.ErrNotRunning)
	}
	return dm, nil
}

// DiskFiles implements the driver interface.
func (d *Driver) DiskFiles(ctx context.Context, name string) ([]string, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	dm, err := d.runningDomain("DiskFiles", name)
	if err != nil {
		return nil, err
	}
	var out []string
	for _, disk := range dm.spec.Disks {
		if !disk.ReadOnly {
			out = append(out, disk.Path)
		}
	}
	return out, nil
}

// SnapshotDisks implements the driver interface: each overlay must be a
// volume on the file its disk uses. With opts.Memory, the memory image is
// a volume of the pool from then on.
func (d *Driver) SnapshotDisks(ctx context.Context, name string, overlays []string, opts hypervisor.SnapshotOptions) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	dm, err := d.runningDomain("SnapshotDisks", name)
	if err != nil {
		return err
	}
	if opts.Quiesce && opts.Memory != "" {
		return fmt.Errorf("snapshot %s: quiesce and memory", name)
	}
	if d.snapErr != nil {
		if err := d.snapErr(opts.Quiesce); err != nil {
			return err
		}
	}
	disks := slices.Clone(dm.spec.Disks)
	n := 0
	for i, disk := range disks {
		if disk.ReadOnly {
			continue
		}
		if n >= len(overlays) {
			return fmt.Errorf("snapshot %s: more writable disks than overlays", name)
		}
		v, ok := d.volumes[strings.TrimPrefix(overlays[n], "/pool/")]
		if !ok || "/pool/"+v.Backing != disk.Path {
			return fmt.Errorf("snapshot %s: overlay %s is not a volume on %s", name, overlays[n], disk.Path)
		}
		disks[i].Path = overlays[n]
		n++
	}
	if n != len(overlays) {
		return fmt.Errorf("snapshot %s: %d writable disks, %d overlays", name, n, len(overlays))
	}
	if opts.Memory != "" {
		mem := strings.TrimPrefix(opts.Memory, "/pool/")
		d.volumes[mem] = hypervisor.Volume{Name: mem}
	}
	dm.spec.Disks = disks
	d.write(dm)
	return nil
}

// CommitLayer implements the driver interface: the children's volumes are
// put on into.
func (d *Driver) CommitLayer(ctx context.Context, name string, into, from []string, children [][]string) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if err := d.call("CommitLayer"); err != nil {
		return err
	}
	dm := d.domains[name]
	for i := range from {
		f, ok := d.volumes[strings.TrimPrefix(from[i], "/pool/")]
		if !ok || "/pool/"+f.Backing != into[i] {
			return fmt.Errorf("commit %s: %s is not a volume on %s", name, from[i], into[i])
		}
		if dm != nil && dm.dom.State.Active() {
			if dm.committed[into[i]] {
				return fmt.Errorf("commit %s into %s: %w", name, into[i], hypervisor.ErrDiskLocked)
			}
			if dm.committed == nil {
				dm.committed = map[string]bool{}
			}
			dm.committed[into[i]] = true
		}
		for _, c := range children[i] {
			v, ok := d.volumes[strings.TrimPrefix(c, "/pool/")]
			if !ok {
				return fmt.Errorf("commit %s: no volume %s", name, c)
			}
			v.Backing = strings.TrimPrefix(into[i], "/pool/")
			d.volumes[v.Name] = v
		}
	}
	return nil
}

// SetLayer implements the driver interface.
func (d *Driver) SetLayer(ctx context.Context, name string, layer uint64) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	dm, err := d.runningDomain("SetLayer", name)
	if err != nil {
		return err
	}
	dm.dom.Layer = layer
	return nil
}

// EnsureSeed implements the driver interface.
func (d *Driver) EnsureSeed(ctx context.Context, name, userData, metaData string) (string, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if err := d.call("EnsureSeed"); err != nil {
		return "", err
	}
	d.seeds[name] = userData
	return "/pool/" + name, nil
}

// DeleteVolume implements the driver interface.
func (d *Driver) DeleteVolume(ctx context.Context, name string) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if err := d.call("DeleteVolume"); err != nil {
		return err
	}
	delete(d.volumes, name)
	delete(d.seeds, name)
	return nil
}

// Volumes lists the volume names present.
func (d *Driver) Volumes() []string {
	d.mu.Lock()
	defer d.mu.Unlock()
	var out []string
	for n := range d.volumes {
		out = append(out, n)
	}
	for n := range d.seeds {
		out = append(out, n)
	}
	sort.Strings(out)
	return out
}

// Run implements the daemon's driver interface: the fake needs no
// connection loop.
func (d *Driver) Run(ctx context.Context) error {
	<-ctx.Done()
	return nil
}

// ConsoleLog returns a synthetic console log naming the domain's state.
func (d *Driver) ConsoleLog(ctx context.Context, name string, max int64) ([]byte, error) {
	dom, ok := d.Domain(name)
	if !ok {
		return nil, fmt.Errorf("%s: %w", name, hypervisor.ErrNoDomain)
	}
	return []byte(fmt.Sprintf("fake console of %s: %s since %s\n", name, dom.State, dom.StartedAt.Format(time.RFC3339))), nil
}

// Stats returns the domain's state and CPU time (SetCPULoad), zero
// other counters.
func (d *Driver) Stats(ctx context.Context, name string) (hypervisor.Stats, error) {
	dom, ok := d.Domain(name)
	if !ok {
		return hypervisor.Stats{}, fmt.Errorf("%s: %w", name, hypervisor.ErrNoDomain)
	}
	spec, _ := d.Spec(name)
	d.mu.Lock()
	cpu := d.accrue(name, time.Now())
	d.mu.Unlock()
	return hypervisor.Stats{State: dom.State, VCPUs: spec.VCPUs, MemoryKiB: uint64(spec.MemoryMiB) << 10, CPUTime: cpu}, nil
}

// SetPoolDir sets the directory images are written to.
func (d *Driver) SetPoolDir(dir string) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.poolDir = dir
}

// PoolDir is where images are written (SetPoolDir; the system temporary
// directory by default).
func (d *Driver) PoolDir() string {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.poolDir == "" {
		return os.TempDir()
	}
	return d.poolDir
}

// Refresh does nothing.
func (d *Driver) Refresh(ctx context.Context) error { return nil }

// Connect makes fake drivers reachable from each other for Migrate, keyed
// by the destination URI a migration names.
func Connect(drivers map[string]*Driver) {
	for _, d := range drivers {
		d.mu.Lock()
		d.peers = drivers
		d.mu.Unlock()
	}
}

// SetMigrateErr makes every Migrate fail with err (nil clears).
func (d *Driver) SetMigrateErr(err error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.migrateErr = err
}

// Migrate moves a running domain, with its run info, to the peer driver
// registered under destURI (see Connect).
func (d *Driver) Migrate(ctx context.Context, name, destURI, dataURI string, progress func(done, total uint64)) error {
	d.mu.Lock()
	if err := d.call("Migrate"); err != nil {
		d.mu.Unlock()
		return err
	}
	if d.migrateErr != nil {
		err := d.migrateErr
		d.mu.Unlock()
		return err
	}
	dm, err := d.lookup(name)
	if err != nil {
		d.mu.Unlock()
		return err
	}
	peer := d.peers[destURI]
	if peer == nil || !dm.dom.State.Active() {
		d.mu.Unlock()
		return fmt.Errorf("migrate %s to %s: no such peer or not running", name, destURI)
	}
	moved := *dm
	delete(d.domains, name)
	d.mu.Unlock()
	if progress != nil {
		progress(50, 100)
	}
	peer.mu.Lock()
	peer.domains[name] = &moved
	peer.mu.Unlock()
	peer.emit(hypervisor.Event{Name: name, Kind: hypervisor.EventStarted, Detail: "migrated"})
	return nil
}

// PowerOff implements the driver interface: like Destroy.
func (d *Driver) PowerOff(ctx context.Context, name string) error { return d.Destroy(ctx, name) }

// OpenConsole attaches to a running domain's fake serial console: it says
// which domain it is, then echoes what is written to it, as a terminal
// would. Stopping the domain ends the session.
func (d *Driver) OpenConsole(ctx context.Context, name string) (io.ReadWriteCloser, error) {
	return d.open("OpenConsole", name, "fake console of "+name+"\r\n")
}

// OpenDisplay connects to a running domain's fake VNC server: it sends
// the RFB version greeting, then echoes what it is sent. Stopping the
// domain ends the connection.
func (d *Driver) OpenDisplay(ctx context.Context, name string) (io.ReadWriteCloser, error) {
	return d.open("OpenDisplay", name, "RFB 003.008\n")
}

// open is a fake stream of a running domain that first says greeting and
// then echoes.
func (d *Driver) open(op, name, greeting string) (io.ReadWriteCloser, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if err := d.call(op); err != nil {
		return nil, err
	}
	dm, ok := d.domains[name]
	if !ok {
		return nil, fmt.Errorf("%s: %w", name, hypervisor.ErrNoDomain)
	}
	if !dm.dom.State.Active() {
		return nil, fmt.Errorf("%s is %s: %w", name, dm.dom.State, hypervisor.ErrNotRunning)
	}
	c := &fakeConsole{out: make(chan []byte, 64), done: make(chan struct{})}
	c.out <- []byte(greeting)
	if d.consoles == nil {
		d.consoles = map[string][]*fakeConsole{}
	}
	d.consoles[name] = append(d.consoles[name], c)
	return c, nil
}

// endConsoles ends the console and display sessions of a domain that stopped (d.mu
// held).
func (d *Driver) endConsoles(name string) {
	for _, c := range d.consoles[name] {
		c.Close()
	}
	delete(d.consoles, name)
}

type fakeConsole struct {
	out  chan []byte
	pend []byte
	once sync.Once
	done chan struct{}
}

func (c *fakeConsole) Read(p []byte) (int, error) {
	if len(c.pend) == 0 {
		select {
		case c.pend = <-c.out:
		case <-c.done:
			return 0, io.EOF
		}
	}
	n := copy(p, c.pend)
	c.pend = c.pend[n:]
	return n, nil
}

func (c *fakeConsole) Write(p []byte) (int, error) {
	select {
	case c.out <- append([]byte(nil), p...):
		return len(p), nil
	case <-c.done:
		return 0, io.ErrClosedPipe
	}
}

func (c *fakeConsole) Close() error {
	c.once.Do(func() { close(c.done) })
	return nil
}

// DiskChain implements the driver interface: the first writable disk's
// file and the volumes under it.
func (d *Driver) DiskChain(ctx context.Context, name string) ([]string, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	dm, err := d.runningDomain("DiskChain", name)
	if err != nil {
		return nil, err
	}
	for _, disk := range dm.spec.Disks {
		if !disk.ReadOnly {
			return d.chainOf(disk.Path), nil
		}
	}
	return nil, nil
}

// BackingChain implements the driver interface from the volumes' backing.
func (d *Driver) BackingChain(ctx context.Context, file string) ([]string, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if _, ok := d.volumes[strings.TrimPrefix(file, "/pool/")]; !ok {
		return nil, fmt.Errorf("%s: %w", file, hypervisor.ErrNoVolume)
	}
	return d.chainOf(file), nil
}

func (d *Driver) chainOf(file string) []string {
	out := []string{file}
	for v, ok := d.volumes[strings.TrimPrefix(file, "/pool/")]; ok && v.Backing != "" && len(out) < 1000; v, ok = d.volumes[v.Backing] {
		out = append(out, "/pool/"+v.Backing)
	}
	return out
}

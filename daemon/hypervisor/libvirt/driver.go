// Package libvirt is corral's hypervisor driver over libvirt's RPC protocol
// (github.com/digitalocean/go-libvirt, the only importer, with domain XML
// built by libvirt.org/go/libvirtxml). It keeps one connection to the local
// libvirtd and reconnects with backoff when libvirtd goes away: a libvirtd
// restart leaves guests running and is not a host failure. Corral-managed
// domains carry corral metadata (VM id, placement generation, spec version)
// in <metadata>; guests get a run record (start time, restart sequence) on
// the live domain when corral starts them.
package libvirt

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	golibvirt "github.com/digitalocean/go-libvirt"
	"github.com/digitalocean/go-libvirt/socket/dialers"

	"github.com/corralhq/corral/daemon/hypervisor"
)

// Config configures the driver.
type Config struct {
	URI    string // e.g. qemu:///system
	Socket string // libvirtd's Unix socket
	// PoolDir is the storage pool directory (shared between hosts in
	// production); PoolName is its libvirt name.
	PoolDir  string
	PoolName string
	// DomainType is kvm, qemu (TCG) or auto: kvm when /dev/kvm works and
	// this host is not itself a virtual machine.
	DomainType string
	// SharedStorage: the pool is shared by all hosts (corral's
	// shared_storage). libvirt recognises NFS and cluster file systems but
	// not every shared setup (a cluster FS on a shared block device, the
	// lab's directory), so with this set migration skips libvirt's guess
	// (VIR_MIGRATE_UNSAFE). virtlockd still guards the disks.
	SharedStorage bool
	Logger        *slog.Logger
	// OnProblem, if set, is called when Problem changes.
	OnProblem func()
}

// Driver talks to one libvirtd.
type Driver struct {
	cfg     Config
	log     *slog.Logger
	domType string

	mu   sync.Mutex
	conn *golibvirt.Libvirt
	// volMu serialises storage pool operations.
	volMu sync.Mutex
	// storage says why the storage pool is not usable, caps why libvirt
	// gives no domain capabilities for the guests ("" when all is well).
	storage, caps string

	events chan hypervisor.Event
	// warmups counts the connections whose QEMU capabilities libvirtd
	// has probed (warmCapabilities).
	warmups atomic.Int32
}

// New returns a driver; Run connects it.
func New(cfg Config) *Driver {
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.PoolName == "" {
		cfg.PoolName = "corral"
	}
	return &Driver{cfg: cfg, log: cfg.Logger, events: make(chan hypervisor.Event, 1024)}
}

// Events delivers lifecycle events of all domains and EventConnected after
// every (re)connection.
func (d *Driver) Events() <-chan hypervisor.Event { return d.events }

// Connected reports whether libvirtd is reachable now.
func (d *Driver) Connected() bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.conn != nil
}

// Problem says why no guest can start here right now, "" when they can:
// the storage pool cannot be used (it points somewhere else than
// storage_pool and cannot be moved, or it does not start), or libvirt
// gives no domain capabilities for the guests (QEMU missing or broken, the
// domain type not supported: warmCapabilities). While libvirtd is away it
// keeps what the last connection found.
func (d *Driver) Problem() string {
	d.mu.Lock()
	defer d.mu.Unlock()
	var ps []string
	if d.storage != "" {
		ps = append(ps, "storage pool: "+d.storage)
	}
	if d.caps != "" {
		ps = append(ps, "libvirt cannot start guests: "+d.caps)
	}
	return strings.Join(ps, "; ")
}

// setProblem sets one of the problems and reports whether it changed.
func (d *Driver) setProblem(field *string, problem string) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	changed := *field != problem
	*field = problem
	return changed
}

func (d *Driver) setStorage(problem string) {
	if !d.setProblem(&d.storage, problem) {
		return
	}
	if problem != "" {
		d.log.Error("storage pool unusable; no guest starts here until it is fixed", "pool", d.cfg.PoolName, "problem", problem)
	} else {
		d.log.Info("storage pool usable", "pool", d.cfg.PoolName, "dir", d.cfg.PoolDir)
	}
	if d.cfg.OnProblem != nil {
		d.cfg.OnProblem()
	}
}

// setCaps sets the capabilities' problem and reports whether it changed.
func (d *Driver) setCaps(problem string) bool {
	if !d.setProblem(&d.caps, problem) {
		return false
	}
	if problem != "" {
		d.log.Error("libvirt cannot start guests; none starts here until it can", "domain_type", d.domType, "problem", problem)
	} else {
		d.log.Info("libvirt can start guests again", "domain_type", d.domType)
	}
	if d.cfg.OnProblem != nil {
		d.cfg.OnProblem()
	}
	return true
}

// DomainType is the libvirt domain type guests are defined with.
func (d *Driver) DomainType() string { return d.domType }

func (d *Driver) c() (*golibvirt.Libvirt, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.conn == nil {
		return nil, hypervisor.ErrDisconnected
	}
	return d.conn, nil
}

// Run keeps the connection up until ctx ends: connect, stream lifecycle
// events, keep the storage pool right, and on loss reconnect with backoff.
func (d *Driver) Run(ctx context.Context) error {
	d.domType = chooseDomainType(d.cfg.DomainType, d.log)
	var b backoff
	for {
		l, err := d.connect(ctx)
		if err == nil {
			up := time.Now()
			err = d.serve(ctx, l)
			if ctx.Err() != nil {
				return nil
			}
			b.connected(time.Since(up))
			d.log.Warn("libvirtd connection lost; reconnecting", "in", b.wait(), "err", err)
		} else {
			d.log.Warn("cannot connect to libvirtd", "socket", d.cfg.Socket, "in", b.wait(), "err", err)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(b.wait()):
		}
		b.failed()
	}
}

// backoff paces reconnections: 100 ms doubling to 5 s, back to 100 ms only
// after a connection that lasted (a libvirtd that accepts and then drops us
// at once is not hammered ten times a second).
type backoff struct{ d time.Duration }

const (
	backoffMin    = 100 * time.Millisecond
	backoffMax    = 5 * time.Second
	backoffStable = 10 * time.Second // a connection this long resets the backoff
)

func (b *backoff) wait() time.Duration { return max(b.d, backoffMin) }

func (b *backoff) failed() { b.d = min(2*b.wait(), backoffMax) }

func (b *backoff) connected(lasted time.Duration) {
	if lasted >= backoffStable {
		b.d = 0
	}
}

func (d *Driver) connect(ctx context.Context) (*golibvirt.Libvirt, error) {
	l := golibvirt.NewWithDialer(limitDialer{dialers.NewLocal(dialers.WithSocket(d.cfg.Socket), dialers.WithLocalTimeout(5*time.Second)), maxInFlight})
	if err := l.ConnectToURI(golibvirt.ConnectURI(d.cfg.URI)); err != nil {
		return nil, err
	}
	return l, nil
}

// serve runs one connection until it drops or ctx ends. A storage pool
// that cannot be used does not drop the connection (guests that run are
// still watched): it is retried every poolRetry, and Problem says
// why meanwhile.
func (d *Driver) serve(ctx context.Context, l *golibvirt.Libvirt) error {
	var warm warmup
	defer func() {
		l.Disconnect()
		warm.wg.Wait() // its request ends with the connection
	}()
	evctx, cancel := context.WithCancel(ctx)
	defer cancel()
	evs, err := l.LifecycleEvents(evctx)
	if err != nil {
		return fmt.Errorf("subscribe to lifecycle events: %w", err)
	}
	d.checkPool(l)
	d.mu.Lock()
	d.conn = l
	d.mu.Unlock()
	defer func() {
		d.mu.Lock()
		d.conn = nil
		d.mu.Unlock()
	}()
	ver, _ := l.ConnectGetLibVersion()
	d.log.Info("connected to libvirtd", "socket", d.cfg.Socket, "libvirt", fmt.Sprintf("%d.%d.%d", ver/1000000, ver/1000%1000, ver%1000), "domain_type", d.domType)
	d.emit(hypervisor.Event{Kind: hypervisor.EventConnected})
	d.warmCapabilities(l, &warm)
	retry := time.NewTicker(poolRetry)
	defer retry.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-l.Disconnected():
			return errors.New("disconnected")
		case <-retry.C:
			d.mu.Lock()
			storage, caps := d.storage, d.caps
			d.mu.Unlock()
			if storage != "" {
				d.checkPool(l)
				if d.Problem() == "" {
					d.emit(hypervisor.Event{Kind: hypervisor.EventConnected}) // resynchronise: guests may start now
				}
			}
			if caps != "" {
				d.warmCapabilities(l, &warm)
			}
		case ev, ok := <-evs:
			if !ok {
				return errors.New("event stream closed")
			}
			d.emit(lifecycleEvent(ev))
		}
	}
}

// warmCapabilities asks libvirtd, in the background, for the domain
// capabilities of the guests corral defines: on every connection, and
// every poolRetry while it failed. That makes libvirt probe QEMU now
// rather than in the first guest start, which may be a guest recovered
// from a failed host. The probe runs QEMU and queries it for seconds
// (3.4-4.3 s on the lab's 2 cores), and libvirt 9.0 throws its cached
// result away after most daemon restarts: the cache records the host's
// CPUID as read on whichever CPU libvirtd ran, APIC ids included (its
// debug log: "Outdated capabilities ...: host cpuid changed"). A recovery
// onto a host whose libvirtd had restarted since its last guest start took
// 8.2 s instead of 4 (bench-recovery's first kill, the start 4.5 s). A
// start that comes meanwhile waits inside libvirtd for the same probe.
//
// A refusal from libvirt (QEMU missing or broken, the domain type not
// supported) means no guest can start here: it is a Problem until an
// attempt succeeds. A lost connection is not one.
func (d *Driver) warmCapabilities(l *golibvirt.Libvirt, w *warmup) {
	if !w.running.CompareAndSwap(false, true) {
		return
	}
	w.wg.Go(func() {
		defer w.running.Store(false)
		start := time.Now()
		_, err := l.ConnectGetDomainCapabilities(nil, golibvirt.OptString{guestArch}, nil, golibvirt.OptString{d.domType}, 0)
		var lerr golibvirt.Error
		switch {
		case err == nil:
			d.warmups.Add(1)
			d.log.Info("libvirt domain capabilities ready", "took", time.Since(start).Round(time.Millisecond))
			if d.setCaps("") && d.Problem() == "" {
				d.emit(hypervisor.Event{Kind: hypervisor.EventConnected}) // resynchronise: guests may start now
			}
		case errors.As(err, &lerr):
			d.setCaps(lerr.Message)
		default:
			d.log.Warn("libvirt domain capabilities", "err", err)
		}
	})
}

// warmup is one connection's capabilities request: at most one at a time.
type warmup struct {
	running atomic.Bool
	wg      sync.WaitGroup
}

// poolRetry is how often an unusable storage pool is checked again.
const poolRetry = 5 * time.Second

// checkPool makes the pool right, or says why it is not.
func (d *Driver) checkPool(l *golibvirt.Libvirt) {
	d.volMu.Lock()
	err := d.ensurePool(l)
	d.volMu.Unlock()
	if err != nil {
		d.setStorage(err.Error())
		return
	}
	d.setStorage("")
}

// emit never blocks: when the consumer lags, events are dropped, and its
// periodic resync catches up.
func (d *Driver) emit(ev hypervisor.Event) {
	select {
	case d.events <- ev:
	default:
		d.log.Warn("event queue full; dropping", "domain", ev.Name, "event", ev.Kind)
	}
}

// libvirt's virDomainEventType and the details of its stopped events.
var (
	eventKinds = map[int32]hypervisor.EventKind{
		0: hypervisor.EventDefined, 1: hypervisor.EventUndefined, 2: hypervisor.EventStarted,
		3: hypervisor.EventSuspended, 4: hypervisor.EventResumed, 5: hypervisor.EventStopped,
		6: hypervisor.EventShutdown, 8: hypervisor.EventCrashed,
	}
	stoppedDetails = map[int32]string{0: "shutdown", 1: "destroyed", 2: "crashed", 3: "migrated", 4: "saved", 5: "failed", 6: "from-snapshot"}
)

func lifecycleEvent(ev golibvirt.DomainEventLifecycleMsg) hypervisor.Event {
	kind, ok := eventKinds[ev.Event]
	if !ok {
		kind = hypervisor.EventKind(fmt.Sprintf("event-%d", ev.Event))
	}
	out := hypervisor.Event{Name: ev.Dom.Name, Kind: kind}
	if kind == hypervisor.EventStopped {
		out.Detail = stoppedDetails[ev.Detail]
	}
	return out
}

// isCode reports whether err is a libvirt error with the given code.
func isCode(err error, code golibvirt.ErrorNumber) bool {
	var le golibvirt.Error
	return errors.As(err, &le) && le.Code == uint32(code)
}

// wrap maps connection failures to hypervisor.ErrDisconnected.
func wrap(op string, err error) error {
	if err == nil {
		return nil
	}
	var le golibvirt.Error
	if !errors.As(err, &le) {
		return fmt.Errorf("%s: %v: %w", op, err, hypervisor.ErrDisconnected)
	}
	return fmt.Errorf("%s: %w", op, err)
}

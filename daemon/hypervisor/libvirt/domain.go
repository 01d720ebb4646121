package libvirt

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"time"

	golibvirt "github.com/digitalocean/go-libvirt"

	"github.com/corralhq/corral/daemon/hypervisor"
	"github.com/corralhq/corral/internal/guestproc"
)

var (
	states = map[int32]hypervisor.State{
		int32(golibvirt.DomainRunning): hypervisor.Running, int32(golibvirt.DomainPaused): hypervisor.Paused,
		int32(golibvirt.DomainShutdown): hypervisor.Shutdown, int32(golibvirt.DomainShutoff): hypervisor.Shutoff,
		int32(golibvirt.DomainCrashed): hypervisor.Crashed,
	}
	// virDomainShutoffReason
	shutoffReasons = map[int32]string{0: "unknown", 1: "shutdown", 2: "destroyed", 3: "crashed", 4: "migrated", 5: "saved", 6: "failed", 7: "from-snapshot", 8: "daemon"}
	// virDomainRunningReason
	runningReasons = map[int32]string{0: "unknown", 1: "booted", 2: "migrated", 3: "restored", 4: "from-snapshot", 5: "unpaused", 6: "migration-canceled", 7: "save-canceled", 8: "wakeup", 9: "crashed", 10: "postcopy"}
	// virDomainPausedReason
	pausedReasons = map[int32]string{0: "unknown", 1: "user", 2: "migration", 3: "save", 4: "dump", 5: "ioerror", 6: "watchdog", 7: "from-snapshot", 8: "shutting-down", 9: "snapshot", 10: "crashed", 11: "starting-up", 12: "postcopy", 13: "postcopy-failed", 14: "api-error"}
	// virDomainCrashedReason: a guest kernel panic reported through pvpanic
	// shows as crashed/panicked until on_crash=destroy ends the domain.
	crashedReasons = map[int32]string{0: "unknown", 1: "panicked"}
)

func stateOf(state, reason int32) (hypervisor.State, string) {
	s, ok := states[state]
	if !ok {
		s = hypervisor.Other
	}
	switch s {
	case hypervisor.Shutoff:
		return s, shutoffReasons[reason]
	case hypervisor.Running:
		return s, runningReasons[reason]
	case hypervisor.Paused:
		return s, pausedReasons[reason]
	case hypervisor.Crashed:
		return s, crashedReasons[reason]
	}
	return s, ""
}

// List returns every corral-managed domain (those with corral metadata).
func (d *Driver) List(ctx context.Context) ([]hypervisor.Domain, error) {
	l, err := d.c()
	if err != nil {
		return nil, err
	}
	doms, _, err := l.ConnectListAllDomains(1, 0)
	if err != nil {
		return nil, wrap("list domains", err)
	}
	var out []hypervisor.Domain
	for _, dom := range doms {
		hd, err := d.describe(l, dom)
		if isCode(err, golibvirt.ErrNoDomainMetadata) || isCode(err, golibvirt.ErrNoDomain) {
			continue // not ours, or gone meanwhile
		}
		if err != nil {
			return nil, err
		}
		out = append(out, hd)
	}
	return out, nil
}

func (d *Driver) describe(l *golibvirt.Libvirt, dom golibvirt.Domain) (hypervisor.Domain, error) {
	raw, err := l.DomainGetMetadata(dom, int32(golibvirt.DomainMetadataElement), golibvirt.OptString{vmNS}, golibvirt.DomainAffectCurrent)
	if err != nil {
		return hypervisor.Domain{}, wrap("metadata of "+dom.Name, err)
	}
	meta, err := parseVMMeta(raw)
	if err != nil {
		return hypervisor.Domain{}, fmt.Errorf("corral metadata of %s: %w", dom.Name, err)
	}
	st, reason, err := l.DomainGetState(dom, 0)
	if err != nil {
		return hypervisor.Domain{}, wrap("state of "+dom.Name, err)
	}
	out := hypervisor.Domain{Name: dom.Name, VMID: meta.ID, Generation: meta.Generation, SpecVersion: meta.SpecVersion}
	out.State, out.Reason = stateOf(st, reason)
	if out.State.Active() {
		if r, err := l.DomainGetMetadata(dom, int32(golibvirt.DomainMetadataElement), golibvirt.OptString{runNS}, golibvirt.DomainAffectLive); err == nil {
			if info, err := parseRunMeta(r); err == nil {
				out.StartedAt, out.RestartSeq, out.Layer = info.StartedAt, info.RestartSeq, info.Layer
			}
		}
	}
	return out, nil
}

// Get returns one corral-managed domain.
func (d *Driver) Get(ctx context.Context, name string) (hypervisor.Domain, error) {
	l, dom, err := d.lookup(name)
	if err != nil {
		return hypervisor.Domain{}, err
	}
	hd, err := d.describe(l, dom)
	if isCode(err, golibvirt.ErrNoDomainMetadata) {
		return hd, fmt.Errorf("%s: %w", name, hypervisor.ErrNotManaged)
	}
	return hd, err
}

func (d *Driver) lookup(name string) (*golibvirt.Libvirt, golibvirt.Domain, error) {
	l, err := d.c()
	if err != nil {
		return nil, golibvirt.Domain{}, err
	}
	dom, err := l.DomainLookupByName(name)
	if isCode(err, golibvirt.ErrNoDomain) {
		return nil, dom, fmt.Errorf("%s: %w", name, hypervisor.ErrNoDomain)
	}
	return l, dom, wrap("lookup "+name, err)
}

// Define creates or replaces the persistent definition of spec's domain. It
// refuses to replace a domain of that name that corral does not manage, or
// that belongs to another VM id.
func (d *Driver) Define(ctx context.Context, spec hypervisor.DomainSpec) error {
	if cur, err := d.Get(ctx, spec.Name); err == nil && cur.VMID != spec.VMID {
		return fmt.Errorf("define %s: domain belongs to vm id %s, not %s", spec.Name, cur.VMID, spec.VMID)
	} else if err != nil && !isNoDomain(err) {
		return fmt.Errorf("define %s: %w", spec.Name, err)
	}
	x, err := domainXML(spec, d.domType)
	if err != nil {
		return fmt.Errorf("domain xml for %s: %w", spec.Name, err)
	}
	l, err := d.c()
	if err != nil {
		return err
	}
	if _, err := l.DomainDefineXMLFlags(x, golibvirt.DomainDefineValidate); err != nil {
		return wrap("define "+spec.Name, err)
	}
	return nil
}

func isNoDomain(err error) bool { return errors.Is(err, hypervisor.ErrNoDomain) }

// Start boots a defined domain and records run info on the live domain.
func (d *Driver) Start(ctx context.Context, name string, info hypervisor.RunInfo) error {
	l, dom, err := d.lookup(name)
	if err != nil {
		return err
	}
	if err := os.MkdirAll("/var/log/libvirt/qemu", 0o755); err != nil {
		return err
	}
	if _, err := l.DomainCreateWithFlags(dom, 0); err != nil {
		return wrap("start "+name, err)
	}
	return d.setRunInfo(l, dom, info)
}

func (d *Driver) setRunInfo(l *golibvirt.Libvirt, dom golibvirt.Domain, info hypervisor.RunInfo) error {
	m := runMeta{Started: info.StartedAt.UTC().Format(time.RFC3339Nano), RestartSeq: info.RestartSeq, Layer: info.Layer}
	err := l.DomainSetMetadata(dom, int32(golibvirt.DomainMetadataElement), golibvirt.OptString{m.element()},
		golibvirt.OptString{runKey}, golibvirt.OptString{runNS}, golibvirt.DomainAffectLive)
	return wrap("record run info of "+dom.Name, err)
}

// Shutdown asks the guest to power off (ACPI power button) and waits up to
// timeout; then it destroys the domain. A domain that is not running is
// left alone.
func (d *Driver) Shutdown(ctx context.Context, name string, timeout time.Duration) error {
	l, dom, err := d.lookup(name)
	if err != nil {
		return err
	}
	st, _, err := l.DomainGetState(dom, 0)
	if err != nil {
		return wrap("state of "+name, err)
	}
	if s, _ := stateOf(st, 0); !s.Active() {
		return nil
	}
	if err := l.DomainShutdownFlags(dom, golibvirt.DomainShutdownAcpiPowerBtn); err != nil && !isCode(err, golibvirt.ErrOperationInvalid) {
		return wrap("shutdown "+name, err)
	}
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		st, _, err := l.DomainGetState(dom, 0)
		if err != nil {
			return wrap("state of "+name, err)
		}
		if s, _ := stateOf(st, 0); !s.Active() {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
	d.log.Warn("guest did not shut down in time; destroying", "vm", name, "timeout", timeout)
	return d.Destroy(ctx, name)
}

// Destroy stops the domain at once (power cut). A stopped domain is fine.
func (d *Driver) Destroy(ctx context.Context, name string) error {
	l, dom, err := d.lookup(name)
	if err != nil {
		return err
	}
	err = l.DomainDestroyFlags(dom, 0)
	if isCode(err, golibvirt.ErrOperationInvalid) { // not running
		return nil
	}
	return wrap("destroy "+name, err)
}

// Undefine removes the persistent definition (the domain must be stopped).
// A missing domain is fine.
func (d *Driver) Undefine(ctx context.Context, name string) error {
	l, dom, err := d.lookup(name)
	if isNoDomain(err) {
		return nil
	}
	if err != nil {
		return err
	}
	return wrap("undefine "+name, l.DomainUndefineFlags(dom, 0))
}

// ConsoleLog returns up to max bytes from the end of the domain's serial
// console log on this host.
func (d *Driver) ConsoleLog(ctx context.Context, name string, max int64) ([]byte, error) {
	f, err := os.Open(consoleLog(name))
	if os.IsNotExist(err) {
		return nil, fmt.Errorf("no console log for %s on this host: %w", name, hypervisor.ErrNoDomain)
	}
	if err != nil {
		return nil, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if max > 0 && fi.Size() > max {
		if _, err := f.Seek(-max, io.SeekEnd); err != nil {
			return nil, err
		}
	}
	return io.ReadAll(f)
}

// Stats returns the domain's counters.
func (d *Driver) Stats(ctx context.Context, name string) (hypervisor.Stats, error) {
	l, dom, err := d.lookup(name)
	if err != nil {
		return hypervisor.Stats{}, err
	}
	recs, err := l.ConnectGetAllDomainStats([]golibvirt.Domain{dom},
		uint32(golibvirt.DomainStatsState|golibvirt.DomainStatsCPUTotal|golibvirt.DomainStatsBalloon|
			golibvirt.DomainStatsVCPU|golibvirt.DomainStatsInterface|golibvirt.DomainStatsBlock), 0)
	if err != nil {
		return hypervisor.Stats{}, wrap("stats of "+name, err)
	}
	if len(recs) == 0 {
		return hypervisor.Stats{}, fmt.Errorf("%s: %w", name, hypervisor.ErrNoDomain)
	}
	return parseStats(recs[0].Params), nil
}

func parseStats(params []golibvirt.TypedParam) hypervisor.Stats {
	vals := map[string]any{}
	for _, p := range params {
		vals[p.Field] = p.Value.I
	}
	num := func(k string) int64 {
		switch v := vals[k].(type) {
		case int32:
			return int64(v)
		case uint32:
			return int64(v)
		case int64:
			return v
		case uint64:
			return int64(v)
		}
		return 0
	}
	str := func(k string) string { s, _ := vals[k].(string); return s }
	var st hypervisor.Stats
	st.State, _ = stateOf(int32(num("state.state")), 0)
	st.CPUTime = uint64(num("cpu.time"))
	st.VCPUs = int(num("vcpu.current"))
	st.MemoryKiB = uint64(num("balloon.current"))
	st.MaxMemoryKiB = uint64(num("balloon.maximum"))
	for i := int64(0); i < num("block.count"); i++ {
		p := fmt.Sprintf("block.%d.", i)
		st.Disks = append(st.Disks, hypervisor.DiskStats{Name: str(p + "name"),
			ReadBytes: num(p + "rd.bytes"), WriteBytes: num(p + "wr.bytes"), ReadReqs: num(p + "rd.reqs"), WriteReqs: num(p + "wr.reqs")})
	}
	for i := int64(0); i < num("net.count"); i++ {
		p := fmt.Sprintf("net.%d.", i)
		st.NICs = append(st.NICs, hypervisor.NICStats{Name: str(p + "name"),
			RxBytes: num(p + "rx.bytes"), TxBytes: num(p + "tx.bytes"), RxPackets: num(p + "rx.pkts"), TxPackets: num(p + "tx.pkts"),
			RxErrs: num(p + "rx.errs"), TxErrs: num(p + "tx.errs"), RxDrop: num(p + "rx.drop"), TxDrop: num(p + "tx.drop")})
	}
	return st
}

// PowerOff kills the domain's QEMU at once (SIGKILL through a pidfd, by
// the pid libvirt records), waits for its death, and only then lets
// libvirt clean up. Used to fence: libvirt's own destroy sends SIGTERM
// first and waits for QEMU, which under load takes seconds the fencing
// protocol does not have.
func (d *Driver) PowerOff(ctx context.Context, name string) error {
	if pid, err := guestproc.PIDFile(guestproc.DefaultRunDir, name); err == nil {
		if p, err := guestproc.Open(guestproc.Target{Name: name, PID: pid}); err == nil {
			p.Kill()
			alive := guestproc.WaitDead([]*guestproc.Proc{p}, 5*time.Second)
			p.Close()
			if len(alive) > 0 {
				d.log.Error("guest survived SIGKILL for 5s", "vm", name, "pid", pid)
			}
		}
	}
	return d.Destroy(ctx, name)
}

package controller

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"sort"
	"strings"

	"github.com/corralhq/corral/daemon/placement"
	"github.com/corralhq/corral/internal/origin"
	"github.com/corralhq/corral/model"
	"github.com/corralhq/corral/raftlog"
)

// CreateVMRequest creates and places a VM.
type CreateVMRequest struct {
	Name string       `json:"name"`
	Spec model.VMSpec `json:"spec"`
	// Host pins the VM to a host.
	Host string `json:"host,omitempty"`
	// Stopped creates the VM without starting it.
	Stopped bool `json:"stopped,omitempty"`
	// Project holds the VM (empty: default); sent only when set, so a
	// leader from before projects still takes the others.
	Project string `json:"project,omitempty"`
	// restore: the VM's disks come from this backup (RestoreVM; never
	// on the wire).
	restore *model.RestoreSource
}

// VMPowerRequest starts or stops a VM.
type VMPowerRequest struct {
	Name    string           `json:"name"`
	Desired model.PowerState `json:"desired"`
}

// NameRequest names one object.
type NameRequest struct {
	Name string `json:"name"`
}

// ResizeVMRequest changes a VM's size.
type ResizeVMRequest struct {
	Name      string `json:"name"`
	VCPUs     int    `json:"vcpus"`
	MemoryMiB int64  `json:"memory_mib"`
	// Restart restarts a running VM so the new size takes effect now.
	Restart bool `json:"restart,omitempty"`
}

// DeleteVMRequest removes a VM. Without Force the VM's host destroys the
// domain and deletes its disks first; with Force the VM is forgotten at once
// (for a host that will never come back) and its disks stay in the pool.
type DeleteVMRequest struct {
	Name  string `json:"name"`
	Force bool   `json:"force,omitempty"`
}

func (l *Leader) event(ctx context.Context, kind, host, vm, format string, args ...any) {
	l.eventIn(ctx, "", kind, host, vm, format, args...)
}

// eventIn is event for a VM no longer in state: project names its
// project (the state machine stamps the project of a VM still there).
func (l *Leader) eventIn(ctx context.Context, project, kind, host, vm, format string, args ...any) {
	e := model.Event{Time: l.clock.Now().UTC(), Kind: kind, Host: host, VM: vm, Message: fmt.Sprintf(format, args...), Project: project}
	StampEvent(ctx, l.store.Cluster(), &e)
	if _, err := l.store.Apply(ctx, raftlog.AddEvents{Events: []model.Event{e}}); err != nil {
		l.log.Warn("record event", "kind", kind, "vm", vm, "err", err)
	}
}

// projectGate refuses a resource in a project other than the default one
// until the cluster's protocol has projects (a replica before them would
// drop the field).
func (l *Leader) projectGate(project string) error {
	if model.ProjectOf(project) == model.DefaultProject {
		return nil
	}
	return raftlog.FeatureProjects.Check(l.store.Cluster(), l.store.Hosts())
}

// usableIn says whether a VM of project may use an image or a network of
// owner: its own project's, or the default project's (shared by all).
func usableIn(project, kind, name, owner string) error {
	if o := model.ProjectOf(owner); o != model.DefaultProject && o != model.ProjectOf(project) {
		return fmt.Errorf("%s %q belongs to project %s, not %s: %w", kind, name, o, model.ProjectOf(project), model.ErrForbidden)
	}
	return nil
}

// StampEvent records in e who asked for the operation it reports (the
// origin the API put in ctx), once the cluster's protocol allows it
// (raftlog.FeatureAudit).
func StampEvent(ctx context.Context, c model.Cluster, e *model.Event) {
	if o, ok := origin.From(ctx); ok && raftlog.FeatureAudit.Enabled(c) {
		e.Actor, e.Source, e.RequestID = o.Actor, o.Source, o.RequestID
	}
}

// candidates are the hosts in state with what the leader knows of their
// liveness: its lease view once it leads (a host whose renewals are late
// takes no new VMs), gossip before that. Unhealthy hosts take no VMs,
// except that recovery accepts a degraded one (busy, warm): a guest whose
// host died is better running there than not at all.
func (l *Leader) candidates(recovery bool) []placement.Candidate {
	suspected, leasing := l.live.suspects()
	gossip := map[string]PeerState{}
	for _, p := range l.peers.Peers() {
		gossip[p.Name] = p.State
	}
	var out []placement.Candidate
	for _, h := range l.store.Hosts() {
		c := placement.Candidate{Host: h}
		switch {
		case h.Health.State == model.HealthDegraded && recovery:
		case h.Health.State != "" && h.Health.State != model.HealthOK:
			c.Unavailable = fmt.Sprintf("health %s: %s", h.Health.State, strings.Join(h.Health.Reasons, "; "))
		case leasing && suspected[h.Name]:
			c.Unavailable = "lease renewals late"
		case leasing:
		case gossip[h.Name] == "":
			c.Unavailable = "not in the gossip pool"
		case gossip[h.Name] != PeerAlive:
			c.Unavailable = "host " + string(gossip[h.Name])
		}
		out = append(out, c)
	}
	return out
}

func (l *Leader) index() *placement.Index {
	x := placement.NewIndex(l.candidates(false), nil, l.cfg.Placement)
	l.store.EachVM(x.Count)
	return x
}

// recoveryIndex places the guests of a dead host (see candidates).
func (l *Leader) recoveryIndex() *placement.Index {
	x := placement.NewIndex(l.candidates(true), nil, l.cfg.Placement)
	l.store.EachVM(x.Count)
	return x
}

func newUUID() string {
	var b [16]byte
	if _, err := rand.Read(b[:]); err != nil {
		panic(err)
	}
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:16])
}

func newMAC() string {
	var b [3]byte
	if _, err := rand.Read(b[:]); err != nil {
		panic(err)
	}
	return fmt.Sprintf("52:54:00:%02x:%02x:%02x", b[0], b[1], b[2])
}

// CreateVM validates, places and records a VM. When no host fits it
// returns a placement.NoFitError (matching model.ErrNoCapacity) that says
// why for every host, and records nothing.
func (l *Leader) CreateVM(ctx context.Context, req CreateVMRequest) (model.VM, error) {
	return l.createVM(ctx, req, "", 0)
}

// createVM is CreateVM of a member of group ("" none) made from version
// of its template.
func (l *Leader) createVM(ctx context.Context, req CreateVMRequest, group string, version uint64) (model.VM, error) {
	if err := l.ready(); err != nil {
		return model.VM{}, err
	}
	spec := req.Spec.Clone()
	if err := model.ValidateName("vm", req.Name); err != nil {
		return model.VM{}, err
	}
	if err := spec.Validate(req.Name); err != nil {
		return model.VM{}, err
	}
	if spec.Health != nil {
		if err := raftlog.FeatureHealthChecks.Check(l.store.Cluster(), l.store.Hosts()); err != nil {
			return model.VM{}, err
		}
	}
	if len(spec.Prefer) > 0 || len(spec.Avoid) > 0 {
		if err := raftlog.FeatureSoftRules.Check(l.store.Cluster(), l.store.Hosts()); err != nil {
			return model.VM{}, err
		}
	}
	if l.cfg.KernelDir != "" {
		if err := spec.Kernel.CheckKernelDir(l.cfg.KernelDir); err != nil {
			return model.VM{}, fmt.Errorf("vm %q: %w", req.Name, err)
		}
	}
	if _, err := l.store.VM(req.Name); err == nil {
		return model.VM{}, fmt.Errorf("vm %q already exists: %w", req.Name, model.ErrConflict)
	}
	if err := l.projectGate(req.Project); err != nil {
		return model.VM{}, err
	}
	for i, d := range spec.Disks {
		if d.Image == "" {
			continue
		}
		im, err := l.store.Image(d.Image)
		if err != nil {
			return model.VM{}, fmt.Errorf("vm %q: disk %d: %w", req.Name, i, err)
		}
		if err := usableIn(req.Project, "image", im.Name, im.Project); err != nil {
			return model.VM{}, fmt.Errorf("vm %q: disk %d: %w", req.Name, i, err)
		}
	}
	for i := range spec.NICs {
		n, err := l.store.Network(spec.NICs[i].Network)
		if err != nil {
			return model.VM{}, fmt.Errorf("vm %q: nic %d: %w", req.Name, i, err)
		}
		if err := usableIn(req.Project, "network", n.Name, n.Project); err != nil {
			return model.VM{}, fmt.Errorf("vm %q: nic %d: %w", req.Name, i, err)
		}
		if spec.NICs[i].MAC == "" {
			spec.NICs[i].MAC = newMAC()
		}
	}
	host, err := l.index().Place(placement.Request{Name: req.Name, Spec: spec, Host: req.Host})
	if err != nil {
		return model.VM{}, err
	}
	v := model.VM{ID: newUUID(), Name: req.Name, Spec: spec, Host: host, Desired: model.PowerRunning, CreatedAt: l.clock.Now().UTC(), Project: req.Project, Group: group, GroupVersion: version,
		Restore: req.restore}
	if req.Stopped {
		v.Desired = model.PowerStopped
	}
	if _, err := l.store.Apply(ctx, raftlog.CreateVM{VM: v}); err != nil {
		return model.VM{}, err
	}
	l.event(ctx, "created", host, v.Name, "placed on %s (%d vCPU, %d MiB)", host, spec.VCPUs, spec.MemoryMiB)
	return l.store.VM(v.Name)
}

// SetVMPower starts or stops a VM. A start also clears a failure, giving
// the VM a fresh restart and relocation budget.
func (l *Leader) SetVMPower(ctx context.Context, req VMPowerRequest) (model.VM, error) {
	if err := l.ready(); err != nil {
		return model.VM{}, err
	}
	v, err := l.store.VM(req.Name)
	if err != nil {
		return v, err
	}
	if v.Desired == req.Desired && (req.Desired == model.PowerStopped || v.Failed == "") {
		return v, nil
	}
	if _, err := l.store.Apply(ctx, raftlog.SetVMPower{Name: req.Name, Desired: req.Desired, ClearFailed: req.Desired == model.PowerRunning}); err != nil {
		return v, err
	}
	kind := "start"
	if req.Desired == model.PowerStopped {
		kind = "stop"
	}
	l.event(ctx, kind, v.Host, v.Name, "operator asked to %s", kind)
	return l.store.VM(req.Name)
}

// RestartVM asks the VM's host to restart the guest.
func (l *Leader) RestartVM(ctx context.Context, req NameRequest) (model.VM, error) {
	if err := l.ready(); err != nil {
		return model.VM{}, err
	}
	v, err := l.store.VM(req.Name)
	if err != nil {
		return v, err
	}
	if v.Desired != model.PowerRunning {
		return v, fmt.Errorf("vm %q is stopped; start it instead: %w", req.Name, model.ErrConflict)
	}
	if _, err := l.store.Apply(ctx, raftlog.RestartVM{Name: req.Name}); err != nil {
		return v, err
	}
	l.event(ctx, "restart", v.Host, v.Name, "operator asked to restart")
	return l.store.VM(req.Name)
}

// ResizeVM changes vCPUs and memory. The host applies the new size when the
// guest next starts; with Restart a running guest is restarted now. The new
// size must fit on the VM's host.
func (l *Leader) ResizeVM(ctx context.Context, req ResizeVMRequest) (model.VM, error) {
	if err := l.ready(); err != nil {
		return model.VM{}, err
	}
	v, err := l.store.VM(req.Name)
	if err != nil {
		return v, err
	}
	spec := v.Spec.Clone()
	spec.VCPUs, spec.MemoryMiB = req.VCPUs, req.MemoryMiB
	if err := spec.Validate(v.Name); err != nil {
		return v, err
	}
	if v.Host != "" {
		others := []model.VM{}
		for _, o := range l.store.VMs() {
			if o.Name != v.Name {
				others = append(others, o)
			}
		}
		x := placement.NewIndex(l.candidates(false), others, l.cfg.Placement)
		// Anti-affinity and labels were checked at placement; only size matters here.
		check := spec
		check.AntiAffinity, check.Require = "", nil
		if _, err := x.Place(placement.Request{Name: v.Name, Spec: check, Host: v.Host}); err != nil {
			return v, err
		}
	}
	if _, err := l.store.Apply(ctx, raftlog.ResizeVM{Name: v.Name, VCPUs: req.VCPUs, MemoryMiB: req.MemoryMiB}); err != nil {
		return v, err
	}
	l.event(ctx, "resized", v.Host, v.Name, "%d vCPU, %d MiB", req.VCPUs, req.MemoryMiB)
	if req.Restart && v.Desired == model.PowerRunning {
		return l.RestartVM(ctx, NameRequest{Name: v.Name})
	}
	return l.store.VM(v.Name)
}

// DeleteVM removes a VM (see DeleteVMRequest).
func (l *Leader) DeleteVM(ctx context.Context, req DeleteVMRequest) (model.VM, error) {
	if err := l.ready(); err != nil {
		return model.VM{}, err
	}
	v, err := l.store.VM(req.Name)
	if err != nil {
		return v, err
	}
	if req.Force || v.Host == "" {
		if _, err := l.store.Apply(ctx, raftlog.DeleteVM{Name: v.Name}); err != nil {
			return v, err
		}
		l.eventIn(ctx, v.Project, "deleted", v.Host, v.Name, "removed from cluster state (force=%v)", req.Force)
		return v, nil
	}
	if !v.Deleting {
		if _, err := l.store.Apply(ctx, raftlog.MarkVMDelete{Name: v.Name}); err != nil {
			return v, err
		}
		l.event(ctx, "deleting", v.Host, v.Name, "operator asked to delete")
	}
	// Not read back: the host may already have finished and the VM be gone.
	v.Deleting, v.Desired = true, model.PowerStopped
	return v, nil
}

// ReportVMs records a host's reports and turns notable transitions into
// events. It returns how many reports were applied (stale ones are not).
func (l *Leader) ReportVMs(ctx context.Context, r raftlog.ReportVMs) (int, error) {
	if err := l.ready(); err != nil {
		return 0, err
	}
	before := map[string]model.VM{}
	for _, rep := range r.Reports {
		if v, err := l.store.VM(rep.Name); err == nil {
			before[rep.Name] = v
		}
	}
	res, err := l.store.Apply(ctx, r)
	if err != nil {
		return 0, err
	}
	var evs []model.Event
	for _, rep := range r.Reports {
		if e, ok := l.noteRecovered(ctx, r.Host, rep); ok {
			evs = append(evs, e)
		}
	}
	now := l.clock.Now().UTC()
	for _, rep := range r.Reports {
		v, ok := before[rep.Name]
		if !ok || v.Host != r.Host || v.Generation != rep.Generation || v.Actual.State == rep.State && v.Actual.Restarts == rep.Restarts {
			continue
		}
		kind := ""
		switch rep.State {
		case model.StateRunning:
			kind = "running"
		case model.StateStopped:
			kind = "stopped"
		case model.StateCrashed:
			kind = "crashed"
		case model.StateError:
			kind = "error"
		case model.StateDeleted:
			kind = "deleted"
		}
		if kind == "" {
			continue
		}
		evs = append(evs, model.Event{Time: now, Kind: kind, Host: r.Host, VM: rep.Name, Message: rep.Message, Project: v.Project})
	}
	if len(evs) > 0 {
		if _, err := l.store.Apply(ctx, raftlog.AddEvents{Events: evs}); err != nil {
			l.log.Warn("record events", "err", err)
		}
	}
	n, _ := res.(int)
	return n, nil
}

// RelocateVM moves a VM that keeps crashing on its host to another host, or
// marks it failed when it has used its relocations or nothing else fits.
func (l *Leader) RelocateVM(ctx context.Context, req RelocateRequest) (model.VM, error) {
	if err := l.ready(); err != nil {
		return model.VM{}, err
	}
	v, err := l.store.VM(req.Name)
	if err != nil {
		return v, err
	}
	if v.Host != req.Host || v.Generation != req.Generation {
		return v, fmt.Errorf("vm %q is no longer placed on %s at generation %d: %w", v.Name, req.Host, req.Generation, model.ErrConflict)
	}
	fail := func(reason string) (model.VM, error) {
		if _, err := l.store.Apply(ctx, raftlog.FailVM{Name: v.Name, Generation: v.Generation, Reason: reason}); err != nil {
			return v, err
		}
		l.event(ctx, "failed", v.Host, v.Name, "%s", reason)
		return l.store.VM(v.Name)
	}
	if v.Relocations >= v.Spec.HA.MaxRelocate {
		return fail(fmt.Sprintf("%s; relocated %d times already (max_relocate %d)", req.Reason, v.Relocations, v.Spec.HA.MaxRelocate))
	}
	target, err := l.index().Place(placement.Request{Name: v.Name, Spec: v.Spec, Exclude: map[string]bool{req.Host: true}})
	var nf *placement.NoFitError
	if errors.As(err, &nf) {
		return fail(fmt.Sprintf("%s; no other host fits: %v", req.Reason, err))
	}
	if err != nil {
		return v, err
	}
	if _, err := l.store.Apply(ctx, raftlog.PlaceVM{Name: v.Name, Host: target, Generation: v.Generation, Relocation: true}); err != nil {
		return v, err
	}
	l.event(ctx, "relocated", target, v.Name, "from %s: %s", req.Host, req.Reason)
	return l.store.VM(v.Name)
}

// PutImage records an image that a host wrote into the storage pool.
func (l *Leader) PutImage(ctx context.Context, im model.Image) (model.Image, error) {
	if err := l.ready(); err != nil {
		return im, err
	}
	if err := model.ValidateName("image", im.Name); err != nil {
		return im, err
	}
	if im.SizeBytes < 0 || im.VirtualSizeBytes < 0 || len(im.SHA256) > 64 {
		return im, fmt.Errorf("image %q: bad size or checksum: %w", im.Name, model.ErrInvalid)
	}
	// The file name in the pool is the leader's to say, never the
	// caller's: a volume named "../../dev/sda" would back every disk made
	// from the image with that device.
	im.Volume = model.ImageVolume(im.Name)
	im.CreatedAt = l.clock.Now().UTC()
	if err := l.projectGate(im.Project); err != nil {
		return im, err
	}
	if _, err := l.store.Apply(ctx, raftlog.PutImage{Image: im}); err != nil {
		return im, err
	}
	l.event(ctx, "image", "", "", "image %s imported (%s, %d bytes)", im.Name, im.Format, im.SizeBytes)
	return l.store.Image(im.Name)
}

// DeleteImage forgets an image no VM uses; the caller removes the file.
func (l *Leader) DeleteImage(ctx context.Context, req NameRequest) (model.Image, error) {
	if err := l.ready(); err != nil {
		return model.Image{}, err
	}
	im, err := l.store.Image(req.Name)
	if err != nil {
		return im, err
	}
	if _, err := l.store.Apply(ctx, raftlog.DeleteImage{Name: req.Name}); err != nil {
		return im, err
	}
	l.event(ctx, "image-deleted", "", "", "image %s deleted", req.Name)
	return im, nil
}

// byPriority orders VMs by HA priority, highest first, then by name.
func byPriority(vms []model.VM) {
	sort.SliceStable(vms, func(i, j int) bool {
		if vms[i].Spec.HA.Priority != vms[j].Spec.HA.Priority {
			return vms[i].Spec.HA.Priority > vms[j].Spec.HA.Priority
		}
		return vms[i].Name < vms[j].Name
	})
}

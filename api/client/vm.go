package client

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"time"

	"github.com/corralhq/corral/api"
)

func vmPath(name string) string { return "/v1/vms/" + url.PathEscape(name) }

// VMs lists every VM.
func (c *Client) VMs(ctx context.Context) ([]api.VM, error) {
	var out []api.VM
	err := c.Do(ctx, http.MethodGet, "/v1/vms", nil, &out)
	return out, err
}

// VM returns one VM.
func (c *Client) VM(ctx context.Context, name string) (api.VM, error) {
	var out api.VM
	err := c.Do(ctx, http.MethodGet, vmPath(name), nil, &out)
	return out, err
}

// CreateVM creates and places a VM; it returns once the VM is recorded, not
// once it runs (see WaitVM).
func (c *Client) CreateVM(ctx context.Context, req api.VMCreateRequest) (api.VM, error) {
	var out api.VM
	err := c.Do(ctx, http.MethodPost, "/v1/vms", req, &out)
	return out, err
}

func (c *Client) vmAction(ctx context.Context, name, action string) (api.VM, error) {
	var out api.VM
	err := c.Do(ctx, http.MethodPost, vmPath(name)+"/"+action, nil, &out)
	return out, err
}

// StartVM sets a VM's desired state to running (and clears a failure).
func (c *Client) StartVM(ctx context.Context, name string) (api.VM, error) {
	return c.vmAction(ctx, name, "start")
}

// StopVM sets a VM's desired state to stopped.
func (c *Client) StopVM(ctx context.Context, name string) (api.VM, error) {
	return c.vmAction(ctx, name, "stop")
}

// RestartVM restarts a running VM.
func (c *Client) RestartVM(ctx context.Context, name string) (api.VM, error) {
	return c.vmAction(ctx, name, "restart")
}

// ResizeVM changes a VM's vCPUs and memory.
func (c *Client) ResizeVM(ctx context.Context, name string, req api.VMResizeRequest) (api.VM, error) {
	var out api.VM
	err := c.Do(ctx, http.MethodPut, vmPath(name)+"/resize", req, &out)
	return out, err
}

// DeleteVM removes a VM; with force it is forgotten without waiting for its
// host to clean up.
func (c *Client) DeleteVM(ctx context.Context, name string, force bool) (api.VM, error) {
	var out api.VM
	p := vmPath(name)
	if force {
		p += "?force=true"
	}
	err := c.Do(ctx, http.MethodDelete, p, nil, &out)
	return out, err
}

// ConsoleLog returns up to bytes of the end of a VM's serial console log.
func (c *Client) ConsoleLog(ctx context.Context, name string, bytes int64) (api.ConsoleLog, error) {
	var out api.ConsoleLog
	err := c.Do(ctx, http.MethodGet, fmt.Sprintf("%s/console?bytes=%d", vmPath(name), bytes), nil, &out)
	return out, err
}

// VMStats returns a VM's counters from its host.
func (c *Client) VMStats(ctx context.Context, name string) (api.VMStats, error) {
	var out api.VMStats
	err := c.Do(ctx, http.MethodGet, vmPath(name)+"/stats", nil, &out)
	return out, err
}

// WaitVM polls a VM every interval until done returns true, calling
// progress (if not nil) whenever its state or message changes. It returns
// the last VM seen and ctx's error if ctx ends first.
func (c *Client) WaitVM(ctx context.Context, name string, interval time.Duration, done func(api.VM) bool, progress func(api.VM)) (api.VM, error) {
	var last api.VM
	for {
		v, err := c.VM(ctx, name)
		if err != nil {
			return last, err
		}
		if progress != nil && (v.State != last.State || v.Message != last.Message || v.Host != last.Host) {
			progress(v)
		}
		last = v
		if done(v) {
			return v, nil
		}
		select {
		case <-ctx.Done():
			return v, ctx.Err()
		case <-time.After(interval):
		}
	}
}

// Images lists base images.
func (c *Client) Images(ctx context.Context) ([]api.Image, error) {
	var out []api.Image
	err := c.Do(ctx, http.MethodGet, "/v1/images", nil, &out)
	return out, err
}

// ImportImage uploads r (size bytes, -1 when unknown) as image name.
func (c *Client) ImportImage(ctx context.Context, name string, r io.Reader, size int64) (api.Image, error) {
	return c.ImportImageTo(ctx, name, "", r, size)
}

// ImportImageTo is ImportImage into a project ("": the caller's token's,
// else default).
func (c *Client) ImportImageTo(ctx context.Context, name, project string, r io.Reader, size int64) (api.Image, error) {
	path := "/v1/images/" + url.PathEscape(name)
	if project != "" {
		path += "?project=" + url.QueryEscape(project)
	}
	req, err := c.newRequest(ctx, http.MethodPut, path, r)
	if err != nil {
		return api.Image{}, err
	}
	req.ContentLength = size
	req.Header.Set("Content-Type", "application/octet-stream")
	resp, err := c.http().Do(req)
	if err != nil {
		return api.Image{}, &api.Error{Code: api.CodeUnavailable, Message: fmt.Sprintf("upload to corrald at %s: %v", c.where(), err)}
	}
	defer resp.Body.Close()
	var out api.Image
	return out, decodeResponse(resp, &out)
}

// DeleteImage removes an image no VM uses.
func (c *Client) DeleteImage(ctx context.Context, name string) error {
	return c.Do(ctx, http.MethodDelete, "/v1/images/"+url.PathEscape(name), nil, nil)
}

// Events returns up to limit events after seq (0: from the oldest kept);
// with wait > 0 the daemon holds the request until there is one or wait
// passes.
func (c *Client) Events(ctx context.Context, after uint64, limit int, wait time.Duration) ([]api.Event, error) {
	var out []api.Event
	p := fmt.Sprintf("/v1/events?after=%d&limit=%d", after, limit)
	if wait > 0 {
		p += "&wait=" + wait.String()
	}
	err := c.Do(ctx, http.MethodGet, p, nil, &out)
	return out, err
}

// MigrateVM live-migrates a running VM (target "" lets placement choose).
func (c *Client) MigrateVM(ctx context.Context, name, target string) (api.VM, error) {
	var out api.VM
	err := c.Do(ctx, http.MethodPost, vmPath(name)+"/migrate", api.VMMigrateRequest{Target: target}, &out)
	return out, err
}

func snapshotPath(vm, snapshot string) string {
	return vmPath(vm) + "/snapshots/" + url.PathEscape(snapshot)
}

// Snapshots lists a VM's snapshots, oldest first.
func (c *Client) Snapshots(ctx context.Context, vm string) ([]api.Snapshot, error) {
	var out []api.Snapshot
	err := c.Do(ctx, http.MethodGet, vmPath(vm)+"/snapshots", nil, &out)
	return out, err
}

// CreateSnapshot snapshots all of a VM's disks. A stopped VM's snapshot
// comes back ready; a running guest's comes back creating, and is ready
// once its host has taken it, or gone if the host failed to (poll VM).
func (c *Client) CreateSnapshot(ctx context.Context, vm, name string) (api.Snapshot, error) {
	return c.TakeSnapshot(ctx, vm, api.SnapshotCreateRequest{Name: name})
}

// TakeSnapshot is CreateSnapshot with the request's options: with Memory,
// the running guest's RAM too.
func (c *Client) TakeSnapshot(ctx context.Context, vm string, req api.SnapshotCreateRequest) (api.Snapshot, error) {
	var out api.Snapshot
	err := c.Do(ctx, http.MethodPost, vmPath(vm)+"/snapshots", req, &out)
	return out, err
}

// RevertSnapshot puts a VM's disks back to a snapshot; a running guest is
// powered off and started again on them.
func (c *Client) RevertSnapshot(ctx context.Context, vm, snapshot string) (api.VM, error) {
	var out api.VM
	err := c.Do(ctx, http.MethodPost, snapshotPath(vm, snapshot)+"/revert", nil, &out)
	return out, err
}

// DeleteSnapshot removes a snapshot of a VM.
func (c *Client) DeleteSnapshot(ctx context.Context, vm, snapshot string) (api.VM, error) {
	var out api.VM
	err := c.Do(ctx, http.MethodDelete, snapshotPath(vm, snapshot), nil, &out)
	return out, err
}

// SetSnapshotSchedule sets a VM's snapshot schedule, e.g. "hourly keep 24"
// or "daily 02:00 keep 7 daily 4 weekly" (api.SnapshotScheduleRequest); an
// empty schedule removes it. The VM comes back with its schedule as the
// cluster records it (VM.SnapshotSchedule, in its canonical form).
func (c *Client) SetSnapshotSchedule(ctx context.Context, vm, schedule string) (api.VM, error) {
	var out api.VM
	err := c.Do(ctx, http.MethodPut, vmPath(vm)+"/snapshot-schedule", api.SnapshotScheduleRequest{Schedule: schedule}, &out)
	return out, err
}

package daemon

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/corralhq/corral/api"
	"github.com/corralhq/corral/api/client"
	"github.com/corralhq/corral/daemon/hypervisor/fake"
	"github.com/corralhq/corral/daemon/rpc"
	"github.com/corralhq/corral/internal/testutil"
	"github.com/corralhq/corral/model"
)

func qcow2(virtual uint64) []byte {
	b := make([]byte, 1024)
	copy(b, []byte{'Q', 'F', 'I', 0xfb})
	b[7] = 3
	for i := 0; i < 8; i++ {
		b[24+i] = byte(virtual >> (56 - 8*i))
	}
	return b
}

func vmReq(name string) api.VMCreateRequest {
	return api.VMCreateRequest{Name: name, Spec: api.VMSpec{VCPUs: 1, MemoryMiB: 256, Disks: []api.Disk{{Image: "base"}}}}
}

// TestVMsAcrossInProcessCluster drives the VM API through every host of a
// 3-host in-process cluster whose hosts run the fake hypervisor.
func TestVMsAcrossInProcessCluster(t *testing.T) {
	tc := newTestCluster(t, 3, []int{0, 1, 2}, nil)
	tc.startAll()
	tc.waitConverged(3, 0)
	c1, c2, c3 := tc.hosts[0].client, tc.hosts[1].client, tc.hosts[2].client
	ctx := ctxT(t)

	im, err := c2.ImportImage(ctx, "base", bytes.NewReader(qcow2(64<<20)), 1024)
	if err != nil || im.Format != "qcow2" || im.VirtualSizeBytes != 64<<20 {
		t.Fatalf("import: %+v %v", im, err)
	}
	if _, err := c3.ImportImage(ctx, "base", bytes.NewReader(qcow2(1)), 1024); !errors.Is(err, api.ErrConflict) {
		t.Fatalf("second import: %v", err)
	}

	// 12 VMs through all three hosts, in four anti-affinity groups of three.
	clients := []*testHost{tc.hosts[0], tc.hosts[1], tc.hosts[2]}
	for i := 0; i < 12; i++ {
		req := vmReq(fmt.Sprintf("vm%02d", i))
		req.Spec.AntiAffinity = fmt.Sprintf("g%d", i%4)
		if _, err := clients[i%3].client.CreateVM(ctx, req); err != nil {
			t.Fatalf("create %s: %v", req.Name, err)
		}
	}
	var vms []api.VM
	testutil.Eventually(t, 20*time.Second, func() error {
		vms, err = c1.VMs(ctx)
		if err != nil {
			return err
		}
		for _, v := range vms {
			if v.State != "running" {
				return fmt.Errorf("%s is %s (%s)", v.Name, v.State, v.Message)
			}
		}
		return nil
	})
	perHost := map[string]int{}
	groups := map[string]map[string]bool{}
	for _, v := range vms {
		perHost[v.Host]++
		if groups[v.Spec.AntiAffinity] == nil {
			groups[v.Spec.AntiAffinity] = map[string]bool{}
		}
		if groups[v.Spec.AntiAffinity][v.Host] {
			t.Fatalf("anti-affinity group %s has two VMs on %s", v.Spec.AntiAffinity, v.Host)
		}
		groups[v.Spec.AntiAffinity][v.Host] = true
	}
	if len(perHost) != 3 || perHost["h1"] != 4 || perHost["h2"] != 4 || perHost["h3"] != 4 {
		t.Fatalf("spread: %v", perHost)
	}
	// Every host answers the same list.
	testutil.Eventually(t, 10*time.Second, func() error {
		want, _ := json.Marshal(stable(vms))
		for _, h := range tc.hosts {
			got, err := h.client.VMs(ctx)
			if err != nil {
				return err
			}
			if b, _ := json.Marshal(stable(got)); !bytes.Equal(b, want) {
				return fmt.Errorf("%s disagrees", h.cfg.Name)
			}
		}
		return nil
	})

	// Console and stats come from the VM's host, through any host.
	v0 := vms[0]
	var other *testHost
	for _, h := range tc.hosts {
		if h.cfg.Name != v0.Host {
			other = h
		}
	}
	cl, err := other.client.ConsoleLog(ctx, v0.Name, 1000)
	if err != nil || cl.Host != v0.Host || !strings.Contains(cl.Log, "running") {
		t.Fatalf("console via %s: %+v %v", other.cfg.Name, cl, err)
	}
	st, err := other.client.VMStats(ctx, v0.Name)
	if err != nil || st.Host != v0.Host || st.VCPUs != 1 {
		t.Fatalf("stats: %+v %v", st, err)
	}
	// The cluster RPC serves host reads only for valid names of VMs that
	// state places on the answering host: no path from the wire reaches a
	// file, and no host answers for another's VM.
	raw := rpc.NewClient(nil)
	for _, tc := range []struct {
		vm   string
		want error
	}{{"../../../../etc/passwd", model.ErrInvalid}, {"no-such-vm", model.ErrNotFound}, {v0.Name, model.ErrConflict}} {
		for _, method := range []string{"vm.console", "vm.stats"} {
			var out any
			err := raw.Call(ctx, other.d.rpcAddr(), method, hostRead{VM: tc.vm, Bytes: 1 << 40}, &out)
			if !errors.Is(err, tc.want) {
				t.Errorf("%s %q on %s: %v, want %v", method, tc.vm, other.cfg.Name, err, tc.want)
			}
		}
	}

	// Stop, start, restart, delete.
	if _, err := c3.StopVM(ctx, "vm00"); err != nil {
		t.Fatal(err)
	}
	waitVM(t, c1, "vm00", "stopped")
	if _, err := c2.StartVM(ctx, "vm00"); err != nil {
		t.Fatal(err)
	}
	waitVM(t, c1, "vm00", "running")
	if _, err := c1.DeleteVM(ctx, "vm00", false); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, 10*time.Second, func() error {
		if _, err := c3.VM(ctx, "vm00"); !errors.Is(err, api.ErrNotFound) {
			return fmt.Errorf("vm00: %v", err)
		}
		return nil
	})
	// The image is used: it cannot go.
	if err := c1.DeleteImage(ctx, "base"); !errors.Is(err, api.ErrConflict) {
		t.Fatalf("delete used image: %v", err)
	}
	// Every step left an event (the last one lands just after the VM is gone).
	testutil.Eventually(t, 5*time.Second, func() error {
		evs, err := c3.Events(ctx, 0, 0, 0)
		if err != nil {
			return err
		}
		kinds := map[string]bool{}
		for _, e := range evs {
			kinds[e.Kind] = true
		}
		for _, k := range []string{"created", "running", "stop", "stopped", "start", "deleting", "deleted"} {
			if !kinds[k] {
				return fmt.Errorf("no %q event in %v", k, kinds)
			}
		}
		return nil
	})
}

// stable drops fields that legitimately differ between reads.
func stable(vms []api.VM) []api.VM {
	out := make([]api.VM, len(vms))
	for i, v := range vms {
		v.ReportedAt = time.Time{}
		out[i] = v
	}
	return out
}

func waitVM(t *testing.T, c *client.Client, name, state string) {
	t.Helper()
	testutil.Eventually(t, 10*time.Second, func() error {
		v, err := c.VM(ctxT(t), name)
		if err != nil {
			return err
		}
		if v.State != state {
			return fmt.Errorf("%s is %s (%s)", name, v.State, v.Message)
		}
		return nil
	})
}

// TestBadVMInputChangesNothing sends every kind of bad request and checks
// that each gets a clear error of the right class and that the state does
// not change.
func TestBadVMInputChangesNothing(t *testing.T) {
	tc := newTestCluster(t, 1, nil, func(i int, c *Config) { c.BootstrapExpect = 1 })
	tc.startAll()
	tc.waitConverged(1, 0)
	c := tc.hosts[0].client
	ctx := ctxT(t)
	if _, err := c.ImportImage(ctx, "base", bytes.NewReader(qcow2(1<<20)), 1024); err != nil {
		t.Fatal(err)
	}
	if _, err := c.CreateVM(ctx, vmReq("taken")); err != nil {
		t.Fatal(err)
	}
	waitVM(t, c, "taken", "running")
	before, _ := c.VMs(ctx)
	// The leader records the "running" event in an entry after the
	// report's: count from once it is there.
	var evBefore []api.Event
	testutil.Eventually(t, 10*time.Second, func() error {
		evBefore, _ = c.Events(ctx, 0, 0, 0)
		for _, ev := range evBefore {
			if ev.Kind == "running" && ev.VM == "taken" {
				return nil
			}
		}
		return errors.New("no running event for taken yet")
	})
	mod := func(f func(*api.VMCreateRequest)) api.VMCreateRequest {
		r := vmReq("new")
		f(&r)
		return r
	}
	cases := []struct {
		name string
		req  api.VMCreateRequest
		want error
		text string
	}{
		{"unknown image", mod(func(r *api.VMCreateRequest) { r.Spec.Disks[0].Image = "nope" }), api.ErrNotFound, `image "nope"`},
		{"duplicate name", vmReq("taken"), api.ErrConflict, "already exists"},
		{"zero memory", mod(func(r *api.VMCreateRequest) { r.Spec.MemoryMiB = 0 }), api.ErrInvalid, "memory 0 MiB"},
		{"absurd memory", mod(func(r *api.VMCreateRequest) { r.Spec.MemoryMiB = 1 << 40 }), api.ErrInvalid, "out of range"},
		{"zero vcpus", mod(func(r *api.VMCreateRequest) { r.Spec.VCPUs = 0 }), api.ErrInvalid, "vcpus"},
		{"unknown host", mod(func(r *api.VMCreateRequest) { r.Host = "nohost" }), api.ErrNotFound, `host "nohost"`},
		{"name with slash", mod(func(r *api.VMCreateRequest) { r.Name = "a/b" }), api.ErrInvalid, "not allowed"},
		{"300 characters", mod(func(r *api.VMCreateRequest) { r.Name = strings.Repeat("a", 300) }), api.ErrInvalid, "at most 63"},
		{"nothing to boot", mod(func(r *api.VMCreateRequest) { r.Spec.Disks = nil }), api.ErrInvalid, "nothing to boot"},
		{"unknown network", mod(func(r *api.VMCreateRequest) { r.Spec.NICs = []api.NIC{{Network: "lan"}} }), api.ErrNotFound, `network "lan"`},
		{"too big for any host", mod(func(r *api.VMCreateRequest) { r.Spec.MemoryMiB = 8 << 20 }), api.ErrNoCapacity, "not enough memory"},
		{"label nobody has", mod(func(r *api.VMCreateRequest) { r.Spec.Require = map[string]string{"gpu": "yes"} }), api.ErrNoCapacity, "needs label gpu=yes"},
	}
	for _, tc := range cases {
		_, err := c.CreateVM(ctx, tc.req)
		if !errors.Is(err, tc.want) || !strings.Contains(err.Error(), tc.text) {
			t.Errorf("%s: %v, want %v containing %q", tc.name, err, tc.want, tc.text)
		}
	}
	// No-capacity errors carry the reason per host.
	_, err := c.CreateVM(ctx, mod(func(r *api.VMCreateRequest) { r.Spec.MemoryMiB = 8 << 20 }))
	var ae *api.Error
	if !errors.As(err, &ae) || ae.Details == nil {
		t.Fatalf("no details: %#v", err)
	}
	// Malformed JSON and unknown fields.
	for _, body := range []string{`{"name": "x", `, `{"name": "x", "spec": {"vcpus": "two"}}`, `{"name":"x","colour":"red"}`} {
		var out api.VM
		err := c.Do(ctx, http.MethodPost, "/v1/vms", strings.NewReader(body), &out)
		if !errors.Is(err, api.ErrInvalid) {
			t.Errorf("body %s: %v", body, err)
		}
	}
	// Slashes in a path name never reach a VM.
	if _, err := c.VM(ctx, "a/b"); !errors.Is(err, api.ErrInvalid) && !errors.Is(err, api.ErrNotFound) {
		t.Errorf("get a/b: %v", err)
	}
	after, _ := c.VMs(ctx)
	if !reflect.DeepEqual(stable(before), stable(after)) {
		t.Fatalf("bad requests changed the VMs:\nbefore %+v\nafter  %+v", before, after)
	}
	if evAfter, _ := c.Events(ctx, 0, 0, 0); len(evAfter) != len(evBefore) {
		t.Fatalf("bad requests recorded events: %d -> %d: %+v", len(evBefore), len(evAfter), evAfter[min(len(evBefore), len(evAfter)):])
	}
}

// TestCrashLoopRelocatesThenFails: a guest that keeps crashing is restarted
// on its host up to max_restart, then relocated up to max_relocate, then
// marked failed, with an event at each step; a start gives it a new budget.
func TestCrashLoopRelocatesThenFails(t *testing.T) {
	tc := newTestCluster(t, 3, []int{0, 1, 2}, nil)
	tc.startAll()
	tc.waitConverged(3, 0)
	c := tc.hosts[0].client
	ctx := ctxT(t)
	if _, err := c.ImportImage(ctx, "base", bytes.NewReader(qcow2(1<<20)), 1024); err != nil {
		t.Fatal(err)
	}
	req := vmReq("flaky")
	req.HA = &api.HAPolicy{Enabled: true, MaxRestart: 1, RestartWindowSec: 600, MaxRelocate: 1}
	if _, err := c.CreateVM(ctx, req); err != nil {
		t.Fatal(err)
	}
	driverOf := func(host string) *fake.Driver { return tc.host(host).cfg.Tuning.Driver.(*fake.Driver) }
	crashUntil := func(cond func(api.VM) bool) api.VM {
		var v api.VM
		testutil.Eventually(t, 20*time.Second, func() error {
			var err error
			if v, err = c.VM(ctx, "flaky"); err != nil {
				return err
			}
			if cond(v) {
				return nil
			}
			if v.State == "running" {
				driverOf(v.Host).Crash("flaky")
			}
			return fmt.Errorf("%s on %s: %s", v.State, v.Host, v.Message)
		})
		return v
	}
	first := waitVMState(t, c, "flaky", "running").Host
	v := crashUntil(func(v api.VM) bool { return v.Host != first && v.State == "running" })
	if v.Relocations != 1 || v.Generation != 2 {
		t.Fatalf("after relocation: %+v", v)
	}
	v = crashUntil(func(v api.VM) bool { return v.State == "failed" })
	if !strings.Contains(v.Failed, "max_relocate") {
		t.Fatalf("failed: %+v", v)
	}
	// A failed VM is not restarted.
	if d, _ := driverOf(v.Host).Domain("flaky"); d.State.Active() {
		t.Fatal("failed vm running")
	}
	evs, _ := c.Events(ctx, 0, 0, 0)
	var kinds []string
	for _, e := range evs {
		if e.VM == "flaky" {
			kinds = append(kinds, e.Kind)
		}
	}
	for _, k := range []string{"crashed", "relocated", "failed"} {
		if !strings.Contains(strings.Join(kinds, " "), k) {
			t.Fatalf("no %s event: %v", k, kinds)
		}
	}
	// An operator's start clears the failure.
	if _, err := c.StartVM(ctx, "flaky"); err != nil {
		t.Fatal(err)
	}
	waitVMState(t, c, "flaky", "running")
}

func waitVMState(t *testing.T, c *client.Client, name, state string) api.VM {
	t.Helper()
	waitVM(t, c, name, state)
	v, _ := c.VM(ctxT(t), name)
	return v
}

// Soft rules through the API: a VM that prefers an SSD host and avoids
// the database's host lands on the one host that meets both, and vm show
// says which of its rules its host meets.
func TestSoftRulesPlaceAndExplain(t *testing.T) {
	tc := newTestCluster(t, 3, []int{0, 1, 2}, nil)
	tc.startAll()
	tc.waitConverged(3, 0)
	c := tc.hosts[0].client
	ctx := ctxT(t)
	for _, h := range []string{"h1", "h2"} {
		if _, err := c.SetHostLabels(ctx, h, api.HostLabelsRequest{Set: map[string]string{"ssd": "yes"}}); err != nil {
			t.Fatal(err)
		}
	}
	blank := func(name string) api.VMCreateRequest {
		r := vmReq(name)
		r.Spec.Disks = []api.Disk{{SizeMiB: 8}}
		return r
	}
	db := blank("db")
	db.Host = "h1"
	db.Spec.Labels = map[string]string{"role": "db"}
	if _, err := c.CreateVM(ctx, db); err != nil {
		t.Fatal(err)
	}
	app := blank("app")
	app.Spec.Prefer = []api.SoftRule{{Kind: "host", Key: "ssd", Value: "yes", Weight: 30}}
	app.Spec.Avoid = []api.SoftRule{{Kind: "vm", Key: "role", Value: "db", Weight: 60}}
	v, err := c.CreateVM(ctx, app)
	if err != nil {
		t.Fatal(err)
	}
	if v.Host != "h2" {
		t.Fatalf("app placed on %s, want h2 (ssd, no db)", v.Host)
	}
	v, err = c.VM(ctx, "app")
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, r := range v.Rules {
		got = append(got, fmt.Sprintf("%s %v", r.Rule, r.Met))
	}
	if strings.Join(got, ", ") != "prefer host:ssd=yes:30 true, avoid vm:role=db:60 true" || len(v.Spec.Prefer) != 1 || len(v.Spec.Avoid) != 1 {
		t.Fatalf("app's rules: %v; spec %+v", got, v.Spec)
	}
	if _, err := c.CreateVM(ctx, func() api.VMCreateRequest {
		r := blank("bad")
		r.Spec.Prefer = []api.SoftRule{{Kind: "host", Key: "ssd", Value: "yes", Weight: 101}}
		return r
	}()); !errors.Is(err, api.ErrInvalid) {
		t.Fatalf("weight 101: %v", err)
	}
}

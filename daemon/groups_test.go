package daemon

import (
	"bytes"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/corralhq/corral/api"
	"github.com/corralhq/corral/api/client"
	"github.com/corralhq/corral/daemon/hypervisor/fake"
	"github.com/corralhq/corral/internal/testutil"
)

// waitGroup waits until a group has exactly want members, all running,
// and returns it.
func waitGroup(t *testing.T, c *client.Client, name string, want int) api.Group {
	t.Helper()
	var g api.Group
	testutil.Eventually(t, 30*time.Second, func() error {
		var err error
		if g, err = c.Group(ctxT(t), name); err != nil {
			return err
		}
		if len(g.Members) != want || g.Running != want || g.Count != want {
			return fmt.Errorf("group %s: count %d, %d members, %d running, want %d", name, g.Count, len(g.Members), g.Running, want)
		}
		return nil
	})
	return g
}

func perHost(g api.Group) map[string]int {
	out := map[string]int{}
	for _, m := range g.Members {
		out[m.Host]++
	}
	return out
}

// TestGroupsAcrossInProcessCluster: a group made through a follower gets
// its members on every host, scales up and down through any host, refuses
// bad requests without changing anything, and takes its members with it
// when removed (or leaves them, with keep_vms).
func TestGroupsAcrossInProcessCluster(t *testing.T) {
	tc := newTestCluster(t, 3, []int{0, 1, 2}, nil)
	tc.startAll()
	st := tc.waitConverged(3, 0)
	var follower *testHost
	for _, h := range tc.hosts {
		if h.cfg.Name != st.Leader {
			follower = h
		}
	}
	c := follower.client
	ctx := ctxT(t)
	if _, err := c.ImportImage(ctx, "base", bytes.NewReader(qcow2(64<<20)), 1024); err != nil {
		t.Fatal(err)
	}
	spec := api.VMSpec{VCPUs: 1, MemoryMiB: 256, Disks: []api.Disk{{Image: "base"}}, UserData: "#cloud-config\nhostname: {{name}}\n"}
	if _, err := c.CreateGroup(ctx, api.GroupCreateRequest{Name: "web", Count: 4, Spec: spec}); err != nil {
		t.Fatal(err)
	}
	g := waitGroup(t, c, "web", 4)
	if per := perHost(g); len(per) != 3 {
		t.Fatalf("4 members on %d hosts: %v", len(per), per)
	}
	v, err := tc.hosts[0].client.VM(ctx, "web-3")
	if err != nil || v.Group != "web" || v.Spec.UserData != "#cloud-config\nhostname: web-3\n" {
		t.Fatalf("web-3: %+v %v", v, err)
	}

	// Bad requests change nothing.
	for _, bad := range []struct {
		req  api.GroupCreateRequest
		want error
	}{
		{api.GroupCreateRequest{Name: "web", Count: 1, Spec: spec}, api.ErrConflict},
		{api.GroupCreateRequest{Name: "neg", Count: -1, Spec: spec}, api.ErrInvalid},
		{api.GroupCreateRequest{Name: "huge", Count: 1001, Spec: spec}, api.ErrInvalid},
		{api.GroupCreateRequest{Name: strings.Repeat("x", 60), Count: 1, Spec: spec}, api.ErrInvalid},
		{api.GroupCreateRequest{Name: "noimg", Count: 1, Spec: api.VMSpec{VCPUs: 1, MemoryMiB: 256, Disks: []api.Disk{{Image: "nope"}}}}, api.ErrNotFound},
		{api.GroupCreateRequest{Name: "mac", Count: 1, Spec: api.VMSpec{VCPUs: 1, MemoryMiB: 256, Disks: []api.Disk{{SizeMiB: 8}}, NICs: []api.NIC{{Network: "n", MAC: "52:54:00:00:00:01"}}}}, api.ErrInvalid},
	} {
		if _, err := c.CreateGroup(ctx, bad.req); !errors.Is(err, bad.want) {
			t.Fatalf("create %s: %v, want %v", bad.req.Name, err, bad.want)
		}
	}
	if _, err := c.ScaleGroup(ctx, "nope", 2); !errors.Is(err, api.ErrNotFound) {
		t.Fatalf("scale of no group: %v", err)
	}
	if gs, _ := c.Groups(ctx); len(gs) != 1 {
		t.Fatalf("groups after bad requests: %+v", gs)
	}

	// Scale up through the leader, down through another host.
	if _, err := tc.host(st.Leader).client.ScaleGroup(ctx, "web", 6); err != nil {
		t.Fatal(err)
	}
	g = waitGroup(t, c, "web", 6)
	if per := perHost(g); per[tc.hosts[0].cfg.Name] != 2 || per[tc.hosts[1].cfg.Name] != 2 || per[tc.hosts[2].cfg.Name] != 2 {
		t.Fatalf("6 members over 3 hosts: %v", per)
	}
	if _, err := tc.hosts[0].client.ScaleGroup(ctx, "web", 2); err != nil {
		t.Fatal(err)
	}
	g = waitGroup(t, c, "web", 2)
	if g.Members[0].Name != "web-1" || g.Members[1].Name != "web-2" {
		t.Fatalf("members after scaling down: %+v", g.Members)
	}
	testutil.Eventually(t, 30*time.Second, func() error {
		vms, err := c.VMs(ctx)
		if err != nil {
			return err
		}
		if len(vms) != 2 {
			return fmt.Errorf("%d VMs left", len(vms))
		}
		return nil
	})

	// A new template is rolled out; a rollback brings the old one back.
	up := spec
	up.MemoryMiB = 384
	if _, err := tc.hosts[1].client.UpdateGroup(ctx, "web", api.GroupUpdateRequest{Spec: up}); err != nil {
		t.Fatal(err)
	}
	waitRollout := func(version uint64, mem int64) {
		t.Helper()
		testutil.Eventually(t, 30*time.Second, func() error {
			g, err := c.Group(ctx, "web")
			if err != nil {
				return err
			}
			if g.Version != version || g.Current != 2 || len(g.Members) != 2 || g.Running != 2 {
				return fmt.Errorf("version %d, %d current of %d members, %d running", g.Version, g.Current, len(g.Members), g.Running)
			}
			for _, m := range g.Members {
				if v, err := c.VM(ctx, m.Name); err != nil || v.Spec.MemoryMiB != mem {
					return fmt.Errorf("%s: %d MiB %v", m.Name, v.Spec.MemoryMiB, err)
				}
			}
			return nil
		})
	}
	waitRollout(2, 384)
	g, err = c.RollbackGroup(ctx, "web")
	if err != nil || !g.CanRollback {
		t.Fatalf("rollback: %+v %v", g, err)
	}
	waitRollout(3, 256)

	// A deleted member is replaced.
	g, _ = c.Group(ctx, "web")
	if _, err := c.DeleteVM(ctx, g.Members[len(g.Members)-1].Name, false); err != nil {
		t.Fatal(err)
	}
	waitGroup(t, c, "web", 2)

	// Removed with keep_vms: the members stay, in no group; a second
	// group removed plainly takes its members.
	if err := c.DeleteGroup(ctx, "web", true); err != nil {
		t.Fatal(err)
	}
	if _, err := c.CreateGroup(ctx, api.GroupCreateRequest{Name: "tmp", Count: 2, Spec: spec}); err != nil {
		t.Fatal(err)
	}
	waitGroup(t, c, "tmp", 2)
	if err := c.DeleteGroup(ctx, "tmp", false); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, 30*time.Second, func() error {
		vms, err := c.VMs(ctx)
		if err != nil {
			return err
		}
		var names []string
		for _, v := range vms {
			if v.Group != "" {
				return fmt.Errorf("%s still in group %s", v.Name, v.Group)
			}
			names = append(names, v.Name)
		}
		if len(names) != 2 || !strings.HasPrefix(names[0], "web-") || !strings.HasPrefix(names[1], "web-") {
			return fmt.Errorf("VMs: %v", names)
		}
		return nil
	})
	if _, err := c.Group(ctx, "web"); !errors.Is(err, api.ErrNotFound) {
		t.Fatalf("removed group: %v", err)
	}
}

// TestGroupAutoscaleInProcess: under load the leader grows an autoscaled
// group to its max, one step per cooldown, and shrinks it to its min when
// the load goes; each change is an event with its reason; a manual scale
// outside the range is refused.
func TestGroupAutoscaleInProcess(t *testing.T) {
	tc := newTestCluster(t, 3, []int{0, 1, 2}, nil)
	tc.startAll()
	tc.waitConverged(3, 0)
	c := tc.hosts[0].client
	ctx := ctxT(t)
	load := func(l float64) {
		for _, h := range tc.hosts {
			h.cfg.Tuning.Driver.(*fake.Driver).SetCPULoad(l)
		}
	}
	spec := api.VMSpec{VCPUs: 2, MemoryMiB: 256, Disks: []api.Disk{{SizeMiB: 8}}}
	as := &api.Autoscale{Min: 1, Max: 4, TargetCPU: 50, UpCooldownSec: 1, DownCooldownSec: 1}
	if _, err := c.CreateGroup(ctx, api.GroupCreateRequest{Name: "auto", Count: 5, Spec: spec, Autoscale: as}); !errors.Is(err, api.ErrInvalid) {
		t.Fatalf("count outside the autoscale range: %v", err)
	}
	load(0.9)
	if _, err := c.CreateGroup(ctx, api.GroupCreateRequest{Name: "auto", Count: 1, Spec: spec, Autoscale: as}); err != nil {
		t.Fatal(err)
	}
	g := waitGroup(t, c, "auto", 4)
	if g.Autoscale == nil || g.Autoscale.Max != 4 {
		t.Fatalf("group: %+v", g)
	}
	if _, err := c.ScaleGroup(ctx, "auto", 6); !errors.Is(err, api.ErrConflict) {
		t.Fatalf("manual scale beyond max: %v", err)
	}
	load(0.05)
	waitGroup(t, c, "auto", 1)
	evs, err := c.Events(ctx, 0, 1000, 0)
	if err != nil {
		t.Fatal(err)
	}
	var ups, downs int
	for _, e := range evs {
		if strings.Contains(e.Message, "group auto autoscaled from") {
			if !strings.Contains(e.Message, "mean CPU") {
				t.Fatalf("autoscale event without its reason: %s", e.Message)
			}
			var from, to int
			fmt.Sscanf(e.Message[strings.Index(e.Message, "from"):], "from %d to %d", &from, &to)
			if to > from {
				ups++
			} else {
				downs++
			}
		}
	}
	if ups < 2 || downs < 1 {
		t.Fatalf("autoscale events: %d up, %d down", ups, downs)
	}
	// Autoscale off: the count stays.
	if g, err := c.SetGroupAutoscale(ctx, "auto", nil); err != nil || g.Autoscale != nil || g.Count != 1 {
		t.Fatalf("autoscale off: %+v %v", g, err)
	}
	load(0.9)
	if _, err := c.ScaleGroup(ctx, "auto", 2); err != nil {
		t.Fatal(err)
	}
	waitGroup(t, c, "auto", 2)
}

// BenchmarkGroupScaleInProcess: a group scaled from 0 to 200 members on a
// 3-host in-process cluster (real Raft and gossip over sockets, fake
// hypervisors) until every member runs: wall time, Raft entries, members
// and entries per second.
func BenchmarkGroupScaleInProcess(b *testing.B) {
	for range b.N {
		b.StopTimer()
		tc := newTestCluster(b, 3, []int{0, 1, 2}, func(i int, c *Config) {
			c.CPUOvercommit = 64 // 200 one-vCPU members on this 2-core machine's three fake hosts
		})
		tc.startAll()
		st := tc.waitConverged(3, 0)
		c := tc.host(st.Leader).client
		ctx := ctxT(b)
		spec := api.VMSpec{VCPUs: 1, MemoryMiB: 64, Disks: []api.Disk{{SizeMiB: 8}}}
		if _, err := c.CreateGroup(ctx, api.GroupCreateRequest{Name: "big", Count: 0, Spec: spec}); err != nil {
			b.Fatal(err)
		}
		s0, _ := c.Status(ctx)
		b.StartTimer()
		start := time.Now()
		if _, err := c.ScaleGroup(ctx, "big", 200); err != nil {
			b.Fatal(err)
		}
		testutil.Eventually(b, 2*time.Minute, func() error {
			g, err := c.Group(ctx, "big")
			if err != nil {
				return err
			}
			if g.Running != 200 {
				return fmt.Errorf("%d members, %d running", len(g.Members), g.Running)
			}
			return nil
		})
		took := time.Since(start)
		b.StopTimer()
		s1, _ := c.Status(ctx)
		entries := float64(s1.Raft.CommitIndex - s0.Raft.CommitIndex)
		b.ReportMetric(took.Seconds(), "s-to-200-running")
		b.ReportMetric(entries, "entries")
		b.ReportMetric(200/took.Seconds(), "members/s")
		b.ReportMetric(entries/took.Seconds(), "entries/s")
		for _, h := range tc.hosts {
			h.stop()
		}
	}
}

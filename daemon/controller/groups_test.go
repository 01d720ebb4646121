package controller

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/corralhq/corral/internal/clock"
	"github.com/corralhq/corral/model"
	"github.com/corralhq/corral/raftlog"
)

func (e *liveEnv) setGroup(t *testing.T, g model.Group, create bool) {
	t.Helper()
	if _, err := e.r.store.Apply(context.Background(), raftlog.SetGroup{Group: g, Create: create, CountOnly: !create}); err != nil {
		t.Fatal(err)
	}
}

// members returns a group's members not being deleted, by host.
func (e *liveEnv) members(group string) (names []string, perHost map[string]int) {
	perHost = map[string]int{}
	for _, v := range e.r.store.VMs() {
		if v.Group == group && !v.Deleting {
			names = append(names, v.Name)
			perHost[v.Host]++
		}
	}
	return names, perHost
}

// The keeper creates the missing members lowest index first, spread over
// the hosts, deletes the highest first when the count drops, replaces a
// member an operator deletes, passes by a name another VM holds, and says
// once why it cannot reach the count.
func TestGroupKeeper(t *testing.T) {
	e := newLiveEnv(t, nil)
	ctx := context.Background()
	g := model.Group{Name: "web", Count: 4, Template: model.VMSpec{VCPUs: 1, MemoryMiB: 256, Disks: []model.DiskSpec{{SizeMiB: 10}}, HA: model.DefaultHA()},
		CreatedAt: time.Unix(1, 0)}
	e.setGroup(t, g, true)
	e.l.keepGroups(ctx)
	names, per := e.members("web")
	if strings.Join(names, ",") != "web-1,web-2,web-3,web-4" {
		t.Fatalf("members: %v", names)
	}
	if len(per) != 3 || per["h1"] > 2 || per["h2"] > 2 || per["h3"] > 2 {
		t.Fatalf("4 members over 3 hosts: %v", per)
	}
	warned := func() int {
		n := 0
		for _, ev := range e.events("group") {
			if strings.Contains(ev.Message, "some share a host") {
				n++
			}
		}
		return n
	}
	e.l.keepGroups(ctx)
	if n := warned(); n != 1 {
		t.Fatalf("%d warnings that members share a host, want 1 (once)", n)
	}

	// Scale to 6, then to 2: web-3..web-6 go, highest first.
	g.Count = 6
	e.setGroup(t, g, false)
	e.l.keepGroups(ctx)
	if _, per := e.members("web"); per["h1"] != 2 || per["h2"] != 2 || per["h3"] != 2 {
		t.Fatalf("6 members over 3 hosts: %v", per)
	}
	g.Count = 2
	e.setGroup(t, g, false)
	e.l.keepGroups(ctx)
	if names, _ := e.members("web"); strings.Join(names, ",") != "web-1,web-2" {
		t.Fatalf("after scaling to 2: %v", names)
	}
	if ev := e.events("group"); len(ev) == 0 || !strings.Contains(ev[len(ev)-1].Message, "deleting web-6, web-5, web-4, web-3") {
		t.Fatalf("group events: %+v", ev)
	}
	// The deleted ones' hosts finish: they leave state.
	for i := 3; i <= 6; i++ {
		e.r.store.Apply(ctx, raftlog.DeleteVM{Name: model.MemberName("web", i)})
	}

	// An operator deletes web-1: it is replaced (under its name, once the
	// old one is gone; meanwhile by the next free index).
	if _, err := e.l.DeleteVM(ctx, DeleteVMRequest{Name: "web-1"}); err != nil {
		t.Fatal(err)
	}
	e.l.keepGroups(ctx)
	if names, _ := e.members("web"); strings.Join(names, ",") != "web-2,web-3" {
		t.Fatalf("after deleting web-1: %v", names)
	}

	// A VM outside the group holds web-4; the cluster is full beyond it.
	e.r.store.Apply(ctx, raftlog.DeleteVM{Name: "web-1"})
	other := model.VM{ID: "id-web-4", Name: "web-4", Host: "h1", Spec: model.VMSpec{VCPUs: 1, MemoryMiB: 256, Disks: []model.DiskSpec{{SizeMiB: 10}}}}
	if _, err := e.r.store.Apply(ctx, raftlog.CreateVM{VM: other}); err != nil {
		t.Fatal(err)
	}
	g.Count = 4
	e.setGroup(t, g, false)
	e.l.keepGroups(ctx)
	if names, _ := e.members("web"); strings.Join(names, ",") != "web-1,web-2,web-3,web-5" {
		t.Fatalf("with web-4 taken: %v", names)
	}
	big := g
	big.Name, big.Count = "big", 4
	big.Template.MemoryMiB = 6000 // each host fits one: three are made, the fourth cannot be
	e.setGroup(t, big, true)
	before := len(e.events("group"))
	for range 3 {
		e.l.keepGroups(ctx)
	}
	evs := e.events("group")[before:]
	var problems []string
	for _, ev := range evs {
		if strings.Contains(ev.Message, "cannot create") {
			problems = append(problems, ev.Message)
		}
	}
	if len(problems) != 1 || !strings.Contains(problems[0], "big-4") {
		t.Fatalf("a short group reported %d times: %v", len(problems), evs)
	}
	if names, _ := e.members("big"); len(names) != 3 {
		t.Fatalf("big members: %v", names)
	}
}

// A large group is created in batches: one pass never creates more than
// groupBatch members, and it asks for another pass.
func TestGroupKeeperBatches(t *testing.T) {
	e := newLiveEnv(t, nil)
	ctx := context.Background()
	for _, h := range []string{"h1", "h2", "h3"} {
		e.peers.set(Peer{Name: h, State: PeerAlive, Capacity: model.Capacity{VCPUs: 1024, MemoryMiB: 1 << 20}})
	}
	e.l.registerHosts(ctx, e.peers.Peers())
	g := model.Group{Name: "many", Count: 100, Template: model.VMSpec{VCPUs: 1, MemoryMiB: 64, Disks: []model.DiskSpec{{SizeMiB: 10}}}, CreatedAt: time.Unix(1, 0)}
	e.setGroup(t, g, true)
	for pass := 1; pass <= 4; pass++ {
		select {
		case <-e.l.pokeCh:
		default:
		}
		e.l.keepGroups(ctx)
		names, _ := e.members("many")
		want := min(pass*groupBatch, 100)
		if len(names) != want {
			t.Fatalf("pass %d: %d members, want %d", pass, len(names), want)
		}
		poked := len(e.l.pokeCh) > 0
		if poked != (want < 100) {
			t.Fatalf("pass %d: poked %v with %d of 100", pass, poked, want)
		}
	}
}

// runAll reports every VM of the group as running on its host, except
// those named in failing, which crash.
func (e *liveEnv) runAll(t *testing.T, group string, failing ...string) {
	t.Helper()
	for _, v := range e.r.store.VMs() {
		if v.Group != group || v.Deleting || v.Actual.State == model.StateRunning {
			continue
		}
		st := model.StateRunning
		if slices.Contains(failing, v.Name) {
			st = model.StateCrashed
		}
		e.r.store.Apply(context.Background(), raftlog.ReportVMs{Host: v.Host, Reports: []raftlog.VMReport{{Name: v.Name, Generation: v.Generation, State: st, Message: "boom"}}})
	}
}

// running counts a group's members that run, and those of each version.
func (e *liveEnv) versions(group string) (running int, byVersion map[uint64]int) {
	byVersion = map[uint64]int{}
	for _, v := range e.r.store.VMs() {
		if v.Group != group || v.Deleting {
			continue
		}
		byVersion[v.GroupVersion]++
		if v.Actual.State == model.StateRunning {
			running++
		}
	}
	return running, byVersion
}

// A roll-out replaces members a batch at a time, new ones first: the group
// never has fewer running members than its count; a failing new member
// pauses it with the old ones running; a rollback resumes it with the
// previous template and ends where the group began.
func TestGroupRollout(t *testing.T) {
	e := newLiveEnv(t, nil)
	ctx := context.Background()
	for _, h := range []string{"h1", "h2", "h3"} {
		e.peers.set(Peer{Name: h, State: PeerAlive, Capacity: model.Capacity{VCPUs: 64, MemoryMiB: 65536}})
	}
	e.l.registerHosts(ctx, e.peers.Peers())
	tmpl := model.VMSpec{VCPUs: 1, MemoryMiB: 256, Disks: []model.DiskSpec{{SizeMiB: 10}}, HA: model.DefaultHA()}
	g, err := e.l.SetGroup(ctx, SetGroupRequest{Group: model.Group{Name: "web", Count: 4, Template: tmpl}, Create: true})
	if err != nil || g.Version != 1 {
		t.Fatalf("create: %+v %v", g, err)
	}
	e.l.keepGroups(ctx)
	e.runAll(t, "web")

	// A new template (more memory), one at a time.
	g.Template.MemoryMiB = 512
	if g, err = e.l.SetGroup(ctx, SetGroupRequest{Group: g}); err != nil || g.Version != 2 || g.Previous == nil || g.Previous.MemoryMiB != 256 {
		t.Fatalf("update: %+v %v", g, err)
	}
	minRunning := 4
	for pass := 0; pass < 20; pass++ {
		e.l.keepGroups(ctx)
		running, byVersion := e.versions("web")
		minRunning = min(minRunning, running)
		if byVersion[1] == 0 && byVersion[2] == 4 {
			break
		}
		if byVersion[2] > 1 && byVersion[1]+byVersion[2] > 5 {
			t.Fatalf("pass %d: more than one new member at a time: %v", pass, byVersion)
		}
		e.runAll(t, "web")
		// Hosts finish deleting.
		for _, v := range e.r.store.VMs() {
			if v.Deleting {
				e.r.store.Apply(ctx, raftlog.DeleteVM{Name: v.Name})
			}
		}
	}
	if running, byVersion := e.versions("web"); byVersion[2] != 4 || len(byVersion) != 1 || running != 4 {
		t.Fatalf("after the roll-out: %d running, %v", running, byVersion)
	}
	if minRunning < 4 {
		t.Fatalf("the roll-out left %d members running", minRunning)
	}
	for _, v := range e.r.store.VMs() {
		if !v.Deleting && v.Spec.MemoryMiB != 512 {
			t.Fatalf("%s has %d MiB", v.Name, v.Spec.MemoryMiB)
		}
	}

	// A bad template: its first new member crashes; the roll-out pauses,
	// the four members of template 2 run on.
	g, _ = model.GroupByName(e.r.store.Cluster().Groups, "web")
	g.Template.VCPUs = 2
	if g, err = e.l.SetGroup(ctx, SetGroupRequest{Group: g}); err != nil || g.Version != 3 {
		t.Fatalf("bad update: %+v %v", g, err)
	}
	e.l.keepGroups(ctx)
	var fresh string
	for _, v := range e.r.store.VMs() {
		if v.GroupVersion == 3 {
			fresh = v.Name
		}
	}
	e.runAll(t, "web", fresh)
	for range 3 {
		e.l.keepGroups(ctx)
	}
	g, _ = model.GroupByName(e.r.store.Cluster().Groups, "web")
	if !strings.Contains(g.Paused, fresh) || !strings.Contains(g.Paused, "crashed") {
		t.Fatalf("not paused by %s: %+v", fresh, g)
	}
	if running, byVersion := e.versions("web"); byVersion[2] != 4 || byVersion[3] != 1 || running != 4 {
		t.Fatalf("paused: %d running, %v", running, byVersion)
	}

	// Rollback: template 2's spec again as template 4; the crashed member
	// is replaced, and the group ends with four members of it.
	g.Template, g.Paused = *g.Previous, ""
	if g, err = e.l.SetGroup(ctx, SetGroupRequest{Group: g}); err != nil || g.Version != 4 {
		t.Fatalf("rollback: %+v %v", g, err)
	}
	for pass := 0; pass < 30; pass++ {
		e.l.keepGroups(ctx)
		e.runAll(t, "web")
		for _, v := range e.r.store.VMs() {
			if v.Deleting {
				e.r.store.Apply(ctx, raftlog.DeleteVM{Name: v.Name})
			}
		}
	}
	if running, byVersion := e.versions("web"); byVersion[4] != 4 || len(byVersion) != 1 || running != 4 {
		t.Fatalf("after the rollback: %d running, %v", running, byVersion)
	}
}

type entryCounter struct {
	Store
	entries int
}

func (c *entryCounter) Apply(ctx context.Context, cmd raftlog.Command) (any, error) {
	c.entries++
	return c.Store.Apply(ctx, cmd)
}

// BenchmarkGroupScale0To200: the keeper takes a group from 0 to 200
// members over 20 hosts (in-memory state machine, fake clock): passes,
// Raft entries and members per second.
func BenchmarkGroupScale0To200(b *testing.B) {
	for range b.N {
		b.StopTimer()
		r := newFakeRaft()
		cs := &entryCounter{Store: r.store}
		p := &fakePeers{}
		c := clock.NewFake(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
		l := NewLeader(LeaderConfig{Self: "h1", RaftVoters: 3, DeadVoterTimeout: time.Hour, ReconcileInterval: time.Second,
			Placement: placementOpts(), Liveness: LivenessConfig{Interval: 500 * time.Millisecond, TTL: 5 * time.Second, Margin: time.Second,
				FenceAfter: 1500 * time.Millisecond, FenceTimeout: 5 * time.Second, SharedStorage: true, DrainParallel: 2}},
			cs, r, p, c, slog.New(slog.DiscardHandler))
		ctx := context.Background()
		for i := 1; i <= 20; i++ {
			p.set(Peer{Name: fmt.Sprintf("h%d", i), State: PeerAlive, Capacity: model.Capacity{VCPUs: 64, MemoryMiB: 262144}})
		}
		l.registerHosts(ctx, p.Peers())
		l.raiseProtocol(ctx, p.Peers())
		l.setLeading(true)
		l.resetLiveness(c.Now())
		tmpl := model.VMSpec{VCPUs: 1, MemoryMiB: 512, Disks: []model.DiskSpec{{SizeMiB: 1024}}, HA: model.DefaultHA()}
		if _, err := l.SetGroup(ctx, SetGroupRequest{Group: model.Group{Name: "web", Count: 0, Template: tmpl}, Create: true}); err != nil {
			b.Fatal(err)
		}
		before := cs.entries
		b.StartTimer()
		start := time.Now()
		if _, err := l.ScaleGroup(ctx, ScaleGroupRequest{Name: "web", Count: 200}); err != nil {
			b.Fatal(err)
		}
		passes := 0
		for {
			passes++
			l.keepGroups(ctx)
			n := 0
			for _, v := range cs.VMs() {
				if v.Group == "web" {
					n++
				}
			}
			if n == 200 {
				break
			}
		}
		took := time.Since(start)
		b.StopTimer()
		b.ReportMetric(float64(passes), "passes")
		b.ReportMetric(float64(cs.entries-before), "entries")
		b.ReportMetric(float64(cs.entries-before)/took.Seconds(), "entries/s")
		b.ReportMetric(200/took.Seconds(), "members/s")
	}
}

// report sets a member's reported state and health.
func (e *liveEnv) reportHealth(t *testing.T, name, health, detail string) {
	t.Helper()
	v, err := e.r.store.VM(name)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.r.store.Apply(context.Background(), raftlog.ReportVMs{Host: v.Host, Reports: []raftlog.VMReport{
		{Name: v.Name, Generation: v.Generation, State: model.StateRunning, Health: health, HealthDetail: detail}}}); err != nil {
		t.Fatal(err)
	}
}

// With a health check in the template, a roll-out waits for each new
// member to be healthy, not only running, before an old one goes; a new
// member that turns unhealthy pauses it with the old members running.
func TestGroupRolloutWaitsForHealth(t *testing.T) {
	e := newLiveEnv(t, nil)
	ctx := context.Background()
	for _, h := range []string{"h1", "h2", "h3"} {
		e.peers.set(Peer{Name: h, State: PeerAlive, Capacity: model.Capacity{VCPUs: 64, MemoryMiB: 65536}})
	}
	e.l.registerHosts(ctx, e.peers.Peers())
	tmpl := model.VMSpec{VCPUs: 1, MemoryMiB: 256, Disks: []model.DiskSpec{{SizeMiB: 10}}, HA: model.DefaultHA(),
		Health: &model.HealthCheck{Exec: "test -e /run/ready"}}
	g, err := e.l.SetGroup(ctx, SetGroupRequest{Group: model.Group{Name: "web", Count: 3, Template: tmpl}, Create: true})
	if err != nil {
		t.Fatal(err)
	}
	e.l.keepGroups(ctx)
	for i := 1; i <= 3; i++ {
		e.reportHealth(t, model.MemberName("web", i), model.HealthHealthy, "")
	}

	g.Template.MemoryMiB = 512
	if g, err = e.l.SetGroup(ctx, SetGroupRequest{Group: g}); err != nil {
		t.Fatal(err)
	}
	e.l.keepGroups(ctx)
	fresh := func() []model.VM {
		var out []model.VM
		for _, v := range e.r.store.VMs() {
			if v.GroupVersion == g.Version && !v.Deleting {
				out = append(out, v)
			}
		}
		return out
	}
	if n := len(fresh()); n != 1 {
		t.Fatalf("%d new members, want 1", n)
	}
	// Running but still starting: no old member goes, no second new one.
	newcomer := fresh()[0].Name
	e.reportHealth(t, newcomer, model.HealthStarting, "")
	for range 3 {
		e.l.keepGroups(ctx)
	}
	if _, byVersion := e.versions("web"); byVersion[1] != 3 || byVersion[2] != 1 {
		t.Fatalf("while the new member starts: %v", byVersion)
	}
	// Healthy: one old member goes, the next new one comes.
	e.reportHealth(t, newcomer, model.HealthHealthy, "")
	e.l.keepGroups(ctx)
	e.l.keepGroups(ctx)
	if _, byVersion := e.versions("web"); byVersion[1] != 2 || byVersion[2] != 2 {
		t.Fatalf("after the new member turned healthy: %v", byVersion)
	}
	// The second new member turns unhealthy: the roll-out pauses, the two
	// old members stay.
	for _, v := range fresh() {
		if v.Name != newcomer {
			e.reportHealth(t, v.Name, model.HealthUnhealthy, `"test -e /run/ready" exited 1`)
		}
	}
	for range 3 {
		e.l.keepGroups(ctx)
	}
	g, _ = model.GroupByName(e.r.store.Cluster().Groups, "web")
	if !strings.Contains(g.Paused, "unhealthy") || !strings.Contains(g.Paused, "exited 1") {
		t.Fatalf("not paused by the unhealthy member: %+v", g)
	}
	if _, byVersion := e.versions("web"); byVersion[1] != 2 || byVersion[2] != 2 {
		t.Fatalf("paused: %v", byVersion)
	}
	if !MemberReady(fresh()[0]) && !MemberReady(fresh()[1]) {
		t.Fatal("the healthy new member is not ready")
	}
}

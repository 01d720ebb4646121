package controller

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/corralhq/corral/internal/clock"
	"github.com/corralhq/corral/internal/testutil"
	"github.com/corralhq/corral/model"
)

func newTestLeader(voters int) (*Leader, *fakeRaft, *fakePeers, *clock.Fake) {
	r := newFakeRaft()
	p := &fakePeers{}
	c := clock.NewFake(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
	l := NewLeader(LeaderConfig{Self: "a", RaftVoters: voters, DeadVoterTimeout: time.Minute, ReconcileInterval: time.Second},
		r.store, r, p, c, slog.New(slog.DiscardHandler))
	return l, r, p, c
}

func TestReconcileRaftMembership(t *testing.T) {
	l, r, peers, clock := newTestLeader(3)
	ctx := context.Background()
	r.AddVoter(ctx, "a", "10.0.0.1:7947")
	for _, n := range []string{"a", "b", "c", "d", "e"} {
		peers.set(Peer{Name: n, State: PeerAlive, Since: clock.Now()})
	}
	if err := l.reconcile(ctx); err != nil {
		t.Fatal(err)
	}
	v, nv := r.roles()
	if !slices.Equal(v, []string{"a", "b", "c"}) || !slices.Equal(nv, []string{"d", "e"}) {
		t.Fatalf("voters %v nonvoters %v", v, nv)
	}
	if len(r.store.Hosts()) != 5 {
		t.Fatalf("registered hosts: %v", r.store.Hosts())
	}

	// b dies: it keeps its seat until the timeout.
	peers.set(Peer{Name: "b", State: PeerDead, Since: clock.Now()})
	clock.Advance(59 * time.Second)
	l.reconcile(ctx)
	if v, _ := r.roles(); !slices.Contains(v, "b") {
		t.Fatalf("b removed before the timeout: %v", v)
	}
	// After the timeout it is removed and d, the first alive non-voter, is promoted.
	clock.Advance(2 * time.Second)
	l.reconcile(ctx)
	v, nv = r.roles()
	if !slices.Equal(v, []string{"a", "c", "d"}) || !slices.Equal(nv, []string{"e"}) {
		t.Fatalf("after b's timeout: voters %v nonvoters %v", v, nv)
	}
	// b returns and joins as a non-voter: all seats are taken.
	peers.set(Peer{Name: "b", State: PeerAlive, Since: clock.Now()})
	l.reconcile(ctx)
	v, nv = r.roles()
	if !slices.Equal(v, []string{"a", "c", "d"}) || !slices.Equal(nv, []string{"b", "e"}) {
		t.Fatalf("after b returns: voters %v nonvoters %v", v, nv)
	}
	// The leader never removes itself, however long gossip calls it dead.
	peers.set(Peer{Name: "a", State: PeerDead, Since: clock.Now()})
	clock.Advance(time.Hour)
	l.reconcile(ctx)
	if v, _ := r.roles(); !slices.Contains(v, "a") {
		t.Fatalf("leader removed itself: %v", v)
	}
}

func TestRegisterHostsOnlyOnChange(t *testing.T) {
	l, r, peers, clock := newTestLeader(3)
	ctx := context.Background()
	peers.set(Peer{Name: "a", State: PeerAlive, Version: "v1", Capacity: model.Capacity{VCPUs: 4, MemoryMiB: 8192}})
	l.reconcile(ctx)
	h, err := r.store.Host("a")
	if err != nil || h.Version != "v1" || !h.RegisteredAt.Equal(clock.Now()) {
		t.Fatalf("host %+v %v", h, err)
	}
	r.store.Apply(ctx, setLabels("a", "rack", "r1"))
	clock.Advance(time.Hour)
	peers.set(Peer{Name: "a", State: PeerAlive, Version: "v2", Capacity: model.Capacity{VCPUs: 4, MemoryMiB: 8192}})
	l.reconcile(ctx)
	h, _ = r.store.Host("a")
	if h.Version != "v2" || h.Labels["rack"] != "r1" || h.RegisteredAt.Equal(clock.Now()) {
		t.Fatalf("re-registration must update version and keep labels and registration time: %+v", h)
	}
}

// TestGossipHintsAreBounded: gossip metadata is a hint the leader checks
// before writing it: absurd capacity, Raft or RPC addresses off the
// advertised address, a name that reads as an option, or long free text
// keep a member out of state.
func TestGossipHintsAreBounded(t *testing.T) {
	l, r, peers, _ := newTestLeader(3)
	ctx := context.Background()
	ok := model.Capacity{VCPUs: 4, MemoryMiB: 8192}
	for _, p := range []Peer{
		{Name: "greedy", Capacity: model.Capacity{VCPUs: 100000, MemoryMiB: 8192}},
		{Name: "elsewhere", Capacity: ok, Addr: "10.0.0.9", RaftAddr: "10.0.0.66:7947", RPCAddr: "10.0.0.9:7948"},
		{Name: "--help", Capacity: ok},
		{Name: "chatty", Capacity: ok, Version: strings.Repeat("v", 1000)},
	} {
		p.State = PeerAlive
		peers.set(p)
	}
	peers.set(Peer{Name: "fine", State: PeerAlive, Capacity: ok})
	l.reconcile(ctx)
	for _, name := range []string{"greedy", "elsewhere", "--help", "chatty"} {
		if _, err := r.store.Host(name); err == nil {
			t.Errorf("%s registered", name)
		}
	}
	if _, err := r.store.Host("fine"); err != nil {
		t.Fatalf("a sound member was not registered: %v", err)
	}
}

// TestImageVolumeIsTheLeaders: the pool file of an image is derived from
// its name by the leader, whatever the caller sent.
func TestImageVolumeIsTheLeaders(t *testing.T) {
	l, _, _, _ := newTestLeader(3)
	ctx := context.Background()
	l.setLeading(true)
	im, err := l.PutImage(ctx, model.Image{Name: "base", Format: "qcow2", Volume: "../../../../dev/sda"})
	if err != nil || im.Volume != model.ImageVolume("base") {
		t.Fatalf("image %+v, %v", im, err)
	}
	if _, err := l.PutImage(ctx, model.Image{Name: "../x", Format: "raw"}); !errors.Is(err, model.ErrInvalid) {
		t.Fatalf("bad image name: %v", err)
	}
}

// TestKernelPathsOnlyFromKernelDir: a VM may boot only kernels and
// initrds from kernel_dir, never any host file it names.
func TestKernelPathsOnlyFromKernelDir(t *testing.T) {
	l, _, peers, _ := newTestLeader(3)
	l.cfg.KernelDir = "/srv/kernels"
	ctx := context.Background()
	peers.set(Peer{Name: "a", State: PeerAlive, Capacity: model.Capacity{VCPUs: 4, MemoryMiB: 8192}})
	l.reconcile(ctx)
	l.setLeading(true)
	spec := model.VMSpec{VCPUs: 1, MemoryMiB: 128}
	for _, k := range []model.KernelBoot{{Kernel: "/etc/shadow"}, {Kernel: "/srv/kernels/vmlinuz", Initrd: "/dev/sda"}} {
		spec.Kernel = &k
		if _, err := l.CreateVM(ctx, CreateVMRequest{Name: "k", Spec: spec}); !errors.Is(err, model.ErrInvalid) {
			t.Errorf("kernel %+v: %v, want ErrInvalid", k, err)
		}
	}
	spec.Kernel = &model.KernelBoot{Kernel: "/srv/kernels/vmlinuz", Initrd: "/srv/kernels/initrd.img"}
	if _, err := l.CreateVM(ctx, CreateVMRequest{Name: "k", Spec: spec}); err != nil {
		t.Fatalf("kernel from kernel_dir: %v", err)
	}
}

func TestOpsNeedLeadership(t *testing.T) {
	l, r, peers, _ := newTestLeader(3)
	ctx := context.Background()
	peers.set(Peer{Name: "a", State: PeerAlive})
	l.reconcile(ctx)
	if _, err := l.SetHostLabels(ctx, HostLabels{Name: "a", Set: map[string]string{"k": "v"}}); !errors.Is(err, model.ErrNotLeader) {
		t.Fatalf("before the barrier: %v", err)
	}
	l.setLeading(true)
	if _, err := l.SetHostLabels(ctx, HostLabels{Name: "a", Set: map[string]string{"k": "v"}}); err != nil {
		t.Fatal(err)
	}
	if _, err := l.SetHostLabels(ctx, HostLabels{Name: "zz", Set: map[string]string{"k": "v"}}); !errors.Is(err, model.ErrNotFound) {
		t.Fatalf("unknown host: %v", err)
	}
	if _, err := l.SetHostLabels(ctx, HostLabels{Name: "a"}); !errors.Is(err, model.ErrInvalid) {
		t.Fatalf("empty change: %v", err)
	}
	r.mu.Lock()
	r.leader = false
	r.mu.Unlock()
	if _, err := l.SetHostLabels(ctx, HostLabels{Name: "a", Set: map[string]string{"k": "v"}}); !errors.Is(err, model.ErrNotLeader) {
		t.Fatalf("follower: %v", err)
	}
}

func TestBootstrapOnlyLowestConfirmedCandidate(t *testing.T) {
	newBoot := func(self string, peers *fakePeers, views map[string]BootstrapView) (*Bootstrap, *fakeRaft) {
		r := newFakeRaft()
		return &Bootstrap{
			Self: self, Expect: 3, Settle: 10 * time.Millisecond, Raft: r, Peers: peers,
			Ask: func(ctx context.Context, p Peer) (BootstrapView, error) {
				v, ok := views[p.Name]
				if !ok {
					return v, fmt.Errorf("%s unreachable", p.Name)
				}
				return v, nil
			},
			Clock: SystemClock{}, Log: slog.New(slog.DiscardHandler),
		}, r
	}
	peers := &fakePeers{}
	for _, n := range []string{"a", "b", "c", "d"} {
		peers.set(Peer{Name: n, State: PeerAlive})
	}
	agree := BootstrapView{Candidates: []string{"a", "b", "c"}, Expect: 3}
	views := map[string]BootstrapView{"b": agree, "c": agree}

	// a is the lowest candidate and everyone agrees: it bootstraps a, b, c.
	boot, r := newBoot("a", peers, views)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := boot.Run(ctx); err != nil || !r.HasState() {
		t.Fatalf("a did not bootstrap: %v", err)
	}
	var ids []string
	for _, s := range r.booted {
		ids = append(ids, s.ID)
	}
	if !slices.Equal(ids, []string{"a", "b", "c"}) {
		t.Fatalf("bootstrapped %v", ids)
	}

	// b is not the lowest: it never bootstraps.
	boot, r = newBoot("b", peers, views)
	sctx, scancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer scancel()
	boot.Run(sctx)
	if r.HasState() {
		t.Fatal("b bootstrapped although a is lower")
	}

	// a with a disagreeing candidate, or one that already has state: no bootstrap.
	for name, v := range map[string]BootstrapView{
		"disagrees":   {Candidates: []string{"a", "c", "d"}, Expect: 3},
		"has state":   {InCluster: true, Candidates: []string{"a", "b", "c"}, Expect: 3},
		"expect 5":    {Candidates: []string{"a", "b", "c"}, Expect: 5},
		"unreachable": {},
	} {
		vs := map[string]BootstrapView{"b": agree, "c": v}
		if name == "unreachable" {
			delete(vs, "c")
		}
		boot, r = newBoot("a", peers, vs)
		sctx, scancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
		boot.Run(sctx)
		scancel()
		if r.HasState() {
			t.Fatalf("%s: a bootstrapped", name)
		}
	}

	// A peer already in a cluster: nobody bootstraps.
	peers.set(Peer{Name: "d", State: PeerAlive, InCluster: true})
	boot, r = newBoot("a", peers, views)
	sctx, scancel = context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer scancel()
	boot.Run(sctx)
	if r.HasState() {
		t.Fatal("bootstrapped although a peer is in a cluster")
	}
}

// TestVerifyHostInBackground: a host is registered, and seated in Raft,
// only once it has proved its name; the check runs beside the leader loop,
// so a host that does not answer holds nothing up, and a failed check is
// retried only after verifyRetry.
func TestVerifyHostInBackground(t *testing.T) {
	l, r, peers, clock := newTestLeader(3)
	release := make(chan error)
	calls := make(chan string, 10)
	l.cfg.VerifyHost = func(ctx context.Context, h model.Host) error {
		calls <- h.Name
		if h.Name == "a" {
			return nil
		}
		select {
		case err := <-release:
			return err
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	ctx := context.Background()
	r.AddVoter(ctx, "a", "10.0.0.1:7947")
	peers.set(Peer{Name: "a", State: PeerAlive, Since: clock.Now()})
	peers.set(Peer{Name: "b", State: PeerAlive, Since: clock.Now()})
	l.reconcile(ctx) // starts both checks and returns without waiting
	if _, err := r.store.Host("b"); err == nil {
		t.Fatal("b registered before its check passed")
	}
	if v, nv := r.roles(); slices.Contains(v, "b") || slices.Contains(nv, "b") {
		t.Fatal("b seated before its check passed")
	}
	// b's check fails: b stays out, and is not checked again at once.
	release <- errors.New("wrong certificate")
	testutil.Eventually(t, 5*time.Second, func() error {
		l.ver.mu.Lock()
		defer l.ver.mu.Unlock()
		if l.ver.failed["b"].IsZero() {
			return errors.New("check not finished")
		}
		return nil
	})
	l.reconcile(ctx)
	if _, err := r.store.Host("b"); err == nil {
		t.Fatal("b registered after a failed check")
	}
	// After verifyRetry it is checked again; this time it passes.
	clock.Advance(verifyRetry + time.Second)
	l.reconcile(ctx)
	release <- nil
	testutil.Eventually(t, 5*time.Second, func() error {
		l.reconcile(ctx)
		if _, err := r.store.Host("b"); err != nil {
			return err
		}
		return nil
	})
	if v, _ := r.roles(); !slices.Contains(v, "b") {
		t.Fatalf("b not seated once verified: %v", v)
	}
}

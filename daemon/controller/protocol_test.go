package controller

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/corralhq/corral/model"
	"github.com/corralhq/corral/raftlog"
)

// The leader records each host's protocol from gossip (0, a corrald from
// before protocols, reads as 1) and raises the cluster's once every host
// in state and every alive one in gossip runs the higher one, never above
// its own.
func TestProtocolRecordedAndRaised(t *testing.T) {
	l, r, peers, _ := newTestLeader(3)
	ctx := context.Background()
	peers.set(Peer{Name: "a", State: PeerAlive, Version: "v2"})
	peers.set(Peer{Name: "b", State: PeerAlive, Version: "v1", Protocol: 1})
	peers.set(Peer{Name: "c", State: PeerAlive, Version: "v2"})
	l.reconcile(ctx)
	for name, want := range map[string]int{"a": raftlog.Protocol, "b": 1, "c": raftlog.Protocol} {
		if h, err := r.store.Host(name); err != nil || h.Protocol != want {
			t.Fatalf("%s: %+v %v, want protocol %d", name, h, err, want)
		}
	}
	if p := r.store.Cluster().Protocol; p != 0 {
		t.Fatalf("cluster protocol %d with b at 1", p)
	}
	// b is upgraded: re-registered with its new protocol, and the cluster's
	// is raised (once).
	peers.set(Peer{Name: "b", State: PeerAlive, Version: "v2"})
	l.reconcile(ctx)
	l.reconcile(ctx)
	if h, _ := r.store.Host("b"); h.Protocol != raftlog.Protocol || h.Version != "v2" {
		t.Fatalf("b after its upgrade: %+v", h)
	}
	if p := r.store.Cluster().Protocol; p != raftlog.Protocol {
		t.Fatalf("cluster protocol %d, want %d", p, raftlog.Protocol)
	}
	if evs := eventsOf(r, "protocol"); len(evs) != 1 || !strings.Contains(evs[0].Message, fmt.Sprintf("from 1 to %d", raftlog.Protocol)) {
		t.Fatalf("protocol events: %+v", evs)
	}
	// A host speaking a newer protocol than the leader is registered with
	// it, but the cluster's stays at the leader's.
	peers.set(Peer{Name: "d", State: PeerAlive, Version: "v3", Protocol: raftlog.Protocol + 1})
	l.reconcile(ctx)
	if h, _ := r.store.Host("d"); h.Protocol != raftlog.Protocol+1 {
		t.Fatalf("d: %+v", h)
	}
	if p := r.store.Cluster().Protocol; p != raftlog.Protocol {
		t.Fatalf("cluster protocol %d above the leader's %d", p, raftlog.Protocol)
	}
}

// A dead host in state, or an alive one in gossip not yet registered,
// holds the cluster's protocol back: it may come (back) with its old
// corrald.
func TestProtocolHeldBackByDeadAndUnregisteredHosts(t *testing.T) {
	l, r, peers, _ := newTestLeader(3)
	ctx := context.Background()
	peers.set(Peer{Name: "a", State: PeerAlive})
	peers.set(Peer{Name: "b", State: PeerAlive, Protocol: 1})
	l.reconcile(ctx)
	peers.set(Peer{Name: "b", State: PeerDead, Protocol: 1})
	l.reconcile(ctx)
	if p := r.store.Cluster().Protocol; p != 0 {
		t.Fatalf("raised to %d while dead host b, in state, runs protocol 1", p)
	}
	if err := l.raiseProtocol(ctx, []Peer{{Name: "a", State: PeerAlive, Protocol: 2}, {Name: "n", State: PeerAlive}}); err != nil {
		t.Fatal(err)
	}
	if p := r.store.Cluster().Protocol; p != 0 {
		t.Fatalf("raised to %d while n, alive in gossip, runs protocol 1", p)
	}
}

// Once the cluster is at protocol 2, a host gossiping protocol 1 (a
// corrald downgraded to a release that predates the start-up check) is
// neither registered nor re-registered, and the leader says why once.
func TestLeaderRefusesHostBelowClusterProtocol(t *testing.T) {
	l, r, peers, clock := newTestLeader(3)
	ctx := context.Background()
	for _, n := range []string{"a", "b", "c"} {
		peers.set(Peer{Name: n, State: PeerAlive, Version: "v2"})
	}
	l.reconcile(ctx)
	if p := r.store.Cluster().Protocol; p != raftlog.Protocol {
		t.Fatalf("cluster protocol %d", p)
	}
	before, _ := r.store.Host("c")
	peers.set(Peer{Name: "c", State: PeerAlive, Version: "v1", Protocol: 1, Capacity: model.Capacity{VCPUs: 2, MemoryMiB: 1024}})
	peers.set(Peer{Name: "n", State: PeerAlive, Version: "v1", Protocol: 1})
	for i := 0; i < 3; i++ {
		clock.Advance(time.Second)
		if err := l.reconcile(ctx); err != nil {
			t.Fatal(err)
		}
	}
	if h, _ := r.store.Host("c"); h.Version != "v2" || h.Protocol != raftlog.Protocol || h.Capacity != before.Capacity {
		t.Fatalf("c re-registered with its downgrade: %+v", h)
	}
	if _, err := r.store.Host("n"); !errors.Is(err, model.ErrNotFound) {
		t.Fatalf("n registered at protocol 1: %v", err)
	}
	if p := r.store.Cluster().Protocol; p != raftlog.Protocol {
		t.Fatalf("cluster protocol lowered to %d", p)
	}
	evs := eventsOf(r, "protocol-refused")
	if len(evs) != 2 {
		t.Fatalf("want one refusal event per host, got %+v", evs)
	}
	for _, ev := range evs {
		if ev.Host == "c" && !strings.Contains(ev.Message, fmt.Sprintf("runs corrald v1, which speaks cluster protocol 1, below the cluster's %d: not registered", raftlog.Protocol)) {
			t.Fatalf("refusal says %q", ev.Message)
		}
	}
	// Upgraded again: registered with its version, and a later downgrade
	// is reported again.
	peers.set(Peer{Name: "c", State: PeerAlive, Version: "v2.1"})
	l.reconcile(ctx)
	if h, _ := r.store.Host("c"); h.Version != "v2.1" {
		t.Fatalf("c after its upgrade: %+v", h)
	}
	peers.set(Peer{Name: "c", State: PeerAlive, Version: "v1", Protocol: 1})
	l.reconcile(ctx)
	if evs := eventsOf(r, "protocol-refused"); len(evs) != 3 {
		t.Fatalf("second downgrade: %+v", evs)
	}
}

// host rm --force is new in protocol 2: refused, naming the older hosts,
// until the cluster's protocol is 2 (a protocol 1 leader refuses the
// field).
func TestRemoveHostForceNeedsProtocol2(t *testing.T) {
	e := newLiveEnvAt(t, nil, map[string]int{"h2": 1})
	ctx := context.Background()
	e.peers.set(Peer{Name: "h2", State: PeerAlive, Version: "v1", Protocol: 1, Capacity: model.Capacity{VCPUs: 8, MemoryMiB: 8192}})
	e.l.registerHosts(ctx, e.peers.Peers())
	e.vm(t, "pinned", "h3", 0, false)
	e.peers.set(Peer{Name: "h3", State: PeerDead})
	e.step(500*time.Millisecond, "h3")
	e.r.store.Apply(ctx, raftlog.FenceHost{Name: "h3", Reason: "test"})
	req := RemoveHostRequest{Name: "h3", Force: true}
	for _, cl := range []model.Cluster{{}, {Protocol: 1}} {
		_, err := e.l.RemoveHost(ctx, req)
		if !errors.Is(err, model.ErrConflict) || !strings.Contains(err.Error(), "host rm --force needs cluster protocol 2") ||
			!strings.Contains(err.Error(), "h2 (protocol 1, version v1)") {
			t.Fatalf("force at protocol %d: %v", cl.Protocol, err)
		}
		if err := req.Gate(cl, e.r.store.Hosts()); err == nil {
			t.Fatalf("gate open at protocol %d", cl.Protocol)
		}
	}
	if err := (RemoveHostRequest{Name: "h3"}).Gate(model.Cluster{}, e.r.store.Hosts()); err != nil {
		t.Fatalf("a removal without force is gated: %v", err)
	}
	if _, err := e.r.store.Host("h3"); err != nil {
		t.Fatalf("h3 removed: %v", err)
	}
	// h2 upgraded: the cluster reaches 2 and force works.
	e.peers.set(Peer{Name: "h2", State: PeerAlive, Capacity: model.Capacity{VCPUs: 8, MemoryMiB: 8192}})
	e.l.registerHosts(ctx, e.peers.Peers())
	e.l.raiseProtocol(ctx, e.peers.Peers())
	if _, err := e.l.RemoveHost(ctx, req); err != nil {
		t.Fatal(err)
	}
	if v, _ := e.r.store.VM("pinned"); v.Host == "h3" {
		t.Fatalf("pinned not moved: %+v", v)
	}
}

func eventsOf(r *fakeRaft, kind string) []model.Event {
	var out []model.Event
	for _, ev := range r.store.Events(0, 0) {
		if ev.Kind == kind {
			out = append(out, ev)
		}
	}
	return out
}

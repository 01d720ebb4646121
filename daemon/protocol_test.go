package daemon

import (
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/corralhq/corral/api"
	"github.com/corralhq/corral/internal/testutil"
	"github.com/corralhq/corral/raftlog"
)

// TestProtocolUpgradeAndDowngrade: a cluster with one host of the previous
// protocol stays at it (host rm --force is refused, naming the host, before
// it is forwarded); once that host runs the new protocol the leader raises
// the cluster's; from then on a corrald of the previous protocol refuses to
// start on that state (restored from a snapshot), and a running corrald
// stops when an entry raises the protocol above its own.
func TestProtocolUpgradeAndDowngrade(t *testing.T) {
	tc := newTestCluster(t, 3, []int{0}, func(i int, c *Config) {
		if i == 2 {
			c.Tuning.Protocol = 1
		}
	})
	tc.startAll()
	tc.waitConverged(3, 0)
	h1, h3 := tc.host("h1"), tc.host("h3")
	status := func(h *testHost) api.Status {
		s, err := h.client.Status(ctxT(t))
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	testutil.Eventually(t, 10*time.Second, func() error {
		hv, err := h1.client.Host(ctxT(t), "h3")
		if err != nil || hv.Protocol != 1 {
			return fmt.Errorf("h3: %+v %v", hv, err)
		}
		return nil
	})
	if s := status(h1); s.Protocol != 1 || s.HostsProtocol != 1 || s.ThisProtocol != raftlog.Protocol {
		t.Fatalf("status with h3 at protocol 1: %+v", s)
	}
	err := h1.client.RemoveHost(ctxT(t), "h2", true)
	if !errors.Is(err, api.ErrConflict) || !strings.Contains(err.Error(), "host rm --force needs cluster protocol 2") || !strings.Contains(err.Error(), "h3 (protocol 1") {
		t.Fatalf("host rm --force at protocol 1: %v", err)
	}
	_, err = h1.client.CreateGroup(ctxT(t), api.GroupCreateRequest{Name: "web", Count: 1, Spec: api.VMSpec{VCPUs: 1, MemoryMiB: 64, Disks: []api.Disk{{SizeMiB: 8}}}})
	if !errors.Is(err, api.ErrConflict) || !strings.Contains(err.Error(), fmt.Sprintf("VM groups needs cluster protocol %d", raftlog.FeatureGroups.Since)) {
		t.Fatalf("group create at protocol 1: %v", err)
	}

	// h3 upgraded: the leader records its protocol and raises the cluster's.
	h3.stop()
	h3.cfg.Tuning.Protocol = 0
	h3.start()
	testutil.Eventually(t, 20*time.Second, func() error {
		for _, h := range tc.hosts {
			if s := status(h); s.Protocol != raftlog.Protocol || s.HostsProtocol != raftlog.Protocol {
				return fmt.Errorf("%s: protocol %d, hosts %d", h.cfg.Name, s.Protocol, s.HostsProtocol)
			}
		}
		return nil
	})
	if err := h3.d.store.Snapshot(); err != nil {
		t.Fatal(err)
	}

	// h3 downgraded: refused at start, from the snapshot, before serving.
	h3.stop()
	h3.cfg.Tuning.Protocol = 1
	d, err := New(h3.cfg, testutil.Logger(t))
	if err != nil {
		t.Fatal(err)
	}
	err = d.Run(ctxT(t))
	if !errors.Is(err, raftlog.ErrProtocol) || !strings.Contains(err.Error(), fmt.Sprintf("speaks cluster protocol 1, but the cluster's state records protocol %d", raftlog.Protocol)) ||
		!strings.Contains(err.Error(), "other hosts run dev") {
		t.Fatalf("downgraded corrald: %v", err)
	}
	select {
	case <-d.Ready():
		t.Fatal("the downgraded corrald served before refusing")
	default:
	}

	// An entry raising the protocol above the running hosts' stops them.
	var leader *testHost
	for _, h := range tc.running() {
		if h.d.store.IsLeader() {
			leader = h
		}
	}
	if leader == nil {
		t.Fatal("no leader")
	}
	if _, err := leader.d.store.Apply(ctxT(t), raftlog.SetProtocol{Protocol: raftlog.Protocol + 1}); err != nil {
		t.Fatal(err)
	}
	for _, h := range tc.running() {
		select {
		case err := <-h.done:
			if !errors.Is(err, raftlog.ErrProtocol) || !strings.Contains(err.Error(), fmt.Sprintf("records protocol %d", raftlog.Protocol+1)) {
				t.Fatalf("%s: %v", h.cfg.Name, err)
			}
			h.cancel()
			h.cancel = nil
		case <-time.After(20 * time.Second):
			t.Fatalf("%s still runs on a state of protocol %d", h.cfg.Name, raftlog.Protocol+1)
		}
	}
}

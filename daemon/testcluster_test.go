package daemon

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/corralhq/corral/api"
	"github.com/corralhq/corral/api/client"
	"github.com/corralhq/corral/daemon/hypervisor/fake"
	"github.com/corralhq/corral/daemon/membership"
	"github.com/corralhq/corral/internal/testutil"
	"github.com/corralhq/corral/model"
	"github.com/corralhq/corral/raftstore"
)

// fastTuning shrinks gossip and Raft timers to tens or hundreds of
// milliseconds, as in Nomad's test servers, while leaving room for several
// daemons on a 2-core machine.
func fastTuning() Tuning {
	return Tuning{
		Raft: raftstore.Timing{
			HeartbeatTimeout: 300 * time.Millisecond, ElectionTimeout: 300 * time.Millisecond,
			LeaderLeaseTimeout: 150 * time.Millisecond, CommitTimeout: 10 * time.Millisecond,
			SnapshotInterval: time.Minute, SnapshotThreshold: 1 << 16, TrailingLogs: 1024,
		},
		Gossip: membership.Timing{
			ProbeInterval: 200 * time.Millisecond, ProbeTimeout: 100 * time.Millisecond,
			GossipInterval: 30 * time.Millisecond, PushPullInterval: 2 * time.Second,
			TCPTimeout: time.Second, SuspicionMult: 3,
			JoinBackoffMax: 500 * time.Millisecond, RejoinInterval: time.Second,
		},
		ReconcileInterval: 200 * time.Millisecond,
		BootstrapSettle:   200 * time.Millisecond,
		ForwardTimeout:    10 * time.Second,
		HostResync:        100 * time.Millisecond,
		CertCheck:         100 * time.Millisecond,
		AutoscaleInterval: 200 * time.Millisecond,
	}
}

// testHost is one in-process daemon.
type testHost struct {
	t      testing.TB
	cfg    Config
	d      *Daemon
	cancel context.CancelFunc
	done   chan error
	client *client.Client
	// logs, when set before start, receives every log record.
	logs io.Writer
}

// testCluster builds configs for n hosts on 127.0.0.1..n with free ports;
// every host lists seeds (indexes into the cluster) as its seeds.
type testCluster struct {
	t     testing.TB
	hosts []*testHost
}

func newTestCluster(t testing.TB, n int, seeds []int, mod func(i int, c *Config)) *testCluster {
	t.Helper()
	tc := &testCluster{t: t}
	dir := t.TempDir()
	pool := filepath.Join(dir, "pool") // "shared storage" of the fakes
	if err := os.MkdirAll(pool, 0o755); err != nil {
		t.Fatal(err)
	}
	var cfgs []Config
	for i := 0; i < n; i++ {
		ip := fmt.Sprintf("127.0.0.%d", i+1)
		c := DefaultConfig()
		c.Name = fmt.Sprintf("h%d", i+1)
		c.DataDir = filepath.Join(dir, c.Name)
		c.BindAddr = ip
		c.GossipPort = testutil.FreePort(t, ip)
		c.RaftPort = testutil.FreePort(t, ip)
		c.RPCPort = testutil.FreePort(t, ip)
		c.Socket = filepath.Join(dir, c.Name+".sock")
		c.SocketGroup = ""
		c.FencerSocket = "" // fake guests: nothing for a fencer to kill
		c.Tuning = fastTuning()
		drv := fake.New()
		drv.SetPoolDir(pool)
		c.Tuning.Driver = drv
		c.Tuning.Networker = &fakeNetworker{}
		c.StoragePool = pool
		c.DeadVoterAfter = 2 * time.Second
		cfgs = append(cfgs, c)
	}
	for i := range cfgs {
		for _, s := range seeds {
			cfgs[i].Seeds = append(cfgs[i].Seeds, fmt.Sprintf("%s:%d", cfgs[s].BindAddr, cfgs[s].GossipPort))
		}
		if mod != nil {
			mod(i, &cfgs[i])
		}
		tc.hosts = append(tc.hosts, &testHost{t: t, cfg: cfgs[i], client: client.New(cfgs[i].Socket)})
	}
	t.Cleanup(func() {
		for _, h := range tc.hosts {
			h.stop()
		}
	})
	return tc
}

// start runs the daemon in the background.
func (h *testHost) start() {
	h.t.Helper()
	log := testutil.Logger(h.t)
	if h.logs != nil { // every record, debug included, for tests that read the logs
		log = slog.New(slog.NewMultiHandler(log.Handler(), slog.NewTextHandler(h.logs, &slog.HandlerOptions{Level: slog.LevelDebug})))
	}
	log = log.With("test_host", h.cfg.Name)
	if err := Join(ctxT(h.t), h.cfg, log); err != nil {
		h.t.Fatal(err)
	}
	d, err := New(h.cfg, log)
	if err != nil {
		h.t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	h.d, h.cancel, h.done = d, cancel, make(chan error, 1)
	go func() { h.done <- d.Run(ctx) }()
	select {
	case <-d.Ready():
	case err := <-h.done:
		h.t.Fatalf("%s did not start: %v", h.cfg.Name, err)
	}
}

// stop shuts the daemon down cleanly; it is a no-op when not running.
func (h *testHost) stop() {
	if h.cancel == nil {
		return
	}
	h.cancel()
	if err := <-h.done; err != nil {
		h.t.Errorf("%s: run: %v", h.cfg.Name, err)
	}
	h.cancel = nil
}

func (tc *testCluster) startAll() {
	for _, h := range tc.hosts {
		h.start()
	}
}

func (tc *testCluster) running() []*testHost {
	var out []*testHost
	for _, h := range tc.hosts {
		if h.cancel != nil {
			out = append(out, h)
		}
	}
	return out
}

func ctxT(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// waitConverged waits until every running host reports the same leader,
// the given voter and non-voter counts, and every running host alive and
// registered.
func (tc *testCluster) waitConverged(voters, nonvoters int) api.Status {
	tc.t.Helper()
	var last api.Status
	testutil.Eventually(tc.t, 30*time.Second, func() error {
		running := tc.running()
		leader := ""
		for _, h := range running {
			s, err := h.client.Status(ctxT(tc.t))
			if err != nil {
				return err
			}
			if s.Leader == "" {
				return fmt.Errorf("%s: no leader", h.cfg.Name)
			}
			if leader != "" && s.Leader != leader {
				return fmt.Errorf("%s sees leader %s, another host sees %s", h.cfg.Name, s.Leader, leader)
			}
			leader = s.Leader
			if len(s.Voters) != voters || len(s.Nonvoters) != nonvoters {
				return fmt.Errorf("%s: voters %v nonvoters %v", h.cfg.Name, s.Voters, s.Nonvoters)
			}
			hosts, err := h.client.Hosts(ctxT(tc.t))
			if err != nil {
				return err
			}
			alive := map[string]bool{}
			for _, hv := range hosts {
				if hv.Gossip == "alive" && hv.Mode == "active" {
					alive[hv.Name] = true
				}
			}
			for _, o := range running {
				if !alive[o.cfg.Name] {
					return fmt.Errorf("%s does not see %s alive and registered", h.cfg.Name, o.cfg.Name)
				}
			}
			last = s
		}
		return nil
	})
	return last
}

// followers returns the hosts that do not lead now.
func (tc *testCluster) followers() []*testHost {
	var out []*testHost
	for _, h := range tc.hosts {
		if !h.d.store.IsLeader() {
			out = append(out, h)
		}
	}
	return out
}

func (tc *testCluster) host(name string) *testHost {
	for _, h := range tc.hosts {
		if h.cfg.Name == name {
			return h
		}
	}
	tc.t.Fatalf("no host %s", name)
	return nil
}

func sorted(s []string) string {
	c := append([]string(nil), s...)
	sort.Strings(c)
	return strings.Join(c, ",")
}

var errNotYet = errors.New("not yet")

// fakeNetworker records networks instead of building them, so in-process
// tests leave the machine's network namespace alone.
type fakeNetworker struct {
	mu   sync.Mutex
	nets map[string]bool
}

func (f *fakeNetworker) EnsureNetwork(n model.Network, local net.IP, peers []net.IP) (bool, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.nets == nil {
		f.nets = map[string]bool{}
	}
	changed := !f.nets[n.Name]
	f.nets[n.Name] = true
	return changed, nil
}

func (f *fakeNetworker) RemoveNetwork(name string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	delete(f.nets, name)
	return nil
}

func (f *fakeNetworker) OwnedNetworks() ([]string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []string
	for n := range f.nets {
		out = append(out, n)
	}
	return out, nil
}

package daemon

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/corralhq/corral/api"
	"github.com/corralhq/corral/daemon/controller"
	"github.com/corralhq/corral/daemon/identity"
	"github.com/corralhq/corral/daemon/membership"
	"github.com/corralhq/corral/daemon/rpc"
	"github.com/corralhq/corral/internal/testutil"
	"github.com/corralhq/corral/model"
	"github.com/corralhq/corral/raftlog"
)

// sharedRPCPort returns a port free on every given loopback address:
// joining hosts find a member's cluster RPC at their own rpc_port.
func sharedRPCPort(t *testing.T, ips ...string) int {
	t.Helper()
	for i := 0; i < 50; i++ {
		port := testutil.FreePort(t, ips[0])
		ok := true
		for _, ip := range ips[1:] {
			ln, err := net.Listen("tcp", net.JoinHostPort(ip, fmt.Sprint(port)))
			if err != nil {
				ok = false
				break
			}
			ln.Close()
		}
		if ok {
			return port
		}
	}
	t.Fatal("no port free on every address")
	return 0
}

// securedCluster builds n hosts that run with cluster identities: h1 runs
// corrald init, the others join with its first token. Hosts from index
// joinAt on are left out of the first start (later joiners).
func securedCluster(t *testing.T, n int) (*testCluster, string) {
	t.Helper()
	var ips []string
	for i := 0; i < n; i++ {
		ips = append(ips, fmt.Sprintf("127.0.0.%d", i+1))
	}
	port := sharedRPCPort(t, ips...)
	tc := newTestCluster(t, n, []int{0}, func(i int, c *Config) {
		c.RPCPort = port
		c.BootstrapExpect = 3
	})
	tok, err := Init(tc.hosts[0].cfg)
	if err != nil {
		t.Fatal(err)
	}
	return tc, tok
}

// runSecured starts n hosts the operator's way (h1 ran corrald init, the
// others join with its first token) and waits for 3 voters.
func runSecured(t *testing.T, n int) (*testCluster, api.Status) {
	t.Helper()
	tc, first := securedCluster(t, n)
	for _, h := range tc.hosts[1:] {
		h.cfg.JoinToken = first
	}
	tc.startAll()
	return tc, tc.waitConverged(3, n-3)
}

// TestJoinWithTokens: a cluster forms from corrald init and its first join
// token (before Raft has any state); the token then moves into state; new
// tokens admit hosts later, through a follower too; revoked, expired,
// malformed and foreign tokens are refused; and a name joins once.
func TestJoinWithTokens(t *testing.T) {
	tc, first := securedCluster(t, 5)
	h1, h2, h3, h4, h5 := tc.hosts[0], tc.hosts[1], tc.hosts[2], tc.hosts[3], tc.hosts[4]
	h2.cfg.JoinToken, h3.cfg.JoinToken = first, first
	h1.start()
	h2.start()
	h3.start()
	st := tc.waitConverged(3, 0)
	for _, h := range []*testHost{h2, h3} {
		id, err := identity.Load(h.cfg.IdentityDir(), h.cfg.Name)
		if err != nil || id.Fingerprint() != h1.d.id.Fingerprint() {
			t.Fatalf("%s identity: %v", h.cfg.Name, err)
		}
	}
	// The first token moves from h1's file into state.
	testutil.Eventually(t, 10*time.Second, func() error {
		if _, ok := identity.InitToken(h1.d.id.Dir); ok {
			return errors.New("join-token file still there")
		}
		if ts := h2.d.store.Cluster().JoinTokens; len(ts) != 1 {
			return fmt.Errorf("tokens in state: %+v", ts)
		}
		return nil
	})
	leader := tc.host(st.Leader)
	var follower *testHost
	for _, h := range tc.running() {
		if h != leader {
			follower = h
		}
	}

	// A new token, asked for on a follower, admits h4 joining through that
	// follower (which passes the request on to the leader).
	created, err := forward(ctxT(t), follower.d, mTokenCreate, TokenCreateRequest{TTL: time.Hour, Description: "h4"})
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(fmt.Sprint(leader.d.store.Cluster()), strings.Split(created.Token, ".")[3]) {
		t.Fatal("the token's secret is in cluster state")
	}
	h4.cfg.JoinToken = created.Token
	h4.cfg.Seeds = []string{fmt.Sprintf("%s:%d", follower.cfg.BindAddr, follower.cfg.GossipPort)}
	h4.start()
	tc.waitConverged(3, 1)

	joinCtx := func() context.Context {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		t.Cleanup(cancel)
		return ctx
	}
	h5.cfg.Seeds = []string{h1.cfg.BindAddr}
	tryJoin := func(tok string) error {
		c := h5.cfg
		c.JoinToken = tok
		return Join(joinCtx(), c, testutil.Logger(t))
	}
	// A name that is a member already does not join again.
	again, err := forward(ctxT(t), leader.d, mTokenCreate, TokenCreateRequest{})
	if err != nil {
		t.Fatal(err)
	}
	c := h2.cfg
	c.DataDir, c.JoinToken = t.TempDir(), again.Token
	if err := Join(joinCtx(), c, testutil.Logger(t)); !errors.Is(err, model.ErrConflict) {
		t.Fatalf("second join as h2: %v", err)
	}
	// Revoked.
	if _, err := forward(ctxT(t), follower.d, mTokenRevoke, TokenRevokeRequest{ID: strings.Split(again.Token, ".")[2]}); err != nil {
		t.Fatal(err)
	}
	if err := tryJoin(again.Token); !errors.Is(err, model.ErrForbidden) {
		t.Fatalf("revoked token: %v", err)
	}
	// Expired.
	old := identity.NewToken(h1.d.id.Fingerprint())
	now := time.Now().UTC()
	if _, err := leader.d.store.Apply(ctxT(t), raftlog.AddJoinToken{Token: model.JoinToken{ID: old.ID, Hash: old.Hash(),
		Created: now.Add(-2 * time.Hour), Expires: now.Add(-time.Hour)}, Time: now.Add(-2 * time.Hour)}); err != nil {
		t.Fatal(err)
	}
	if err := tryJoin(old.String()); !errors.Is(err, model.ErrForbidden) {
		t.Fatalf("expired token: %v", err)
	}
	// A wrong secret, and a made-up ID.
	wrong := created
	wrongTok, _ := identity.ParseToken(wrong.Token)
	wrongTok.Secret = strings.Repeat("0", 40)
	if err := tryJoin(wrongTok.String()); !errors.Is(err, model.ErrForbidden) {
		t.Fatalf("wrong secret: %v", err)
	}
	wrongTok = identity.NewToken(h1.d.id.Fingerprint())
	if err := tryJoin(wrongTok.String()); !errors.Is(err, model.ErrForbidden) {
		t.Fatalf("unknown token: %v", err)
	}
	// A token pinning another CA: the members' certificates do not match,
	// so the joiner trusts none of them and never sends its secret.
	foreign := identity.NewToken(strings.Repeat("ab", 32))
	if err := tryJoin(foreign.String()); err == nil || !strings.Contains(err.Error(), "deadline") {
		t.Fatalf("token of another cluster: %v", err)
	}
	if identity.Exists(h5.cfg.IdentityDir()) {
		t.Fatal("a refused join left an identity")
	}
	ts, err := h3.client.JoinTokens(ctxT(t))
	if err != nil {
		t.Fatal(err)
	}
	if len(ts) != 3 { // first, h4's, the expired one
		t.Fatalf("tokens %+v", ts)
	}
}

// TestClusterPlaneNeedsIdentity: with identities, the cluster RPC refuses
// a caller without a certificate and a host of another cluster; a host may
// speak only for itself (its lease, its guests); and a gossip member that
// holds the gossip key but not a certificate for its name gets neither a
// registration nor a Raft seat.
func TestClusterPlaneNeedsIdentity(t *testing.T) {
	tc, first := securedCluster(t, 4)
	h1, h2, h3, rogue := tc.hosts[0], tc.hosts[1], tc.hosts[2], tc.hosts[3]
	h2.cfg.JoinToken, h3.cfg.JoinToken = first, first
	h1.start()
	h2.start()
	h3.start()
	st := tc.waitConverged(3, 0)
	leader := tc.host(st.Leader)
	ctx := ctxT(t)

	anon := rpc.NewClient(&tls.Config{InsecureSkipVerify: true, MinVersion: tls.VersionTLS13})
	if _, err := rpc.Call(ctx, anon, leader.d.rpcAddr(), mBootstrapView, struct{}{}); !errors.Is(err, model.ErrForbidden) {
		t.Fatalf("call without a certificate: %v", err)
	}
	if _, err := rpc.Call(ctx, anon, leader.d.rpcAddr(), mClusterHA.Method, controller.HARequest{Armed: false}); !errors.Is(err, model.ErrForbidden) {
		t.Fatalf("disarm without a certificate: %v", err)
	}
	// Raft takes no peer without a certificate of the cluster: the
	// crafted AppendEntries of the review cannot even be sent. (In TLS 1.3
	// the server's verdict on the client arrives after the client's
	// handshake: the first read returns it.)
	if c, err := tls.Dial("tcp", leader.d.raftAddr(), &tls.Config{InsecureSkipVerify: true, MinVersion: tls.VersionTLS13}); err == nil {
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		_, rerr := c.Read(make([]byte, 1))
		c.Close()
		if rerr == nil || !strings.Contains(rerr.Error(), "certificate") {
			t.Fatalf("raft port took a peer without a certificate: %v", rerr)
		}
	}
	plain := rpc.NewClient(nil)
	if _, err := rpc.Call(ctx, plain, leader.d.rpcAddr(), mBootstrapView, struct{}{}); !errors.Is(err, model.ErrUnavailable) {
		t.Fatalf("plaintext call: %v", err)
	}
	other, _, err := identity.Init(filepath.Join(t.TempDir(), "identity"), h2.cfg.Name, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	foreign := rpc.NewClient(other.ClientTLS())
	if _, err := rpc.Call(ctx, foreign, leader.d.rpcAddr(), mBootstrapView, struct{}{}); !errors.Is(err, model.ErrUnavailable) {
		t.Fatalf("call with another cluster's certificate for h2: %v", err)
	}

	// A member speaks for itself only.
	var speaker *testHost
	for _, h := range tc.running() {
		if h != leader {
			speaker = h
		}
	}
	victim := h1
	if victim == speaker {
		victim = h3
	}
	addr := leader.d.rpcAddr()
	if _, err := rpc.Call(ctx, speaker.d.rpcCli, addr, mLeaseRenew.Method, controller.LeaseRequest{Host: victim.cfg.Name, Stopping: true}); !errors.Is(err, model.ErrForbidden) {
		t.Fatalf("%s renewed %s's lease: %v", speaker.cfg.Name, victim.cfg.Name, err)
	}
	if _, err := rpc.Call(ctx, speaker.d.rpcCli, addr, mVMReport.Method, raftlog.ReportVMs{Host: victim.cfg.Name, Time: time.Now()}); !errors.Is(err, model.ErrForbidden) {
		t.Fatalf("%s reported for %s: %v", speaker.cfg.Name, victim.cfg.Name, err)
	}
	if _, err := rpc.Call(ctx, speaker.d.rpcCli, addr, mLeaseRenew.Method, controller.LeaseRequest{Host: speaker.cfg.Name}); err != nil {
		t.Fatalf("%s renewing its own lease: %v", speaker.cfg.Name, err)
	}
	if h, _ := leader.d.store.Host(victim.cfg.Name); !h.StoppedAt.IsZero() {
		t.Fatal("a refused renewal changed state")
	}
	// Raft connections are bound to names: the configuration for the
	// victim's Raft address accepts the victim and no other member.
	conf := leader.d.raftDialTLS(victim.d.raftAddr())
	if conf == nil {
		t.Fatal("no name binding for a registered Raft address")
	}
	if err := handshake(ctx, victim.d.raftAddr(), conf); err != nil {
		t.Fatalf("raft dial to %s: %v", victim.cfg.Name, err)
	}
	if err := handshake(ctx, speaker.d.raftAddr(), conf); err == nil || !strings.Contains(err.Error(), "expected") {
		t.Fatalf("raft dial to %s accepted as %s: %v", speaker.cfg.Name, victim.cfg.Name, err)
	}

	// The rogue host has the gossip key (say, stolen) and a certificate of
	// its own CA: it joins gossip, but the leader never registers it.
	if _, _, err := identity.Init(rogue.cfg.IdentityDir(), rogue.cfg.Name, time.Now()); err != nil {
		t.Fatal(err)
	}
	keys := []byte(nil)
	if keys, err = os.ReadFile(filepath.Join(h1.cfg.IdentityDir(), identity.KeysFile)); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(rogue.cfg.IdentityDir(), identity.KeysFile), keys, 0o600); err != nil {
		t.Fatal(err)
	}
	rogue.start()
	testutil.Eventually(t, 15*time.Second, func() error {
		for _, m := range leader.d.members.Members() {
			if m.Name == rogue.cfg.Name && m.State == membership.Alive {
				return nil
			}
		}
		return errors.New("rogue not in gossip yet")
	})
	// A reconcile pass that starts after the rogue is in gossip sees it:
	// make one observable by changing h3's gossip metadata, which only a
	// pass writes into state.
	h3.d.members.UpdateMeta(func(m *membership.Meta) { m.Version = "after-rogue" })
	testutil.Eventually(t, 15*time.Second, func() error {
		if h, _ := leader.d.store.Host(h3.cfg.Name); h.Version != "after-rogue" {
			return errors.New("h3's new metadata not registered yet")
		}
		return nil
	})
	if _, err := leader.d.store.Host(rogue.cfg.Name); err == nil {
		t.Fatal("rogue host registered")
	}
	servers, err := leader.d.store.Servers()
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range servers {
		if s.ID == rogue.cfg.Name {
			t.Fatal("rogue host has a Raft seat")
		}
	}
	if err := leader.d.verifyHost(ctx, rogue.cfg.Name, rogue.d.rpcAddr(), rogue.d.raftAddr()); err == nil {
		t.Fatal("rogue host verified")
	}
}

// TestCertRenewal: with certificates that live seconds, every host renews
// its own again and again (from the leader, or itself when it leads) and
// the cluster keeps working over connections made with renewed ones.
func TestCertRenewal(t *testing.T) {
	tc, _ := runSecured(t, 3)
	serials := map[string]map[string]bool{}
	for _, h := range tc.hosts {
		h.d.id.SetLifetime(3 * time.Second)
		serials[h.cfg.Name] = map[string]bool{h.d.id.Leaf().SerialNumber.String(): true}
	}
	// The first renewal is forced (a year-long certificate is not due);
	// the 3 s certificates it brings are due after 2 s, and so on.
	for _, h := range tc.hosts {
		if err := h.d.renewCert(ctxT(t)); err != nil {
			t.Fatalf("%s: %v", h.cfg.Name, err)
		}
	}
	testutil.Eventually(t, 30*time.Second, func() error {
		for _, h := range tc.hosts {
			serials[h.cfg.Name][h.d.id.Leaf().SerialNumber.String()] = true
			if n := len(serials[h.cfg.Name]); n < 4 {
				return fmt.Errorf("%s has had %d certificates", h.cfg.Name, n)
			}
		}
		return nil
	})
	// New connections, made with renewed certificates, work.
	for _, h := range tc.hosts {
		fresh := rpc.NewClient(h.d.id.ClientTLS())
		for _, o := range tc.hosts {
			if _, err := rpc.Call(ctxT(t), fresh, o.d.rpcAddr(), mBootstrapView, struct{}{}); err != nil {
				t.Fatalf("%s -> %s: %v", h.cfg.Name, o.cfg.Name, err)
			}
		}
	}
	tc.waitConverged(3, 0)
}

// TestRemoveHost: a stopped, empty host is removed from state and Raft and
// its certificate is refused from then on; live hosts and the leader are
// not removed; the name joins again with a new token.
func TestRemoveHost(t *testing.T) {
	tc, st := runSecured(t, 4)
	leader := tc.host(st.Leader)
	// The one to remove: a host that is not the leader.
	var gone *testHost
	for _, h := range tc.hosts {
		if h != leader && h.cfg.Name != "h1" {
			gone = h
		}
	}
	if err := leader.client.RemoveHost(ctxT(t), gone.cfg.Name, false); !errors.Is(err, api.ErrConflict) || !strings.Contains(err.Error(), "alive") {
		t.Fatalf("removing a live host: %v", err)
	}
	if err := leader.client.RemoveHost(ctxT(t), leader.cfg.Name, false); !errors.Is(err, api.ErrConflict) {
		t.Fatalf("removing the leader: %v", err)
	}
	oldID := gone.d.id
	gone.stop()
	testutil.Eventually(t, 15*time.Second, func() error {
		for _, m := range leader.d.members.Members() {
			if m.Name == gone.cfg.Name && m.State == membership.Alive {
				return errors.New("still alive in gossip")
			}
		}
		return nil
	})
	var other *testHost
	for _, h := range tc.running() {
		if h != leader {
			other = h
		}
	}
	if err := other.client.RemoveHost(ctxT(t), gone.cfg.Name, false); err != nil {
		t.Fatal(err)
	}
	if _, err := other.d.store.Host(gone.cfg.Name); !errors.Is(err, model.ErrNotFound) {
		t.Fatalf("removed host still in state on %s: %v", other.cfg.Name, err)
	}
	servers, err := leader.d.store.Servers()
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range servers {
		if s.ID == gone.cfg.Name {
			t.Fatal("removed host still in the Raft configuration")
		}
	}
	// Its certificate opens nothing any more.
	old := rpc.NewClient(oldID.ClientTLS())
	if _, err := rpc.Call(ctxT(t), old, leader.d.rpcAddr(), mBootstrapView, struct{}{}); !errors.Is(err, model.ErrUnavailable) {
		t.Fatalf("removed host's certificate: %v", err)
	}
	if err := leader.d.verifyHost(ctxT(t), gone.cfg.Name, other.d.rpcAddr(), other.d.raftAddr()); err == nil {
		t.Fatal("verifyHost accepted a wrong host")
	}
	// It comes back as a new host with a new token.
	tok, err := leader.client.CreateJoinToken(ctxT(t), api.JoinTokenCreateRequest{TTL: "10m", Description: "rejoin"})
	if err != nil {
		t.Fatal(err)
	}
	if err := os.RemoveAll(gone.cfg.IdentityDir()); err != nil {
		t.Fatal(err)
	}
	if err := os.RemoveAll(filepath.Join(gone.cfg.DataDir, "raft")); err != nil {
		t.Fatal(err)
	}
	gone.cfg.JoinToken = tok.Token
	gone.start()
	tc.waitConverged(3, 1)
}

// TestGossipKeyRotation: rotating the gossip key reaches every live host in
// three steps without a member ever dropping out; a host that restarts
// afterwards gossips with the new key from its identity, and one that was
// down during the rotation catches up through Raft.
func TestGossipKeyRotation(t *testing.T) {
	tc, st := runSecured(t, 4)
	before := keyFingerprints(tc.hosts[0].d.members.Keys())
	// h4 is down for the rotation.
	late := tc.hosts[3]
	if late.cfg.Name == st.Leader {
		t.Fatal("h4 leads")
	}
	late.stop()
	testutil.Eventually(t, 15*time.Second, func() error {
		if m, ok := tc.hosts[0].d.members.Member(late.cfg.Name); ok && m.State == membership.Alive {
			return errors.New("h4 still alive in gossip")
		}
		return nil
	})
	r, err := tc.hosts[1].client.RotateGossipKey(ctxT(t))
	if err != nil {
		t.Fatal(err)
	}
	if len(r.Hosts) != 3 || r.Key == before[0] {
		t.Fatalf("rotation %+v (old key %s)", r, before[0])
	}
	for _, h := range tc.hosts[:3] {
		if got := keyFingerprints(h.d.members.Keys()); len(got) != 1 || got[0] != r.Key {
			t.Fatalf("%s keyring %v, want [%s]", h.cfg.Name, got, r.Key)
		}
		id, err := identity.Load(h.cfg.IdentityDir(), h.cfg.Name)
		if err != nil || keyFingerprints(id.GossipKeys())[0] != r.Key {
			t.Fatalf("%s: keyring on disk: %v", h.cfg.Name, err)
		}
	}
	// A restart gossips with the key on disk.
	tc.hosts[2].stop()
	tc.hosts[2].start()
	// h4 returns with the old key only: Raft brings it the new one.
	late.start()
	tc.waitConverged(3, 1)
	if got := keyFingerprints(late.d.members.Keys()); len(got) != 1 || got[0] != r.Key {
		t.Fatalf("h4 keyring %v, want [%s]", got, r.Key)
	}
}

package daemon

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/corralhq/corral/api"
	"github.com/corralhq/corral/api/client"
	"github.com/corralhq/corral/daemon/identity"
	"github.com/corralhq/corral/internal/testutil"
	"github.com/corralhq/corral/model"
)

// lockedBuffer collects log records from several daemons.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// apiCluster starts three daemons, each with the HTTPS API on its own
// 127.0.0.x, waits for the cluster protocol that has API tokens, and
// returns the remote URL and pinned fingerprint of each host.
func apiCluster(t *testing.T, logs *lockedBuffer) (tc *testCluster, urls, fps []string) {
	tc = newTestCluster(t, 3, []int{0, 1, 2}, func(i int, c *Config) {
		c.APIAddr = net.JoinHostPort(c.BindAddr, fmt.Sprint(testutil.FreePort(t, c.BindAddr)))
	})
	for _, h := range tc.hosts {
		h.logs = logs
	}
	tc.startAll()
	tc.waitConverged(3, 0)
	ctx := ctxT(t)
	for _, h := range tc.hosts {
		testutil.Eventually(t, 10*time.Second, func() error {
			s, err := h.client.Status(ctx)
			if err != nil || s.Protocol != s.ThisProtocol {
				return fmt.Errorf("%s: cluster protocol %d, this %d, %v", h.cfg.Name, s.Protocol, s.ThisProtocol, err)
			}
			if s.API != "https://"+h.cfg.APIAddr || !model.IsLowerHex(s.APIFingerprint, 64) {
				return fmt.Errorf("%s: status names API %q fingerprint %q", h.cfg.Name, s.API, s.APIFingerprint)
			}
			urls, fps = append(urls, s.API), append(fps, s.APIFingerprint)
			return nil
		})
	}
	return tc, urls, fps
}

// The HTTPS API over real TLS on three daemons: no token and a bad token
// are 401 on every host, a viewer's write is 403 and changes nothing, an
// operator's create through a follower runs and its event names the
// token, only admins see tokens, a revocation is refused on all three
// hosts within 1 s, an expired token is refused, TLS below 1.2 and a
// wrong pinned fingerprint fail, and no secret reaches a log.
func TestHTTPSAPITokens(t *testing.T) {
	logs := &lockedBuffer{}
	tc, urls, fps := apiCluster(t, logs)
	ctx := ctxT(t)
	root := tc.hosts[0].client
	if _, err := root.ImportImage(ctx, "base", bytes.NewReader(qcow2(64<<20)), 1024); err != nil {
		t.Fatal(err)
	}
	secrets := map[string]string{}
	for _, req := range []api.APITokenCreateRequest{
		{Name: "ops", Role: "admin", Expires: "90d"}, {Name: "watch", Role: "viewer"},
		{Name: "ci", Role: "operator", Expires: "1h"}, {Name: "brief", Role: "viewer", Expires: "3s"},
	} {
		created, err := tc.hosts[1].client.CreateAPIToken(ctx, req)
		if err != nil {
			t.Fatalf("create %s: %v", req.Name, err)
		}
		if !model.ValidAPISecret(created.Token) || created.Role != req.Role {
			t.Fatalf("created %+v", created.APIToken)
		}
		secrets[req.Name] = created.Token
	}
	if _, err := root.CreateAPIToken(ctx, api.APITokenCreateRequest{Name: "ops", Role: "viewer"}); !errors.Is(err, api.ErrConflict) {
		t.Fatalf("a second token named ops: %v", err)
	}
	if _, err := root.CreateAPIToken(ctx, api.APITokenCreateRequest{Name: "x", Role: "superuser"}); !errors.Is(err, api.ErrInvalid) {
		t.Fatalf("role superuser: %v", err)
	}
	remote := func(i int, name string) *client.Client { return client.NewRemote(urls[i], secrets[name], fps[i]) }
	// Every host takes the tokens once it has applied them (the last one
	// made implies the others: entries apply in order).
	for i := range tc.hosts {
		testutil.Eventually(t, time.Second, func() error {
			_, err := remote(i, "brief").Status(ctx)
			return err
		})
	}

	for i := range tc.hosts {
		for _, c := range []*client.Client{
			client.NewRemote(urls[i], "", fps[i]),
			client.NewRemote(urls[i], model.APITokenPrefix+strings.Repeat("0", 64), fps[i]),
			client.NewRemote(urls[i], "not-a-token", fps[i]),
		} {
			if _, err := c.Status(ctx); !errors.Is(err, api.ErrUnauthenticated) {
				t.Fatalf("host %d without a live token: %v", i, err)
			}
		}
		if _, err := remote(i, "watch").Status(ctx); err != nil {
			t.Fatalf("viewer status on host %d: %v", i, err)
		}
	}

	// A viewer may read, not write: 403 naming what was missing, and no VM.
	spec := api.VMSpec{VCPUs: 1, MemoryMiB: 256, Disks: []api.Disk{{Image: "base"}}}
	_, err := remote(2, "watch").CreateVM(ctx, api.VMCreateRequest{Name: "v1", Spec: spec})
	if !errors.Is(err, api.ErrForbidden) || !strings.Contains(err.Error(), "token watch") || !strings.Contains(err.Error(), "operator") {
		t.Fatalf("viewer create: %v", err)
	}
	if _, err := root.VM(ctx, "v1"); !errors.Is(err, api.ErrNotFound) {
		t.Fatalf("after a refused create: %v", err)
	}
	if _, err := remote(0, "ci").APITokens(ctx); !errors.Is(err, api.ErrForbidden) {
		t.Fatalf("operator lists tokens: %v", err)
	}
	list, err := remote(0, "ops").APITokens(ctx)
	if err != nil || len(list) != 4 {
		t.Fatalf("admin lists tokens: %v %v", list, err)
	}

	if who, err := remote(1, "ci").Whoami(ctx); err != nil || who.Actor != "token ci" || who.Role != "operator" || !strings.HasPrefix(who.Source, "api@h2 from ") {
		t.Fatalf("whoami: %+v %v", who, err)
	}
	// An operator creates through every host; the event names its token.
	leader := tc.leader()
	for i, h := range tc.hosts {
		name := fmt.Sprintf("op%d", i)
		if _, err := remote(i, "ci").CreateVM(ctx, api.VMCreateRequest{Name: name, Spec: spec}); err != nil {
			t.Fatalf("operator create through %s (leader %s): %v", h.cfg.Name, leader.cfg.Name, err)
		}
		testutil.Eventually(t, 10*time.Second, func() error {
			evs, err := root.Events(ctx, 0, 0, 0)
			if err != nil {
				return err
			}
			for _, e := range evs {
				if e.Kind == "created" && e.VM == name {
					if e.Actor != "token ci" || !strings.HasPrefix(e.Source, "api@"+h.cfg.Name+" from 127.0.0.1:") || e.RequestID == "" {
						return fmt.Errorf("created event of %s: actor %q source %q request %q", name, e.Actor, e.Source, e.RequestID)
					}
					return nil
				}
			}
			return fmt.Errorf("no created event for %s", name)
		})
	}

	// Revoke through one host: all three refuse within 1 s.
	begin := time.Now()
	if err := remote(0, "ops").RevokeAPIToken(ctx, "watch"); err != nil {
		t.Fatal(err)
	}
	refused := map[int]time.Duration{}
	for len(refused) < len(tc.hosts) && time.Since(begin) < 5*time.Second {
		for i := range tc.hosts {
			if _, done := refused[i]; done {
				continue
			}
			if _, err := remote(i, "watch").Status(ctx); errors.Is(err, api.ErrUnauthenticated) {
				refused[i] = time.Since(begin)
			}
		}
	}
	for i := range tc.hosts {
		took, ok := refused[i]
		if !ok || took > time.Second {
			t.Fatalf("revoked token on host %d: refused after %v (refused: %v)", i, took, ok)
		}
		t.Logf("revoked token refused by %s %v after the revoke was sent", tc.hosts[i].cfg.Name, took.Round(time.Millisecond))
	}
	if err := root.RevokeAPIToken(ctx, "watch"); !errors.Is(err, api.ErrNotFound) {
		t.Fatalf("revoke twice: %v", err)
	}

	// A token past its expiry is refused, saying so.
	testutil.Eventually(t, 10*time.Second, func() error {
		_, err := remote(1, "brief").Status(ctx)
		if !errors.Is(err, api.ErrUnauthenticated) || !strings.Contains(err.Error(), "expired") {
			return fmt.Errorf("brief token after 3 s: %v", err)
		}
		return nil
	})

	// TLS below 1.2 is refused; a certificate other than the pinned one
	// fails before any request is sent.
	host := strings.TrimPrefix(urls[0], "https://")
	if c, err := tls.Dial("tcp", host, &tls.Config{InsecureSkipVerify: true, MaxVersion: tls.VersionTLS11}); err == nil {
		c.Close()
		t.Fatal("a TLS 1.1 handshake succeeded")
	}
	if _, err := client.NewRemote(urls[0], secrets["ops"], fps[1]).Status(ctx); err == nil || !strings.Contains(err.Error(), "fingerprint") {
		t.Fatalf("host 0 with host 1's pinned fingerprint: %v", err)
	}
	if fp, err := client.FetchFingerprint(ctx, urls[2]); err != nil || fp != fps[2] {
		t.Fatalf("fetched fingerprint %q, status says %q: %v", fp, fps[2], err)
	}

	// Not a secret, nor its hash, in any log or event.
	evs, err := root.Events(ctx, 0, 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	var evText strings.Builder
	for _, e := range evs {
		fmt.Fprintf(&evText, "%+v\n", e)
	}
	text := logs.String()
	if !strings.Contains(text, "API token created") {
		t.Fatal("the logs hold no token creation: the check below would prove nothing")
	}
	for name, s := range secrets {
		for _, leak := range []string{s, s[len(model.APITokenPrefix):], model.APITokenHash(s)} {
			if strings.Contains(text, leak) || strings.Contains(evText.String(), leak) {
				t.Fatalf("token %s's secret or hash is in the logs or events", name)
			}
		}
	}
}

// leader returns the host that leads now.
func (tc *testCluster) leader() *testHost {
	st, err := tc.hosts[0].client.Status(context.Background())
	if err == nil {
		for _, h := range tc.hosts {
			if h.cfg.Name == st.Leader {
				return h
			}
		}
	}
	return tc.hosts[0]
}

func TestParseLifetime(t *testing.T) {
	for in, want := range map[string]time.Duration{"90d": 90 * 24 * time.Hour, "12h": 12 * time.Hour, "1s": time.Second, "3650d": maxAPITokenLifetime} {
		if got, err := parseLifetime(in); err != nil || got != want {
			t.Errorf("%q: %v %v, want %v", in, got, err, want)
		}
	}
	for _, in := range []string{"", "0s", "-1h", "d", "1.5d", "3651d", "99999999999999d", "10y"} {
		if got, err := parseLifetime(in); !errors.Is(err, model.ErrInvalid) {
			t.Errorf("%q: %v %v, want invalid", in, got, err)
		}
	}
}

// Projects over real HTTPS: an operator of project a sees and touches only
// a's VMs (b's are not found), creates in a whatever it asks, is held to
// a's quota with an error naming it, uses the default project's image,
// and may not reach hosts; a project holding VMs cannot be removed.
func TestHTTPSProjects(t *testing.T) {
	tc, urls, fps := apiCluster(t, &lockedBuffer{})
	ctx := ctxT(t)
	root := tc.hosts[0].client
	if _, err := root.ImportImage(ctx, "base", bytes.NewReader(qcow2(64<<20)), 1024); err != nil {
		t.Fatal(err)
	}
	for _, p := range []api.ProjectCreateRequest{{Name: "a", Quota: api.Quota{VCPUs: 2, VMs: 5}}, {Name: "b"}} {
		if _, err := root.CreateProject(ctx, p); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := root.CreateProject(ctx, api.ProjectCreateRequest{Name: "a"}); !errors.Is(err, api.ErrConflict) {
		t.Fatalf("project a twice: %v", err)
	}
	clients := map[string]*client.Client{}
	for i, name := range []string{"a", "b"} {
		created, err := root.CreateAPIToken(ctx, api.APITokenCreateRequest{Name: "op-" + name, Role: "operator", Project: name})
		if err != nil {
			t.Fatal(err)
		}
		clients[name] = client.NewRemote(urls[i+1], created.Token, fps[i+1])
	}
	if _, err := root.CreateAPIToken(ctx, api.APITokenCreateRequest{Name: "adm-a", Role: "admin", Project: "a"}); !errors.Is(err, api.ErrInvalid) {
		t.Fatalf("an admin token of one project: %v", err)
	}
	a, b := clients["a"], clients["b"]
	for _, c := range clients { // taken once applied where they are used
		testutil.Eventually(t, time.Second, func() error { _, err := c.Whoami(ctx); return err })
	}
	if who, err := a.Whoami(ctx); err != nil || who.Project != "a" {
		t.Fatalf("whoami: %+v %v", who, err)
	}
	spec := api.VMSpec{VCPUs: 1, MemoryMiB: 256, Disks: []api.Disk{{Image: "base"}}}
	if v, err := a.CreateVM(ctx, api.VMCreateRequest{Name: "va1", Spec: spec}); err != nil || v.Project != "a" {
		t.Fatalf("create in a: %+v %v", v, err)
	}
	if v, err := b.CreateVM(ctx, api.VMCreateRequest{Name: "vb1", Spec: spec}); err != nil || v.Project != "b" {
		t.Fatalf("create in b: %+v %v", v, err)
	}
	vms, err := a.VMs(ctx)
	if err != nil || len(vms) != 1 || vms[0].Name != "va1" {
		t.Fatalf("a lists %v %v", vms, err)
	}
	if _, err := a.VM(ctx, "vb1"); !errors.Is(err, api.ErrNotFound) {
		t.Fatalf("a reads b's VM: %v", err)
	}
	if _, err := a.DeleteVM(ctx, "vb1", true); !errors.Is(err, api.ErrNotFound) {
		t.Fatalf("a deletes b's VM: %v", err)
	}
	if _, err := a.StopVM(ctx, "vb1"); !errors.Is(err, api.ErrNotFound) {
		t.Fatalf("a stops b's VM: %v", err)
	}
	if v, err := root.VM(ctx, "vb1"); err != nil || v.Desired != "running" {
		t.Fatalf("b's VM after a's attempts: %+v %v", v, err)
	}
	if _, err := a.CreateVM(ctx, api.VMCreateRequest{Name: "vx", Spec: spec, Project: "b"}); !errors.Is(err, api.ErrForbidden) {
		t.Fatalf("a creates in b: %v", err)
	}
	// Past a's quota: 1 in use, 2 more asked, limit 2.
	big := spec
	big.VCPUs = 2
	_, err = a.CreateVM(ctx, api.VMCreateRequest{Name: "va2", Spec: big})
	if !errors.Is(err, api.ErrQuotaExceeded) || !strings.Contains(err.Error(), "quota vcpus exceeded: limit 2, in use 1") {
		t.Fatalf("past the quota: %v", err)
	}
	if _, err := root.VM(ctx, "va2"); !errors.Is(err, api.ErrNotFound) {
		t.Fatalf("a refused create left a VM: %v", err)
	}
	if _, err := a.Hosts(ctx); !errors.Is(err, api.ErrForbidden) || !strings.Contains(err.Error(), "confined to project a") {
		t.Fatalf("a lists hosts: %v", err)
	}
	ps, err := a.Projects(ctx)
	if err != nil || len(ps) != 1 || ps[0].Name != "a" || ps[0].Usage.VCPUs != 1 || ps[0].Usage.VMs != 1 || ps[0].Quota.VCPUs != 2 {
		t.Fatalf("a's projects: %+v %v", ps, err)
	}
	evs, err := a.Events(ctx, 0, 0, 0)
	if err != nil || len(evs) == 0 {
		t.Fatalf("a's events: %v %v", evs, err)
	}
	for _, e := range evs {
		if e.VM != "va1" {
			t.Fatalf("a sees event %+v", e)
		}
	}
	if err := root.DeleteProject(ctx, "a"); !errors.Is(err, api.ErrConflict) {
		t.Fatalf("remove a project holding a VM: %v", err)
	}
	all, err := root.VMs(ctx)
	if err != nil || len(all) != 2 {
		t.Fatalf("root lists %v %v", all, err)
	}
}

// A client certificate the cluster CA signed through the API is a way in
// with its recorded role; a host's own certificate is not, and a revoked
// certificate is refused.
func TestHTTPSClientCertificate(t *testing.T) {
	tc, first := securedCluster(t, 3)
	for i, h := range tc.hosts {
		if i > 0 {
			h.cfg.JoinToken = first
		}
		h.cfg.APIAddr = net.JoinHostPort(h.cfg.BindAddr, fmt.Sprint(testutil.FreePort(t, h.cfg.BindAddr)))
	}
	tc.startAll()
	tc.waitConverged(3, 0)
	ctx := ctxT(t)
	root := tc.hosts[0].client
	var st api.Status
	testutil.Eventually(t, 10*time.Second, func() error {
		var err error
		st, err = tc.hosts[2].client.Status(ctx)
		if err != nil || st.Protocol != st.ThisProtocol {
			return fmt.Errorf("protocol %d of %d: %v", st.Protocol, st.ThisProtocol, err)
		}
		return nil
	})
	key, _ := identity.NewKey()
	csr, err := identity.UserCSR(key, "alice")
	if err != nil {
		t.Fatal(err)
	}
	created, err := root.CreateCertificate(ctx, api.CertificateCreateRequest{Name: "alice", Role: "viewer", Expires: "30d", CSR: string(csr)})
	if err != nil {
		t.Fatal(err)
	}
	if created.Kind != "certificate" || !model.IsLowerHex(created.Fingerprint, 64) {
		t.Fatalf("created %+v", created.APIToken)
	}
	kp, _ := identity.KeyPEM(key)
	cert, err := tls.X509KeyPair([]byte(created.Certificate), kp)
	if err != nil {
		t.Fatal(err)
	}
	alice := client.NewRemote(st.API, "", st.APIFingerprint)
	alice.Certificate = &cert
	// h3 takes it once it has applied the record (this went through h1).
	testutil.Eventually(t, time.Second, func() error {
		who, err := alice.Whoami(ctx)
		if err != nil || who.Actor != "certificate alice" || who.Role != "viewer" {
			return fmt.Errorf("whoami: %+v %v", who, err)
		}
		return nil
	})
	if _, err := alice.CreateProject(ctx, api.ProjectCreateRequest{Name: "p"}); !errors.Is(err, api.ErrForbidden) {
		t.Fatalf("viewer creates a project: %v", err)
	}
	// A browser presents a certificate to any page that calls: a change
	// another site's page sends is refused before anything else.
	hc := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true, Certificates: []tls.Certificate{cert}}}}
	for _, c := range []struct {
		headers map[string]string
		want    string
	}{
		{map[string]string{"Sec-Fetch-Site": "cross-site", "Origin": "https://evil.example"}, "cross-origin request refused"},
		{map[string]string{"Origin": "https://evil.example"}, "cross-origin request refused"},
		{map[string]string{"Sec-Fetch-Site": "same-origin"}, "viewer"}, // the portal's own page: on to the role check
	} {
		req, _ := http.NewRequest("POST", st.API+"/v1/projects", strings.NewReader(`{"name":"p"}`))
		req.Header.Set("Content-Type", "application/json")
		for k, v := range c.headers {
			req.Header.Set(k, v)
		}
		resp, err := hc.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusForbidden || !strings.Contains(string(body), c.want) {
			t.Fatalf("POST with %v: %d %s", c.headers, resp.StatusCode, body)
		}
	}
	// A host's certificate is from the same CA but no credential.
	hostCert, err := tls.LoadX509KeyPair(filepath.Join(tc.hosts[1].cfg.IdentityDir(), "host.crt"), filepath.Join(tc.hosts[1].cfg.IdentityDir(), "host.key"))
	if err != nil {
		t.Fatal(err)
	}
	asHost := client.NewRemote(st.API, "", st.APIFingerprint)
	asHost.Certificate = &hostCert
	if _, err := asHost.Status(ctx); !errors.Is(err, api.ErrUnauthenticated) {
		t.Fatalf("a host certificate on the API: %v", err)
	}
	if err := root.RevokeAPIToken(ctx, "alice"); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, time.Second, func() error {
		fresh := client.NewRemote(st.API, "", st.APIFingerprint)
		fresh.Certificate = &cert
		if _, err := fresh.Status(ctx); !errors.Is(err, api.ErrUnauthenticated) {
			return fmt.Errorf("revoked certificate: %v", err)
		}
		return nil
	})
}

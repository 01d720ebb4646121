package rpc

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"fmt"
	"math/big"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/corralhq/corral/model"
)

// testPKI issues host certificates from a CA made for the test.
type testPKI struct {
	ca   *x509.Certificate
	key  *ecdsa.PrivateKey
	pool *x509.CertPool
}

func newTestPKI(t *testing.T) *testPKI {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "test ca"}, IsCA: true,
		BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign, NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	ca, _ := x509.ParseCertificate(der)
	pool := x509.NewCertPool()
	pool.AddCert(ca)
	return &testPKI{ca: ca, key: key, pool: pool}
}

func (p *testPKI) cert(t *testing.T, name string) tls.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: name},
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		KeyUsage:    x509.KeyUsageDigitalSignature, NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, p.ca, &key.PublicKey, p.key)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}

func (p *testPKI) server(t *testing.T, name string) *tls.Config {
	return &tls.Config{Certificates: []tls.Certificate{p.cert(t, name)}, ClientAuth: tls.VerifyClientCertIfGiven, ClientCAs: p.pool, MinVersion: tls.VersionTLS13}
}

func (p *testPKI) client(t *testing.T, name string) *tls.Config {
	c := &tls.Config{InsecureSkipVerify: true, MinVersion: tls.VersionTLS13}
	if name != "" {
		c.Certificates = []tls.Certificate{p.cert(t, name)}
	}
	return c
}

func serve(t *testing.T, s *Server) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { s.Serve(ctx, ln); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	return ln.Addr().String()
}

// TestRelayCarriesACallWithTheCallersIdentity: a call through a relay
// reaches the leader the relay resolves, which sees the caller's own
// certificate (the TLS session runs end to end through the tunnel). The
// relay opens tunnels only for hosts of the cluster, only to what its
// resolver names, and only when relaying is on.
func TestRelayCarriesACallWithTheCallersIdentity(t *testing.T) {
	pki := newTestPKI(t)
	who := Method[struct{}, string]{Name: "t.who"}
	leader := NewServer(pki.server(t, "c"), nil)
	Register(leader, who, func(ctx context.Context, _ struct{}) (string, error) {
		name, _ := Peer(ctx)
		return name, nil
	})
	leaderAddr := serve(t, leader)
	relay := NewServer(pki.server(t, "b"), nil)
	relay.SetRelay(func(target string) (string, error) {
		if target != RelayLeader {
			return "", fmt.Errorf("only the leader: %w", model.ErrForbidden)
		}
		return leaderAddr, nil
	})
	relayAddr := serve(t, relay)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	a := NewClient(pki.client(t, "a"))
	for range 3 { // a tunnel per call
		got, err := CallVia(ctx, a, relayAddr, RelayLeader, who, struct{}{})
		if err != nil || got != "a" {
			t.Fatalf("through the relay: %q, %v; want the caller's name a", got, err)
		}
	}
	// A refused tunnel is a failed call, as a failed dial is; the
	// relay's reason is in the message.
	if _, err := CallVia(ctx, a, relayAddr, leaderAddr, who, struct{}{}); err == nil || !strings.Contains(err.Error(), "only the leader") {
		t.Fatalf("tunnel to an address the caller names: %v, want forbidden", err)
	}
	anon := NewClient(pki.client(t, ""))
	if _, err := CallVia(ctx, anon, relayAddr, RelayLeader, who, struct{}{}); err == nil || !strings.Contains(err.Error(), "needs a host certificate") {
		t.Fatalf("tunnel for a caller without a certificate: %v, want forbidden", err)
	}
	if _, err := CallVia(ctx, a, leaderAddr, RelayLeader, who, struct{}{}); err == nil || !strings.Contains(err.Error(), "relays nothing") {
		t.Fatalf("tunnel through a host that relays nothing: %v, want not found", err)
	}
}

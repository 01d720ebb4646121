package identity

import (
	"crypto/tls"
	"crypto/x509"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func newCluster(t *testing.T, name string) (*Identity, Token) {
	t.Helper()
	id, tok, err := Init(filepath.Join(t.TempDir(), "identity"), name, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	return id, tok
}

// joinAs issues a second host's identity from ca, as the join flow does.
func joinAs(t *testing.T, ca *Identity, name string) *Identity {
	t.Helper()
	key, _ := NewKey()
	csr, err := CSR(key, name)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := ca.Sign(csr, name, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	kp, _ := KeyPEM(key)
	dir := filepath.Join(t.TempDir(), "identity")
	if err := Save(dir, Bundle{CA: ca.CAPEM, Cert: cert, Key: kp, GossipKeys: ca.GossipKeys()}); err != nil {
		t.Fatal(err)
	}
	id, err := Load(dir, name)
	if err != nil {
		t.Fatal(err)
	}
	return id
}

func TestInitLoad(t *testing.T) {
	id, tok := newCluster(t, "h1")
	if tok.CAFingerprint != id.Fingerprint() {
		t.Fatal("token does not pin the CA")
	}
	got, ok := InitToken(id.Dir)
	if !ok || got != tok {
		t.Fatalf("init token file: %v %v", got, ok)
	}
	if _, _, err := Init(id.Dir, "h1", time.Now()); err == nil {
		t.Fatal("Init overwrote an identity")
	}
	back, err := Load(id.Dir, "h1")
	if err != nil {
		t.Fatal(err)
	}
	if !back.CanSign() || len(back.GossipKeys()) != 1 || len(back.GossipKeys()[0]) != 32 {
		t.Fatal("loaded identity lacks the CA key or the gossip key")
	}
	if _, err := Load(id.Dir, "h2"); err == nil || !strings.Contains(err.Error(), `is for "h1"`) {
		t.Fatalf("a certificate for h1 loaded as h2: %v", err)
	}
	for _, f := range []string{CAKeyFile, KeyFile, KeysFile, InitTokenFile} {
		fi, err := os.Stat(filepath.Join(id.Dir, f))
		if err != nil || fi.Mode().Perm() != 0o600 {
			t.Fatalf("%s: %v %v", f, fi.Mode(), err)
		}
	}
	os.Chmod(filepath.Join(id.Dir, KeyFile), 0o644)
	if _, err := Load(id.Dir, "h1"); err == nil || !strings.Contains(err.Error(), "chmod 600") {
		t.Fatalf("a world-readable key loaded: %v", err)
	}
	if _, err := Load(t.TempDir(), "h1"); err == nil {
		t.Fatal("empty dir loaded")
	}
}

func TestSignChecksRequest(t *testing.T) {
	id, _ := newCluster(t, "h1")
	key, _ := NewKey()
	csr, _ := CSR(key, "h2")
	if _, err := id.Sign(csr, "h3", time.Now()); err == nil {
		t.Fatal("signed a request naming another host")
	}
	if _, err := id.Sign([]byte("junk"), "h2", time.Now()); err == nil {
		t.Fatal("signed junk")
	}
	bad := []byte(strings.Replace(string(csr), "A", "B", 3))
	if _, err := id.Sign(bad, "h2", time.Now()); err == nil {
		t.Fatal("signed a tampered request")
	}
}

func TestToken(t *testing.T) {
	tok := NewToken(strings.Repeat("ab", 32))
	back, err := ParseToken(tok.String())
	if err != nil || back != tok {
		t.Fatalf("round trip: %v %v", back, err)
	}
	if !SecretMatches(tok.Hash(), tok.Secret) || SecretMatches(tok.Hash(), NewToken("").Secret) {
		t.Fatal("secret check")
	}
	for _, s := range []string{"", "corral1", tok.String() + ".x", strings.Replace(tok.String(), "corral1", "corral2", 1),
		strings.ToUpper(tok.String()), "corral1." + strings.Repeat("a", 64) + ".../x.y"} {
		if _, err := ParseToken(s); err == nil {
			t.Fatalf("parsed %q", s)
		}
	}
}

// handshake runs one TLS handshake and returns the name the server saw
// and the client's and server's errors.
func handshake(t *testing.T, srv, cli *tls.Config) (peer string, clientErr, serverErr error) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	done := make(chan struct{})
	go func() {
		defer close(done)
		a, err := ln.Accept()
		if err != nil {
			serverErr = err
			return
		}
		s := tls.Server(a, srv)
		serverErr = s.Handshake()
		st := s.ConnectionState()
		peer, _ = PeerName(&st)
		s.Close()
	}()
	b, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	c := tls.Client(b, cli)
	clientErr = c.Handshake()
	if clientErr == nil {
		// TLS 1.3 clients finish before the server has checked their
		// certificate: a read surfaces the server's verdict.
		c.SetReadDeadline(time.Now().Add(2 * time.Second))
		_, _ = c.Read(make([]byte, 1))
	}
	c.Close()
	<-done
	return
}

func TestMutualTLS(t *testing.T) {
	h1, tok := newCluster(t, "h1")
	h2 := joinAs(t, h1, "h2")
	other, _ := newCluster(t, "h2")

	if peer, ce, se := handshake(t, h1.ServerTLS(true), h2.ClientTLS()); ce != nil || se != nil || peer != "h2" {
		t.Fatalf("same cluster: %v %v %q", ce, se, peer)
	}
	if _, ce, se := handshake(t, h1.ServerTLS(true), h2.ClientTLSFor("h1")); ce != nil || se != nil {
		t.Fatalf("named peer: %v %v", ce, se)
	}
	if _, ce, _ := handshake(t, h1.ServerTLS(true), h2.ClientTLSFor("h3")); ce == nil || !strings.Contains(ce.Error(), `"h1", expected "h3"`) {
		t.Fatalf("client accepted h1 as h3: %v", ce)
	}
	// A host of another cluster is refused both ways.
	if _, _, se := handshake(t, h1.ServerTLS(true), other.ClientTLS()); se == nil {
		t.Fatal("server accepted another cluster's certificate")
	}
	if _, ce, _ := handshake(t, other.ServerTLS(false), h2.ClientTLS()); ce == nil {
		t.Fatal("client accepted another cluster's certificate")
	}
	// Without a certificate: refused when required, unnamed otherwise.
	anon := &tls.Config{InsecureSkipVerify: true, MinVersion: tls.VersionTLS13}
	if _, _, se := handshake(t, h1.ServerTLS(true), anon); se == nil {
		t.Fatal("raft server accepted a peer without a certificate")
	}
	if peer, ce, se := handshake(t, h1.ServerTLS(false), anon); ce != nil || se != nil || peer != "" {
		t.Fatalf("rpc server, anonymous: %v %v %q", ce, se, peer)
	}
	// Joining pins the CA by the token's fingerprint.
	var found *x509.Certificate
	if _, ce, _ := handshake(t, h1.ServerTLS(false), JoinTLS(tok.CAFingerprint, func(c *x509.Certificate) { found = c })); ce != nil || found == nil {
		t.Fatalf("join with the right fingerprint: %v", ce)
	}
	otherTok := NewToken(other.Fingerprint())
	if _, ce, _ := handshake(t, h1.ServerTLS(false), JoinTLS(otherTok.CAFingerprint, nil)); ce == nil || !strings.Contains(ce.Error(), "fingerprint") {
		t.Fatalf("join pinned to another CA: %v", ce)
	}
}

func TestRenewal(t *testing.T) {
	h1, _ := newCluster(t, "h1")
	h1.SetLifetime(3 * time.Hour)
	h2 := joinAs(t, h1, "h2")
	leaf := h2.Leaf()
	issued, ok := Issued(leaf)
	if !ok || time.Since(issued) > time.Minute {
		t.Fatalf("issued %v %v", issued, ok)
	}
	if h2.RenewDue(issued.Add(119 * time.Minute)) {
		t.Fatal("due with two thirds of its life left")
	}
	if !h2.RenewDue(issued.Add(121 * time.Minute)) {
		t.Fatal("not due with less than a third left")
	}
	csr, err := h2.RenewalRequest()
	if err != nil {
		t.Fatal(err)
	}
	cert, err := h1.Sign(csr, "h2", time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if err := h2.Renew(cert); err != nil {
		t.Fatal(err)
	}
	if h2.Leaf().SerialNumber.Cmp(leaf.SerialNumber) == 0 {
		t.Fatal("certificate not replaced")
	}
	back, err := Load(h2.Dir, "h2")
	if err != nil || back.Leaf().SerialNumber.Cmp(h2.Leaf().SerialNumber) != 0 {
		t.Fatalf("renewed certificate not on disk: %v", err)
	}
	if _, ce, se := handshake(t, h1.ServerTLS(true), h2.ClientTLS()); ce != nil || se != nil {
		t.Fatalf("renewed certificate: %v %v", ce, se)
	}
}

func TestRevoked(t *testing.T) {
	h1, _ := newCluster(t, "h1")
	h2 := joinAs(t, h1, "h2")
	removedAt := time.Now()
	rev := func(name string, issued time.Time) bool { return name == "h2" && !issued.After(removedAt) }
	h1.SetRevoked(rev)
	if _, _, se := handshake(t, h1.ServerTLS(true), h2.ClientTLS()); se == nil || !strings.Contains(se.Error(), "revoked") {
		t.Fatalf("server accepted a revoked certificate: %v", se)
	}
	if _, ce, _ := handshake(t, h2.ServerTLS(false), h1.ClientTLS()); ce == nil || !strings.Contains(ce.Error(), "revoked") {
		t.Fatalf("client accepted a revoked certificate: %v", ce)
	}
	// The same name, joined again after its removal, is welcome.
	again := joinAs(t, h1, "h2")
	if peer, ce, se := handshake(t, h1.ServerTLS(true), again.ClientTLS()); ce != nil || se != nil || peer != "h2" {
		t.Fatalf("rejoined h2: %v %v", ce, se)
	}
}

package daemon

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"math/big"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/corralhq/corral/api"
	"github.com/corralhq/corral/daemon/rpc"
	"github.com/corralhq/corral/model"
)

// writeCA writes a CA and one host certificate for name "corral" into dir
// and returns the three paths.
func writeCA(t *testing.T, dir string) (ca, cert, key string) {
	t.Helper()
	caKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	caTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "corral test CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, KeyUsage: x509.KeyUsageCertSign, BasicConstraintsValid: true,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	caCert, _ := x509.ParseCertificate(caDER)
	hostKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	hostTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "corral host"}, DNSNames: []string{"corral"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage:    x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
	}
	hostDER, err := x509.CreateCertificate(rand.Reader, hostTmpl, caCert, &hostKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, _ := x509.MarshalECPrivateKey(hostKey)
	ca, cert, key = filepath.Join(dir, "ca.pem"), filepath.Join(dir, "host.pem"), filepath.Join(dir, "host-key.pem")
	os.WriteFile(ca, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER}), 0o600)
	os.WriteFile(cert, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: hostDER}), 0o600)
	os.WriteFile(key, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER}), 0o600)
	return ca, cert, key
}

// TestMutualTLS runs a cluster with TLS on for Raft and the cluster RPC:
// it forms, forwards writes, and refuses a client without a certificate.
func TestMutualTLS(t *testing.T) {
	ca, cert, key := writeCA(t, t.TempDir())
	tc := newTestCluster(t, 3, []int{0, 1, 2}, func(i int, c *Config) {
		c.TLSCA, c.TLSCert, c.TLSKey = ca, cert, key
	})
	tc.startAll()
	st := tc.waitConverged(3, 0)
	for _, h := range tc.hosts {
		if h.cfg.Name != st.Leader {
			if _, err := h.client.SetHostLabels(ctxT(t), st.Leader, api.HostLabelsRequest{Set: map[string]string{"tls": "on"}}); err != nil {
				t.Fatalf("forwarded write over TLS: %v", err)
			}
			break
		}
	}
	// A plaintext client cannot talk to the cluster RPC.
	plain := rpc.NewClient(nil)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	var v any
	err := plain.Call(ctx, tc.hosts[0].d.rpcAddr(), "bootstrap.view", struct{}{}, &v)
	if !errors.Is(err, model.ErrUnavailable) {
		t.Fatalf("plaintext call to a TLS host: %v", err)
	}
}

package identity

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"time"
)

// ServerTLS is the configuration of this host's cluster listeners (Raft and
// the cluster RPC). Peers that present a certificate must present one the
// cluster CA signed; requireClient refuses peers that present none (Raft).
// The cluster RPC admits certificate-less callers only to cluster.join and
// checks each method's caller itself (PeerName).
func (id *Identity) ServerTLS(requireClient bool) *tls.Config {
	auth := tls.VerifyClientCertIfGiven
	if requireClient {
		auth = tls.RequireAndVerifyClientCert
	}
	return &tls.Config{
		MinVersion: tls.VersionTLS13,
		GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) {
			return id.current(), nil
		},
		ClientCAs:  id.pool,
		ClientAuth: auth,
		VerifyConnection: func(cs tls.ConnectionState) error {
			if len(cs.VerifiedChains) == 0 {
				return nil // no certificate: the RPC server decides per method
			}
			if leaf := cs.VerifiedChains[0][0]; IsUserCert(leaf) {
				return fmt.Errorf("%q presents a user certificate, which opens the HTTPS API only, never the cluster plane", leaf.Subject.CommonName)
			}
			return id.checkRevoked(cs.VerifiedChains[0][0])
		},
	}
}

// checkRevoked refuses the certificate of a removed host.
func (id *Identity) checkRevoked(leaf *x509.Certificate) error {
	id.mu.RLock()
	revoked := id.revoked
	id.mu.RUnlock()
	if revoked == nil {
		return nil
	}
	issued, ok := Issued(leaf)
	if !ok {
		issued = leaf.NotBefore
	}
	if revoked(leaf.Subject.CommonName, issued) {
		return fmt.Errorf("certificate of host %q issued %s is revoked: the host was removed", leaf.Subject.CommonName, issued.Format(time.RFC3339))
	}
	return nil
}

// ClientTLS is the configuration this host dials peers with: it presents
// its own certificate and accepts a peer whose certificate the cluster CA
// signed for a host. Which host a connection reaches is checked by the
// caller where it matters (VerifyPeer).
func (id *Identity) ClientTLS() *tls.Config {
	return &tls.Config{
		MinVersion: tls.VersionTLS13,
		GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
			return id.current(), nil
		},
		// Verification is VerifyConnection's: the chain must end at the
		// cluster CA; host names, not DNS names, identify peers.
		InsecureSkipVerify: true,
		VerifyConnection: func(cs tls.ConnectionState) error {
			_, err := id.verifyPeer(cs)
			return err
		},
	}
}

// ClientTLSFor returns a client configuration that also requires the peer's
// certificate to be for host name.
func (id *Identity) ClientTLSFor(name string) *tls.Config {
	c := id.ClientTLS()
	c.VerifyConnection = func(cs tls.ConnectionState) error {
		got, err := id.verifyPeer(cs)
		if err != nil {
			return err
		}
		if got != name {
			return fmt.Errorf("peer presents the certificate of host %q, expected %q", got, name)
		}
		return nil
	}
	return c
}

func (id *Identity) current() *tls.Certificate {
	id.mu.RLock()
	defer id.mu.RUnlock()
	return id.cert
}

// verifyPeer checks the peer's chain against the cluster CA and returns the
// host it names.
func (id *Identity) verifyPeer(cs tls.ConnectionState) (string, error) {
	if len(cs.PeerCertificates) == 0 {
		return "", errors.New("peer presented no certificate")
	}
	inter := x509.NewCertPool()
	for _, c := range cs.PeerCertificates[1:] {
		inter.AddCert(c)
	}
	leaf := cs.PeerCertificates[0]
	if _, err := leaf.Verify(x509.VerifyOptions{Roots: id.pool, Intermediates: inter, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}); err != nil {
		return "", fmt.Errorf("peer certificate is not from this cluster's CA: %w", err)
	}
	if leaf.Subject.CommonName == "" || IsUserCert(leaf) {
		return "", errors.New("peer certificate names no host")
	}
	if err := id.checkRevoked(leaf); err != nil {
		return "", err
	}
	return leaf.Subject.CommonName, nil
}

// PeerName returns the host a verified TLS peer is: the common name of
// its certificate, which the cluster CA issued only to that host. ok is
// false for a peer without a verified certificate.
func PeerName(cs *tls.ConnectionState) (name string, ok bool) {
	if cs == nil || len(cs.VerifiedChains) == 0 || len(cs.VerifiedChains[0]) == 0 {
		return "", false
	}
	return cs.VerifiedChains[0][0].Subject.CommonName, true
}

// JoinTLS is the configuration a host without an identity dials a member
// with to join: it trusts nothing but a CA whose SHA-256 equals
// fingerprint (from the join token), which the member presents after its
// certificate. found receives that CA.
func JoinTLS(fingerprint string, found func(*x509.Certificate)) *tls.Config {
	return &tls.Config{
		MinVersion:         tls.VersionTLS13,
		InsecureSkipVerify: true, // replaced by the pinned check below
		VerifyPeerCertificate: func(raw [][]byte, _ [][]*x509.Certificate) error {
			if len(raw) < 2 {
				return errors.New("member presents no CA certificate")
			}
			var ca *x509.Certificate
			for _, r := range raw[1:] {
				c, err := x509.ParseCertificate(r)
				if err == nil && Fingerprint(c) == fingerprint {
					ca = c
				}
			}
			if ca == nil {
				return errors.New("member's CA does not match the join token's fingerprint: wrong cluster or a man in the middle")
			}
			leaf, err := x509.ParseCertificate(raw[0])
			if err != nil {
				return err
			}
			pool := x509.NewCertPool()
			pool.AddCert(ca)
			if _, err := leaf.Verify(x509.VerifyOptions{Roots: pool, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}); err != nil {
				return fmt.Errorf("member certificate: %w", err)
			}
			if found != nil {
				found(ca)
			}
			return nil
		},
	}
}

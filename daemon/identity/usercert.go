package identity

import (
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"fmt"
	"slices"
	"strings"
	"time"
)

// User certificates: a second way into the HTTPS API, beside API tokens.
// The cluster CA signs them, but they are not host certificates and must
// never pass for one: their common name is "user:NAME" (no host name has a
// colon), their organization UserOrganization, and they allow client
// authentication only. The cluster listeners refuse them (ServerTLS), and
// a dialing host refuses them as a server (verifyPeer asks for server
// authentication). Which role and project a user certificate carries is
// kept in state, by its fingerprint, as an API token's is by its hash.

// UserOrganization marks a user certificate.
const UserOrganization = "corral-user"

// UserPrefix starts a user certificate's common name.
const UserPrefix = "user:"

// IsUserCert reports whether c is a user certificate.
func IsUserCert(c *x509.Certificate) bool {
	return slices.Contains(c.Subject.Organization, UserOrganization) || strings.HasPrefix(c.Subject.CommonName, UserPrefix)
}

// UserCSR returns a PEM certificate request for user name, signed by key.
func UserCSR(key any, name string) ([]byte, error) {
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{Subject: pkix.Name{CommonName: UserPrefix + name}}, key)
	if err != nil {
		return nil, err
	}
	return pemBlock("CERTIFICATE REQUEST", der), nil
}

// SignUser issues a user certificate for name from a PEM certificate
// request signed by its own key and naming "user:NAME", valid until
// notAfter.
func (id *Identity) SignUser(csrPEM []byte, name string, now, notAfter time.Time) ([]byte, error) {
	csr, err := id.checkCSR(csrPEM)
	if err != nil {
		return nil, err
	}
	if csr.Subject.CommonName != UserPrefix+name {
		return nil, fmt.Errorf("certificate request names %q, want %q", csr.Subject.CommonName, UserPrefix+name)
	}
	tmpl := &x509.Certificate{
		SerialNumber: newSerial(),
		Subject:      pkix.Name{CommonName: UserPrefix + name, Organization: []string{UserOrganization}, SerialNumber: now.UTC().Format(time.RFC3339Nano)},
		NotBefore:    now.Add(-time.Hour),
		NotAfter:     notAfter,
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, id.CA, csr.PublicKey, id.caKey)
	if err != nil {
		return nil, err
	}
	return pemBlock("CERTIFICATE", der), nil
}

// ParseCertPEM parses one PEM certificate.
func ParseCertPEM(raw []byte) (*x509.Certificate, error) { return parseCert(raw) }

// ClientCAs is the pool the HTTPS API verifies client certificates with.
func (id *Identity) ClientCAs() *x509.CertPool { return id.pool }

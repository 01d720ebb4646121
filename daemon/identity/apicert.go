package identity

import (
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"time"
)

// Files of the HTTPS API's self-signed certificate, in the data directory.
const (
	APICertFile = "api.crt"
	APIKeyFile  = "api.key"
)

// apiCertLifetime: a self-signed certificate is trusted by its pinned
// fingerprint, not by its dates, so it lives long; replacing it (delete
// the files, restart) means every remote adds the host again.
const apiCertLifetime = 10 * 365 * 24 * time.Hour

// APICertificate returns the certificate the HTTPS API presents when no
// tls_cert is configured: the one in dir, or a new self-signed ECDSA P-256
// certificate for name and hosts (names and IP addresses), saved there
// (key 0600) so that its fingerprint stays the same across restarts.
func APICertificate(dir, name string, hosts []string, now time.Time) (tls.Certificate, error) {
	certPath, keyPath := filepath.Join(dir, APICertFile), filepath.Join(dir, APIKeyFile)
	if _, err := os.Stat(certPath); err == nil {
		if err := checkPrivate(keyPath); err != nil {
			return tls.Certificate{}, err
		}
		return LoadAPICertificate(certPath, keyPath)
	} else if !errors.Is(err, os.ErrNotExist) {
		return tls.Certificate{}, err
	}
	key, err := NewKey()
	if err != nil {
		return tls.Certificate{}, err
	}
	tmpl := &x509.Certificate{
		SerialNumber:          newSerial(),
		Subject:               pkix.Name{CommonName: "corral API " + name},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(apiCertLifetime),
		KeyUsage:              x509.KeyUsageDigitalSignature,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
	}
	for _, h := range append([]string{name}, hosts...) {
		if ip := net.ParseIP(h); ip != nil {
			if !ip.IsUnspecified() {
				tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
			}
		} else if h != "" {
			tmpl.DNSNames = append(tmpl.DNSNames, h)
		}
	}
	der, err := x509.CreateCertificate(nil, tmpl, tmpl, key.Public(), key)
	if err != nil {
		return tls.Certificate{}, err
	}
	kp, err := keyPEM(key)
	if err != nil {
		return tls.Certificate{}, err
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return tls.Certificate{}, err
	}
	// The key first: a certificate without its key would be loaded and fail.
	if err := writeFile(keyPath, kp); err != nil {
		return tls.Certificate{}, err
	}
	if err := writeFile(certPath, pemBlock("CERTIFICATE", der)); err != nil {
		return tls.Certificate{}, err
	}
	return LoadAPICertificate(certPath, keyPath)
}

// LoadAPICertificate loads a PEM certificate chain and its key, with the
// leaf parsed (tls.Certificate.Leaf) for its fingerprint.
func LoadAPICertificate(certPath, keyPath string) (tls.Certificate, error) {
	c, err := tls.LoadX509KeyPair(certPath, keyPath)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("API certificate: %w", err)
	}
	if c.Leaf == nil {
		if c.Leaf, err = x509.ParseCertificate(c.Certificate[0]); err != nil {
			return tls.Certificate{}, fmt.Errorf("API certificate %s: %w", certPath, err)
		}
	}
	return c, nil
}

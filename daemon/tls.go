package daemon

import (
	"crypto/tls"
	"crypto/x509"
	"os"
)

// tlsConfig builds the mutual-TLS configuration shared by Raft and the
// cluster RPC: every host presents its certificate and accepts only peers
// whose certificate the cluster CA signed for TLSServerName. It returns nil
// when TLS is off.
func (c *Config) tlsConfig() (*tls.Config, error) {
	if c.TLSCA == "" {
		return nil, nil
	}
	caPEM, err := os.ReadFile(c.TLSCA)
	if err != nil {
		return nil, bad("tls_ca", "%v", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(caPEM) {
		return nil, bad("tls_ca", "%s holds no PEM certificate", c.TLSCA)
	}
	if err := private(c.TLSKey, "it is this host's private key"); err != nil {
		return nil, bad("tls_key", "%v", err)
	}
	cert, err := tls.LoadX509KeyPair(c.TLSCert, c.TLSKey)
	if err != nil {
		return nil, bad("tls_cert", "%v", err)
	}
	return &tls.Config{
		MinVersion:   tls.VersionTLS13,
		Certificates: []tls.Certificate{cert},
		RootCAs:      pool,
		ClientCAs:    pool,
		ClientAuth:   tls.RequireAndVerifyClientCert,
		ServerName:   c.TLSServerName,
	}, nil
}

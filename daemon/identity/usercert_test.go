package identity

import (
	"crypto/tls"
	"net"
	"strings"
	"testing"
	"time"
)

// userCert issues a user certificate from ca, as the API does.
func userCert(t *testing.T, ca *Identity, name string) tls.Certificate {
	t.Helper()
	key, _ := NewKey()
	csr, err := UserCSR(key, name)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ca.SignUser(csr, "bob", time.Now(), time.Now().Add(time.Hour)); err == nil {
		t.Fatal("signed a request for alice as bob")
	}
	certPEM, err := ca.SignUser(csr, name, time.Now(), time.Now().Add(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	kp, _ := KeyPEM(key)
	c, err := tls.X509KeyPair(certPEM, kp)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// tryHandshake runs one TLS handshake between server and client configs
// over loopback TCP; either side's error fails it.
func tryHandshake(server, client *tls.Config) error {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	defer ln.Close()
	done := make(chan error, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			done <- err
			return
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(5 * time.Second))
		s := tls.Server(c, server)
		if err := s.Handshake(); err != nil {
			done <- err
			return
		}
		// TLS 1.3: the server learns of a refused certificate on its
		// first read.
		_, err = s.Read(make([]byte, 1))
		done <- err
	}()
	c, err := tls.Dial("tcp", ln.Addr().String(), client)
	if err != nil {
		<-done
		return err
	}
	c.SetDeadline(time.Now().Add(5 * time.Second))
	// The client's first read sees the server's refusal, if any.
	c.Write([]byte{1})
	_, rerr := c.Read(make([]byte, 1))
	c.Close()
	serr := <-done
	if serr != nil && serr.Error() != "EOF" {
		return serr
	}
	if rerr != nil && rerr.Error() != "EOF" {
		return rerr
	}
	return nil
}

// A user certificate from the cluster CA never opens the cluster plane: a
// host's listener refuses it as a client, a dialing host refuses it as a
// server; a host certificate passes both (the control).
func TestUserCertIsNoHostCert(t *testing.T) {
	ca, _ := newCluster(t, "h1")
	h2 := joinAs(t, ca, "h2")
	alice := userCert(t, ca, "alice")

	asClient := &tls.Config{InsecureSkipVerify: true, MinVersion: tls.VersionTLS13,
		GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return &alice, nil }}
	if err := tryHandshake(ca.ServerTLS(false), asClient); err == nil || !strings.Contains(err.Error(), "user certificate") {
		t.Fatalf("cluster listener took a user certificate: %v", err)
	}
	if err := tryHandshake(ca.ServerTLS(false), h2.ClientTLS()); err != nil {
		t.Fatalf("cluster listener refused a host: %v", err)
	}
	asServer := &tls.Config{Certificates: []tls.Certificate{alice}, MinVersion: tls.VersionTLS13}
	if err := tryHandshake(asServer, h2.ClientTLS()); err == nil {
		t.Fatal("a host dialed a peer presenting a user certificate")
	}
}

package raftstore

import (
	"crypto/tls"
	"fmt"
	"net"
	"time"

	"github.com/hashicorp/raft"
)

// streamLayer is raft's stream layer over TCP, wrapped in mutual TLS when
// TLS configs are given: the listener refuses a peer without a certificate
// of the cluster's CA, the dialer presents this host's.
type streamLayer struct {
	net.Listener
	advertise net.Addr
	tls       *tls.Config // client side
	dialTLS   func(addr string) *tls.Config
}

func newStreamLayer(bind string, advertise string, serverTLS, clientTLS *tls.Config, dialTLS func(string) *tls.Config) (*streamLayer, error) {
	adv, err := net.ResolveTCPAddr("tcp", advertise)
	if err != nil {
		return nil, fmt.Errorf("raft advertise address %q: %w", advertise, err)
	}
	if adv.IP == nil || adv.IP.IsUnspecified() {
		return nil, fmt.Errorf("raft advertise address %q is not a routable IP", advertise)
	}
	ln, err := net.Listen("tcp", bind)
	if err != nil {
		return nil, fmt.Errorf("raft listen %s: %w", bind, err)
	}
	if serverTLS != nil {
		ln = tls.NewListener(ln, serverTLS)
	}
	return &streamLayer{Listener: ln, advertise: adv, tls: clientTLS, dialTLS: dialTLS}, nil
}

// Addr returns the advertised address, which raft hands to peers.
func (s *streamLayer) Addr() net.Addr { return s.advertise }

// Dial implements raft.StreamLayer.
func (s *streamLayer) Dial(addr raft.ServerAddress, timeout time.Duration) (net.Conn, error) {
	d := &net.Dialer{Timeout: timeout}
	if s.tls != nil {
		conf := s.tls
		if s.dialTLS != nil {
			if c := s.dialTLS(string(addr)); c != nil {
				conf = c
			}
		}
		return tls.DialWithDialer(d, "tcp", string(addr), conf)
	}
	return d.Dial("tcp", string(addr))
}

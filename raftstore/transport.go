package raftstore

import (
	"crypto/tls"
	"fmt"
	"net"
	"time"

	"github.com/hashicorp/raft"
)

// streamLayer is raft's stream layer over TCP, wrapped in mutual TLS when a
// TLS config is given. The same config drives the cluster RPC, so switching
// TLS on is a configuration change, not a new transport.
type streamLayer struct {
	net.Listener
	advertise net.Addr
	tls       *tls.Config
}

func newStreamLayer(bind string, advertise string, tlsConf *tls.Config) (*streamLayer, error) {
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
	if tlsConf != nil {
		ln = tls.NewListener(ln, tlsConf)
	}
	return &streamLayer{Listener: ln, advertise: adv, tls: tlsConf}, nil
}

// Addr returns the advertised address, which raft hands to peers.
func (s *streamLayer) Addr() net.Addr { return s.advertise }

// Dial implements raft.StreamLayer.
func (s *streamLayer) Dial(addr raft.ServerAddress, timeout time.Duration) (net.Conn, error) {
	d := &net.Dialer{Timeout: timeout}
	if s.tls != nil {
		return tls.DialWithDialer(d, "tcp", string(addr), s.tls)
	}
	return d.Dial("tcp", string(addr))
}

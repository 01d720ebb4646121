package libvirt

import (
	"encoding/binary"
	"errors"
	"net"
	"sync"

	"github.com/digitalocean/go-libvirt/socket"
)

// maxInFlight is how many calls the driver keeps outstanding on its
// libvirtd connection: one below libvirtd's default max_client_requests
// (5). A client at that limit is no longer read by libvirtd until one of
// its calls finishes ("Client hit max requests limit"), which stalls every
// other call behind the slow ones (a guest start, a migration) and, with
// keepalive, gets the connection closed. Starting four guests at once while
// the stats poll runs reached it on every drain test. A fifth call waits
// here, in corrald, where nothing else queues behind it.
const maxInFlight = 4

// limitDialer wraps a dialer so that each connection keeps at most max
// calls in flight.
type limitDialer struct {
	socket.Dialer
	max int
}

func (d limitDialer) Dial() (net.Conn, error) {
	c, err := d.Dialer.Dial()
	if err != nil {
		return nil, err
	}
	return newLimitConn(c, d.max), nil
}

// limitConn counts libvirt RPC packets as they pass: a call written takes a
// slot (waiting for one), the reply read gives it back. Packets are a
// 4-byte big-endian length (itself included) followed by a header of six
// 4-byte words: program, version, procedure, type, serial, status.
type limitConn struct {
	net.Conn
	slots chan struct{}
	done  chan struct{}
	once  sync.Once

	wmu sync.Mutex
	w   packetScanner
	rmu sync.Mutex
	r   packetScanner
}

// errLimitClosed: the connection closed while a call waited for a slot.
var errLimitClosed = errors.New("libvirt connection closed")

func newLimitConn(c net.Conn, max int) *limitConn {
	return &limitConn{Conn: c, slots: make(chan struct{}, max), done: make(chan struct{})}
}

// RPC packet types (virNetMessageType).
const (
	pktCall  = 0
	pktReply = 1
)

// Write takes a slot for every call whose header completes in p, before
// any of p goes out: libvirtd acts on a packet only once it has all of it.
func (c *limitConn) Write(p []byte) (int, error) {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	calls := 0
	c.w.scan(p, func(typ uint32) {
		if typ == pktCall {
			calls++
		}
	})
	for range calls {
		select {
		case c.slots <- struct{}{}:
		case <-c.done:
			return 0, errLimitClosed
		}
	}
	return c.Conn.Write(p)
}

// Read gives back a slot for every reply that starts in what was read.
func (c *limitConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	c.rmu.Lock()
	c.r.scan(p[:n], func(typ uint32) {
		if typ == pktReply {
			select {
			case <-c.slots:
			default: // a reply to nothing we counted: never block the reader
			}
		}
	})
	c.rmu.Unlock()
	if err != nil {
		c.closeDone()
	}
	return n, err
}

func (c *limitConn) Close() error {
	c.closeDone()
	return c.Conn.Close()
}

func (c *limitConn) closeDone() { c.once.Do(func() { close(c.done) }) }

// packetScanner follows packet boundaries across a byte stream and reports
// each packet's type once its header is complete.
type packetScanner struct {
	head [16]byte // length, program, version, procedure: then the type
	have int      // bytes of head (and type) seen of the current packet
	rest int      // bytes of the current packet still to come after the type
	typ  [4]byte
}

func (s *packetScanner) scan(p []byte, packet func(typ uint32)) {
	for len(p) > 0 {
		if s.have < 20 {
			// Still reading length..type.
			k := min(20-s.have, len(p))
			for i := range k {
				if s.have+i < 16 {
					s.head[s.have+i] = p[i]
				} else {
					s.typ[s.have+i-16] = p[i]
				}
			}
			s.have += k
			p = p[k:]
			if s.have < 20 {
				return
			}
			size := int(binary.BigEndian.Uint32(s.head[:4]))
			packet(binary.BigEndian.Uint32(s.typ[:]))
			s.rest = max(size-20, 0)
		}
		k := min(s.rest, len(p))
		s.rest -= k
		p = p[k:]
		if s.rest == 0 {
			s.have = 0
		}
	}
}

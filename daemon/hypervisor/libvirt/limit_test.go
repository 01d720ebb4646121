package libvirt

import (
	"bytes"
	"encoding/binary"
	"io"
	"net"
	"testing"
	"time"
)

func packet(typ, serial uint32, payload int) []byte {
	var b bytes.Buffer
	for _, w := range []uint32{uint32(28 + payload), 0x20008086, 1, 7, typ, serial, 0} {
		binary.Write(&b, binary.BigEndian, w)
	}
	b.Write(make([]byte, payload))
	return b.Bytes()
}

// The scanner finds every packet's type however the stream is cut.
func TestPacketScannerAcrossChunks(t *testing.T) {
	var stream []byte
	var want []uint32
	for i := range 20 {
		typ := uint32(i % 3)
		stream = append(stream, packet(typ, uint32(i), i*37%200)...)
		want = append(want, typ)
	}
	for _, chunk := range []int{1, 3, 7, 20, 24, 64, 4096} {
		var s packetScanner
		var got []uint32
		for p := stream; len(p) > 0; {
			k := min(chunk, len(p))
			s.scan(p[:k], func(typ uint32) { got = append(got, typ) })
			p = p[k:]
		}
		if len(got) != len(want) {
			t.Fatalf("chunk %d: %d packets, want %d", chunk, len(got), len(want))
		}
		for i := range got {
			if got[i] != want[i] {
				t.Fatalf("chunk %d: packet %d type %d, want %d", chunk, i, got[i], want[i])
			}
		}
	}
}

// A call beyond the limit waits until a reply comes back, and a closed
// connection releases the waiter.
func TestLimitConnHoldsCallsAtTheLimit(t *testing.T) {
	client, server := net.Pipe()
	defer server.Close()
	c := newLimitConn(client, 2)
	go io.Copy(io.Discard, server) // the server reads whatever is sent
	for i := range 2 {
		if _, err := c.Write(packet(pktCall, uint32(i), 10)); err != nil {
			t.Fatal(err)
		}
	}
	// Events do not take a slot.
	if _, err := c.Write(packet(2, 9, 0)); err != nil {
		t.Fatal(err)
	}
	third := make(chan error, 1)
	go func() {
		_, err := c.Write(packet(pktCall, 3, 10))
		third <- err
	}()
	select {
	case err := <-third:
		t.Fatalf("third call went out with two in flight: %v", err)
	case <-time.After(100 * time.Millisecond):
	}
	// A reply arrives, read in two pieces: the waiting call goes.
	reply := packet(pktReply, 0, 5)
	go func() { server.Write(reply) }()
	buf := make([]byte, 7)
	n, _ := c.Read(buf)
	n2, _ := io.ReadFull(c, make([]byte, len(reply)-n))
	if n+n2 != len(reply) {
		t.Fatalf("read %d of %d", n+n2, len(reply))
	}
	select {
	case err := <-third:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("third call still held after a reply")
	}
	fourth := make(chan error, 1)
	go func() {
		_, err := c.Write(packet(pktCall, 4, 0))
		fourth <- err
	}()
	c.Close()
	select {
	case err := <-fourth:
		if err == nil {
			t.Fatal("a call waiting on a closed connection reported success")
		}
	case <-time.After(5 * time.Second):
		t.Fatal("waiting call not released by Close")
	}
}

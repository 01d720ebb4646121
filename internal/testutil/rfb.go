package testutil

import (
	"encoding/binary"
	"fmt"
	"io"
	"strings"
)

// RFB is a minimal VNC client for tests (RFB 3.8, no authentication,
// raw encoding): enough to check that a guest's display answers, shows
// something, and takes keystrokes.
type RFB struct {
	rw     io.ReadWriter
	Name   string // the server's desktop name (QEMU: "QEMU (vm)")
	Width  int
	Height int
	bpp    int
}

// RFBHandshake greets the VNC server on rw and asks for a shared session.
func RFBHandshake(rw io.ReadWriter) (*RFB, error) {
	c := &RFB{rw: rw}
	ver := make([]byte, 12)
	if _, err := io.ReadFull(rw, ver); err != nil {
		return nil, fmt.Errorf("rfb version: %w", err)
	}
	if !strings.HasPrefix(string(ver), "RFB 003.") {
		return nil, fmt.Errorf("rfb version %q", ver)
	}
	if _, err := rw.Write([]byte("RFB 003.008\n")); err != nil {
		return nil, err
	}
	var n [1]byte
	if _, err := io.ReadFull(rw, n[:]); err != nil || n[0] == 0 {
		return nil, fmt.Errorf("rfb security types: %d, %v", n[0], err)
	}
	types := make([]byte, n[0])
	if _, err := io.ReadFull(rw, types); err != nil {
		return nil, err
	}
	if !strings.Contains(string(types), "\x01") {
		return nil, fmt.Errorf("rfb: the server wants authentication (types %v)", types)
	}
	if _, err := rw.Write([]byte{1}); err != nil { // None
		return nil, err
	}
	var res uint32
	if err := binary.Read(rw, binary.BigEndian, &res); err != nil || res != 0 {
		return nil, fmt.Errorf("rfb security result %d, %v", res, err)
	}
	if _, err := rw.Write([]byte{1}); err != nil { // ClientInit: shared
		return nil, err
	}
	var si struct {
		W, H   uint16
		Format [16]byte
		Len    uint32
	}
	if err := binary.Read(rw, binary.BigEndian, &si); err != nil {
		return nil, fmt.Errorf("rfb server init: %w", err)
	}
	if si.Len > 1<<10 {
		return nil, fmt.Errorf("rfb: desktop name of %d bytes", si.Len)
	}
	name := make([]byte, si.Len)
	if _, err := io.ReadFull(rw, name); err != nil {
		return nil, err
	}
	c.Name, c.Width, c.Height, c.bpp = string(name), int(si.W), int(si.H), int(si.Format[0])
	if c.bpp%8 != 0 || c.bpp == 0 {
		return nil, fmt.Errorf("rfb: %d bits per pixel", c.bpp)
	}
	// Raw encoding only.
	_, err := rw.Write([]byte{2, 0, 0, 1, 0, 0, 0, 0})
	return c, err
}

// Frame asks for the whole screen and returns how many of its pixels are
// not black.
func (c *RFB) Frame() (lit int, err error) {
	req := []byte{3, 0, 0, 0, 0, 0, 0, 0, 0, 0}
	binary.BigEndian.PutUint16(req[6:], uint16(c.Width))
	binary.BigEndian.PutUint16(req[8:], uint16(c.Height))
	if _, err := c.rw.Write(req); err != nil {
		return 0, err
	}
	for {
		var typ [1]byte
		if _, err := io.ReadFull(c.rw, typ[:]); err != nil {
			return 0, err
		}
		switch typ[0] {
		case 0: // FramebufferUpdate
			var h struct {
				Pad   byte
				Rects uint16
			}
			if err := binary.Read(c.rw, binary.BigEndian, &h); err != nil {
				return 0, err
			}
			for range h.Rects {
				var r struct {
					X, Y, W, H uint16
					Enc        int32
				}
				if err := binary.Read(c.rw, binary.BigEndian, &r); err != nil {
					return 0, err
				}
				if r.Enc != 0 {
					return 0, fmt.Errorf("rfb: encoding %d, asked for raw", r.Enc)
				}
				px := make([]byte, int(r.W)*int(r.H)*c.bpp/8)
				if _, err := io.ReadFull(c.rw, px); err != nil {
					return 0, err
				}
				for i := 0; i < len(px); i += c.bpp / 8 {
					for _, b := range px[i : i+c.bpp/8] {
						if b != 0 {
							lit++
							break
						}
					}
				}
			}
			return lit, nil
		case 1: // SetColourMapEntries
			var h struct {
				Pad          byte
				First, Count uint16
			}
			if err := binary.Read(c.rw, binary.BigEndian, &h); err != nil {
				return 0, err
			}
			if _, err := io.CopyN(io.Discard, c.rw, int64(h.Count)*6); err != nil {
				return 0, err
			}
		case 2: // Bell
		case 3: // ServerCutText
			var h struct {
				Pad [3]byte
				Len uint32
			}
			if err := binary.Read(c.rw, binary.BigEndian, &h); err != nil {
				return 0, err
			}
			if _, err := io.CopyN(io.Discard, c.rw, int64(h.Len)); err != nil {
				return 0, err
			}
		default:
			return 0, fmt.Errorf("rfb: server message type %d", typ[0])
		}
	}
}

// Type presses and releases the key of each character of s: lower-case
// letters, digits, space, '-', '.', and '\n' for Return.
func (c *RFB) Type(s string) error {
	for _, r := range s {
		sym := uint32(r)
		if r == '\n' {
			sym = 0xff0d
		}
		for _, down := range []byte{1, 0} {
			msg := []byte{4, down, 0, 0, 0, 0, 0, 0}
			binary.BigEndian.PutUint32(msg[4:], sym)
			if _, err := c.rw.Write(msg); err != nil {
				return err
			}
		}
	}
	return nil
}

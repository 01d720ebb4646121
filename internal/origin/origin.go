// Package origin carries who asked for an operation — the actor (a uid on
// the admin socket, later a token or certificate name), where the request
// came from, and its request id — from the API that took it, through the
// cluster RPC (a header), to the leader that records it in the event log.
// What arrives from the network is checked here: short, printable, no
// separators it could forge.
package origin

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net/url"
	"unicode"
)

// Origin is who asked, from where, under which request id.
type Origin struct {
	Actor, Source, RequestID string
}

// MaxLen bounds each field.
const MaxLen = 128

// Header carries an Origin on a cluster RPC request.
const Header = "X-Corral-Origin"

// RequestIDHeader is the admin API's request id, asked for by a client or
// given by the server, and returned on every answer.
const RequestIDHeader = "X-Request-Id"

type key struct{}

// With returns ctx carrying o.
func With(ctx context.Context, o Origin) context.Context { return context.WithValue(ctx, key{}, o) }

// From returns the Origin in ctx, if any.
func From(ctx context.Context) (Origin, bool) {
	o, ok := ctx.Value(key{}).(Origin)
	return o, ok
}

// Encode renders o for Header.
func (o Origin) Encode() string {
	return url.Values{"actor": {o.Actor}, "source": {o.Source}, "request": {o.RequestID}}.Encode()
}

// Decode parses a Header value and checks every field.
func Decode(s string) (Origin, error) {
	if len(s) > 4*MaxLen {
		return Origin{}, fmt.Errorf("%s: %d bytes, want at most %d", Header, len(s), 4*MaxLen)
	}
	v, err := url.ParseQuery(s)
	if err != nil {
		return Origin{}, fmt.Errorf("%s: %v", Header, err)
	}
	o := Origin{Actor: v.Get("actor"), Source: v.Get("source"), RequestID: v.Get("request")}
	return o, o.Check()
}

// Check refuses fields that are too long or hold anything but printable
// characters.
func (o Origin) Check() error {
	for name, f := range map[string]string{"actor": o.Actor, "source": o.Source, "request": o.RequestID} {
		if len(f) > MaxLen {
			return fmt.Errorf("origin %s: %d bytes, want at most %d", name, len(f), MaxLen)
		}
		for _, r := range f {
			if !unicode.IsPrint(r) || r == unicode.ReplacementChar {
				return fmt.Errorf("origin %s %q: only printable characters", name, f)
			}
		}
	}
	return nil
}

// NewRequestID returns a fresh request id: 16 hex digits.
func NewRequestID() string {
	var b [8]byte
	rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// ValidRequestID says whether a client's request id may be used as it is:
// 1 to 64 letters, digits, '-', '_' or '.'.
func ValidRequestID(s string) bool {
	if s == "" || len(s) > 64 {
		return false
	}
	for _, r := range s {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_' || r == '.') {
			return false
		}
	}
	return true
}

package client

import (
	"net/http"
	"strings"
)

// WebSocket returns what opening a WebSocket at path of the API takes: its
// URL (ws:// or wss://), the request headers (the bearer token), and an
// HTTP client over the same socket or TLS that speaks HTTP/1.1 (the
// upgrade does not exist in HTTP/2). The WebSocket itself is the caller's
// (internal/wsconsole for consoles): this package keeps to the standard
// library.
func (c *Client) WebSocket(path string) (url string, h http.Header, hc *http.Client) {
	url = "ws" + strings.TrimPrefix(c.base()+path, "http") // http -> ws, https -> wss
	h = http.Header{}
	if c.Token != "" {
		h.Set("Authorization", "Bearer "+c.Token)
	}
	return url, h, c.wsHTTP()
}

// ConsolePath is the path of a VM's interactive console (write: ask to be
// the session that types).
func ConsolePath(name string, write bool) string {
	p := vmPath(name) + "/console/attach"
	if write {
		p += "?write=true"
	}
	return p
}

// DisplayPath is the path of a VM's graphical display (VNC over a
// WebSocket).
func DisplayPath(name string) string { return vmPath(name) + "/vnc" }

// wsHTTP is the client's HTTP client, made HTTP/1.1 only.
func (c *Client) wsHTTP() *http.Client {
	base := c.http()
	tr, ok := base.Transport.(*http.Transport)
	if !ok || !tr.ForceAttemptHTTP2 {
		return base
	}
	tr = tr.Clone()
	tr.ForceAttemptHTTP2 = false
	if tr.TLSClientConfig != nil {
		tr.TLSClientConfig.NextProtos = []string{"http/1.1"}
	}
	return &http.Client{Transport: tr}
}

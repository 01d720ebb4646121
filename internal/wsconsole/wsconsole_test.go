package wsconsole

import (
	"net/http/httptest"
	"testing"
)

// A token offered as a subprotocol counts only on a WebSocket upgrade.
func TestBearerProtocol(t *testing.T) {
	r := httptest.NewRequest("GET", "/v1/vms/x/console/attach", nil)
	r.Header.Set("Sec-WebSocket-Protocol", "corral.console, corral.bearer.corral_abc")
	if _, ok := BearerProtocol(r); ok {
		t.Fatal("a token taken from a request that is no WebSocket upgrade")
	}
	r.Header.Set("Upgrade", "websocket")
	if s, ok := BearerProtocol(r); !ok || s != "corral_abc" {
		t.Fatalf("got %q %v", s, ok)
	}
	r.Header.Set("Sec-WebSocket-Protocol", "corral.console")
	if _, ok := BearerProtocol(r); ok {
		t.Fatal("a token from a request that offers none")
	}
}

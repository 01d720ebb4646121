package origin

import (
	"context"
	"strings"
	"testing"
)

func TestRoundTripAndChecks(t *testing.T) {
	o := Origin{Actor: "uid 1000", Source: "socket on h2", RequestID: "abc-1"}
	got, err := Decode(o.Encode())
	if err != nil || got != o {
		t.Fatalf("round trip: %+v %v", got, err)
	}
	for _, bad := range []string{
		"actor=" + strings.Repeat("x", MaxLen+1),
		"actor=a%0Ab",    // a newline
		"request=%ff%fe", // not UTF-8
		"actor=%zz",      // not a query
		strings.Repeat("a", 1000),
	} {
		if _, err := Decode(bad); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
	if _, ok := From(context.Background()); ok {
		t.Fatal("origin from nothing")
	}
	if got, ok := From(With(context.Background(), o)); !ok || got != o {
		t.Fatal("origin lost in the context")
	}
	if id := NewRequestID(); len(id) != 16 || !ValidRequestID(id) || id == NewRequestID() {
		t.Fatalf("request id %q", id)
	}
	for id, ok := range map[string]bool{"ci-42.a_b": true, "": false, "a b": false, strings.Repeat("a", 65): false, "x\n": false} {
		if ValidRequestID(id) != ok {
			t.Errorf("ValidRequestID(%q) != %v", id, ok)
		}
	}
}

func FuzzDecode(f *testing.F) {
	f.Add(Origin{Actor: "uid 0", Source: "socket", RequestID: "r"}.Encode())
	f.Add("actor=%00")
	f.Fuzz(func(t *testing.T, s string) {
		o, err := Decode(s)
		if err != nil {
			return
		}
		if o.Check() != nil || len(o.Actor) > MaxLen {
			t.Fatalf("accepted %+v", o)
		}
	})
}

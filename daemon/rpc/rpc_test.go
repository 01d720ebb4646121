package rpc

import (
	"context"
	"testing"
)

// TestRegisterTwicePanics: a method registered twice is a programming
// error, found at start-up rather than by a handler silently replaced.
func TestRegisterTwicePanics(t *testing.T) {
	s := NewServer(nil, nil)
	m := Method[struct{}, int]{Name: "x.y"}
	fn := func(context.Context, struct{}) (int, error) { return 1, nil }
	Register(s, m, fn)
	defer func() {
		if recover() == nil {
			t.Fatal("second registration of x.y did not panic")
		}
	}()
	Register(s, m, fn)
}

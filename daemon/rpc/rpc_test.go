package rpc

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"
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

type fuzzReq struct {
	Name  string            `json:"name"`
	Count int               `json:"count"`
	Tags  map[string]string `json:"tags"`
	When  time.Time         `json:"when"`
}

// FuzzServe throws arbitrary paths and bodies at the cluster RPC server:
// it must answer every request with a JSON error or a result, never panic,
// and decode bodies strictly (an unknown field is refused).
func FuzzServe(f *testing.F) {
	s := NewServer(nil, nil)
	Register(s, Method[fuzzReq, fuzzReq]{Name: "t.echo"}, func(_ context.Context, r fuzzReq) (fuzzReq, error) { return r, nil })
	Register(s, Method[struct{}, int]{Name: "t.empty"}, func(context.Context, struct{}) (int, error) { return 1, nil })
	f.Add("t.echo", []byte(`{"name":"a","count":1,"tags":{"x":"y"},"when":"2026-01-01T00:00:00Z"}`))
	f.Add("t.echo", []byte(`{"name":"a","extra":1}`))
	f.Add("t.empty", []byte(`{}`))
	f.Add("t.empty", []byte(`{}{}`))
	f.Add("../x", []byte(`null`))
	f.Add("t.echo", []byte(`{"count":1e400}`))
	f.Fuzz(func(t *testing.T, method string, body []byte) {
		req := httptest.NewRequest(http.MethodPost, "/cluster/v1/x", bytes.NewReader(body))
		req.URL.Path = pathPrefix + method
		w := httptest.NewRecorder()
		s.ServeHTTP(w, req)
		switch w.Code {
		case http.StatusOK, http.StatusBadRequest, http.StatusNotFound:
		default:
			t.Fatalf("status %d for %q %q: %s", w.Code, method, body, w.Body)
		}
		if w.Code == http.StatusOK && bytes.Contains(body, []byte(`"extra"`)) && method == "t.echo" {
			var probe map[string]any
			if json.Unmarshal(body, &probe) == nil {
				if _, ok := probe["extra"]; ok {
					t.Fatalf("unknown field accepted: %q", body)
				}
			}
		}
	})
}

// TestStrictBodies: unknown fields and trailing data are refused as
// invalid requests.
func TestStrictBodies(t *testing.T) {
	var r fuzzReq
	for _, body := range []string{`{"name":"a","extra":1}`, `{"name":"a"} {}`, `[1]`} {
		if err := DecodeStrict([]byte(body), &r); err == nil {
			t.Errorf("accepted %s", body)
		}
	}
	if err := DecodeStrict([]byte(`{"name":"a"} `), &r); err != nil || r.Name != "a" {
		t.Fatal(err)
	}
}

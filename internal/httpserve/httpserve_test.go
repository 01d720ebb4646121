package httpserve

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/corralhq/corral/api"
)

func ok(w http.ResponseWriter, _ *http.Request) { io.WriteString(w, "{}") }

func TestRateLimitIsPerIdentity(t *testing.T) {
	h := Limit(http.HandlerFunc(ok), Limits{Rate: 1, Burst: 2, Identity: func(r *http.Request) string { return r.Header.Get("X-Who") }})
	get := func(who string) *httptest.ResponseRecorder {
		rec := httptest.NewRecorder()
		req := httptest.NewRequest("GET", "/", nil)
		req.Header.Set("X-Who", who)
		h.ServeHTTP(rec, req)
		return rec
	}
	for i := range 2 {
		if rec := get("alice"); rec.Code != http.StatusOK {
			t.Fatalf("request %d within the burst: %d", i, rec.Code)
		}
	}
	rec := get("alice")
	var e api.Error
	json.Unmarshal(rec.Body.Bytes(), &e)
	if rec.Code != http.StatusTooManyRequests || e.Code != api.CodeRateLimited || rec.Header().Get("Retry-After") != "1" ||
		!strings.Contains(e.Message, "alice") {
		t.Fatalf("past the burst: %d %q %+v", rec.Code, rec.Header().Get("Retry-After"), e)
	}
	if rec := get("bob"); rec.Code != http.StatusOK {
		t.Fatalf("another identity: %d", rec.Code)
	}
}

func TestBucketsRefillAndStayBounded(t *testing.T) {
	s := newBucketSet(10, 1)
	t0 := time.Unix(1000, 0)
	if w := s.take("a", t0); w != 0 {
		t.Fatal(w)
	}
	if w := s.take("a", t0); w != 100*time.Millisecond {
		t.Fatalf("empty bucket: wait %v, want 100ms", w)
	}
	if w := s.take("a", t0.Add(100*time.Millisecond)); w != 0 {
		t.Fatalf("refilled bucket: wait %v", w)
	}
	// Fill the set with identities that each spent their token.
	for i := range maxIdentities {
		s.take(fmt.Sprint("c", i), t0)
	}
	if n := len(s.buckets); n > maxIdentities+1 {
		t.Fatalf("%d buckets", n)
	}
	// No bucket has refilled: newcomers share one.
	s.take("x", t0)
	if w := s.take("y", t0); w == 0 || len(s.buckets) > maxIdentities+1 {
		t.Fatalf("newcomers past the bound: wait %v, %d buckets", w, len(s.buckets))
	}
	// Later, refilled buckets are forgotten to make room.
	s.take("z", t0.Add(time.Second))
	if _, ok := s.buckets["z"]; !ok || len(s.buckets) > maxIdentities+1 {
		t.Fatalf("after refill: z has no bucket or %d buckets", len(s.buckets))
	}
}

// Over a real listener: requests past the in-flight cap are refused at
// once, and an oversized header is refused before the handler runs.
func TestServeCapsInFlightAndHeaders(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	release, entered := make(chan struct{}), make(chan struct{}, 1)
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/block" {
			entered <- struct{}{}
			<-release
		}
		ok(w, r)
	})
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() {
		served <- Serve(ctx, ln, h, slog.New(slog.NewTextHandler(io.Discard, nil)), Limits{MaxInFlight: 1, MaxHeaderBytes: 1 << 10})
	}()
	defer func() {
		cancel()
		if err := <-served; err != nil {
			t.Error(err)
		}
	}()
	url := "http://" + ln.Addr().String()
	blocked := make(chan int, 1)
	go func() {
		resp, err := http.Get(url + "/block")
		if err != nil {
			blocked <- -1
			return
		}
		resp.Body.Close()
		blocked <- resp.StatusCode
	}()
	<-entered
	resp, err := http.Get(url + "/other")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusServiceUnavailable {
		t.Fatalf("second request while one is in flight: %d", resp.StatusCode)
	}
	close(release)
	if code := <-blocked; code != http.StatusOK {
		t.Fatalf("the request in flight: %d", code)
	}
	req, _ := http.NewRequest("GET", url+"/other", nil)
	req.Header.Set("X-Big", strings.Repeat("x", 8<<10))
	resp, err = http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusRequestHeaderFieldsTooLarge {
		t.Fatalf("8 KiB header with a 1 KiB cap: %d", resp.StatusCode)
	}
}

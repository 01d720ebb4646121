package adminapi

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/corralhq/corral/api"
	"github.com/corralhq/corral/api/client"
	"github.com/corralhq/corral/internal/testutil"
	"github.com/corralhq/corral/model"
)

type fakeBackend struct {
	Backend // methods a test does not use panic
	hosts   map[string]api.Host
	calls   int
}

func (f *fakeBackend) Status(ctx context.Context) (api.Status, error) {
	return api.Status{Host: "h1", Leader: "h1"}, nil
}
func (f *fakeBackend) Hosts(ctx context.Context) ([]api.Host, error) {
	var out []api.Host
	for _, h := range f.hosts {
		out = append(out, h)
	}
	return out, nil
}
func (f *fakeBackend) Host(ctx context.Context, name string) (api.Host, error) {
	h, ok := f.hosts[name]
	if !ok {
		return h, fmt.Errorf("host %q: %w", name, model.ErrNotFound)
	}
	return h, nil
}
func (f *fakeBackend) SetHostLabels(ctx context.Context, name string, req api.HostLabelsRequest) (api.Host, error) {
	f.calls++
	h, err := f.Host(ctx, name)
	if err != nil {
		return h, err
	}
	h.Labels = req.Set
	return h, nil
}

func serve(t *testing.T, b Backend) *client.Client { return serveWith(t, b, func(*Server) {}) }

// serveWith serves b on a socket after set has adjusted the server.
func serveWith(t testing.TB, b Backend, set func(*Server)) *client.Client {
	t.Helper()
	path := filepath.Join(t.TempDir(), "api.sock")
	ln, err := Listen(path, "", false)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	s := New(b, testutil.Logger(t))
	set(s)
	go func() { done <- s.Serve(ctx, ln) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
	})
	return client.New(path)
}

func TestRoutesAndErrors(t *testing.T) {
	fb := &fakeBackend{hosts: map[string]api.Host{"h1": {Name: "h1"}}}
	c := serve(t, fb)
	ctx := context.Background()
	if h, err := c.Host(ctx, "h1"); err != nil || h.Name != "h1" {
		t.Fatalf("host: %v %v", h, err)
	}
	if _, err := c.Host(ctx, "h2"); !errors.Is(err, api.ErrNotFound) {
		t.Fatalf("missing host: %v", err)
	}
	if _, err := c.Host(ctx, strings.Repeat("x", 300)); !errors.Is(err, api.ErrInvalid) {
		t.Fatalf("300-char name: %v", err)
	}
	if _, err := c.Host(ctx, "a b"); !errors.Is(err, api.ErrInvalid) {
		t.Fatalf("name with space: %v", err)
	}
	if err := c.Do(ctx, http.MethodGet, "/v1/nope", nil, nil); !errors.Is(err, api.ErrNotFound) {
		t.Fatalf("unknown route: %v", err)
	}
	if h, err := c.SetHostLabels(ctx, "h1", api.HostLabelsRequest{Set: map[string]string{"a": "b"}}); err != nil || h.Labels["a"] != "b" {
		t.Fatalf("labels: %v %v", h, err)
	}
}

func TestMalformedBodiesChangeNothing(t *testing.T) {
	fb := &fakeBackend{hosts: map[string]api.Host{"h1": {Name: "h1"}}}
	srv := New(fb, testutil.Logger(t)).Handler()
	for _, body := range []string{`{`, `{"set": 5}`, `{"sett": {}}`, `{} {}`, `[]`} {
		req := httptest.NewRequest(http.MethodPut, "/v1/hosts/h1/labels", strings.NewReader(body))
		rec := httptest.NewRecorder()
		srv.ServeHTTP(rec, req)
		if rec.Code != http.StatusBadRequest || !strings.Contains(rec.Body.String(), `"code":"invalid"`) {
			t.Errorf("body %q: %d %s", body, rec.Code, rec.Body)
		}
	}
	if fb.calls != 0 {
		t.Fatalf("backend called %d times for malformed bodies", fb.calls)
	}
}

func TestListenSocket(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "run", "corral.sock")

	// A stale socket (nobody answering) is removed.
	os.MkdirAll(filepath.Dir(path), 0o755)
	l0, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	l0.(*net.UnixListener).SetUnlinkOnClose(false)
	l0.Close()
	if _, err := os.Stat(path); err != nil {
		t.Fatalf("stale socket not left behind: %v", err)
	}
	ln, err := Listen(path, "", false)
	if err != nil {
		t.Fatalf("listen over stale socket: %v", err)
	}
	defer ln.Close()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o660 {
		t.Errorf("socket mode %v, want 0660", fi.Mode().Perm())
	}
	// Something answers on the socket: refuse to start.
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	if _, err := Listen(path, "", false); !errors.Is(err, ErrAlreadyRunning) {
		t.Fatalf("second listen: %v", err)
	}
	// A regular file in the way is not deleted.
	file := filepath.Join(dir, "file")
	os.WriteFile(file, []byte("x"), 0o644)
	if _, err := Listen(file, "", false); err == nil {
		t.Fatal("listened over a regular file")
	}
	if _, err := os.Stat(file); err != nil {
		t.Fatal("regular file removed")
	}
}

// The socket's rate limit counts per uid (SO_PEERCRED), answers 429 naming
// it, and the client waits out the Retry-After the daemon gives.
func TestSocketRateLimitNamesThePeerUID(t *testing.T) {
	c := serveWith(t, &fakeBackend{}, func(s *Server) { s.RateLimit = 0.5 }) // bursts of 1
	ctx := context.Background()
	if _, err := c.Status(ctx); err != nil {
		t.Fatal(err)
	}
	short, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
	defer cancel()
	_, err := c.Status(short)
	if !errors.Is(err, api.ErrRateLimited) {
		t.Fatalf("second request within a second: %v", err)
	}
	// Raw, the answer names the uid.
	hc := &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		return (&net.Dialer{}).DialContext(ctx, "unix", c.Socket)
	}}}
	resp, err := hc.Get("http://corrald/v1/status")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if want := fmt.Sprintf("uid %d", os.Getuid()); resp.StatusCode != http.StatusTooManyRequests || !strings.Contains(string(body), want) {
		t.Fatalf("raw: %d %s, want 429 naming %s", resp.StatusCode, body, want)
	}
	// With time, the client retries past the limit by itself.
	start := time.Now()
	if _, err := c.Status(ctx); err != nil {
		t.Fatalf("after Retry-After: %v", err)
	}
	if d := time.Since(start); d < 500*time.Millisecond {
		t.Fatalf("answered after %v: the client did not wait", d)
	}
}

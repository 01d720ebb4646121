package adminapi

import (
	"bufio"
	"context"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/corralhq/corral/api"
	"github.com/corralhq/corral/internal/testutil"
)

// eventBackend serves an event log that grows while a stream is open.
type eventBackend struct {
	fakeBackend
	mu    sync.Mutex
	evs   []api.Event
	added chan struct{}
}

func (b *eventBackend) add(kind, msg string) {
	b.mu.Lock()
	b.evs = append(b.evs, api.Event{Seq: uint64(len(b.evs) + 1), Time: time.Now(), Kind: kind, Message: msg})
	b.mu.Unlock()
	select {
	case b.added <- struct{}{}:
	default:
	}
}

func (b *eventBackend) Events(ctx context.Context, after uint64, limit int, wait time.Duration) ([]api.Event, error) {
	deadline := time.After(wait)
	for {
		b.mu.Lock()
		var out []api.Event
		for _, e := range b.evs {
			if e.Seq > after {
				out = append(out, e)
			}
		}
		b.mu.Unlock()
		if len(out) > 0 {
			return out, nil
		}
		select {
		case <-b.added:
		case <-deadline:
			return nil, nil
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
}

// readEvent reads one "id/event/data" block, skipping comments.
func readEvent(t *testing.T, r *bufio.Reader) map[string]string {
	t.Helper()
	ev := map[string]string{}
	for {
		line, err := r.ReadString('\n')
		if err != nil {
			t.Fatalf("stream ended: %v (so far %v)", err, ev)
		}
		line = strings.TrimRight(line, "\n")
		switch {
		case line == "" && len(ev) > 0:
			return ev
		case line == "" || strings.HasPrefix(line, ":"):
		default:
			k, v, _ := strings.Cut(line, ": ")
			ev[k] = v
		}
	}
}

// GET /v1/events with Accept: text/event-stream streams the log from
// ?after= or Last-Event-ID, as events arrive, and ends when the server
// stops.
func TestEventsStream(t *testing.T) {
	b := &eventBackend{added: make(chan struct{}, 1)}
	b.add("create", "one")
	b.add("start", "two\nlines")
	path := filepath.Join(t.TempDir(), "api.sock")
	ln, err := Listen(path, "", false)
	if err != nil {
		t.Fatal(err)
	}
	ctx, stop := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- New(b, testutil.Logger(t)).Serve(ctx, ln) }()
	defer stop()
	hc := &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		return (&net.Dialer{}).DialContext(ctx, "unix", path)
	}}}
	open := func(url, lastID string) (*http.Response, *bufio.Reader) {
		req, _ := http.NewRequest("GET", url, nil)
		req.Header.Set("Accept", "text/event-stream")
		if lastID != "" {
			req.Header.Set("Last-Event-ID", lastID)
		}
		resp, err := hc.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		if ct := resp.Header.Get("Content-Type"); resp.StatusCode != http.StatusOK || ct != "text/event-stream" {
			t.Fatalf("%s: %d %s", url, resp.StatusCode, ct)
		}
		return resp, bufio.NewReader(resp.Body)
	}

	resp, r := open("http://corrald/v1/events?after=1", "")
	if ev := readEvent(t, r); ev["id"] != "2" || ev["event"] != "start" || !strings.Contains(ev["data"], `"message":"two\nlines"`) {
		t.Fatalf("first event after 1: %v", ev)
	}
	b.add("stop", "three")
	if ev := readEvent(t, r); ev["id"] != "3" || ev["event"] != "stop" {
		t.Fatalf("event added while streaming: %v", ev)
	}
	resp.Body.Close()

	// A reconnecting browser resumes after its Last-Event-ID.
	resp, r = open("http://corrald/v1/events", "2")
	if ev := readEvent(t, r); ev["id"] != "3" {
		t.Fatalf("resumed after 2: %v", ev)
	}
	// The server stops: the stream ends at once, not after the keep-alive.
	ended := make(chan error, 1)
	go func() {
		_, err := r.ReadString('\x00')
		ended <- err
	}()
	stop()
	select {
	case <-ended:
	case <-time.After(5 * time.Second):
		t.Fatal("stream still open 5 s after the server began to stop")
	}
	resp.Body.Close()
	if err := <-done; err != nil {
		t.Fatal(err)
	}

	// Without the Accept header the route answers JSON as before.
	if ok := wantsStream(&http.Request{Header: http.Header{}}); ok {
		t.Fatal("plain request taken for a stream")
	}
}

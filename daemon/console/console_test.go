package console

import (
	"context"
	"errors"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/corralhq/corral/daemon/hypervisor"
	"github.com/corralhq/corral/daemon/hypervisor/fake"
	"github.com/corralhq/corral/internal/wsconsole"
	"github.com/corralhq/corral/model"
)

func runningGuest(t *testing.T) *fake.Driver {
	t.Helper()
	drv := fake.New()
	ctx := context.Background()
	if err := drv.Define(ctx, hypervisor.DomainSpec{VMID: "id-v", Name: "v", VCPUs: 1, MemoryMiB: 64}); err != nil {
		t.Fatal(err)
	}
	if err := drv.Start(ctx, "v", hypervisor.RunInfo{StartedAt: time.Now()}); err != nil {
		t.Fatal(err)
	}
	return drv
}

// readUntil reads s until its output holds want.
func readUntil(t *testing.T, s io.Reader, want string) {
	t.Helper()
	var got []byte
	buf := make([]byte, 1024)
	for !strings.Contains(string(got), want) {
		n, err := s.Read(buf)
		got = append(got, buf[:n]...)
		if err != nil {
			t.Fatalf("read %q, then %v; want %q", got, err, want)
		}
	}
}

// One writer at a time, handed to the next client that asks once it
// leaves; every client reads; a client that does not read is dropped, not
// waited for; the last to leave closes the session; the hub refuses the
// seventeenth client and a stopped guest.
func TestHub(t *testing.T) {
	drv := runningGuest(t)
	h := New("h1", drv)
	ctx := context.Background()
	w, err := h.Attach(ctx, "v", true)
	if err != nil || !w.Hello().Writer || w.Hello().Host != "h1" {
		t.Fatalf("first: %+v %v", w, err)
	}
	r, err := h.Attach(ctx, "v", true)
	if err != nil || r.Hello().Writer {
		t.Fatalf("second: %+v %v", r.Hello(), err)
	}
	if _, err := r.Write([]byte("x")); !errors.Is(err, wsconsole.ErrReadOnly) {
		t.Fatalf("a reader typed: %v", err)
	}
	w.Write([]byte("typed\r\n"))
	readUntil(t, w, "typed")
	readUntil(t, r, "typed")

	// A client that never reads falls behind and is dropped.
	idle, _ := h.Attach(ctx, "v", false)
	for i := 0; i < consoleBacklog+10; i++ {
		w.Write([]byte("y"))
		readUntil(t, w, "y")
		readUntil(t, r, "y")
	}
	if _, err := io.ReadAll(idle); err == nil || !strings.Contains(err.Error(), "too slow") {
		t.Fatalf("the idle client: %v", err)
	}

	// The writer leaves: the next client that asks types.
	w.Close()
	w2, _ := h.Attach(ctx, "v", true)
	if !w2.Hello().Writer {
		t.Fatal("the writer's place was not freed")
	}
	var many []wsconsole.Session
	for range maxConsoleClients - 2 {
		s, err := h.Attach(ctx, "v", false)
		if err != nil {
			t.Fatal(err)
		}
		many = append(many, s)
	}
	if _, err := h.Attach(ctx, "v", false); !errors.Is(err, model.ErrConflict) {
		t.Fatalf("client %d: %v", maxConsoleClients+1, err)
	}
	for _, s := range append(many, r, w2) {
		s.Close()
	}
	h.mu.Lock()
	open := len(h.hubs)
	h.mu.Unlock()
	if open != 0 {
		t.Fatalf("%d sessions open after every client left", open)
	}
	drv.Destroy(ctx, "v")
	if _, err := h.Attach(ctx, "v", false); !errors.Is(err, hypervisor.ErrNotRunning) {
		t.Fatalf("console of a stopped guest: %v", err)
	}
}

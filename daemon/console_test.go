package daemon

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/corralhq/corral/api"
	"github.com/corralhq/corral/api/client"
	"github.com/corralhq/corral/internal/testutil"
	"github.com/corralhq/corral/internal/wsconsole"
)

// reader collects what a console session shows, and how it ended.
type reader struct {
	mu  sync.Mutex
	buf bytes.Buffer
	err error
}

func readAll(s wsconsole.Session) *reader {
	r := &reader{}
	go func() {
		b := make([]byte, 4096)
		for {
			n, err := s.Read(b)
			r.mu.Lock()
			r.buf.Write(b[:n])
			if err != nil {
				r.err = err
				r.mu.Unlock()
				return
			}
			r.mu.Unlock()
		}
	}()
	return r
}

func (r *reader) wait(t *testing.T, want string) {
	t.Helper()
	testutil.Eventually(t, 10*time.Second, func() error {
		r.mu.Lock()
		defer r.mu.Unlock()
		if !strings.Contains(r.buf.String(), want) {
			return fmt.Errorf("console shows %q (ended: %v), want %q", r.buf.String(), r.err, want)
		}
		return nil
	})
}

func (r *reader) ended(t *testing.T, want string) {
	t.Helper()
	testutil.Eventually(t, 10*time.Second, func() error {
		r.mu.Lock()
		defer r.mu.Unlock()
		if r.err == nil || !strings.Contains(r.err.Error(), want) {
			return fmt.Errorf("session ended with %v, want %q", r.err, want)
		}
		return nil
	})
}

// Consoles over the HTTPS API with tokens, on three daemons with cluster
// TLS: an operator attached through h1 to a guest on h3 (relayed over the
// cluster RPC) types and sees the echo; a session on h3 itself reads the
// same output but may not type; a viewer may not attach; the sessions end
// with a reason when the guest stops, and a stopped VM's console is
// refused with its state.
func TestConsoleRelayedAcrossHosts(t *testing.T) {
	tc, urls, fps := apiCluster(t, &lockedBuffer{})
	ctx := ctxT(t)
	root := tc.hosts[0].client
	secrets := map[string]string{}
	for _, req := range []api.APITokenCreateRequest{{Name: "ops", Role: "operator"}, {Name: "watch", Role: "viewer"}} {
		created, err := root.CreateAPIToken(ctx, req)
		if err != nil {
			t.Fatal(err)
		}
		secrets[req.Name] = created.Token
	}
	remote := func(i int, name string) *client.Client { return client.NewRemote(urls[i], secrets[name], fps[i]) }
	for i := range tc.hosts {
		testutil.Eventually(t, 5*time.Second, func() error { _, err := remote(i, "watch").Status(ctx); return err })
	}
	if _, err := root.CreateVM(ctx, api.VMCreateRequest{Name: "v", Host: "h3", Spec: api.VMSpec{VCPUs: 1, MemoryMiB: 128, Disks: []api.Disk{{SizeMiB: 8}}}}); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, 10*time.Second, func() error {
		v, err := root.VM(ctx, "v")
		if err != nil || v.State != "running" {
			return fmt.Errorf("v: %s %v", v.State, err)
		}
		return nil
	})

	if _, err := wsconsole.AttachVM(ctx, remote(0, "watch"), "v", false); !errors.Is(err, api.ErrForbidden) {
		t.Fatalf("a viewer attached: %v", err)
	}
	s1, err := wsconsole.AttachVM(ctx, remote(0, "ops"), "v", true)
	if err != nil {
		t.Fatal(err)
	}
	defer s1.Close()
	if h := s1.Hello(); h.VM != "v" || h.Host != "h3" || !h.Writer {
		t.Fatalf("hello %+v", h)
	}
	r1 := readAll(s1)
	r1.wait(t, "fake console of v")
	if _, err := s1.Write([]byte("echo hi\r")); err != nil {
		t.Fatal(err)
	}
	r1.wait(t, "echo hi\r")

	// A second session, on the guest's own host: it reads, it may not type.
	s2, err := wsconsole.AttachVM(ctx, tc.hosts[2].client, "v", true)
	if err != nil {
		t.Fatal(err)
	}
	defer s2.Close()
	if h := s2.Hello(); h.Writer || !strings.Contains(h.Message, "read-only") {
		t.Fatalf("second writer: %+v", h)
	}
	r2 := readAll(s2)
	r2.wait(t, "fake console of v") // the log's tail first
	s1.Write([]byte("second\r"))
	r2.wait(t, "second\r")
	s2.Write([]byte("x"))
	r2.ended(t, "read-only")
	r1.wait(t, "second\r")

	// The graphical display, relayed the same way: an operator's, at most
	// maxDisplayClients at once on the guest's host.
	if _, err := wsconsole.OpenVMDisplay(ctx, remote(0, "watch"), "v"); !errors.Is(err, api.ErrForbidden) {
		t.Fatalf("a viewer opened the display: %v", err)
	}
	var screens []io.ReadWriteCloser
	for range maxDisplayClients {
		d, err := wsconsole.OpenVMDisplay(ctx, remote(0, "ops"), "v")
		if err != nil {
			t.Fatal(err)
		}
		screens = append(screens, d)
	}
	greet := make([]byte, 12)
	if _, err := io.ReadFull(screens[0], greet); err != nil || string(greet) != "RFB 003.008\n" {
		t.Fatalf("display greeting %q %v", greet, err)
	}
	screens[0].Write([]byte("keys"))
	if _, err := io.ReadFull(screens[0], greet[:4]); err != nil || string(greet[:4]) != "keys" {
		t.Fatalf("display echo %q %v", greet[:4], err)
	}
	if _, err := wsconsole.OpenVMDisplay(ctx, tc.hosts[2].client, "v"); !errors.Is(err, api.ErrConflict) {
		t.Fatalf("display %d: %v", maxDisplayClients+1, err)
	}
	for _, d := range screens {
		d.Close()
	}
	testutil.Eventually(t, 10*time.Second, func() error { // the slots are given back
		d, err := wsconsole.OpenVMDisplay(ctx, tc.hosts[2].client, "v")
		if err == nil {
			d.Close()
		}
		return err
	})

	// The guest stops: the relayed session ends, saying so.
	if _, err := root.StopVM(ctx, "v"); err != nil {
		t.Fatal(err)
	}
	r1.ended(t, "console closed")
	testutil.Eventually(t, 10*time.Second, func() error {
		_, err := wsconsole.AttachVM(ctx, remote(1, "ops"), "v", true)
		if !errors.Is(err, api.ErrConflict) || !strings.Contains(err.Error(), "stopped") {
			return fmt.Errorf("console of a stopped VM: %v", err)
		}
		return nil
	})

	// The guest runs again; its host's corrald stops: the relayed session
	// ends, saying so.
	if _, err := root.StartVM(ctx, "v"); err != nil {
		t.Fatal(err)
	}
	var s3 wsconsole.Session
	testutil.Eventually(t, 10*time.Second, func() error {
		var err error
		s3, err = wsconsole.AttachVM(ctx, remote(0, "ops"), "v", true)
		return err
	})
	r3 := readAll(s3)
	r3.wait(t, "fake console of v")
	tc.hosts[2].stop()
	r3.ended(t, "corrald is stopping")
}

package lab

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/corralhq/corral/api"
	"github.com/corralhq/corral/api/client"
)

// Admin talks to the lab's corralds through their admin sockets, as an
// operator's tools would, with one client per host for its whole life (a
// client per call leaves idle connections on the hosts, which blurs what a
// soak measures). The chaos and soak runners share it.
type Admin struct {
	lab     *Lab
	mu      sync.Mutex
	clients map[string]*client.Client
}

// Admin returns the lab's admin clients.
func (l *Lab) Admin() *Admin { return &Admin{lab: l, clients: map[string]*client.Client{}} }

// Client returns the client of host h's admin socket.
func (a *Admin) Client(h *Host) *client.Client {
	a.mu.Lock()
	defer a.mu.Unlock()
	c, ok := a.clients[h.Name]
	if !ok {
		c = client.New(h.Socket())
		a.clients[h.Name] = c
	}
	return c
}

// Leader returns the client of the first host that answers with a leader.
func (a *Admin) Leader(ctx context.Context) (*client.Client, error) {
	var errs []error
	for _, h := range a.lab.Hosts {
		c := a.Client(h)
		cctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		s, err := c.Status(cctx)
		cancel()
		if err == nil && s.Leader != "" {
			return c, nil
		}
		errs = append(errs, fmt.Errorf("%s: %v", h.Name, err))
	}
	return nil, fmt.Errorf("no host answers with a leader: %w", errors.Join(errs...))
}

// WaitHealthy waits until every host answers with one leader and its lease
// held, and every host in state is active with its lease ok.
func (a *Admin) WaitHealthy(ctx context.Context, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	why := ""
	for time.Now().Before(deadline) {
		why = ""
		for _, h := range a.lab.Hosts {
			c := a.Client(h)
			cctx, cancel := context.WithTimeout(ctx, 2*time.Second)
			s, err := c.Status(cctx)
			var hosts []api.Host
			if err == nil {
				hosts, err = c.Hosts(cctx)
			}
			cancel()
			switch {
			case err != nil:
				why = h.Name + ": " + err.Error()
			case s.Leader == "" || s.Lease != "held":
				why = fmt.Sprintf("%s: leader %q, lease %s", h.Name, s.Leader, s.Lease)
			}
			for _, x := range hosts {
				if x.Mode != "active" || x.Lease != "ok" {
					why = fmt.Sprintf("%s is %s, lease %s", x.Name, x.Mode, x.Lease)
				}
			}
			if why != "" {
				break
			}
		}
		if why == "" {
			return nil
		}
		if err := Pause(ctx, 250*time.Millisecond); err != nil {
			return err
		}
	}
	return fmt.Errorf("cluster not healthy after %v: %s", timeout, why)
}

// LastEvent returns the sequence number of the newest event c's host
// keeps (0 when none or on error).
func LastEvent(ctx context.Context, c *client.Client) uint64 {
	evs, err := c.Events(ctx, 0, 1, 0) // a limit keeps the newest
	if err != nil || len(evs) == 0 {
		return 0
	}
	return evs[len(evs)-1].Seq
}

// EventsAfter returns every event kept after seq, oldest first (a limit
// would keep the newest and skip what lies between).
func EventsAfter(ctx context.Context, c *client.Client, seq uint64) ([]api.Event, error) {
	return c.Events(ctx, seq, 0, 0)
}

// ShareGuest copies the test guest (scripts/build-test-guest.sh: vmlinuz,
// initrd.img, disk.qcow2) from dir into the lab's shared storage, where
// every host sees it, and returns where.
func (l *Lab) ShareGuest(dir string) (string, error) {
	shared := filepath.Join(l.SharedDir(), "guest")
	if err := os.MkdirAll(shared, 0o755); err != nil {
		return "", err
	}
	for _, f := range []string{"vmlinuz", "initrd.img", "disk.qcow2"} {
		b, err := os.ReadFile(filepath.Join(dir, f))
		if err != nil {
			return "", fmt.Errorf("test guest: %w (scripts/build-test-guest.sh %s)", err, dir)
		}
		if err := os.WriteFile(filepath.Join(shared, f), b, 0o644); err != nil {
			return "", err
		}
	}
	return shared, nil
}

// Prepare readies the lab for a runner: the test guest from guestDir in
// the shared storage (ShareGuest), the cluster healthy, and the guest's
// disk imported as image. It returns where the guest is and the leader's
// client.
func (a *Admin) Prepare(ctx context.Context, guestDir, image string) (string, *client.Client, error) {
	shared, err := a.lab.ShareGuest(guestDir)
	if err != nil {
		return "", nil, err
	}
	if err := a.WaitHealthy(ctx, 3*time.Minute); err != nil {
		return "", nil, err
	}
	c, err := a.Leader(ctx)
	if err != nil {
		return "", nil, err
	}
	return shared, c, ImportImage(ctx, c, image, filepath.Join(shared, "disk.qcow2"))
}

// ImportImage uploads the file at path as image name through c; an image
// of that name already there is not an error.
func ImportImage(ctx context.Context, c *client.Client, name, path string) error {
	img, err := os.Open(path)
	if err != nil {
		return err
	}
	defer img.Close()
	fi, err := img.Stat()
	if err != nil {
		return err
	}
	if _, err := c.ImportImage(ctx, name, img, fi.Size()); err != nil && !errors.Is(err, api.ErrConflict) {
		return fmt.Errorf("import %s: %w", name, err)
	}
	return nil
}

// Pause waits d, or returns ctx's error once it ends.
func Pause(ctx context.Context, d time.Duration) error {
	if d <= 0 {
		return ctx.Err()
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

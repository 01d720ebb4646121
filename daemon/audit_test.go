package daemon

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"testing"
	"time"

	"github.com/corralhq/corral/internal/testutil"
)

// Mutations through any host's socket are recorded with who asked: the
// uid (this test runs as some uid), the socket of the host that took the
// request, and the request id the client sent, also across the forward
// from a follower to the leader; what corral does by itself has no actor.
func TestEventsRecordWhoAsked(t *testing.T) {
	tc := newTestCluster(t, 3, []int{0, 1, 2}, nil)
	tc.startAll()
	st := tc.waitConverged(3, 0)
	ctx := ctxT(t)
	var follower *testHost
	for _, h := range tc.hosts {
		if h.cfg.Name != st.Leader {
			follower = h
			break
		}
	}
	c := follower.client
	if _, err := c.ImportImage(ctx, "base", bytes.NewReader(qcow2(64<<20)), 1024); err != nil {
		t.Fatal(err)
	}
	// The cluster's protocol reaches this release's before events carry
	// actors (FeatureAudit).
	testutil.Eventually(t, 10*time.Second, func() error {
		s, err := c.Status(ctx)
		if err != nil || s.Protocol != s.ThisProtocol {
			return fmt.Errorf("cluster protocol %d, this %d, %v", s.Protocol, s.ThisProtocol, err)
		}
		return nil
	})
	body := `{"name":"audited","spec":{"vcpus":1,"memory_mib":256,"disks":[{"image":"base"}]}}`
	hc := &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		return (&net.Dialer{}).DialContext(ctx, "unix", c.Socket)
	}}}
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, "http://corrald/v1/vms", bytes.NewBufferString(body))
	req.Header.Set("X-Request-Id", "ci-audit-1")
	resp, err := hc.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || resp.Header.Get("X-Request-Id") != "ci-audit-1" {
		t.Fatalf("create: %s, request id %q", resp.Status, resp.Header.Get("X-Request-Id"))
	}
	want := fmt.Sprintf("uid %d", os.Getuid())
	testutil.Eventually(t, 10*time.Second, func() error {
		evs, err := tc.hosts[0].client.Events(ctx, 0, 0, 0)
		if err != nil {
			return err
		}
		for _, e := range evs {
			if e.Kind == "created" && e.VM == "audited" {
				if e.Actor != want || e.Source != "socket@"+follower.cfg.Name || e.RequestID != "ci-audit-1" {
					return fmt.Errorf("created event by %q via %q request %q; want %q via socket@%s request ci-audit-1",
						e.Actor, e.Source, e.RequestID, want, follower.cfg.Name)
				}
				return nil
			}
		}
		return fmt.Errorf("no created event for audited")
	})
	// The leader's own placement of the guest records no actor.
	evs, _ := tc.hosts[0].client.Events(ctx, 0, 0, 0)
	for _, e := range evs {
		if e.Kind == "leader" && e.Actor != "" {
			t.Fatalf("an election recorded with actor %q", e.Actor)
		}
	}
}

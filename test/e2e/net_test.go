package e2e

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/corralhq/corral/api"
	"github.com/corralhq/corral/internal/testutil"
)

// pings counts the guest's CORRAL-PING lines: ok, and ok after the n-th line.
func pingsAfter(log string, n int) (total, okAfter int) {
	for _, line := range strings.Split(log, "\n") {
		if !strings.Contains(line, "CORRAL-PING") {
			continue
		}
		total++
		if total > n && strings.Contains(line, "CORRAL-PING ok") {
			okAfter++
		}
	}
	return total, okAfter
}

// TestVXLANNetworkAcrossHosts: two guests on different hosts on one VXLAN
// network ping each other; after one is live-migrated the pings go on; after
// its host is killed and it is recovered elsewhere, it answers again at the
// same address.
func TestVXLANNetworkAcrossHosts(t *testing.T) {
	e := newEnv(t, 3, "")
	c := e.client(0)
	if _, err := c.CreateNetwork(e.ctx(), api.NetworkCreateRequest{Name: "blue", Kind: "vxlan", VNI: 4200}); err != nil {
		t.Fatal(err)
	}
	mk := func(name, host, ip, peer string) {
		req := e.vmRequest(name)
		req.Host = host
		req.Spec.NICs = []api.NIC{{Network: "blue"}}
		req.Spec.Kernel.Cmdline += " corral.ip=" + ip + "/24 corral.ping=" + peer
		if _, err := c.CreateVM(e.ctx(), req); err != nil {
			t.Fatal(err)
		}
	}
	mk("ping-a", "h1", "192.168.42.1", "192.168.42.2")
	mk("ping-b", "h2", "192.168.42.2", "192.168.42.1")
	// Both directions answer.
	waitPings := func(name string, after, want int) int {
		t.Helper()
		var total int
		testutil.Eventually(t, 90*time.Second, func() error {
			l, err := e.any().ConsoleLog(e.ctx(), name, 1<<20)
			if err != nil {
				return err
			}
			var ok int
			total, ok = pingsAfter(l.Log, after)
			if ok < want {
				return fmt.Errorf("%s: %d pings answered after line %d, want %d", name, ok, after, want)
			}
			return nil
		})
		return total
	}
	waitPings("ping-a", 0, 3)
	bLines := waitPings("ping-b", 0, 3)
	b, _ := c.VM(e.ctx(), "ping-b")
	mac := b.Spec.NICs[0].MAC

	// Live migration to h3: the pings keep being answered.
	aLines := waitPings("ping-a", 0, 1)
	if _, err := e.corralctl("h1", "vm", "migrate", "ping-b", "--to", "h3", "--wait"); err != nil {
		t.Fatal(err)
	}
	aLines = waitPings("ping-a", aLines, 3)
	_ = bLines

	// h3 dies: ping-b is recovered elsewhere and answers at the same address.
	if err := e.host("h3").Kill(e.ctx()); err != nil {
		t.Fatal(err)
	}
	e.waitMoved(0, []string{"ping-b"}, "h3", 60*time.Second)
	waitPings("ping-a", aLines, 3)
	b, _ = c.VM(e.ctx(), "ping-b")
	if b.Spec.NICs[0].MAC != mac {
		t.Fatalf("MAC changed from %s to %s", mac, b.Spec.NICs[0].MAC)
	}
	// A network in use cannot go.
	if err := c.DeleteNetwork(e.ctx(), "blue"); err == nil {
		t.Fatal("deleted a network in use")
	}
}

package netsetup

import (
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"reflect"
	"strings"
	"testing"

	"github.com/corralhq/corral/internal/testutil"
	"github.com/corralhq/corral/internal/testutil/kernelvm"
	"github.com/corralhq/corral/model"
)

// netNS creates a fresh named network namespace for the test.
func netNS(t *testing.T, name string) string {
	t.Helper()
	name = fmt.Sprintf("cnt%d-%s", os.Getpid()%100000, name)
	run(t, "", "ip", "netns", "add", name)
	t.Cleanup(func() { exec.Command("ip", "netns", "del", name).Run() })
	run(t, name, "ip", "link", "set", "lo", "up")
	return name
}

// run runs a command, inside namespace ns when given.
func run(t *testing.T, ns string, args ...string) string {
	t.Helper()
	if ns != "" {
		args = append([]string{"ip", "netns", "exec", ns}, args...)
	}
	out, err := exec.Command(args[0], args[1:]...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

func needRoot(t *testing.T) {
	t.Helper()
	if testing.Short() {
		t.Skip("needs root and network namespaces; skipped with -short")
	}
	if os.Geteuid() != 0 {
		t.Fatal("needs root (or go test -short)")
	}
}

func manager(t *testing.T, ns string) *Manager {
	t.Helper()
	m, err := New("/run/netns/"+ns, testutil.Logger(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(m.Close)
	return m
}

func TestBridgeAndVXLANWithTwoPeers(t *testing.T) {
	needRoot(t)
	// Two hosts A and B on an underlay veth; each gets a "guest" namespace
	// whose veth joins the network's bridge.
	a, b := netNS(t, "a"), netNS(t, "b")
	run(t, a, "ip", "link", "add", "eth0", "type", "veth", "peer", "name", "eth0", "netns", b)
	run(t, a, "ip", "addr", "add", "10.99.0.1/24", "dev", "eth0")
	run(t, b, "ip", "addr", "add", "10.99.0.2/24", "dev", "eth0")
	run(t, a, "ip", "link", "set", "eth0", "up")
	run(t, b, "ip", "link", "set", "eth0", "up")
	netw := model.Network{Name: "blue", Kind: model.NetVXLAN, VNI: 4242}
	ips := map[string]net.IP{a: net.ParseIP("10.99.0.1"), b: net.ParseIP("10.99.0.2")}
	third := net.ParseIP("10.99.0.3") // a host that is not up: entries still go in
	for ns, ip := range ips {
		m := manager(t, ns)
		peers := []net.IP{ips[a], ips[b], third}
		changed, err := m.Ensure(Plan{Network: netw, Local: ip, Peers: peers})
		if err != nil || !changed {
			t.Fatalf("ensure on %s: %v %v", ns, changed, err)
		}
		st, ok, err := m.Observe(netw)
		if err != nil || !ok || !st.Up || st.MTU != 1450 || st.Underlay != "cvx4242" {
			t.Fatalf("observe: %+v %v %v", st, ok, err)
		}
		var wantPeers []string
		for _, p := range peers {
			if !p.Equal(ip) {
				wantPeers = append(wantPeers, p.String())
			}
		}
		if !reflect.DeepEqual(st.Peers, wantPeers) {
			t.Fatalf("peers %v, want %v", st.Peers, wantPeers)
		}
		// Ensure again: nothing to do.
		if changed, err := m.Ensure(Plan{Network: netw, Local: ip, Peers: peers}); err != nil || changed {
			t.Fatalf("second ensure changed something: %v %v", changed, err)
		}
		// A peer leaves: its entry goes.
		if changed, err := m.Ensure(Plan{Network: netw, Local: ip, Peers: []net.IP{ips[a], ips[b]}}); err != nil || !changed {
			t.Fatalf("peer removal: %v %v", changed, err)
		}
		st, _, _ = m.Observe(netw)
		if len(st.Peers) != 1 {
			t.Fatalf("peers after removal: %v", st.Peers)
		}
	}
	// Guests on each side, one L2 segment over VXLAN.
	for i, host := range []string{a, b} {
		g := netNS(t, fmt.Sprintf("g%d", i))
		run(t, host, "ip", "link", "add", "tap0", "type", "veth", "peer", "name", "eth0", "netns", g)
		run(t, host, "ip", "link", "set", "tap0", "master", "cbx4242", "up")
		run(t, g, "ip", "addr", "add", fmt.Sprintf("192.168.42.%d/24", i+1), "dev", "eth0")
		run(t, g, "ip", "link", "set", "eth0", "up")
		t.Cleanup(func() { exec.Command("ip", "netns", "exec", host, "ip", "link", "del", "tap0").Run() })
	}
	g0 := fmt.Sprintf("cnt%d-g0", os.Getpid()%100000)
	out := run(t, g0, "busybox", "ping", "-c", "3", "-W", "2", "192.168.42.2")
	if !strings.Contains(out, "3 packets received") {
		t.Fatalf("ping across vxlan: %s", out)
	}
	// Remove cleans up, only what is ours.
	ma := manager(t, a)
	if err := ma.Remove(netw); err != nil {
		t.Fatal(err)
	}
	if _, ok, _ := ma.Observe(netw); ok {
		t.Fatal("bridge still there")
	}
	owned, _ := ma.Owned()
	if len(owned) != 0 {
		t.Fatalf("owned after remove: %v", owned)
	}
}

// vlanSupported tells whether this kernel can make VLAN devices (8021q).
func vlanSupported(t *testing.T) (bool, string) {
	probe := netNS(t, "probe")
	run(t, probe, "ip", "link", "add", "p0", "type", "veth", "peer", "name", "p1")
	out, err := exec.Command("ip", "netns", "exec", probe, "ip", "link", "add", "link", "p0", "name", "p0.7", "type", "vlan", "id", "7").CombinedOutput()
	return err == nil, strings.TrimSpace(string(out))
}

func TestVLAN(t *testing.T) {
	needRoot(t)
	if ok, why := vlanSupported(t); !ok {
		// CI's kernel has no 8021q. The same test then runs in a QEMU guest
		// booted from Debian's cloud kernel, which has it as a module.
		t.Logf("this kernel cannot create VLAN devices (%s): running the test under Debian's cloud kernel in QEMU", why)
		kernelvm.Run(t, "8021q", "bridge", "veth")
		return
	}
	// Host h's uplink up0 is cabled to a switch-side namespace p, which
	// has a tagged sub-interface for VLAN 7.
	h, p := netNS(t, "vlan"), netNS(t, "peer")
	run(t, h, "ip", "link", "add", "up0", "type", "veth", "peer", "name", "up1", "netns", p)
	run(t, h, "ip", "link", "set", "up0", "up")
	run(t, p, "ip", "link", "set", "up1", "up")
	run(t, p, "ip", "link", "add", "link", "up1", "name", "up1.7", "type", "vlan", "id", "7")
	run(t, p, "ip", "addr", "add", "192.168.7.2/24", "dev", "up1.7")
	run(t, p, "ip", "link", "set", "up1.7", "up")

	m := manager(t, h)
	netw := model.Network{Name: "lan", Kind: model.NetVLAN, VLAN: 7, Uplink: "up0"}
	if changed, err := m.Ensure(Plan{Network: netw}); err != nil || !changed {
		t.Fatalf("ensure: %v %v", changed, err)
	}
	if changed, err := m.Ensure(Plan{Network: netw}); err != nil || changed {
		t.Fatalf("second ensure: %v %v", changed, err)
	}
	if out := run(t, h, "ip", "-d", "link", "show", "cvl7"); !strings.Contains(out, "vlan protocol 802.1Q id 7") || !strings.Contains(out, "master cbv7") {
		t.Fatalf("vlan device: %s", out)
	}
	st, ok, err := m.Observe(netw)
	if err != nil || !ok || !st.Up || st.Underlay != "cvl7" {
		t.Fatalf("observe: %+v %v %v", st, ok, err)
	}

	// A guest on the network's bridge reaches the tagged peer: frames leave
	// up0 tagged with VLAN 7.
	g := netNS(t, "vg")
	run(t, h, "ip", "link", "add", "tap0", "type", "veth", "peer", "name", "eth0", "netns", g)
	run(t, h, "ip", "link", "set", "tap0", "master", "cbv7", "up")
	run(t, g, "ip", "addr", "add", "192.168.7.1/24", "dev", "eth0")
	run(t, g, "ip", "link", "set", "eth0", "up")
	if out := run(t, g, "busybox", "ping", "-c", "3", "-W", "2", "192.168.7.2"); !strings.Contains(out, "3 packets received") {
		t.Fatalf("ping over vlan 7: %s", out)
	}
	run(t, h, "ip", "link", "del", "tap0")

	if err := m.Remove(netw); err != nil {
		t.Fatal(err)
	}
	if _, ok, _ := m.Observe(netw); ok {
		t.Fatal("bridge still there after remove")
	}
	for _, dev := range []string{"cvl7", "cbv7"} {
		if err := exec.Command("ip", "netns", "exec", h, "ip", "link", "show", dev).Run(); err == nil {
			t.Fatalf("%s still there after remove", dev)
		}
	}
	run(t, h, "ip", "link", "show", "up0") // the uplink is not ours: it stays
}

func TestRefusesLinksItDidNotMake(t *testing.T) {
	needRoot(t)
	h := netNS(t, "foreign")
	run(t, h, "ip", "addr", "add", "10.98.0.1/8", "dev", "lo")
	run(t, h, "ip", "link", "add", "cbx77", "type", "bridge")
	m := manager(t, h)
	netw := model.Network{Name: "x", Kind: model.NetVXLAN, VNI: 77}
	if _, err := m.Ensure(Plan{Network: netw, Local: net.ParseIP("10.98.0.1")}); !errors.Is(err, ErrNotOurs) {
		t.Fatalf("ensure over a foreign bridge: %v", err)
	}
	if err := m.Remove(netw); err != nil {
		t.Fatal(err)
	}
	run(t, h, "ip", "link", "show", "cbx77") // still there
}

func TestMTUMustFitTheUnderlay(t *testing.T) {
	needRoot(t)
	h := netNS(t, "mtu")
	run(t, h, "ip", "link", "add", "u0", "type", "veth", "peer", "name", "u1")
	run(t, h, "ip", "addr", "add", "10.97.0.1/24", "dev", "u0")
	m := manager(t, h)
	netw := model.Network{Name: "big", Kind: model.NetVXLAN, VNI: 5, MTU: 1480}
	if _, err := m.Ensure(Plan{Network: netw, Local: net.ParseIP("10.97.0.1")}); !errors.Is(err, model.ErrInvalid) {
		t.Fatalf("mtu 1480 over a 1500 underlay with vxlan: %v", err)
	}
}

package e2e

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/corralhq/corral/api"
	"github.com/corralhq/corral/api/client"
	"github.com/corralhq/corral/internal/lab"
	"github.com/corralhq/corral/internal/testutil"
)

var (
	buildOnce sync.Once
	binDir    string
	buildErr  error
)

// binaries builds corrald and corralctl once per test binary.
func binaries(t testing.TB) (corrald, corralctl string) {
	buildOnce.Do(func() {
		binDir, buildErr = os.MkdirTemp("", "corral-e2e-bin-")
		if buildErr == nil {
			os.Chmod(binDir, 0o755)
			testutil.BuildCorral(t, binDir)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return filepath.Join(binDir, "corrald"), filepath.Join(binDir, "corralctl")
}

// env is a lab with corral running on every host and the test guest and
// its base image in place.
type env struct {
	t      testing.TB
	lab    *lab.Lab
	guest  testutil.Guest
	ctlBin string

	mu      sync.Mutex
	clients map[int]*client.Client
}

func newEnv(t testing.TB, hosts int, extraConfig string) *env {
	testutil.NeedRoot(t)
	corrald, corralctl := binaries(t)
	// The lab's hosts share this machine's two cores: the load of all of
	// them (saturated on purpose in the fencing tests) would mark every
	// host degraded and keep guests off it.
	extraConfig = "health_load_per_cpu_degraded = 0\n" + extraConfig
	// Every lab host serves the HTTPS API too (TestRemoteCorralctl).
	extraConfig = "api_addr = \"0.0.0.0:8443\"\n" + extraConfig
	l := testutil.NewLab(t, lab.Config{Hosts: hosts, Corrald: corrald, CorraldConfig: extraConfig})
	e := &env{t: t, lab: l, ctlBin: corralctl}
	e.guest = testutil.BuildGuest(t, filepath.Join(l.SharedDir(), "guest"))
	e.waitCluster()
	e.importBase()
	return e
}

// importBase imports the test guest's disk as image "base".
func (e *env) importBase() {
	e.t.Helper()
	f, err := os.Open(e.guest.BaseDisk)
	if err != nil {
		e.t.Fatal(err)
	}
	defer f.Close()
	fi, _ := f.Stat()
	if _, err := e.client(0).ImportImage(e.ctx(), "base", f, fi.Size()); err != nil {
		e.t.Fatalf("import base image: %v", err)
	}
}

func (e *env) ctx() context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	e.t.Cleanup(cancel)
	return ctx
}

// client returns host i's client; one per host, so that polling loops reuse
// its connections instead of leaving one open per call.
func (e *env) client(i int) *client.Client {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.clients == nil {
		e.clients = map[int]*client.Client{}
	}
	if c, ok := e.clients[i]; ok {
		return c
	}
	c := client.New(e.lab.Hosts[i].Socket())
	e.clients[i] = c
	return c
}

// any returns a client of the first host whose corrald answers.
func (e *env) any() *client.Client {
	for i := range e.lab.Hosts {
		c := e.client(i)
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		_, err := c.Status(ctx)
		cancel()
		if err == nil {
			return c
		}
	}
	return e.client(0)
}

func (e *env) host(name string) *lab.Host {
	h, err := e.lab.Host(name)
	if err != nil {
		e.t.Fatal(err)
	}
	return h
}

// waitCluster waits until every host sees all hosts alive and one leader.
func (e *env) waitCluster() {
	e.t.Helper()
	testutil.Eventually(e.t, 60*time.Second, func() error {
		for i := range e.lab.Hosts {
			s, err := e.client(i).Status(e.ctx())
			if err != nil {
				return err
			}
			if s.Leader == "" || s.Members["alive"] != len(e.lab.Hosts) {
				return fmt.Errorf("%s: leader %q, %d alive", s.Host, s.Leader, s.Members["alive"])
			}
			// Registered: the leader writes a host into state once it has
			// proved its name (TLS handshakes), a moment after gossip sees it.
			hosts, err := e.client(i).Hosts(e.ctx())
			if err != nil {
				return err
			}
			registered := 0
			for _, h := range hosts {
				if h.Mode == "active" {
					registered++
				}
			}
			if registered != len(e.lab.Hosts) {
				return fmt.Errorf("%s: %d hosts registered of %d", s.Host, registered, len(e.lab.Hosts))
			}
		}
		return nil
	})
}

// corralctl runs corralctl on host h (inside its namespaces) and returns
// stdout.
func (e *env) corralctl(h string, args ...string) (string, error) {
	cmd := e.host(h).Command(e.ctx(), e.ctlBin, args...)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return string(out), fmt.Errorf("corralctl %s on %s: %v: %s", strings.Join(args, " "), h, err, stderr.String())
	}
	return string(out), nil
}

// vmRequest is a test guest VM on the base image.
func (e *env) vmRequest(name string) api.VMCreateRequest {
	return api.VMCreateRequest{Name: name, Spec: api.VMSpec{
		VCPUs: 1, MemoryMiB: 128, Disks: []api.Disk{{Image: "base"}},
		Kernel: &api.Kernel{Kernel: e.guest.Kernel, Initrd: e.guest.Initrd, Cmdline: "console=ttyS0 quiet corral.name=" + name},
	}}
}

func (e *env) waitVM(name string, timeout time.Duration, cond func(api.VM) error) api.VM {
	e.t.Helper()
	var v api.VM
	testutil.Eventually(e.t, timeout, func() error {
		var err error
		if v, err = e.any().VM(e.ctx(), name); err != nil {
			return err
		}
		return cond(v)
	})
	return v
}

func running(v api.VM) error {
	if v.State != "running" {
		return fmt.Errorf("%s is %s on %s (%s)", v.Name, v.State, v.Host, v.Message)
	}
	return nil
}

// guestLog is a parsed serial console log of the test guest.
type guestLog struct {
	boots   []int   // counter value at each CORRAL-BOOT
	counter int     // last counter seen
	uptime  float64 // guest uptime at the last tick
	lines   []string
}

var (
	bootRx = regexp.MustCompile(`CORRAL-BOOT host=\S+ counter=(\d+)`)
	tickRx = regexp.MustCompile(`CORRAL-TICK counter=(\d+) uptime=([\d.]+)`)
)

func parseGuestLog(s string) guestLog {
	var g guestLog
	sc := bufio.NewScanner(strings.NewReader(s))
	for sc.Scan() {
		line := sc.Text()
		if m := bootRx.FindStringSubmatch(line); m != nil {
			n, _ := strconv.Atoi(m[1])
			g.boots = append(g.boots, n)
			g.lines = append(g.lines, line)
		}
		if m := tickRx.FindStringSubmatch(line); m != nil {
			g.counter, _ = strconv.Atoi(m[1])
			g.uptime, _ = strconv.ParseFloat(m[2], 64)
		}
	}
	return g
}

// console returns the parsed console log of a VM on whatever host runs it.
func (e *env) console(name string) guestLog {
	e.t.Helper()
	l, err := e.any().ConsoleLog(e.ctx(), name, 1<<20)
	if err != nil {
		e.t.Fatalf("console of %s: %v", name, err)
	}
	return parseGuestLog(l.Log)
}

// waitTicks waits until the guest's counter passes n and returns its log.
func (e *env) waitTicks(name string, n int) guestLog {
	e.t.Helper()
	var g guestLog
	testutil.Eventually(e.t, 90*time.Second, func() error {
		l, err := e.any().ConsoleLog(e.ctx(), name, 1<<20)
		if err != nil {
			return err
		}
		g = parseGuestLog(l.Log)
		if g.counter <= n {
			return fmt.Errorf("%s: counter %d, waiting for more than %d", name, g.counter, n)
		}
		return nil
	})
	return g
}

// virsh runs virsh on host h.
func (e *env) virsh(h string, args ...string) string {
	out, _ := e.host(h).Command(e.ctx(), "virsh", append([]string{"-c", "qemu:///system"}, args...)...).CombinedOutput()
	return string(out)
}

// qemuPID returns the pid of a VM's QEMU on host h.
func (e *env) qemuPID(h, vm string) int {
	e.t.Helper()
	out, err := e.host(h).Command(e.ctx(), "cat", "/run/libvirt/qemu/"+vm+".pid").Output()
	if err != nil {
		e.t.Fatalf("qemu pid of %s on %s: %v", vm, h, err)
	}
	pid, _ := strconv.Atoi(strings.TrimSpace(string(out)))
	return pid
}

func jsonEqual(a, b any) bool {
	x, _ := json.Marshal(a)
	y, _ := json.Marshal(b)
	return string(x) == string(y)
}

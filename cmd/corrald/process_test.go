package main

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/corralhq/corral/api"
	"github.com/corralhq/corral/internal/testutil"
)

// buildBinaries builds corrald and corralctl into dir.
func buildBinaries(t *testing.T, dir string) (corrald, corralctl string) {
	t.Helper()
	corrald, corralctl = filepath.Join(dir, "corrald"), filepath.Join(dir, "corralctl")
	for bin, pkg := range map[string]string{corrald: ".", corralctl: "../corralctl"} {
		out, err := exec.Command("go", "build", "-o", bin, pkg).CombinedOutput()
		if err != nil {
			t.Fatalf("build %s: %v\n%s", pkg, err, out)
		}
	}
	return corrald, corralctl
}

type proc struct {
	name   string
	socket string
	cmd    *exec.Cmd
	log    string
}

// TestProcessesKillLeader runs three corrald processes on 127.0.0.1-3 as an
// operator would (config files naming each other as seeds), checks that
// corralctl on each sees three alive hosts and one leader, then kills the
// leader with SIGKILL and waits for the survivors to elect a new one.
func TestProcessesKillLeader(t *testing.T) {
	dir := t.TempDir()
	corrald, corralctl := buildBinaries(t, dir)

	type ports struct{ gossip, raft, rpc int }
	var ps []ports
	var seeds []string
	for i := 1; i <= 3; i++ {
		ip := fmt.Sprintf("127.0.0.%d", i)
		p := ports{testutil.FreePort(t, ip), testutil.FreePort(t, ip), testutil.FreePort(t, ip)}
		ps = append(ps, p)
		seeds = append(seeds, fmt.Sprintf("%q", fmt.Sprintf("%s:%d", ip, p.gossip)))
	}
	var procs []*proc
	for i := 1; i <= 3; i++ {
		p := &proc{name: fmt.Sprintf("p%d", i), socket: filepath.Join(dir, fmt.Sprintf("p%d.sock", i)), log: filepath.Join(dir, fmt.Sprintf("p%d.log", i))}
		conf := fmt.Sprintf(`name = %q
data_dir = %q
bind_addr = "127.0.0.%d"
gossip_port = %d
raft_port = %d
rpc_port = %d
seeds = [%s]
socket = %q
socket_group = ""
fencer_socket = ""
bootstrap_expect = 3
`, p.name, filepath.Join(dir, p.name), i, ps[i-1].gossip, ps[i-1].raft, ps[i-1].rpc, strings.Join(seeds, ", "), p.socket)
		confPath := filepath.Join(dir, p.name+".toml")
		if err := os.WriteFile(confPath, []byte(conf), 0o644); err != nil {
			t.Fatal(err)
		}
		logf, err := os.Create(p.log)
		if err != nil {
			t.Fatal(err)
		}
		p.cmd = exec.Command(corrald, "--config", confPath)
		p.cmd.Stdout, p.cmd.Stderr = logf, logf
		if err := p.cmd.Start(); err != nil {
			t.Fatal(err)
		}
		logf.Close()
		procs = append(procs, p)
	}
	t.Cleanup(func() {
		for _, p := range procs {
			if p.cmd.ProcessState == nil {
				p.cmd.Process.Signal(syscall.SIGTERM)
				p.cmd.Wait()
			}
		}
		if t.Failed() {
			for _, p := range procs {
				b, _ := os.ReadFile(p.log)
				t.Logf("--- %s log:\n%s", p.name, b)
			}
		}
	})

	status := func(p *proc) (api.Status, error) {
		out, err := exec.Command(corralctl, "--socket", p.socket, "--timeout", "2s", "status", "-o", "json").CombinedOutput()
		if err != nil {
			return api.Status{}, fmt.Errorf("%s: %v: %s", p.name, err, out)
		}
		var s api.Status
		if err := json.Unmarshal(out, &s); err != nil {
			return s, fmt.Errorf("%s: %v: %s", p.name, err, out)
		}
		return s, nil
	}
	// Each corralctl sees 3 hosts alive and one leader.
	var leader string
	testutil.Eventually(t, 30*time.Second, func() error {
		leader = ""
		for _, p := range procs {
			s, err := status(p)
			if err != nil {
				return err
			}
			if s.Members["alive"] != 3 || s.Leader == "" || len(s.Voters) != 3 {
				return fmt.Errorf("%s: alive=%d leader=%q voters=%v", p.name, s.Members["alive"], s.Leader, s.Voters)
			}
			if leader != "" && leader != s.Leader {
				return fmt.Errorf("leaders differ: %s vs %s", leader, s.Leader)
			}
			leader = s.Leader
		}
		return nil
	})
	out, err := exec.Command(corralctl, "--socket", procs[0].socket, "host", "ls").CombinedOutput()
	if err != nil {
		t.Fatalf("host ls: %v %s", err, out)
	}
	t.Logf("host ls:\n%s", out)

	// kill -9 the leader; the others elect a new leader and answer.
	var victim *proc
	var rest []*proc
	for _, p := range procs {
		if p.name == leader {
			victim = p
		} else {
			rest = append(rest, p)
		}
	}
	killed := time.Now()
	victim.cmd.Process.Kill()
	victim.cmd.Wait()
	testutil.Eventually(t, 10*time.Second, func() error {
		for _, p := range rest {
			s, err := status(p)
			if err != nil {
				return err
			}
			if s.Leader == "" || s.Leader == victim.name {
				return fmt.Errorf("%s: leader %q", p.name, s.Leader)
			}
		}
		return nil
	})
	t.Logf("leader %s killed; survivors agree on a new leader after %v", victim.name, time.Since(killed).Round(time.Millisecond))
	// A write through a survivor works.
	out, err = exec.Command(corralctl, "--socket", rest[0].socket, "host", "label", rest[1].name, "after-kill=yes").CombinedOutput()
	if err != nil {
		t.Fatalf("label after kill: %v %s", err, out)
	}
}

package packaging

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

func command(t *testing.T, name string, args ...string) string {
	t.Helper()
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}

func TestPackages(t *testing.T) {
	if testing.Short() {
		t.Skip("builds both packages with nfpm (fetched through the Go module proxy); skipped with -short")
	}
	for _, tool := range []string{"dpkg-deb", "rpm", "systemd-analyze"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("%s: %v (make deps installs it)", tool, err)
		}
	}
	out := t.TempDir()
	command(t, "../scripts/package.sh", out)
	debs, _ := filepath.Glob(filepath.Join(out, "corral_*.deb"))
	rpms, _ := filepath.Glob(filepath.Join(out, "corral-*.rpm"))
	if len(debs) != 1 || len(rpms) != 1 {
		t.Fatalf("want one .deb and one .rpm in %s, got %v %v", out, debs, rpms)
	}
	deb, rpm := debs[0], rpms[0]

	t.Run("deb", func(t *testing.T) {
		fields := command(t, "dpkg-deb", "-f", deb, "Package", "Version", "Depends")
		for _, want := range []string{"Package: corral", "Depends: libvirt-daemon-system, qemu-system-x86, qemu-utils, genisoimage, iproute2"} {
			if !strings.Contains(fields, want) {
				t.Errorf("control lacks %q:\n%s", want, fields)
			}
		}
		ctrl := t.TempDir()
		command(t, "dpkg-deb", "-e", deb, ctrl)
		if b, _ := os.ReadFile(filepath.Join(ctrl, "conffiles")); strings.TrimSpace(string(b)) != "/etc/corral/corral.toml" {
			t.Errorf("conffiles: %q", b)
		}
		for _, s := range []string{"postinst", "prerm", "postrm"} {
			command(t, "sh", "-n", filepath.Join(ctrl, s))
		}
		root := t.TempDir()
		command(t, "dpkg-deb", "-x", deb, root)
		checkInstalledTree(t, root, "/lib/systemd/system/corrald.service")
		checkFencerUnit(t, root, "/lib/systemd/system/corral-fencer.service")
	})

	t.Run("rpm", func(t *testing.T) {
		files := command(t, "rpm", "-qpl", rpm)
		for _, f := range []string{"/usr/bin/corrald", "/usr/bin/corralctl", "/usr/bin/corral-fencer", "/usr/lib/systemd/system/corrald.service", "/usr/lib/systemd/system/corral-fencer.service", "/etc/corral/corral.toml", "/var/lib/corral"} {
			if !strings.Contains(files, f+"\n") {
				t.Errorf("rpm lacks %s:\n%s", f, files)
			}
		}
		if cf := command(t, "rpm", "-qp", "--configfiles", rpm); strings.TrimSpace(cf) != "/etc/corral/corral.toml" {
			t.Errorf("rpm config files: %q", cf)
		}
		if fl := command(t, "rpm", "-qp", "--qf", "[%{FILENAMES} %{FILEFLAGS:fflags}\n]", rpm); !strings.Contains(fl, "/etc/corral/corral.toml cn") {
			t.Errorf("corral.toml is not %%config(noreplace):\n%s", fl)
		}
		req := command(t, "rpm", "-qp", "--requires", rpm)
		for _, want := range []string{"libvirt-daemon-kvm", "qemu-img", "iproute"} {
			if !strings.Contains(req, want) {
				t.Errorf("rpm requires lacks %s:\n%s", want, req)
			}
		}
		if sc := command(t, "rpm", "-qp", "--scripts", rpm); !strings.Contains(sc, "groupadd --system corral") {
			t.Errorf("rpm scripts:\n%s", sc)
		}
	})
}

// checkFencerUnit: the fencer's unit verifies, runs the packaged fencer at
// real-time priority, and keeps its state across restarts.
func checkFencerUnit(t *testing.T, root, unit string) {
	if out, err := exec.Command("systemd-analyze", "verify", "--root="+root, unit).CombinedOutput(); err != nil || len(out) > 0 {
		t.Errorf("systemd-analyze verify %s: %v\n%s", unit, err, out)
	}
	body, err := os.ReadFile(filepath.Join(root, unit))
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"ExecStart=/usr/bin/corral-fencer --socket /run/corral-fencer/fencer.sock", "CPUSchedulingPolicy=fifo", "OOMScoreAdjust=-1000", "RuntimeDirectoryPreserve=yes", "Restart=always"} {
		if !strings.Contains(string(body), "\n"+want+"\n") {
			t.Errorf("fencer unit lacks %q", want)
		}
	}
	if v := command(t, filepath.Join(root, "usr/bin/corral-fencer"), "--version"); !strings.HasPrefix(v, "corral-fencer ") {
		t.Errorf("corral-fencer --version: %q", v)
	}
}

// checkInstalledTree checks an unpacked package: the unit passes
// systemd-analyze verify against it, the config is what corrald documents,
// and the packaged binaries run a one-host cluster with the packaged config.
func checkInstalledTree(t *testing.T, root, unit string) {
	corrald, corralctl := filepath.Join(root, "usr/bin/corrald"), filepath.Join(root, "usr/bin/corralctl")
	conf := filepath.Join(root, "etc/corral/corral.toml")

	// The unit: systemd-analyze resolves the targets it names from the
	// tree, so give it this host's.
	unitDir := filepath.Dir(filepath.Join(root, unit))
	targets, _ := filepath.Glob("/lib/systemd/system/*.target")
	for _, tg := range targets {
		if b, err := os.ReadFile(tg); err == nil {
			os.WriteFile(filepath.Join(unitDir, filepath.Base(tg)), b, 0o644)
		}
	}
	if out, err := exec.Command("systemd-analyze", "verify", "--root="+root, unit).CombinedOutput(); err != nil || len(out) > 0 {
		t.Errorf("systemd-analyze verify: %v\n%s", err, out)
	}
	body, err := os.ReadFile(filepath.Join(root, unit))
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"ExecStart=/usr/bin/corrald --config /etc/corral/corral.toml", "Type=notify", "KillMode=process", "RestartPreventExitStatus=2"} {
		if !strings.Contains(string(body), "\n"+want+"\n") {
			t.Errorf("unit lacks %q", want)
		}
	}

	// The config file is corrald's own example, all defaults.
	shipped, err := os.ReadFile(conf)
	if err != nil {
		t.Fatal(err)
	}
	if ex := command(t, corrald, "example-config"); ex != string(shipped) {
		t.Error("/etc/corral/corral.toml differs from corrald example-config")
	}
	if v := command(t, corrald, "version"); !strings.HasPrefix(v, "corrald ") {
		t.Errorf("corrald version: %q", v)
	}

	// A one-host cluster from the packaged binaries and config, with the
	// machine-specific keys given as flags, after corrald init as the README
	// says. It must not reach this machine's libvirtd or network:
	// libvirt_socket points nowhere and networks are not managed.
	dir := t.TempDir()
	if out := command(t, corrald, "init", "--config", conf, "--name", "pkg1", "--data-dir", filepath.Join(dir, "data")); !strings.Contains(out, "corral1.") {
		t.Errorf("corrald init printed no join token:\n%s", out)
	}
	sock := filepath.Join(dir, "corral.sock")
	ip := "127.0.0.1"
	logf, err := os.Create(filepath.Join(dir, "corrald.log"))
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(corrald, "--config", conf, "--name", "pkg1", "--data-dir", filepath.Join(dir, "data"),
		"--bind-addr", ip, "--bootstrap-expect", "1", "--socket", sock, "--socket-group", "",
		"--gossip-port", fmt.Sprint(testutil.FreePort(t, ip)), "--raft-port", fmt.Sprint(testutil.FreePort(t, ip)),
		"--rpc-port", fmt.Sprint(testutil.FreePort(t, ip)), "--libvirt-socket", filepath.Join(dir, "no-libvirt.sock"),
		"--storage-pool", filepath.Join(dir, "pool"), "--manage-networks", "false")
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	logf.Close()
	exited := false
	t.Cleanup(func() {
		if !exited {
			cmd.Process.Kill()
			cmd.Wait()
		}
		if t.Failed() {
			b, _ := os.ReadFile(filepath.Join(dir, "corrald.log"))
			t.Logf("corrald log:\n%s", b)
		}
	})
	testutil.Eventually(t, 30*time.Second, func() error {
		out, err := exec.Command(corralctl, "--socket", sock, "--timeout", "2s", "status", "-o", "json").CombinedOutput()
		if err != nil {
			return fmt.Errorf("%v: %s", err, out)
		}
		var s api.Status
		if err := json.Unmarshal(out, &s); err != nil {
			return err
		}
		if s.Leader != "pkg1" {
			return fmt.Errorf("leader %q", s.Leader)
		}
		return nil
	})
	cmd.Process.Signal(syscall.SIGTERM)
	err = cmd.Wait()
	exited = true
	if err != nil {
		t.Errorf("corrald after SIGTERM: %v", err)
	}
}

package testutil

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/corralhq/corral/internal/lab"
)

// RepoRoot returns the repository's top directory.
func RepoRoot() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Clean(filepath.Join(filepath.Dir(file), "..", ".."))
}

// NeedRoot skips the test under -short and fails it when not root: root
// tests are the point of the suite and run for real in CI.
func NeedRoot(t testing.TB) {
	t.Helper()
	if testing.Short() {
		t.Skip("needs root, namespaces and libvirt; skipped with -short")
	}
	if os.Geteuid() != 0 {
		t.Fatal("this test needs root (run make test as root, or go test -short)")
	}
	if err := lab.Check(); err != nil {
		t.Fatal(err)
	}
}

// Guest holds the paths of the test guest inside a lab's shared storage.
type Guest struct {
	Kernel, Initrd, BaseDisk string
}

// BuildGuest builds the test guest (scripts/build-test-guest.sh, cached in
// _build/guest) and copies it into dir, which QEMU can read.
func BuildGuest(t testing.TB, dir string) Guest {
	t.Helper()
	cache := filepath.Join(RepoRoot(), "_build", "guest")
	out, err := exec.Command(filepath.Join(RepoRoot(), "scripts", "build-test-guest.sh"), cache).CombinedOutput()
	if err != nil {
		t.Fatalf("build test guest: %v\n%s", err, out)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{"vmlinuz", "initrd.img", "disk.qcow2"} {
		b, err := os.ReadFile(filepath.Join(cache, f))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, f), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return Guest{Kernel: filepath.Join(dir, "vmlinuz"), Initrd: filepath.Join(dir, "initrd.img"), BaseDisk: filepath.Join(dir, "disk.qcow2")}
}

// BuildCorral builds corrald, corralctl and corral-lab into dir and returns
// the paths of the first two.
func BuildCorral(t testing.TB, dir string) (corrald, corralctl string) {
	t.Helper()
	for _, name := range []string{"corrald", "corralctl", "corral-lab", "corral-fencer"} {
		cmd := exec.Command("go", "build", "-o", filepath.Join(dir, name), "./cmd/"+name)
		cmd.Dir = RepoRoot()
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("build %s: %v\n%s", name, err, out)
		}
	}
	return filepath.Join(dir, "corrald"), filepath.Join(dir, "corralctl")
}

// NewLab brings a lab up for the test and takes it down at cleanup
// (CORRAL_KEEP_LAB=1 keeps a failed test's lab for inspection). Each lab
// gets an ID no other running lab holds.
func NewLab(t testing.TB, cfg lab.Config) *lab.Lab {
	t.Helper()
	id, release := ClaimLabID(t)
	cfg.ID = id
	dir, err := os.MkdirTemp("", "corral-lab-")
	if err != nil {
		t.Fatal(err)
	}
	os.Chmod(dir, 0o755) // QEMU (user libvirt-qemu) reads disks below it
	cfg.Dir = filepath.Join(dir, "lab")
	l, err := lab.Up(context.Background(), cfg)
	if err != nil {
		os.RemoveAll(dir) // Up took down what it had built
		release()
		t.Fatalf("lab up: %v", err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			for _, h := range l.Hosts {
				for _, d := range []string{"corrald", "libvirtd"} {
					if b, err := os.ReadFile(h.LogFile(d)); err == nil {
						t.Logf("--- %s %s log (tail):\n%s", h.Name, d, tail(string(b), 6000))
					}
				}
				// What libvirt holds there, and in which state and why.
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				out, _ := h.Command(ctx, "virsh", "-c", "qemu:///system", "list", "--all").CombinedOutput()
				cancel()
				t.Logf("--- %s virsh list --all:\n%s", h.Name, out)
			}
			if os.Getenv("CORRAL_KEEP_LAB") == "1" {
				t.Logf("lab kept in %s", l.Dir)
				return
			}
		}
		if err := l.Down(context.Background()); err != nil {
			t.Errorf("lab down: %v", err)
		}
		os.RemoveAll(dir)
		release()
	})
	return l
}

func tail(s string, n int) string {
	if len(s) > n {
		return s[len(s)-n:]
	}
	return s
}

// ClaimLabID takes a free lab ID (100-250) with an exclusive lock file whose
// owner PID is checked, so concurrent test binaries do not collide, and
// skips an id whose bridge or namespaces are on the machine already.
func ClaimLabID(t testing.TB) (int, func()) {
	dir := "/run/corral-lab-ids"
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	for id := 100; id <= 250; id++ {
		p := filepath.Join(dir, strconv.Itoa(id))
		f, err := os.OpenFile(p, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o644)
		if err != nil {
			// Reclaim the ID of a test binary that died.
			if b, rerr := os.ReadFile(p); rerr == nil {
				if pid, _ := strconv.Atoi(strings.TrimSpace(string(b))); pid > 0 && syscall.Kill(pid, 0) != nil {
					os.Remove(p)
					id--
				}
			}
			continue
		}
		fmt.Fprintf(f, "%d\n", os.Getpid())
		f.Close()
		if lab.IDInUse(id) {
			// A lab nobody holds a lock for (left by a killed run, or by
			// a process in another PID namespace): leave it alone and use
			// the next id.
			t.Logf("lab id %d: its bridge or namespaces exist without an owner here; skipping it", id)
			os.Remove(p)
			continue
		}
		return id, func() { os.Remove(p) }
	}
	t.Fatal("no free lab id")
	return 0, nil
}

// InLabHost re-runs the calling test inside lab host h's network and mount
// namespaces (the test binary under nsenter), where paths such as
// /run/libvirt and /var/log/libvirt are the host's own. In that inner run it
// returns true and the test carries on; in the outer run it waits for the
// inner one, copies its output into the test log, and returns false.
func InLabHost(t *testing.T, setup func() (*lab.Host, map[string]string)) bool {
	t.Helper()
	if os.Getenv("CORRAL_LAB_INNER") == t.Name() {
		return true
	}
	h, env := setup()
	args := []string{"-test.run=^" + t.Name() + "$", "-test.count=1", "-test.v"}
	cmd := h.Command(context.Background(), os.Args[0], args...)
	cmd.Env = append(os.Environ(), "CORRAL_LAB_INNER="+t.Name())
	for k, v := range env {
		cmd.Env = append(cmd.Env, k+"="+v)
	}
	out, err := cmd.CombinedOutput()
	t.Logf("inside %s:\n%s", h.Name, out)
	if err != nil {
		t.Fatalf("test inside lab host %s failed: %v", h.Name, err)
	}
	return false
}

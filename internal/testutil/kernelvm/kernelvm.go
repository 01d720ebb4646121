// Package kernelvm runs one test of the calling test binary inside a QEMU
// guest booted from Debian's cloud kernel. It is for tests of kernel
// features the machine's own kernel lacks (this project's CI kernel has no
// 8021q, so VLAN devices cannot exist there): the same compiled test, the
// same netlink code, against a real Linux kernel that has the feature.
//
// The guest is a throw-away initramfs: busybox-static, the host's iproute2
// `ip` and the test binary with the shared libraries ldd names, and the
// kernel modules asked for with their dependencies (modinfo -F depends).
// Its /init loads the modules, runs the test as root with
// CORRAL_KERNELVM=1, prints the exit status and powers off.
package kernelvm

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/corralhq/corral/internal/kvm"
)

// InGuest reports whether this process is the test running inside the guest.
func InGuest() bool { return os.Getenv("CORRAL_KERNELVM") == "1" }

// Run boots the guest, runs the test named by t (the whole name, anchored)
// inside it after loading modules, streams the guest's output to the test
// log and fails t unless the test passed in the guest.
func Run(t *testing.T, modules ...string) {
	t.Helper()
	if InGuest() {
		t.Fatal("kernelvm.Run inside the guest: the guest kernel lacks what the test needs too")
	}
	kver, kernel, err := cloudKernel()
	if err != nil {
		t.Fatal(err)
	}
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	initrd := filepath.Join(dir, "initrd.img")
	order, err := buildInitrd(filepath.Join(dir, "root"), initrd, exe, kver, modules)
	if err != nil {
		t.Fatal(err)
	}
	accel := "tcg"
	if kvm.Usable() == "" {
		accel = "kvm"
	}
	t.Logf("booting kernel %s (%s) with modules %s to run %s", kver, accel, strings.Join(order, " "), t.Name())

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	run := "^" + regexp.QuoteMeta(t.Name()) + "$"
	run = strings.ReplaceAll(run, "/", "$/^") // subtests match level by level
	cmd := exec.CommandContext(ctx, "qemu-system-x86_64",
		"-machine", "q35,accel="+accel, "-cpu", "max", "-m", "512", "-smp", "1",
		"-nographic", "-no-reboot", "-monitor", "none", "-serial", "stdio",
		"-kernel", kernel, "-initrd", initrd,
		"-append", "console=ttyS0 panic=-1 loglevel=3 corral.run="+run)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = cmd.Stdout
	start := time.Now()
	if err := cmd.Start(); err != nil {
		t.Fatalf("qemu-system-x86_64: %v (make deps installs qemu-system-x86)", err)
	}
	status, passed, tail := -1, false, []string{}
	inTest := false
	sc := bufio.NewScanner(out)
	for sc.Scan() {
		line := strings.TrimRight(sc.Text(), "\r")
		switch {
		case strings.HasSuffix(line, "CORRAL-TEST-START"): // after the firmware's escape codes
			inTest = true
		case strings.HasPrefix(line, "CORRAL-TEST-EXIT="):
			status, _ = strconv.Atoi(strings.TrimPrefix(line, "CORRAL-TEST-EXIT="))
			inTest = false
		case inTest:
			t.Log("guest: " + line)
			if strings.HasPrefix(strings.TrimSpace(line), "--- PASS: "+t.Name()+" ") {
				passed = true
			}
		default:
			tail = append(tail, line)
			if len(tail) > 40 {
				tail = tail[1:]
			}
		}
	}
	werr := cmd.Wait()
	t.Logf("guest ran for %.1fs", time.Since(start).Seconds())
	if status != 0 || !passed {
		t.Fatalf("in the guest: exit status %d, passed %v (qemu: %v); last console lines:\n%s",
			status, passed, werr, strings.Join(tail, "\n"))
	}
}

// cloudKernel finds the newest Debian cloud kernel with its modules.
func cloudKernel() (kver, image string, err error) {
	ents, _ := os.ReadDir("/lib/modules")
	var vers []string
	for _, e := range ents {
		v := e.Name()
		if strings.HasSuffix(v, "-cloud-amd64") {
			if _, err := os.Stat("/boot/vmlinuz-" + v); err == nil {
				vers = append(vers, v)
			}
		}
	}
	if len(vers) == 0 {
		return "", "", fmt.Errorf("no Debian cloud kernel (/boot/vmlinuz-*-cloud-amd64 with /lib/modules): make deps installs linux-image-cloud-amd64")
	}
	sort.Slice(vers, func(i, j int) bool { return versionLess(vers[i], vers[j]) })
	v := vers[len(vers)-1]
	return v, "/boot/vmlinuz-" + v, nil
}

// versionLess orders versions like sort -V: runs of digits by value.
func versionLess(a, b string) bool {
	num := regexp.MustCompile(`\d+|\D+`)
	pa, pb := num.FindAllString(a, -1), num.FindAllString(b, -1)
	for i := 0; i < len(pa) && i < len(pb); i++ {
		if pa[i] == pb[i] {
			continue
		}
		na, ea := strconv.Atoi(pa[i])
		nb, eb := strconv.Atoi(pb[i])
		if ea == nil && eb == nil {
			return na < nb
		}
		return pa[i] < pb[i]
	}
	return len(pa) < len(pb)
}

const initScript = `#!/bin/busybox sh
/bin/busybox --install -s /bin
export PATH=/sbin:/bin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
mount -t tmpfs run /run
mount -t tmpfs tmp /tmp
exec >/dev/ttyS0 2>&1
for m in $(cat /lib/modules/order); do
  case "$m" in
    *.ko.xz) xz -dc "/lib/modules/$m" > /tmp/m.ko && insmod /tmp/m.ko ;;
    *) insmod "/lib/modules/$m" ;;
  esac || echo "insmod $m failed"
done
run=$(tr ' ' '\n' < /proc/cmdline | sed -n 's/^corral.run=//p')
echo CORRAL-TEST-START
cd /tmp
CORRAL_KERNELVM=1 /test -test.run "$run" -test.v -test.count=1 -test.timeout 4m
echo "CORRAL-TEST-EXIT=$?"
poweroff -f
`

// buildInitrd lays out the guest's root and packs it; it returns the module
// load order.
func buildInitrd(root, initrd, exe, kver string, modules []string) ([]string, error) {
	for _, d := range []string{"bin", "sbin", "lib/modules", "proc", "sys", "dev", "run", "tmp"} {
		if err := os.MkdirAll(filepath.Join(root, d), 0o755); err != nil {
			return nil, err
		}
	}
	ip, err := exec.LookPath("ip")
	if err != nil {
		return nil, fmt.Errorf("ip: %w (make deps installs iproute2)", err)
	}
	files := map[string]string{ // source -> path in the guest
		"/bin/busybox": "/bin/busybox",
		ip:             "/sbin/ip",
		exe:            "/test",
	}
	for _, bin := range []string{ip, exe} {
		libs, err := sharedLibs(bin)
		if err != nil {
			return nil, err
		}
		for _, l := range libs {
			files[l] = l
		}
	}
	order, err := moduleOrder(kver, modules)
	if err != nil {
		return nil, err
	}
	for _, f := range order {
		files[f] = "/lib/modules/" + filepath.Base(f)
	}
	for src, dst := range files {
		if err := copyFile(src, filepath.Join(root, dst)); err != nil {
			return nil, err
		}
	}
	names := make([]string, len(order))
	for i, f := range order {
		names[i] = filepath.Base(f)
	}
	if err := os.WriteFile(filepath.Join(root, "lib/modules/order"), []byte(strings.Join(names, "\n")+"\n"), 0o644); err != nil {
		return nil, err
	}
	if err := os.WriteFile(filepath.Join(root, "init"), []byte(initScript), 0o755); err != nil {
		return nil, err
	}
	pack := exec.Command("sh", "-c", `find . | cpio -o -H newc --quiet > "$0"`, initrd)
	pack.Dir = root
	if out, err := pack.CombinedOutput(); err != nil {
		return nil, fmt.Errorf("cpio: %v: %s (make deps installs cpio)", err, out)
	}
	return names, nil
}

// sharedLibs lists the libraries (and the loader) ldd says bin needs.
func sharedLibs(bin string) ([]string, error) {
	out, err := exec.Command("ldd", bin).CombinedOutput()
	if err != nil {
		if bytes.Contains(out, []byte("not a dynamic executable")) {
			return nil, nil
		}
		return nil, fmt.Errorf("ldd %s: %v: %s", bin, err, out)
	}
	var libs []string
	for _, line := range strings.Split(string(out), "\n") {
		f := strings.Fields(line)
		switch {
		case len(f) >= 3 && f[1] == "=>" && strings.HasPrefix(f[2], "/"):
			libs = append(libs, f[2])
		case len(f) >= 1 && strings.HasPrefix(f[0], "/"):
			libs = append(libs, f[0])
		}
	}
	return libs, nil
}

// moduleOrder resolves modules of kernel kver to files, each after its
// dependencies; built-in modules need no file.
func moduleOrder(kver string, modules []string) ([]string, error) {
	var order []string
	seen := map[string]bool{}
	var add func(m string) error
	add = func(m string) error {
		if seen[m] {
			return nil
		}
		seen[m] = true
		out, err := exec.Command("modinfo", "-k", kver, "-F", "filename", m).Output()
		if err != nil {
			return fmt.Errorf("module %s of kernel %s: %v (make deps installs kmod)", m, kver, err)
		}
		file := strings.TrimSpace(string(out))
		if strings.HasPrefix(file, "(builtin)") {
			return nil
		}
		out, err = exec.Command("modinfo", "-k", kver, "-F", "depends", m).Output()
		if err != nil {
			return fmt.Errorf("modinfo depends %s: %v", m, err)
		}
		for _, d := range strings.Split(strings.TrimSpace(string(out)), ",") {
			if d != "" {
				if err := add(d); err != nil {
					return err
				}
			}
		}
		order = append(order, file)
		return nil
	}
	for _, m := range modules {
		if err := add(m); err != nil {
			return nil, err
		}
	}
	return order, nil
}

func copyFile(src, dst string) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	st, err := in.Stat()
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
		return err
	}
	out, err := os.OpenFile(dst, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, st.Mode().Perm())
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}

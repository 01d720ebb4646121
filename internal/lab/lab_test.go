package lab

import (
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestTraversable: a lab under a directory QEMU's user cannot pass through
// is refused at up, naming the directory, instead of failing at the first
// guest.
func TestTraversable(t *testing.T) {
	// Not t.TempDir: its parent is 0700, which is the very case refused.
	base, err := os.MkdirTemp("", "lab-traverse-")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(base)
	open := filepath.Join(base, "open")
	closed := filepath.Join(base, "closed")
	for _, d := range []string{open, closed} {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	os.Chmod(base, 0o755)
	if err := traversable(filepath.Join(open, "lab")); err != nil {
		t.Fatalf("open: %v", err)
	}
	os.Chmod(closed, 0o700)
	err = traversable(filepath.Join(closed, "x", "lab"))
	if err == nil || !strings.Contains(err.Error(), closed) || !strings.Contains(err.Error(), "chmod o+x") {
		t.Fatalf("closed: %v", err)
	}
}

// A lab host gets the machine's libvirt daemon configuration and none of
// the state the machine's libvirtd keeps beside it.
func TestCopyLibvirtConfigLeavesStateBehind(t *testing.T) {
	src, dst := t.TempDir(), t.TempDir()
	files := map[string]string{
		"qemu.conf":                              "user = \"libvirt-qemu\"\n",
		"libvirtd.conf":                          "log_level = 3\n",
		"storage/corral.xml":                     "<pool type='dir'><name>corral</name></pool>",
		"storage/autostart/corral.xml":           "<pool/>",
		"qemu/networks/default.xml":              "<network/>",
		"qemu/networks/autostart/default.xml":    "<network/>",
		"qemu/leftover.xml":                      "<domain/>",
		"secrets/0f0e.xml":                       "<secret/>",
		"hooks/qemu":                             "#!/bin/sh\n",
		"nwfilter/clean-traffic.xml":             "<filter/>",
		"qemu/networks/autostart/not-a-conf.txt": "",
	}
	for f, body := range files {
		p := filepath.Join(src, f)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if err := copyLibvirtConfig(src, dst); err != nil {
		t.Fatal(err)
	}
	var got []string
	filepath.WalkDir(dst, func(p string, d fs.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			rel, _ := filepath.Rel(dst, p)
			got = append(got, rel)
		}
		return err
	})
	if strings.Join(got, " ") != "libvirtd.conf qemu.conf" {
		t.Fatalf("copied %v", got)
	}
	if b, _ := os.ReadFile(filepath.Join(dst, "qemu.conf")); string(b) != files["qemu.conf"] {
		t.Fatalf("qemu.conf: %q", b)
	}
}

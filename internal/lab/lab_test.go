package lab

import (
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

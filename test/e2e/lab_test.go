package e2e

import (
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/corralhq/corral/internal/lab"
	"github.com/corralhq/corral/internal/testutil"
)

// TestLabDownLeavesNothing: corral-lab down removes every namespace, link,
// bridge, mount, process and file the lab made, and is safe to run twice.
func TestLabDownLeavesNothing(t *testing.T) {
	testutil.NeedRoot(t)
	corrald, _ := binaries(t)
	id, release := testutil.ClaimLabID(t)
	defer release()
	dir, err := os.MkdirTemp("", "corral-lab-down-")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(dir)
	os.Chmod(dir, 0o755)
	ctx := context.Background()
	l, err := lab.Up(ctx, lab.Config{Dir: filepath.Join(dir, "lab"), ID: id, Hosts: 2, Corrald: corrald})
	if err != nil {
		t.Fatal(err)
	}
	// A second lab with the same id is refused instead of taking this
	// one's namespaces over.
	if _, err := lab.Up(ctx, lab.Config{Dir: filepath.Join(dir, "lab2"), ID: id, Hosts: 2, Corrald: corrald}); err == nil || !strings.Contains(err.Error(), "in use") {
		t.Fatalf("second lab with id %d: %v", id, err)
	}
	// Guests too, so that QEMU processes exist.
	g := testutil.BuildGuest(t, filepath.Join(l.SharedDir(), "guest"))
	e := &env{t: t, lab: l, guest: g}
	e.waitCluster()
	f, _ := os.Open(g.BaseDisk)
	fi, _ := f.Stat()
	if _, err := e.client(0).ImportImage(e.ctx(), "base", f, fi.Size()); err != nil {
		t.Fatal(err)
	}
	f.Close()
	if _, err := e.client(0).CreateVM(e.ctx(), e.vmRequest("down")); err != nil {
		t.Fatal(err)
	}
	e.waitTicks("down", 0)
	var inos []uint64
	for _, h := range l.Hosts {
		inos = append(inos, h.NetIno)
	}
	if err := l.Down(ctx); err != nil {
		t.Fatal(err)
	}
	if err := l.Down(ctx); err != nil {
		t.Fatalf("second down: %v", err)
	}
	// Nothing left: namespaces, links, mounts, processes, files.
	testutil.Eventually(t, 10*time.Second, func() error {
		for _, h := range l.Hosts {
			if _, err := os.Stat("/run/netns/" + h.Netns); err == nil {
				return fmt.Errorf("netns %s left", h.Netns)
			}
			if _, err := net.InterfaceByName(h.Veth); err == nil {
				return fmt.Errorf("link %s left", h.Veth)
			}
		}
		if _, err := net.InterfaceByName(l.Bridge); err == nil {
			return fmt.Errorf("bridge %s left", l.Bridge)
		}
		mi, _ := os.ReadFile("/proc/self/mountinfo")
		if strings.Contains(string(mi), l.Dir) {
			return fmt.Errorf("mounts under %s left", l.Dir)
		}
		if _, err := os.Stat(l.Dir); err == nil {
			return fmt.Errorf("%s left", l.Dir)
		}
		procs, _ := os.ReadDir("/proc")
		for _, p := range procs {
			pid, err := strconv.Atoi(p.Name())
			if err != nil {
				continue
			}
			fi, err := os.Stat(fmt.Sprintf("/proc/%d/ns/net", pid))
			if err != nil {
				continue
			}
			ino := fi.Sys().(*syscall.Stat_t).Ino
			for _, want := range inos {
				if ino == want {
					if stat, _ := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid)); !strings.Contains(string(stat), ") Z ") {
						return fmt.Errorf("process %d still in a lab namespace: %s", pid, stat)
					}
				}
			}
		}
		return nil
	})
}

// Package guestproc finds the QEMU processes of corral's guests on this host
// and kills them directly, without asking libvirtd, which may be slow, hung
// or dead exactly when a host must fence itself.
//
// A corral guest is a domain that libvirt runs (its pid file in libvirt's
// run directory, /run/libvirt/qemu) whose live status XML, written by
// libvirtd before QEMU's vCPUs first run, carries corral's metadata
// namespace. Each process is pinned by a pidfd once found, and its command
// line must name the guest (`-name guest=NAME`), so a recycled PID is never
// killed. Deaths are confirmed through the pidfds (readable once the process
// has exited), not through libvirt's bookkeeping.
//
// The fencer (cmd/corral-fencer) and corrald's own self-fence both use it.
package guestproc

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// MetadataNS is the XML namespace of corral's metadata in a domain's
// definition; its presence in the status XML marks a domain as corral's.
const MetadataNS = "https://corral.dev/xmlns/vm/1"

// DefaultRunDir is where libvirt's QEMU driver keeps pid files and status XML.
const DefaultRunDir = "/run/libvirt/qemu"

// Target is a corral guest's QEMU as found in the run directory.
type Target struct {
	Name string
	PID  int
}

// Find lists the domains the run directory says are running, corral's or
// not (IsCorral tells). A domain whose pid file vanishes while it reads is
// skipped (it stopped meanwhile).
func Find(runDir string) ([]Target, error) {
	ents, err := os.ReadDir(runDir)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil // libvirtd never ran a guest since boot
	}
	if err != nil {
		return nil, err
	}
	var out []Target
	for _, e := range ents {
		name, ok := strings.CutSuffix(e.Name(), ".pid")
		if !ok || name == "" {
			continue
		}
		pid, err := readPID(filepath.Join(runDir, e.Name()))
		if err != nil {
			continue
		}
		out = append(out, Target{Name: name, PID: pid})
	}
	return out, nil
}

// PIDFile returns the pid libvirt recorded for domain name.
func PIDFile(runDir, name string) (int, error) {
	return readPID(filepath.Join(runDir, name+".pid"))
}

func readPID(path string) (int, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, err
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil || pid <= 1 {
		return 0, fmt.Errorf("pid file %s: bad pid %q", path, bytes.TrimSpace(b))
	}
	return pid, nil
}

// IsCorral reports whether domain name in the run directory is corral's: its
// status XML carries corral's metadata namespace. known is false when there
// is no status XML yet (libvirtd writes the pid file first, the status
// before the vCPUs first run): ask again later. It reads at most 64 KiB:
// the metadata sits near the top, before the devices.
func IsCorral(runDir, name string) (corral, known bool) {
	f, err := os.Open(filepath.Join(runDir, name+".xml"))
	if err != nil {
		return false, false
	}
	defer f.Close()
	buf := make([]byte, 64<<10)
	n, _ := io.ReadFull(f, buf)
	return bytes.Contains(buf[:n], []byte(MetadataNS)), true
}

// Proc is one guest's QEMU, pinned by a pidfd: signals and waits reach that
// process and never a later one that reuses its PID.
type Proc struct {
	Name string
	PID  int
	fd   int
}

// Open pins target's process and checks that it is the QEMU of that guest.
// It returns an error wrapping os.ErrProcessDone when the process is gone
// (or its PID now names another process), and ErrStarting while a process
// with that PID is still in execve.
func Open(t Target) (*Proc, error) {
	fd, err := unix.PidfdOpen(t.PID, 0)
	if err == unix.ESRCH {
		return nil, fmt.Errorf("%s pid %d: %w", t.Name, t.PID, os.ErrProcessDone)
	}
	if err != nil {
		return nil, fmt.Errorf("pidfd of %s pid %d: %w", t.Name, t.PID, err)
	}
	// The pidfd now refers to whatever process has this PID; the command
	// line says whether that is still the guest's QEMU.
	p := &Proc{Name: t.Name, PID: t.PID, fd: fd}
	cmdline, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", t.PID))
	if err == nil && len(cmdline) == 0 && !p.Dead() {
		// An empty command line on a live process: it is inside execve,
		// whose caller already saw it succeed while the kernel has not
		// yet laid out the new arguments. Who it is will be known on the
		// next look; it is not gone.
		p.Close()
		return nil, fmt.Errorf("%s pid %d: %w", t.Name, t.PID, ErrStarting)
	}
	if err != nil || !namesGuest(cmdline, t.Name) {
		p.Close()
		return nil, fmt.Errorf("%s pid %d: %w (pid reused)", t.Name, t.PID, os.ErrProcessDone)
	}
	return p, nil
}

// ErrStarting: the process is between fork and a finished execve, so its
// command line cannot say yet whether it is the guest's QEMU. Look again.
var ErrStarting = errors.New("process still starting")

// namesGuest reports whether a NUL-separated command line has
// `-name guest=NAME[,...]`.
func namesGuest(cmdline []byte, name string) bool {
	args := strings.Split(string(cmdline), "\x00")
	for i := 0; i+1 < len(args); i++ {
		if args[i] != "-name" {
			continue
		}
		for _, opt := range strings.Split(args[i+1], ",") {
			if opt == "guest="+name {
				return true
			}
		}
	}
	return false
}

// Kill sends SIGKILL.
func (p *Proc) Kill() error {
	err := unix.PidfdSendSignal(p.fd, unix.SIGKILL, nil, 0)
	if err == unix.ESRCH {
		return nil // already dead
	}
	return err
}

// Dead reports whether the process has exited.
func (p *Proc) Dead() bool {
	fds := []unix.PollFd{{Fd: int32(p.fd), Events: unix.POLLIN}}
	n, err := unix.Poll(fds, 0)
	return err == nil && n == 1
}

// Close releases the pidfd.
func (p *Proc) Close() { unix.Close(p.fd) }

// WaitDead waits until every process in ps has exited or timeout passes,
// and returns those still alive.
func WaitDead(ps []*Proc, timeout time.Duration) []*Proc {
	deadline := time.Now().Add(timeout)
	alive := ps
	for len(alive) > 0 {
		fds := make([]unix.PollFd, len(alive))
		for i, p := range alive {
			fds[i] = unix.PollFd{Fd: int32(p.fd), Events: unix.POLLIN}
		}
		left := time.Until(deadline)
		if left <= 0 {
			break
		}
		if _, err := unix.Poll(fds, int(left.Milliseconds())+1); err != nil && err != unix.EINTR {
			break
		}
		var still []*Proc
		for i, p := range alive {
			if fds[i].Revents == 0 {
				still = append(still, p)
			}
		}
		alive = still
	}
	return alive
}

// MonoNow returns CLOCK_MONOTONIC as a duration since boot. It is the clock
// of Go's monotonic readings, so a lease deadline on corrald's clock maps
// onto it exactly, and the clock the fencer keeps deadlines on.
func MonoNow() time.Duration {
	var ts unix.Timespec
	unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts)
	return time.Duration(ts.Nano())
}

package fencer

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"syscall"
	"testing"
	"time"

	"github.com/corralhq/corral/internal/guestproc"
	"github.com/corralhq/corral/internal/testutil"
)

// BenchmarkFenceLatency (the timings are the reported metrics; ns/op
// includes starting the guests) measures a fence with real QEMU guests (the test
// guest, TCG, 128 MiB): from the kill's due time (deadline - budget) to
// every QEMU dead, as the fencer confirms it through its pidfds, with 1, 8
// and 32 guests, idle and saturated (busy guests plus two CPU hogs per
// core). The guests run outside libvirt, registered in a run directory the
// way libvirtd registers them, so the measured path is the fencer's own:
// the corral-fencer binary, at real-time priority as its unit runs it.
//
//	go test -run '^$' -bench FenceLatency -benchtime 5x ./fencer   (make bench-fence-latency)
func BenchmarkFenceLatency(b *testing.B) {
	testutil.NeedRoot(b)
	guest := testutil.BuildGuest(b, filepath.Join(b.TempDir(), "guest"))
	bin := filepath.Join(b.TempDir(), "corral-fencer")
	build := exec.Command("go", "build", "-o", bin, "./cmd/corral-fencer")
	build.Dir = testutil.RepoRoot()
	if out, err := build.CombinedOutput(); err != nil {
		b.Fatalf("build corral-fencer: %v\n%s", err, out)
	}
	for _, load := range []string{"idle", "saturated"} {
		for _, n := range []int{1, 8, 32} {
			b.Run(fmt.Sprintf("%s/guests=%d", load, n), func(b *testing.B) {
				if load == "saturated" {
					for i := 0; i < 2*runtime.NumCPU(); i++ {
						hog := exec.Command("sh", "-c", "while :; do :; done")
						if err := hog.Start(); err != nil {
							b.Fatal(err)
						}
						b.Cleanup(func() { hog.Process.Kill(); hog.Wait() })
					}
				}
				var took, late, total, worst time.Duration
				for i := 0; i < b.N; i++ {
					f := fenceOnce(b, bin, guest, n, load == "saturated")
					took += time.Duration(f.DeadNS - f.StartNS)
					late += time.Duration(f.StartNS - f.DeadlineNS)
					total += time.Duration(f.DeadNS - f.DeadlineNS)
					worst = max(worst, time.Duration(f.DeadNS-f.DeadlineNS))
				}
				b.ReportMetric(float64(worst.Microseconds())/1000, "ms-deadline-to-dead-max")
				b.ReportMetric(float64(took.Microseconds())/float64(b.N)/1000, "ms-kill-to-dead")
				b.ReportMetric(float64(late.Microseconds())/float64(b.N)/1000, "ms-timer-late")
				b.ReportMetric(float64(total.Microseconds())/float64(b.N)/1000, "ms-deadline-to-dead")
			})
		}
	}
}

// fenceOnce starts n guests, lets the fencer pin them, arms it with budget
// 0 and returns its record of the fence.
func fenceOnce(b *testing.B, bin string, g testutil.Guest, n int, busy bool) Fence {
	dir, runDir := b.TempDir(), b.TempDir()
	cmdline := "console=ttyS0 quiet"
	if busy {
		cmdline += " corral.busy=1"
	}
	for i := 0; i < n; i++ {
		name := fmt.Sprintf("bench%d", i)
		q := exec.Command("qemu-system-x86_64", "-name", "guest="+name+",debug-threads=on", "-machine", "pc", "-accel", "tcg",
			"-m", "128", "-nodefaults", "-nographic", "-serial", "null", "-monitor", "none",
			"-kernel", g.Kernel, "-initrd", g.Initrd, "-append", cmdline)
		q.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
		if err := q.Start(); err != nil {
			b.Fatal(err)
		}
		exited := make(chan struct{})
		go func() { q.Wait(); close(exited) }()
		b.Cleanup(func() { q.Process.Kill(); <-exited })
		os.WriteFile(filepath.Join(runDir, name+".xml"), []byte("<domstatus><metadata><corral:vm xmlns:corral='"+guestproc.MetadataNS+"'/></metadata></domstatus>"), 0o600)
		os.WriteFile(filepath.Join(runDir, name+".pid"), []byte(fmt.Sprint(q.Process.Pid)), 0o600)
	}
	socket := filepath.Join(dir, "fencer.sock")
	fencer := exec.Command("chrt", "-f", "50", bin, "--socket", socket, "--run-dir", runDir)
	if err := fencer.Start(); err != nil {
		b.Fatal(err)
	}
	defer func() { fencer.Process.Signal(syscall.SIGTERM); fencer.Wait() }()
	// Every guest pinned, and running for a second (the kernel loads, the
	// busy loop spins up).
	started := guestproc.MonoNow()
	testutil.Eventually(b, time.Minute, func() error {
		st, err := Query(context.Background(), socket)
		if err != nil {
			return err
		}
		if len(st.Guests) != n {
			return fmt.Errorf("%d of %d guests pinned", len(st.Guests), n)
		}
		if guestproc.MonoNow()-started < time.Second {
			return fmt.Errorf("guests run for a second first")
		}
		return nil
	})
	if st, err := roundTrip(socket, Request{Op: OpArm, DeadlineNS: int64(guestproc.MonoNow() + 200*time.Millisecond)}); err != nil || st.Error != "" {
		b.Fatalf("arm: %v %s", err, st.Error)
	}
	var f Fence
	testutil.Eventually(b, time.Minute, func() error {
		st, err := Query(context.Background(), socket)
		if err != nil {
			return err
		}
		if len(st.Fences) == 0 || st.Fences[0].DeadNS == 0 {
			return fmt.Errorf("not fenced yet")
		}
		f = st.Fences[0]
		return nil
	})
	if len(f.Killed) != n || len(f.Alive) != 0 {
		b.Fatalf("fence killed %v, alive %v; want %d guests killed", f.Killed, f.Alive, n)
	}
	return f
}

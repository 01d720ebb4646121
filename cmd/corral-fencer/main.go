// Command corral-fencer is the host's independent fencer: corrald feeds it
// each lease's deadline over a root-only Unix socket, and when a deadline
// passes unfed it SIGKILLs every corral guest's QEMU on the host, whether
// corrald is dead, hung or starved. It runs as its own systemd unit
// (corral-fencer.service), at real-time priority, and does nothing else.
//
//	corral-fencer [--socket /run/corral-fencer/fencer.sock] [--run-dir /run/libvirt/qemu]
//	corral-fencer status [--socket PATH]
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/corralhq/corral/fencer"
	"github.com/corralhq/corral/internal/guestproc"
	"github.com/corralhq/corral/internal/version"
)

func main() { os.Exit(run(os.Args[1:])) }

func run(args []string) int {
	status := len(args) > 0 && args[0] == "status"
	if status {
		args = args[1:]
	}
	fs := flag.NewFlagSet("corral-fencer", flag.ContinueOnError)
	socket := fs.String("socket", fencer.DefaultSocket, "Unix socket corrald feeds")
	runDir := fs.String("run-dir", guestproc.DefaultRunDir, "libvirt's QEMU run directory (pid files and status XML)")
	scan := fs.Duration("scan", fencer.DefaultScan, "how often to look for guests")
	showVersion := fs.Bool("version", false, "print the version")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if *showVersion {
		fmt.Println("corral-fencer", version.Version)
		return 0
	}
	if status {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		st, err := fencer.Query(ctx, *socket)
		if err != nil {
			fmt.Fprintln(os.Stderr, "corral-fencer:", err)
			return 1
		}
		out, _ := json.MarshalIndent(st, "", "  ")
		fmt.Println(string(out))
		return 0
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, nil)).With("component", "fencer")
	// The OOM killer must never choose the process that guarantees the
	// guests die with the lease. Real-time priority comes from the unit
	// (CPUSchedulingPolicy) or chrt, so that every thread has it.
	if err := os.WriteFile("/proc/self/oom_score_adj", []byte("-1000"), 0); err != nil {
		log.Warn("cannot protect the fencer from the OOM killer", "err", err)
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	srv := fencer.New(fencer.Config{Socket: *socket, RunDir: *runDir, Scan: *scan}, log)
	if err := srv.Run(ctx); err != nil {
		log.Error("fencer failed", "err", err)
		return 1
	}
	return 0
}

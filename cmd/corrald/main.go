// Command corrald is the corral host daemon. It runs on every physical host:
// gossip, Raft, the admin socket and, as the cluster grows, the guests.
//
//	corrald [--config /etc/corral/corral.toml] [--name NAME] [--seeds a,b,c] ...
//
// Every config key is also a flag (data_dir -> --data-dir); run
// corrald --help for the list. corrald example-config prints a config file
// documenting every key with its default (what the packages install as
// /etc/corral/corral.toml); corrald version prints the version.
//
//	corrald init [--config ...]
//
// creates a new cluster's identity on its first host (CA, this host's
// certificate, gossip key, in data_dir/identity) and prints the first join
// token, which the other hosts put in join_token.
//
//	corrald recover --from FILE [--config ...]
//
// rebuilds a cluster whose voters are all lost from a backup of its state
// (corralctl cluster backup -o FILE), on one of its hosts with an empty
// data_dir: a new identity, and the state in recovery until every host
// has told what it runs. docs/recovery.md is the runbook.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/corralhq/corral/daemon"
	"github.com/corralhq/corral/internal/procs"
	"github.com/corralhq/corral/internal/sdnotify"
	"github.com/corralhq/corral/internal/version"
	"github.com/corralhq/corral/raftlog"
)

func main() {
	os.Exit(run(os.Args[1:]))
}

func run(args []string) int {
	if len(args) == 1 && (args[0] == "--version" || args[0] == "version") {
		fmt.Println("corrald", version.Version)
		return 0
	}
	if len(args) == 1 && args[0] == "example-config" {
		fmt.Print(daemon.ExampleConfig())
		return 0
	}
	initCluster := len(args) > 0 && args[0] == "init"
	if initCluster {
		args = args[1:]
	}
	if len(args) > 0 && args[0] == "recover" {
		return recoverCluster(args[1:])
	}
	cfg, err := daemon.LoadConfig(args)
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "corrald:", err)
		return 2
	}
	if initCluster {
		tok, err := daemon.Init(cfg)
		if err != nil {
			fmt.Fprintln(os.Stderr, "corrald init:", err)
			return 1
		}
		fmt.Printf("cluster identity created in %s for host %s\n", cfg.IdentityDir(), cfg.Name)
		fmt.Printf("first join token (valid 24 hours; corralctl cluster token create makes more):\n\n%s\n\n", tok)
		fmt.Println("On every other host put it in /etc/corral/corral.toml as join_token = \"...\" (the file must then be mode 0600),")
		fmt.Println("with seeds naming this host, and start corrald there.")
		return 0
	}
	log := newLogger(cfg)
	// Before the daemon's threads exist; later ones inherit it (package procs).
	if applied, err := procs.SetTimerSlack(procs.TimerSlack); err != nil {
		log.Warn("timer slack", "err", err)
	} else if !applied {
		log.Debug("timer slack set by the environment: kept")
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	if err := daemon.Join(ctx, cfg, log); err != nil {
		fmt.Fprintln(os.Stderr, "corrald:", err)
		return 2
	}
	d, err := daemon.New(cfg, log)
	if err != nil {
		fmt.Fprintln(os.Stderr, "corrald:", err)
		return 2
	}
	if procs.Enabled() { // idle on one processor (package procs)
		go procs.New(log.With("component", "procs")).Run(ctx)
	}
	go func() {
		select {
		case <-d.Ready():
			if err := sdnotify.Notify("READY=1"); err != nil {
				log.Warn("sd_notify", "err", err)
			}
		case <-ctx.Done():
		}
	}()
	if err := d.Run(ctx); err != nil {
		log.Error("corrald failed", "err", err)
		if errors.Is(err, raftlog.ErrProtocol) {
			return 2 // a downgrade below the cluster's protocol: restarting will not fix it
		}
		return 1
	}
	sdnotify.Notify("STOPPING=1")
	return 0
}

func newLogger(cfg daemon.Config) *slog.Logger {
	var level slog.Level
	level.UnmarshalText([]byte(cfg.LogLevel)) // checked by Validate
	opts := &slog.HandlerOptions{Level: level}
	if cfg.LogFormat == "json" {
		return slog.New(slog.NewJSONHandler(os.Stderr, opts))
	}
	return slog.New(slog.NewTextHandler(os.Stderr, opts))
}

// recoverCluster is corrald recover --from FILE.
func recoverCluster(args []string) int {
	var from string
	var rest []string
	for i := 0; i < len(args); i++ {
		switch a := args[i]; {
		case a == "--from" && i+1 < len(args):
			from = args[i+1]
			i++
		case strings.HasPrefix(a, "--from="):
			from = strings.TrimPrefix(a, "--from=")
		default:
			rest = append(rest, a)
		}
	}
	if from == "" {
		fmt.Fprintln(os.Stderr, "corrald recover: --from FILE is required (a file written by corralctl cluster backup -o FILE)")
		return 2
	}
	cfg, err := daemon.LoadConfig(rest)
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "corrald:", err)
		return 2
	}
	h, rec, tok, err := daemon.Recover(cfg, from)
	if err != nil {
		fmt.Fprintln(os.Stderr, "corrald recover:", err)
		return 1
	}
	fmt.Printf("cluster state recovered from %s: taken %s on %s at index %d, %d hosts, %d VMs\n",
		from, h.TakenAt.Format(time.RFC3339), h.Host, h.Applied, h.Hosts, h.VMs)
	fmt.Printf("new cluster identity in %s; Raft state in %s, with %s its only voter\n", cfg.IdentityDir(), cfg.DataDir, cfg.Name)
	fmt.Printf("HA is disarmed until every host has told what it runs; waiting for: %s\n", strings.Join(rec.Waiting, ", "))
	fmt.Printf("join token for the other hosts (valid 24 hours):\n\n%s\n\n", tok)
	fmt.Println("Start corrald here. On every other host: stop corrald, move its data_dir aside, put the token in")
	fmt.Println("/etc/corral/corral.toml as join_token, and start corrald; its running guests are adopted, not restarted.")
	fmt.Println("corralctl cluster recovery shows progress (docs/recovery.md).")
	return 0
}

// Command corral-lab runs corral's testbed: N hosts on this machine, each
// with its own network and mount namespace, libvirtd and corrald.
//
//	corral-lab up --hosts 3 [--dir D] [--corrald bin/corrald]
//	corral-lab status | down
//	corral-lab kill H | boot H                  power loss / power on
//	corral-lab fence H                          fence agent: power H off (for fence_command)
//	corral-lab partition H | heal H             cut / restore H's link
//	corral-lab stop-daemon H [--kill] | start-daemon H
//	corral-lab restart-libvirtd H
//	corral-lab cut H PEER... [--inbound] | uncut H   drop H's traffic with peers
//	corral-lab loss H PCT | clear-loss H        random packet loss (nftables)
//	corral-lab fill H | free H                  fill H's data_dir (up --data-dir-mib)
//	corral-lab exec H -- CMD [ARGS]             e.g. corralctl status
//	corral-lab bench-recovery [--runs 10]       recovery times after host kills
//	corral-lab chaos [--hosts 5] [--schedules N] [--seed S] [--only K]
//	                                            random fault schedules, checked
//	corral-lab soak [--hosts 3] [--duration 1h] [--report FILE] [--keep]
//	                                            long run: churn, faults, corrald flat?
//
// It needs root and installs nothing: it says what is missing.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/corralhq/corral/api/client"
	"github.com/corralhq/corral/internal/lab"
)

func main() {
	if err := run(os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "corral-lab:", err)
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			os.Exit(ee.ExitCode())
		}
		os.Exit(1)
	}
}

const usage = `usage: corral-lab [--dir D] COMMAND
  up --hosts N [--id K] [--corrald PATH] [--config-extra TOML] [--data-dir-mib N]
  status | down
  kill H | boot H | fence H | partition H | heal H
  power-agent   (boots hosts for power-on; until interrupted) | power-on H
  stop-daemon H [--kill] | start-daemon H | restart-libvirtd H
  cut H PEER... [--inbound] | uncut H | loss H PCT | clear-loss H | fill H | free H
  delay H DURATION [JITTER]   (holds H's packets to the lab until interrupted)
  exec H -- CMD [ARGS]
  bench-recovery [--runs 10] [--guest DIR] [--only lease|fence] [--keep-logs DIR]
  chaos [--hosts 5] [--schedules 10] [--seed 1] [--only K] [--duration 30s] [--budget 60s] [--report FILE]
  soak [--hosts 3] [--duration 1h] [--guest DIR] [--fault-every D] [--sample-every D] [--report FILE] [--keep]`

func run(args []string) error {
	fs := flag.NewFlagSet("corral-lab", flag.ContinueOnError)
	def := lab.DefaultDir
	if d := os.Getenv("CORRAL_LAB_DIR"); d != "" {
		def = d
	}
	dir := fs.String("dir", def, "lab directory ($CORRAL_LAB_DIR)")
	fs.Usage = func() { fmt.Fprintln(os.Stderr, usage) }
	if err := fs.Parse(args); err != nil {
		return err
	}
	args = fs.Args()
	if len(args) == 0 {
		fs.Usage()
		return errors.New("no command")
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	cmd, args := args[0], args[1:]
	switch cmd {
	case "up":
		return up(ctx, *dir, args)
	case "bench-recovery":
		return benchRecovery(ctx, *dir, args)
	case "chaos":
		return runChaos(ctx, *dir, args)
	case "soak":
		return runSoak(ctx, *dir, args)
	}
	l, err := lab.Load(*dir)
	if err != nil {
		if cmd == "down" && errors.Is(err, os.ErrNotExist) {
			fmt.Println("no lab to take down")
			return nil
		}
		return err
	}
	switch cmd {
	case "down":
		if err := l.Down(ctx); err != nil {
			return err
		}
		fmt.Println("lab removed")
		return nil
	case "status":
		return status(ctx, l)
	}
	if cmd == "power-agent" {
		stop, err := l.ServePower()
		if err != nil {
			return err
		}
		fmt.Printf("power agent on %s: corrald's power_on_command can be \"corral-lab power-on\"\n", l.PowerSocket())
		<-ctx.Done()
		stop()
		return nil
	}
	if (cmd == "fence" || cmd == "power-on") && len(args) > 0 && args[0] == "--" {
		args = args[1:] // as corrald runs a fence or power command: -- NAME ADDR
	}
	if len(args) < 1 {
		return fmt.Errorf("%s: which host?", cmd)
	}
	h, err := l.Host(args[0])
	if err != nil {
		return err
	}
	rest := args[1:]
	switch cmd {
	case "kill":
		return h.Kill(ctx)
	case "fence":
		// The testbed's fence agent: corrald's fence_command runs it on
		// the leader with "--", the victim's name (and address, ignored).
		if err := h.PowerOff(); err != nil {
			return err
		}
		fmt.Printf("%s powered off\n", h.Name)
		return nil
	case "boot":
		return h.Boot(ctx)
	case "power-on":
		// corrald's power_on_command, run inside a host's namespaces: the
		// lab's power agent boots the host.
		if err := lab.RequestPowerOn(ctx, l.Dir, h.Name); err != nil {
			return err
		}
		fmt.Printf("%s booted\n", h.Name)
		return nil
	case "partition":
		return h.Partition(ctx)
	case "heal":
		return h.Heal(ctx)
	case "stop-daemon":
		return h.StopDaemon(ctx, "corrald", len(rest) > 0 && rest[0] == "--kill")
	case "start-daemon":
		return h.StartDaemon(ctx, "corrald")
	case "restart-libvirtd":
		return h.RestartDaemon(ctx, "libvirtd")
	case "cut":
		dir := lab.Both
		var peers []*lab.Host
		for _, a := range rest {
			if a == "--inbound" {
				dir = lab.Inbound
				continue
			}
			p, err := l.Host(a)
			if err != nil {
				return err
			}
			peers = append(peers, p)
		}
		if len(peers) == 0 {
			return errors.New("cut: from which peers?")
		}
		return h.Cut(ctx, peers, dir)
	case "uncut":
		return h.Uncut(ctx)
	case "loss":
		if len(rest) != 1 {
			return errors.New("loss: what percentage?")
		}
		pct, err := strconv.Atoi(rest[0])
		if err != nil {
			return fmt.Errorf("loss: %w", err)
		}
		return h.Loss(ctx, pct)
	case "clear-loss":
		return h.ClearLoss(ctx)
	case "delay":
		if len(rest) < 1 || len(rest) > 2 {
			return errors.New("delay: how long (and what jitter)?")
		}
		var d [2]time.Duration
		for i, a := range rest {
			if d[i], err = time.ParseDuration(a); err != nil {
				return fmt.Errorf("delay: %w", err)
			}
		}
		if err := h.Delay(ctx, d[0], d[1]); err != nil {
			return err
		}
		fmt.Printf("%s: packets to the lab held %v ± %v; interrupt to end\n", h.Name, d[0], d[1])
		<-ctx.Done() // the delay lasts while this process reads its queue
		return h.ClearDelay(context.Background())
	case "fill":
		return h.FillDataDir()
	case "free":
		return h.FreeDataDir()
	case "exec":
		if len(rest) > 0 && rest[0] == "--" {
			rest = rest[1:]
		}
		if len(rest) == 0 {
			return errors.New("exec: no command")
		}
		c := h.Command(ctx, rest[0], rest[1:]...)
		c.Stdin, c.Stdout, c.Stderr = os.Stdin, os.Stdout, os.Stderr
		c.Env = append(os.Environ(), "CORRAL_SOCKET=/run/corral/corral.sock")
		return c.Run()
	}
	return fmt.Errorf("unknown command %q\n%s", cmd, usage)
}

func up(ctx context.Context, dir string, args []string) error {
	fs := flag.NewFlagSet("up", flag.ContinueOnError)
	hosts := fs.Int("hosts", 3, "number of hosts")
	id := fs.Int("id", 0, "lab id (0-255): subnet 10.77.ID.0/24, names carry it")
	corrald := fs.String("corrald", "", "corrald binary (default: next to corral-lab, then $PATH)")
	extra := fs.String("config-extra", "", "TOML appended to every host's corral.toml")
	dataMiB := fs.Int("data-dir-mib", 0, "make each host's data_dir a tmpfs of this size (for fill/free)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	bin, err := corraldBinary(*corrald)
	if err != nil {
		return err
	}
	l, err := lab.Up(ctx, lab.Config{Dir: dir, ID: *id, Hosts: *hosts, Corrald: bin, CorraldConfig: *extra, DataDirMiB: *dataMiB})
	if err != nil {
		return err
	}
	fmt.Printf("lab up in %s: %d hosts on %s (bridge %s), shared storage %s\n", l.Dir, len(l.Hosts), l.Subnet, l.Bridge, l.SharedDir())
	return status(ctx, l)
}

// corraldBinary is the corrald to run: the flag's, else the one next to
// corral-lab, else the one in $PATH.
func corraldBinary(flagged string) (string, error) {
	if flagged != "" {
		return flagged, nil
	}
	self, _ := os.Executable()
	bin := filepath.Join(filepath.Dir(self), "corrald")
	if _, err := os.Stat(bin); err == nil {
		return bin, nil
	}
	bin, err := exec.LookPath("corrald")
	if err != nil {
		return "", errors.New("no corrald next to corral-lab or in $PATH; pass --corrald")
	}
	return bin, nil
}

func status(ctx context.Context, l *lab.Lab) error {
	w := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(w, "HOST\tIP\tLINK\tDAEMONS\tCORRALD SOCKET")
	for _, h := range l.Hosts {
		var running []string
		for d, ok := range h.Running() {
			if ok {
				running = append(running, d)
			}
		}
		link := "down"
		if h.LinkUp() {
			link = "up"
		}
		fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\n", h.Name, h.IP, link, orNone(sortedJoin(running)), h.Socket())
	}
	w.Flush()
	if len(l.Hosts) > 0 {
		if s, err := client.New(l.Hosts[0].Socket()).Status(ctx); err == nil {
			fmt.Printf("\nleader: %s; voters: %s\n", orNone(s.Leader), strings.Join(s.Voters, ", "))
		}
	}
	fmt.Printf("\nuse corralctl on a host:  corral-lab --dir %s exec h1 -- corralctl status\n", l.Dir)
	fmt.Printf("or from here:             corralctl --socket %s status\n", l.Hosts[0].Socket())
	return nil
}

func orNone(s string) string {
	if s == "" {
		return "none"
	}
	return s
}

func sortedJoin(s []string) string {
	for i := range s {
		for j := i + 1; j < len(s); j++ {
			if s[j] < s[i] {
				s[i], s[j] = s[j], s[i]
			}
		}
	}
	return strings.Join(s, ",")
}

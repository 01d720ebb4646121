package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/corralhq/corral/api"
)

func (c *cli) vmCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "vm", Short: "Create and operate virtual machines"}
	cmd.AddCommand(c.vmLs(), c.vmShow(), c.vmCreate(), c.vmPower("start"), c.vmPower("stop"), c.vmPower("restart"),
		c.vmRm(), c.vmResize(), c.vmMigrate(), c.vmConsole(), c.vmVNC(), c.vmConsoleLog(), c.vmStats(), c.vmSnapshotCmd(), c.vmBackup(), c.vmBackupSchedule(), c.vmRestore())
	return cmd
}

func (c *cli) vmLs() *cobra.Command {
	return &cobra.Command{
		Use: "ls", Aliases: []string{"list"}, Short: "List VMs: host, desired and actual state, uptime", Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx, cancel := c.ctx()
			defer cancel()
			vms, err := c.client().VMs(ctx)
			if err != nil {
				return err
			}
			return c.print(vms, func(w *tabwriter.Writer) {
				fmt.Fprintln(w, "NAME\tPROJECT\tHOST\tDESIRED\tSTATE\tUPTIME\tVCPUS\tMEMORY\tRESTARTS\tMESSAGE")
				for _, v := range vms {
					if !c.inProject(v.Project) {
						continue
					}
					state := v.State
					if v.Health != "" {
						state += " (" + v.Health + ")"
					}
					fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\t%s\t%d\t%s\t%d\t%s\n", v.Name, orDash(v.Project), orDash(v.Host), v.Desired, state, uptime(v),
						v.Spec.VCPUs, fmtMiB(v.Spec.MemoryMiB), v.Restarts, truncate(vmMessage(v), 60))
				}
			})
		},
	}
}

func vmMessage(v api.VM) string {
	if v.Failed != "" {
		return v.Failed
	}
	return v.Message
}

func uptime(v api.VM) string {
	if v.State != "running" || v.Since.IsZero() {
		return "-"
	}
	return fmtDuration(time.Since(v.Since))
}

func fmtDuration(d time.Duration) string {
	switch {
	case d < time.Minute:
		return fmt.Sprintf("%ds", int(d.Seconds()))
	case d < time.Hour:
		return fmt.Sprintf("%dm%02ds", int(d.Minutes()), int(d.Seconds())%60)
	case d < 48*time.Hour:
		return fmt.Sprintf("%dh%02dm", int(d.Hours()), int(d.Minutes())%60)
	}
	return fmt.Sprintf("%dd%02dh", int(d.Hours())/24, int(d.Hours())%24)
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n-1] + "…"
}

func (c *cli) vmShow() *cobra.Command {
	return &cobra.Command{
		Use: "show NAME", Short: "Show one VM", Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx, cancel := c.ctx()
			defer cancel()
			v, err := c.client().VM(ctx, args[0])
			if err != nil {
				return err
			}
			return c.print(v, func(w *tabwriter.Writer) { printVM(w, v) })
		},
	}
}

func printVM(w *tabwriter.Writer, v api.VM) {
	fmt.Fprintf(w, "Name:\t%s\n", v.Name)
	fmt.Fprintf(w, "ID:\t%s\n", v.ID)
	fmt.Fprintf(w, "Host:\t%s (placement generation %d)\n", orDash(v.Host), v.Generation)
	fmt.Fprintf(w, "Desired:\t%s\n", v.Desired)
	state := v.State
	if v.State == "running" {
		state += ", up " + uptime(v)
	}
	if v.PendingRestart {
		state += " (resize pending restart)"
	}
	fmt.Fprintf(w, "State:\t%s\n", state)
	if v.Health != "" {
		health := v.Health
		if v.HealthDetail != "" {
			health += ": " + v.HealthDetail
		}
		fmt.Fprintf(w, "Health:\t%s\n", health)
	}
	if v.Spec.Health != nil {
		fmt.Fprintf(w, "Health check:\t%s\n", fmtHealth(v.Spec.Health))
	}
	if m := vmMessage(v); m != "" {
		fmt.Fprintf(w, "Message:\t%s\n", m)
	}
	if !v.Since.IsZero() {
		fmt.Fprintf(w, "Since:\t%s\n", v.Since.Local().Format(time.RFC3339))
	}
	fmt.Fprintf(w, "Restarts:\t%d (relocations %d)\n", v.Restarts, v.Relocations)
	s := v.Spec
	fmt.Fprintf(w, "Size:\t%d vCPU, %s memory\n", s.VCPUs, fmtMiB(s.MemoryMiB))
	for i, d := range s.Disks {
		what := "blank " + fmtMiB(d.SizeMiB)
		if d.Image != "" {
			what = "overlay on image " + d.Image
			if d.SizeMiB > 0 {
				what += ", " + fmtMiB(d.SizeMiB)
			}
		}
		fmt.Fprintf(w, "Disk %d:\t%s\n", i, what)
	}
	if s.Kernel != nil {
		fmt.Fprintf(w, "Kernel:\t%s initrd=%s cmdline=%q\n", s.Kernel.Kernel, orDash(s.Kernel.Initrd), s.Kernel.Cmdline)
	}
	for i, n := range s.NICs {
		fmt.Fprintf(w, "NIC %d:\t%s %s\n", i, n.Network, n.MAC)
	}
	if s.UserData != "" {
		fmt.Fprintf(w, "User data:\t%d bytes\n", len(s.UserData))
	}
	if len(v.Snapshots) > 0 {
		fmt.Fprintf(w, "Snapshots:\t%s\n", fmtSnapshots(v.Snapshots))
	}
	if v.SnapshotSchedule != "" {
		fmt.Fprintf(w, "Snapshot schedule:\t%s\n", fmtSchedule(v.SnapshotSchedule, v.SnapshotScheduleLast))
	}
	if v.Backup != nil {
		fmt.Fprintf(w, "Backup:\t%s\n", fmtBackupJob(*v.Backup))
	}
	if v.BackupSchedule != "" {
		fmt.Fprintf(w, "Backup schedule:\t%s\n", fmtSchedule(fmtBackupSchedule(v), v.BackupScheduleLast))
	}
	if v.RestoringFrom != "" {
		fmt.Fprintf(w, "Restoring from:\tbackup %s\n", v.RestoringFrom)
	}
	fmt.Fprintf(w, "Labels:\t%s\n", fmtLabels(s.Labels))
	if s.AntiAffinity != "" {
		fmt.Fprintf(w, "Anti-affinity:\t%s\n", s.AntiAffinity)
	}
	if len(s.Require) > 0 {
		fmt.Fprintf(w, "Requires:\t%s\n", fmtLabels(s.Require))
	}
	for _, r := range s.Prefer {
		fmt.Fprintf(w, "Prefers:\t%s:%s=%s weight %d\n", r.Kind, r.Key, r.Value, r.Weight)
	}
	for _, r := range s.Avoid {
		fmt.Fprintf(w, "Avoids:\t%s:%s=%s weight %d\n", r.Kind, r.Key, r.Value, r.Weight)
	}
	for _, rc := range v.Rules {
		met := "met"
		if !rc.Met {
			met = "NOT met"
		}
		detail := ""
		if rc.Detail != "" {
			detail = " (" + rc.Detail + ")"
		}
		fmt.Fprintf(w, "Placement:\t%s: %s%s\n", rc.Rule, met, detail)
	}
	ha := "off"
	if s.HA.Enabled {
		ha = fmt.Sprintf("on, priority %d", s.HA.Priority)
	}
	fmt.Fprintf(w, "HA:\t%s; %d restarts per %ds, %d relocations\n", ha, s.HA.MaxRestart, s.HA.RestartWindowSec, s.HA.MaxRelocate)
	fmt.Fprintf(w, "Created:\t%s\n", v.CreatedAt.Local().Format(time.RFC3339))
}

// parseSize reads 512, 512M, 2G, 1T as MiB.
func parseSize(s string) (int64, error) {
	mult := int64(1)
	num := strings.TrimSpace(strings.ToUpper(s))
	num = strings.TrimSuffix(strings.TrimSuffix(num, "IB"), "B")
	switch {
	case strings.HasSuffix(num, "T"):
		mult, num = 1<<20, strings.TrimSuffix(num, "T")
	case strings.HasSuffix(num, "G"):
		mult, num = 1<<10, strings.TrimSuffix(num, "G")
	case strings.HasSuffix(num, "M"):
		num = strings.TrimSuffix(num, "M")
	}
	n, err := strconv.ParseInt(num, 10, 64)
	if err != nil || n < 0 {
		return 0, fmt.Errorf("size %q: use a number of MiB or a suffix M, G, T", s)
	}
	return n * mult, nil
}

func parseKV(list []string, what string) (map[string]string, error) {
	if len(list) == 0 {
		return nil, nil
	}
	out := map[string]string{}
	for _, kv := range list {
		k, v, ok := strings.Cut(kv, "=")
		if !ok || k == "" {
			return nil, fmt.Errorf("%s %q: use key=value", what, kv)
		}
		out[k] = v
	}
	return out, nil
}

// specFlags are the flags that describe a VM, shared by vm create and
// group create.
type specFlags struct {
	vcpus                          int
	memory, diskSize               string
	image, kernel, initrd, cmdline string
	userData, anti                 string
	disks, nics, labels, require   []string
	prefer, avoid                  []string
	noHA                           bool
	priority, maxRestart, maxReloc int
	window                         time.Duration
	// Health check.
	healthExec                 string
	healthTCP, healthRetries   int
	healthEvery, healthTimeout time.Duration
	healthStart                time.Duration
	noHealth                   bool
}

func (sf *specFlags) register(f *pflag.FlagSet) {
	f.IntVar(&sf.vcpus, "vcpus", 1, "virtual CPUs")
	f.StringVar(&sf.memory, "memory", "512M", "memory (MiB, or with M/G suffix)")
	f.StringVar(&sf.image, "image", "", "base image for the first disk (a copy-on-write overlay)")
	f.StringVar(&sf.diskSize, "disk-size", "", "size of the first disk (overlay or, without --image, blank)")
	f.StringArrayVar(&sf.disks, "disk", nil, "add a blank disk of this size (repeatable)")
	f.StringVar(&sf.kernel, "kernel", "", "boot this kernel directly (path on the hosts)")
	f.StringVar(&sf.initrd, "initrd", "", "initrd for --kernel")
	f.StringVar(&sf.cmdline, "cmdline", "", "kernel command line for --kernel")
	f.StringArrayVar(&sf.nics, "nic", nil, "attach a NIC on a corral network: NETWORK[,mac=MAC] (repeatable)")
	f.StringVar(&sf.userData, "user-data", "", "cloud-init user data file (attached as a NoCloud seed)")
	f.StringArrayVar(&sf.labels, "label", nil, "VM label key=value (repeatable)")
	f.StringArrayVar(&sf.require, "require", nil, "host label the VM's host must have, key=value (repeatable)")
	f.StringVar(&sf.anti, "anti-affinity", "", "anti-affinity group: no two VMs of a group share a host")
	f.StringArrayVar(&sf.prefer, "prefer", nil, "soft rule: prefer hosts with a label (host:KEY=VALUE:WEIGHT) or running VMs with one (vm:KEY=VALUE:WEIGHT); weight 1..100 (repeatable)")
	f.StringArrayVar(&sf.avoid, "avoid", nil, "soft rule: avoid such hosts, as --prefer (repeatable)")
	f.BoolVar(&sf.noHA, "no-ha", false, "do not recover this VM on another host when its host fails")
	f.IntVar(&sf.priority, "ha-priority", 0, "recovery order: higher first")
	f.IntVar(&sf.maxRestart, "max-restart", 3, "local restarts after crashes within --restart-window before relocating")
	f.DurationVar(&sf.window, "restart-window", 10*time.Minute, "window for --max-restart")
	f.IntVar(&sf.maxReloc, "max-relocate", 2, "relocations after crash loops before the VM is marked failed")
	f.StringVar(&sf.healthExec, "health-exec", "", "health check: a shell command the guest agent runs in the guest; healthy when it exits 0")
	f.IntVar(&sf.healthTCP, "health-tcp", 0, "health check: a TCP port on the guest's address (as its agent reports it) the VM's host must reach")
	f.DurationVar(&sf.healthEvery, "health-interval", 10*time.Second, "time between health checks")
	f.DurationVar(&sf.healthTimeout, "health-timeout", 5*time.Second, "time one health check may take")
	f.IntVar(&sf.healthRetries, "health-retries", 3, "failed checks in a row that make the guest unhealthy")
	f.DurationVar(&sf.healthStart, "health-start", time.Minute, "after the guest starts, failed checks count only once one passed or this long has passed")
}

// health reads the health check flags (nil: no check).
func (sf *specFlags) health() (*api.HealthCheck, error) {
	if sf.healthExec == "" && sf.healthTCP == 0 {
		return nil, nil
	}
	secs := func(d time.Duration, flag string) (int, error) {
		if d < time.Second || d%time.Second != 0 {
			return 0, fmt.Errorf("%s %v: give whole seconds, at least 1s", flag, d)
		}
		return int(d / time.Second), nil
	}
	h := &api.HealthCheck{Exec: sf.healthExec, TCPPort: sf.healthTCP, Retries: sf.healthRetries}
	var err error
	if h.IntervalSec, err = secs(sf.healthEvery, "--health-interval"); err != nil {
		return nil, err
	}
	if h.TimeoutSec, err = secs(sf.healthTimeout, "--health-timeout"); err != nil {
		return nil, err
	}
	if sf.healthStart != 0 {
		if h.StartSec, err = secs(sf.healthStart, "--health-start"); err != nil {
			return nil, err
		}
	}
	return h, nil
}

// spec reads the flags into a VM spec and HA policy.
func (sf *specFlags) spec() (api.VMSpec, *api.HAPolicy, error) {
	mem, err := parseSize(sf.memory)
	if err != nil {
		return api.VMSpec{}, nil, fmt.Errorf("--memory: %w", err)
	}
	spec := api.VMSpec{VCPUs: sf.vcpus, MemoryMiB: mem, AntiAffinity: sf.anti}
	if sf.image != "" || sf.diskSize != "" {
		d := api.Disk{Image: sf.image}
		if sf.diskSize != "" {
			if d.SizeMiB, err = parseSize(sf.diskSize); err != nil {
				return spec, nil, fmt.Errorf("--disk-size: %w", err)
			}
		}
		spec.Disks = append(spec.Disks, d)
	}
	for _, s := range sf.disks {
		n, err := parseSize(s)
		if err != nil {
			return spec, nil, fmt.Errorf("--disk: %w", err)
		}
		spec.Disks = append(spec.Disks, api.Disk{SizeMiB: n})
	}
	if sf.kernel != "" {
		spec.Kernel = &api.Kernel{Kernel: sf.kernel, Initrd: sf.initrd, Cmdline: sf.cmdline}
	} else if sf.initrd != "" || sf.cmdline != "" {
		return spec, nil, errors.New("--initrd and --cmdline need --kernel")
	}
	for _, n := range sf.nics {
		net, mac, _ := strings.Cut(n, ",mac=")
		spec.NICs = append(spec.NICs, api.NIC{Network: net, MAC: mac})
	}
	if sf.userData != "" {
		b, err := os.ReadFile(sf.userData)
		if err != nil {
			return spec, nil, fmt.Errorf("--user-data: %w", err)
		}
		spec.UserData = string(b)
	}
	if spec.Labels, err = parseKV(sf.labels, "--label"); err != nil {
		return spec, nil, err
	}
	if spec.Require, err = parseKV(sf.require, "--require"); err != nil {
		return spec, nil, err
	}
	if spec.Prefer, err = parseSoftRules(sf.prefer, "--prefer"); err != nil {
		return spec, nil, err
	}
	if spec.Avoid, err = parseSoftRules(sf.avoid, "--avoid"); err != nil {
		return spec, nil, err
	}
	if spec.Health, err = sf.health(); err != nil {
		return spec, nil, err
	}
	ha := &api.HAPolicy{Enabled: !sf.noHA, Priority: sf.priority, MaxRestart: sf.maxRestart, RestartWindowSec: int(sf.window.Seconds()), MaxRelocate: sf.maxReloc}
	return spec, ha, nil
}

// update applies the flags the user gave (and only those) to base: a group
// update changes what it names. Disk flags (--image, --disk-size, --disk)
// replace the disks, --nic the NICs, --label and --require their maps.
func (sf *specFlags) update(base api.VMSpec, f *pflag.FlagSet) (api.VMSpec, *api.HAPolicy, error) {
	set := func(names ...string) bool {
		for _, n := range names {
			if f.Changed(n) {
				return true
			}
		}
		return false
	}
	var err error
	out := base
	if set("vcpus") {
		out.VCPUs = sf.vcpus
	}
	if set("memory") {
		if out.MemoryMiB, err = parseSize(sf.memory); err != nil {
			return out, nil, fmt.Errorf("--memory: %w", err)
		}
	}
	full := *sf
	full.kernel, full.initrd, full.cmdline = "", "", "" // kernel flags are merged below
	parsed, _, err := full.spec()
	if err != nil {
		return out, nil, err
	}
	if set("image", "disk-size", "disk") {
		out.Disks = parsed.Disks
	}
	if set("kernel", "initrd", "cmdline") {
		k := api.Kernel{}
		if base.Kernel != nil {
			k = *base.Kernel
		}
		if set("kernel") {
			k.Kernel = sf.kernel
		}
		if set("initrd") {
			k.Initrd = sf.initrd
		}
		if set("cmdline") {
			k.Cmdline = sf.cmdline
		}
		if k.Kernel == "" {
			return out, nil, errors.New("--initrd and --cmdline need a kernel: give --kernel")
		}
		out.Kernel = &k
	}
	if set("nic") {
		out.NICs = parsed.NICs
	}
	if set("user-data") {
		out.UserData = parsed.UserData
	}
	if set("label") {
		out.Labels = parsed.Labels
	}
	if set("require") {
		out.Require = parsed.Require
	}
	if set("anti-affinity") {
		out.AntiAffinity = sf.anti
	}
	if set("prefer") {
		if out.Prefer, err = parseSoftRules(sf.prefer, "--prefer"); err != nil {
			return out, nil, err
		}
	}
	if set("avoid") {
		if out.Avoid, err = parseSoftRules(sf.avoid, "--avoid"); err != nil {
			return out, nil, err
		}
	}
	switch {
	case set("no-health"):
		out.Health = nil
	case set("health-exec", "health-tcp", "health-interval", "health-timeout", "health-retries", "health-start"):
		// The flags given replace those fields of the current check.
		merged := *sf
		if base.Health != nil {
			b := base.Health
			if !set("health-exec", "health-tcp") {
				merged.healthExec, merged.healthTCP = b.Exec, b.TCPPort
			}
			if !set("health-interval") && b.IntervalSec > 0 {
				merged.healthEvery = time.Duration(b.IntervalSec) * time.Second
			}
			if !set("health-timeout") && b.TimeoutSec > 0 {
				merged.healthTimeout = time.Duration(b.TimeoutSec) * time.Second
			}
			if !set("health-retries") {
				merged.healthRetries = b.Retries
			}
			if !set("health-start") {
				merged.healthStart = time.Duration(b.StartSec) * time.Second
			}
		}
		if merged.healthExec == "" && merged.healthTCP == 0 {
			return out, nil, errors.New("a health check needs --health-exec or --health-tcp")
		}
		if out.Health, err = merged.health(); err != nil {
			return out, nil, err
		}
	}
	ha := base.HA
	if set("no-ha") {
		ha.Enabled = !sf.noHA
	}
	if set("ha-priority") {
		ha.Priority = sf.priority
	}
	if set("max-restart") {
		ha.MaxRestart = sf.maxRestart
	}
	if set("restart-window") {
		ha.RestartWindowSec = int(sf.window.Seconds())
	}
	if set("max-relocate") {
		ha.MaxRelocate = sf.maxReloc
	}
	return out, &ha, nil
}

func (c *cli) vmCreate() *cobra.Command {
	var (
		sf            specFlags
		host          string
		stopped, wait bool
	)
	cmd := &cobra.Command{
		Use:   "create NAME",
		Short: "Create a VM; the leader places it and its host starts it",
		Long: `Create a VM. The leader checks the request, chooses a host (or takes --host),
and records the VM; that host's corrald defines and starts it. With --wait the
command follows it until it runs and prints each step. When no host fits, the
error says why for every host.

Disks: --image NAME makes the first disk a copy-on-write overlay on that base
image (--disk-size grows it); without --image, --disk-size makes it blank.
--disk SIZE adds blank disks. --kernel/--initrd/--cmdline boot a kernel directly.`,
		Example: `  corralctl vm create web1 --vcpus 2 --memory 2G --image debian12 --wait
  corralctl vm create app --memory 256M --kernel /srv/k/vmlinuz --initrd /srv/k/initrd.img --cmdline console=ttyS0 --disk 1G`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			spec, ha, err := sf.spec()
			if err != nil {
				return err
			}
			req := api.VMCreateRequest{Name: args[0], Host: host, Stopped: stopped, Project: c.project, Spec: spec, HA: ha}
			ctx, cancel := c.ctx()
			defer cancel()
			start := time.Now()
			v, err := c.client().CreateVM(ctx, req)
			if err != nil {
				return explainNoFit(err)
			}
			if !wait || stopped {
				return c.print(v, func(w *tabwriter.Writer) { fmt.Fprintf(w, "vm %s created on %s\n", v.Name, v.Host) })
			}
			v, err = c.follow(ctx, v.Name, start, func(v api.VM) bool { return v.State == "running" })
			if err != nil {
				return err
			}
			return c.print(v, func(w *tabwriter.Writer) {
				fmt.Fprintf(w, "vm %s running on %s after %.1fs\n", v.Name, v.Host, time.Since(start).Seconds())
			})
		},
	}
	f := cmd.Flags()
	sf.register(f)
	f.StringVar(&host, "host", "", "place on this host")
	f.BoolVar(&stopped, "stopped", false, "create without starting")
	f.BoolVar(&wait, "wait", false, "wait until the VM runs, showing progress")
	return cmd
}

// explainNoFit adds the per-host reasons of a no-capacity error.
func explainNoFit(err error) error {
	var ae *api.Error
	if !errors.As(err, &ae) || ae.Code != api.CodeNoCapacity {
		return err
	}
	reasons, ok := ae.Details.([]any)
	if !ok || len(reasons) == 0 {
		return err
	}
	var b strings.Builder
	b.WriteString("no host can take this VM:")
	for _, r := range reasons {
		m, _ := r.(map[string]any)
		fmt.Fprintf(&b, "\n  %v: %v", m["host"], m["reason"])
	}
	return &api.Error{Code: ae.Code, Message: b.String(), Details: ae.Details}
}

// follow prints a VM's progress to stderr until done, or until it fails.
func (c *cli) follow(ctx context.Context, name string, start time.Time, done func(api.VM) bool) (api.VM, error) {
	v, err := c.client().WaitVM(ctx, name, 250*time.Millisecond, func(v api.VM) bool {
		return done(v) || v.State == "failed" || v.State == "error" && v.Message != ""
	}, func(v api.VM) {
		msg := ""
		if m := vmMessage(v); m != "" {
			msg = ": " + m
		}
		fmt.Fprintf(os.Stderr, "[%5.1fs] %s: %s on %s%s\n", time.Since(start).Seconds(), v.Name, v.State, orDash(v.Host), msg)
	})
	if err != nil {
		return v, err
	}
	if !done(v) {
		return v, fmt.Errorf("vm %s is %s: %s", v.Name, v.State, vmMessage(v))
	}
	return v, nil
}

func (c *cli) vmPower(action string) *cobra.Command {
	var wait bool
	short := map[string]string{"start": "Start a VM (also clears a failure)", "stop": "Stop a VM (ACPI power off, then destroy after the timeout)", "restart": "Restart a running VM"}[action]
	cmd := &cobra.Command{
		Use: action + " NAME", Short: short, Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx, cancel := c.ctx()
			defer cancel()
			cl := c.client()
			start := time.Now()
			var (
				v   api.VM
				err error
			)
			switch action {
			case "start":
				v, err = cl.StartVM(ctx, args[0])
			case "stop":
				v, err = cl.StopVM(ctx, args[0])
			case "restart":
				v, err = cl.RestartVM(ctx, args[0])
			}
			if err != nil {
				return err
			}
			if wait {
				since := v.Since
				want := map[string]func(api.VM) bool{
					"start":   func(v api.VM) bool { return v.State == "running" },
					"stop":    func(v api.VM) bool { return v.State == "stopped" },
					"restart": func(v api.VM) bool { return v.State == "running" && v.Since.After(since) },
				}[action]
				if v, err = c.follow(ctx, v.Name, start, want); err != nil {
					return err
				}
			}
			return c.print(v, func(w *tabwriter.Writer) { fmt.Fprintf(w, "vm %s: desired %s, now %s\n", v.Name, v.Desired, v.State) })
		},
	}
	cmd.Flags().BoolVar(&wait, "wait", false, "wait until done, showing progress")
	return cmd
}

func (c *cli) vmRm() *cobra.Command {
	var force, noWait bool
	cmd := &cobra.Command{
		Use: "rm NAME", Aliases: []string{"delete"}, Short: "Delete a VM: its host destroys it and deletes its disks", Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx, cancel := c.ctx()
			defer cancel()
			start := time.Now()
			v, err := c.client().DeleteVM(ctx, args[0], force)
			if err != nil {
				return err
			}
			if !noWait && v.State != "deleted" {
				_, err := c.follow(ctx, v.Name, start, func(api.VM) bool { return false })
				if !errors.Is(err, api.ErrNotFound) {
					return err
				}
			}
			return c.print(map[string]string{"name": args[0], "state": "deleted"}, func(w *tabwriter.Writer) {
				fmt.Fprintf(w, "vm %s deleted\n", args[0])
			})
		},
	}
	cmd.Flags().BoolVar(&force, "force", false, "forget the VM at once, without its host (disks stay in the pool)")
	cmd.Flags().BoolVar(&noWait, "no-wait", false, "return once the deletion is recorded")
	return cmd
}

func (c *cli) vmResize() *cobra.Command {
	var (
		vcpus   int
		memory  string
		restart bool
	)
	cmd := &cobra.Command{
		Use: "resize NAME", Short: "Change vCPUs and memory; takes effect at the next start (or now with --restart)", Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx, cancel := c.ctx()
			defer cancel()
			cur, err := c.client().VM(ctx, args[0])
			if err != nil {
				return err
			}
			req := api.VMResizeRequest{VCPUs: cur.Spec.VCPUs, MemoryMiB: cur.Spec.MemoryMiB, Restart: restart}
			if cmd.Flags().Changed("vcpus") {
				req.VCPUs = vcpus
			}
			if memory != "" {
				if req.MemoryMiB, err = parseSize(memory); err != nil {
					return fmt.Errorf("--memory: %w", err)
				}
			}
			v, err := c.client().ResizeVM(ctx, args[0], req)
			if err != nil {
				return explainNoFit(err)
			}
			return c.print(v, func(w *tabwriter.Writer) {
				fmt.Fprintf(w, "vm %s: %d vCPU, %s\n", v.Name, v.Spec.VCPUs, fmtMiB(v.Spec.MemoryMiB))
			})
		},
	}
	cmd.Flags().IntVar(&vcpus, "vcpus", 0, "new vCPU count")
	cmd.Flags().StringVar(&memory, "memory", "", "new memory size")
	cmd.Flags().BoolVar(&restart, "restart", false, "restart the VM now so the new size applies")
	return cmd
}

func (c *cli) vmMigrate() *cobra.Command {
	var (
		to   string
		wait bool
	)
	cmd := &cobra.Command{
		Use: "migrate NAME", Short: "Live-migrate a running VM to another host", Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx, cancel := c.ctx()
			defer cancel()
			start := time.Now()
			v, err := c.client().MigrateVM(ctx, args[0], to)
			if err != nil {
				return explainNoFit(err)
			}
			from, target := v.Host, v.MigratingTo
			if wait {
				v, err = c.follow(ctx, v.Name, start, func(v api.VM) bool { return v.MigratingTo == "" && v.State == "running" })
				if err != nil {
					return err
				}
				if v.Host == from {
					return fmt.Errorf("migration of %s to %s failed; it keeps running on %s (see corralctl events --vm %s)", v.Name, target, from, v.Name)
				}
			}
			return c.print(v, func(w *tabwriter.Writer) {
				if wait {
					fmt.Fprintf(w, "vm %s migrated from %s to %s in %.1fs\n", v.Name, from, v.Host, time.Since(start).Seconds())
				} else {
					fmt.Fprintf(w, "vm %s migrating from %s to %s\n", v.Name, from, target)
				}
			})
		},
	}
	cmd.Flags().StringVar(&to, "to", "", "target host (default: placement chooses)")
	cmd.Flags().BoolVar(&wait, "wait", false, "wait until done, showing progress")
	return cmd
}

func (c *cli) vmConsoleLog() *cobra.Command {
	var bytes int64
	cmd := &cobra.Command{
		Use: "console-log NAME", Short: "Print the end of a VM's serial console log (from its host)", Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx, cancel := c.ctx()
			defer cancel()
			l, err := c.client().ConsoleLog(ctx, args[0], bytes)
			if err != nil {
				return err
			}
			if c.output == "json" {
				return c.print(l, nil)
			}
			_, err = fmt.Fprint(c.out, l.Log)
			return err
		},
	}
	cmd.Flags().Int64Var(&bytes, "bytes", 16<<10, "how much of the end of the log")
	return cmd
}

func (c *cli) vmStats() *cobra.Command {
	return &cobra.Command{
		Use: "stats NAME", Short: "Show a VM's CPU, memory, disk and NIC counters", Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx, cancel := c.ctx()
			defer cancel()
			s, err := c.client().VMStats(ctx, args[0])
			if err != nil {
				return err
			}
			return c.print(s, func(w *tabwriter.Writer) {
				fmt.Fprintf(w, "Host:\t%s\nState:\t%s\nCPU time:\t%.2fs on %d vCPUs\nMemory:\t%d MiB of %d MiB\n",
					s.Host, s.State, float64(s.CPUTimeNs)/1e9, s.VCPUs, s.MemoryKiB>>10, s.MaxMemoryKiB>>10)
				for _, d := range s.Disks {
					fmt.Fprintf(w, "Disk %s:\tread %d B (%d ops), written %d B (%d ops)\n", d.Name, d.ReadBytes, d.ReadReqs, d.WriteBytes, d.WriteReqs)
				}
				for _, n := range s.NICs {
					fmt.Fprintf(w, "NIC %s:\trx %d B %d pkts (%d err, %d drop), tx %d B %d pkts (%d err, %d drop)\n",
						n.Name, n.RxBytes, n.RxPackets, n.RxErrs, n.RxDrop, n.TxBytes, n.TxPackets, n.TxErrs, n.TxDrop)
				}
			})
		},
	}
}

// parseSoftRules reads KIND:KEY=VALUE:WEIGHT rules (kind host or vm).
func parseSoftRules(in []string, flag string) ([]api.SoftRule, error) {
	var out []api.SoftRule
	for _, s := range in {
		kind, rest, ok := strings.Cut(s, ":")
		i := strings.LastIndexByte(rest, ':')
		if !ok || i < 0 {
			return nil, fmt.Errorf("%s %q: want host:KEY=VALUE:WEIGHT or vm:KEY=VALUE:WEIGHT", flag, s)
		}
		kv, weight := rest[:i], rest[i+1:]
		k, v, ok := strings.Cut(kv, "=")
		w, err := strconv.Atoi(weight)
		if !ok || err != nil || kind != "host" && kind != "vm" {
			return nil, fmt.Errorf("%s %q: want host:KEY=VALUE:WEIGHT or vm:KEY=VALUE:WEIGHT", flag, s)
		}
		out = append(out, api.SoftRule{Kind: kind, Key: k, Value: v, Weight: w})
	}
	return out, nil
}

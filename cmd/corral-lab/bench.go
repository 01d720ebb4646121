package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"time"

	"github.com/corralhq/corral/api"
	"github.com/corralhq/corral/api/client"
	"github.com/corralhq/corral/internal/lab"
)

// benchRecovery measures, over --runs host kills per setting, the time from
// the kill to every guest of the killed host running on a survivor (libvirt
// state, as corral reports it) and to each guest's boot marker, broken out
// into detection (kill -> "suspected"), the fencing wait ("suspected" ->
// "fenced") and the start ("fenced" -> running). Settings: lease-only
// fencing and the lab's fence command; the killed host a follower and the
// leader.
func benchRecovery(ctx context.Context, dir string, args []string) error {
	fs := flag.NewFlagSet("bench-recovery", flag.ContinueOnError)
	runs := fs.Int("runs", 10, "kills per setting")
	guestDir := fs.String("guest", "_build/guest", "test guest (vmlinuz, initrd.img, disk.qcow2; scripts/build-test-guest.sh)")
	corrald := fs.String("corrald", "", "corrald binary (default: next to corral-lab)")
	perHost := fs.Int("guests", 2, "guests on the killed host")
	only := fs.String("only", "", "run one setting: lease, fence or lease-insecure")
	keepLogs := fs.String("keep-logs", "", "copy each host's corrald log here (SETTING-HOST.log) before the lab goes down")
	if err := fs.Parse(args); err != nil {
		return err
	}
	bin := *corrald
	self, _ := os.Executable()
	if bin == "" {
		bin = filepath.Join(filepath.Dir(self), "corrald")
	}
	type setting struct {
		name, extra string
		insecure    bool
	}
	// lease-insecure is lease without cluster identities (plain Raft, RPC
	// and gossip): the cost of TLS on recovery.
	settings := []setting{
		{"lease", "", false},
		{"fence", fmt.Sprintf("fence_command = \"%s --dir %s fence\"\n", self, dir), false},
		{"lease-insecure", "", true},
	}
	var results []benchResult
	for _, s := range settings {
		if *only != "" && *only != s.name {
			continue
		}
		l, err := lab.Up(ctx, lab.Config{Dir: dir, Hosts: 3, Corrald: bin, CorraldConfig: s.extra, ID: 7, Insecure: s.insecure})
		if err != nil {
			return err
		}
		res, err := benchSetting(ctx, l, s.name, *guestDir, *runs, *perHost)
		if *keepLogs != "" {
			if kerr := keepCorraldLogs(l, s.name, *keepLogs); kerr != nil {
				fmt.Fprintln(os.Stderr, "keep-logs:", kerr)
			}
		}
		l.Down(context.Background())
		if err != nil {
			return fmt.Errorf("%s: %w", s.name, err)
		}
		results = append(results, res...)
	}
	printBench(results)
	return nil
}

// keepCorraldLogs copies each host's corrald log to dir as SETTING-HOST.log.
func keepCorraldLogs(l *lab.Lab, setting, dir string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	for _, h := range l.Hosts {
		b, err := os.ReadFile(h.LogFile("corrald"))
		if err != nil {
			return err
		}
		if err := os.WriteFile(filepath.Join(dir, setting+"-"+h.Name+".log"), b, 0o644); err != nil {
			return err
		}
	}
	return nil
}

type benchResult struct {
	setting, role, victim string
	detect, fenceWait     time.Duration // kill -> suspected, suspected -> fenced
	election              time.Duration // kill -> new leader (leader kills)
	start                 time.Duration // fenced -> all running
	running, booted       time.Duration // kill -> all running, kill -> all boot markers
}

func benchSetting(ctx context.Context, l *lab.Lab, setting, guestDir string, runs, perHost int) ([]benchResult, error) {
	shared := filepath.Join(l.SharedDir(), "guest")
	if err := os.MkdirAll(shared, 0o755); err != nil {
		return nil, err
	}
	for _, f := range []string{"vmlinuz", "initrd.img", "disk.qcow2"} {
		b, err := os.ReadFile(filepath.Join(guestDir, f))
		if err != nil {
			return nil, fmt.Errorf("test guest: %w (run scripts/build-test-guest.sh %s)", err, guestDir)
		}
		if err := os.WriteFile(filepath.Join(shared, f), b, 0o644); err != nil {
			return nil, err
		}
	}
	if err := waitHealthy(ctx, l, ""); err != nil {
		return nil, err
	}
	c := client.New(l.Hosts[0].Socket())
	img, err := os.Open(filepath.Join(shared, "disk.qcow2"))
	if err != nil {
		return nil, err
	}
	fi, _ := img.Stat()
	_, err = c.ImportImage(ctx, "base", img, fi.Size())
	img.Close()
	if err != nil {
		return nil, err
	}
	var out []benchResult
	for i := 0; i < 2*runs; i++ {
		role := "follower"
		if i%2 == 1 {
			role = "leader"
		}
		r, err := benchOnce(ctx, l, shared, setting, role, i, perHost)
		if err != nil {
			return out, fmt.Errorf("run %d (%s): %w", i, role, err)
		}
		fmt.Fprintf(os.Stderr, "%s/%s kill %s: running after %.2fs, booted after %.2fs (detect %.2fs, fence wait %.2fs, start %.2fs)\n",
			setting, role, r.victim, r.running.Seconds(), r.booted.Seconds(), r.detect.Seconds(), r.fenceWait.Seconds(), r.start.Seconds())
		out = append(out, r)
	}
	return out, nil
}

// waitHealthy waits until every host answers with one leader and a valid
// lease, and none is fenced or draining.
func waitHealthy(ctx context.Context, l *lab.Lab, _ string) error {
	deadline := time.Now().Add(2 * time.Minute)
	for time.Now().Before(deadline) {
		ok := true
		for _, h := range l.Hosts {
			s, err := client.New(h.Socket()).Status(ctx)
			if err != nil || s.Leader == "" || s.Lease != "held" {
				ok = false
				break
			}
			hosts, err := client.New(h.Socket()).Hosts(ctx)
			if err != nil {
				ok = false
				break
			}
			for _, x := range hosts {
				if x.Mode != "active" || x.Lease != "ok" {
					ok = false
				}
			}
		}
		if ok {
			return nil
		}
		if err := pause(ctx, 100*time.Millisecond); err != nil {
			return err
		}
	}
	return errors.New("cluster not healthy after 2 minutes")
}

var bootRx = regexp.MustCompile(`CORRAL-BOOT host=\S+ counter=\d+`)

func benchOnce(ctx context.Context, l *lab.Lab, shared, setting, role string, run, perHost int) (benchResult, error) {
	r := benchResult{setting: setting, role: role}
	c := client.New(l.Hosts[0].Socket())
	st, err := c.Status(ctx)
	if err != nil {
		return r, err
	}
	victim := st.Leader
	if role == "follower" {
		for _, h := range l.Hosts {
			if h.Name != st.Leader {
				victim = h.Name
				break
			}
		}
	}
	r.victim = victim
	var survivor *client.Client
	for _, h := range l.Hosts {
		if h.Name != victim {
			survivor = client.New(h.Socket())
			break
		}
	}
	// Guests on the victim, booted.
	var names []string
	for g := 0; g < perHost; g++ {
		name := fmt.Sprintf("r%d-%d", run, g)
		names = append(names, name)
		_, err := survivor.CreateVM(ctx, api.VMCreateRequest{Name: name, Host: victim, Spec: api.VMSpec{VCPUs: 1, MemoryMiB: 128,
			Disks:  []api.Disk{{Image: "base"}},
			Kernel: &api.Kernel{Kernel: filepath.Join(shared, "vmlinuz"), Initrd: filepath.Join(shared, "initrd.img"), Cmdline: "console=ttyS0 quiet corral.name=" + name}}})
		if err != nil {
			return r, err
		}
	}
	for _, n := range names {
		if err := waitBoots(ctx, survivor, n, 1, 2*time.Minute); err != nil {
			return r, err
		}
	}
	evs, _ := survivor.Events(ctx, 0, 1, 0)
	var after uint64
	if len(evs) > 0 {
		after = evs[len(evs)-1].Seq
	}
	vh, err := l.Host(victim)
	if err != nil {
		return r, err
	}
	killed := time.Now()
	if err := vh.Kill(ctx); err != nil {
		return r, err
	}
	// All guests running elsewhere.
	for {
		vms, err := survivor.VMs(ctx)
		if err == nil {
			n := 0
			for _, v := range vms {
				for _, name := range names {
					if v.Name == name && v.Host != victim && v.State == "running" {
						n++
					}
				}
			}
			if n == len(names) {
				break
			}
		}
		if time.Since(killed) > 3*time.Minute {
			return r, errors.New("guests not recovered within 3 minutes")
		}
		if err := pause(ctx, 20*time.Millisecond); err != nil {
			return r, err
		}
	}
	r.running = time.Since(killed)
	for _, n := range names {
		if err := waitBoots(ctx, survivor, n, 1, 2*time.Minute); err != nil {
			return r, err
		}
	}
	r.booted = time.Since(killed)
	evs, err = survivor.Events(ctx, after, 0, 0)
	if err != nil {
		return r, err
	}
	var suspected, fenced, elected time.Time
	for _, e := range evs {
		switch {
		case e.Kind == "suspected" && e.Host == victim && suspected.IsZero():
			suspected = e.Time
		case e.Kind == "fencing" && e.Host == victim && suspected.IsZero():
			suspected = e.Time
		case e.Kind == "fenced" && e.Host == victim && fenced.IsZero():
			fenced = e.Time
		case e.Kind == "leader" && elected.IsZero():
			elected = e.Time
		}
	}
	if role == "leader" && !elected.IsZero() {
		r.election = elected.Sub(killed)
		if suspected.IsZero() || elected.After(suspected) {
			suspected = elected // a new leader suspects nobody before its own election
		}
	}
	if !suspected.IsZero() && !fenced.IsZero() {
		r.detect, r.fenceWait = suspected.Sub(killed), fenced.Sub(suspected)
		r.start = killed.Add(r.running).Sub(fenced)
	}
	// Clean up: power the victim on, wait for health, delete the guests.
	if err := vh.Boot(ctx); err != nil {
		return r, err
	}
	if err := waitHealthy(ctx, l, victim); err != nil {
		return r, err
	}
	for _, n := range names {
		if _, err := survivor.DeleteVM(ctx, n, false); err != nil {
			return r, err
		}
	}
	for {
		left := 0
		vms, _ := survivor.VMs(ctx)
		for _, v := range vms {
			if strings.HasPrefix(v.Name, fmt.Sprintf("r%d-", run)) {
				left++
			}
		}
		if left == 0 {
			break
		}
		if err := pause(ctx, 100*time.Millisecond); err != nil {
			return r, err
		}
	}
	return r, nil
}

// waitBoots waits until the VM's console (on its current host) shows at
// least n boot markers since its last placement.
func waitBoots(ctx context.Context, c *client.Client, name string, n int, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		l, err := c.ConsoleLog(ctx, name, 1<<20)
		if err == nil && len(bootRx.FindAllString(l.Log, -1)) >= n {
			return nil
		}
		if err := pause(ctx, 50*time.Millisecond); err != nil {
			return err
		}
	}
	return fmt.Errorf("%s: no boot marker within %v", name, timeout)
}

func printBench(rs []benchResult) {
	groups := map[string][]benchResult{}
	var keys []string
	for _, r := range rs {
		k := r.setting + "/" + r.role
		if _, ok := groups[k]; !ok {
			keys = append(keys, k)
		}
		groups[k] = append(groups[k], r)
	}
	sort.Strings(keys)
	fmt.Printf("\nrecovery after a host kill (seconds; mean, min-max over runs)\n")
	fmt.Printf("%-16s %4s  %-17s %-17s %-17s %-17s %-17s %-17s\n", "setting/killed", "runs", "to running", "to boot marker", "detection", "fencing wait", "start", "election")
	for _, k := range keys {
		g := groups[k]
		stat := func(f func(benchResult) time.Duration) string {
			mean, lo, hi := 0.0, math.Inf(1), math.Inf(-1)
			for _, r := range g {
				v := f(r).Seconds()
				mean += v / float64(len(g))
				lo, hi = math.Min(lo, v), math.Max(hi, v)
			}
			return fmt.Sprintf("%5.2f (%.2f-%.2f)", mean, lo, hi)
		}
		election := "-"
		if strings.HasSuffix(k, "/leader") {
			election = stat(func(r benchResult) time.Duration { return r.election })
		}
		fmt.Printf("%-16s %4d  %-17s %-17s %-17s %-17s %-17s %-17s\n", k, len(g),
			stat(func(r benchResult) time.Duration { return r.running }),
			stat(func(r benchResult) time.Duration { return r.booted }),
			stat(func(r benchResult) time.Duration { return r.detect }),
			stat(func(r benchResult) time.Duration { return r.fenceWait }),
			stat(func(r benchResult) time.Duration { return r.start }),
			election)
	}
}

// pause waits d, or returns ctx's error once it ends (Ctrl-C stops a
// bench at once).
func pause(ctx context.Context, d time.Duration) error {
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(d):
		return nil
	}
}

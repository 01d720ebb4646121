package e2e

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/corralhq/corral/api"
	"github.com/corralhq/corral/internal/testutil"
)

var backupIDRx = regexp.MustCompile(`backup (\S+) of`)

// TestBackups: the test guest keeps a counter on its disk. A full backup,
// more writes, an incremental one; a third whose VM's host is killed while
// it runs is retried on the host the VM is recovered on; each backup
// restored as a new VM boots with the counter of its moment; a corrupted
// chunk is refused before a disk is written; removing backups removes
// their files.
func TestBackups(t *testing.T) {
	e := newEnv(t, 3, "")
	dir := filepath.Join(e.lab.SharedDir(), "backups")
	if out, err := e.corralctl("h1", "backup", "target", "add", "t1", "--dir", dir); err != nil {
		t.Fatalf("target add: %v %s", err, out)
	}
	victim := e.follower()
	req := e.vmRequest("bk")
	req.Host = victim
	if _, err := e.client(0).CreateVM(e.ctx(), req); err != nil {
		t.Fatal(err)
	}
	e.waitVM("bk", 60*time.Second, running)
	e.waitTicks("bk", 3)

	// backup starts one (the leader takes its snapshot at once) and
	// returns its ID and the counter's range at that moment.
	backup := func(args ...string) (id string, from, to int) {
		t.Helper()
		from = e.console("bk").counter
		out, err := e.corralctl(e.survivorName(victim), append([]string{"vm", "backup", "bk", "--target", "t1"}, args...)...)
		if err != nil {
			t.Fatalf("vm backup: %v %s", err, out)
		}
		to = e.console("bk").counter
		m := backupIDRx.FindStringSubmatch(out)
		if m == nil {
			t.Fatalf("no backup ID in %q", out)
		}
		t.Logf("%s", strings.TrimSpace(out))
		return m[1], from, to
	}
	complete := func(id string, timeout time.Duration) api.Backup {
		t.Helper()
		var b api.Backup
		testutil.Eventually(t, timeout, func() error {
			var err error
			b, err = e.any().Backup(e.ctx(), id)
			return err
		})
		return b
	}

	full, f0, f1 := backup()
	if b := complete(full, 60*time.Second); b.Kind != "full" {
		t.Fatalf("first backup %+v", b)
	}
	e.waitTicks("bk", f1+3)
	incr, i0, i1 := backup("--wait")
	b := complete(incr, 60*time.Second)
	if b.Kind != "incremental" || b.Parent != full {
		t.Fatalf("second backup %+v: want an incremental on %s", b, full)
	}
	t.Logf("full %s counter %d..%d; incremental %s counter %d..%d, read %d bytes of %d", full, f0, f1, incr, i0, i1, b.Read, b.Size)

	// The VM's host is killed while a slow full backup runs there: the
	// attempt fails, and the job runs again where the VM is recovered.
	e.waitTicks("bk", i1+3)
	slow, s0, s1 := backup("--full", "--limit", "2KiB")
	testutil.Eventually(t, 30*time.Second, func() error {
		v, err := e.any().VM(e.ctx(), "bk")
		if err != nil {
			return err
		}
		if v.Backup == nil || v.Backup.Host != victim || v.Backup.Total == 0 {
			return fmt.Errorf("backup job %+v: want it under way on %s", v.Backup, victim)
		}
		return nil
	})
	if err := e.host(victim).Kill(e.ctx()); err != nil {
		t.Fatal(err)
	}
	sb := complete(slow, 4*time.Minute)
	v := e.waitVM("bk", 60*time.Second, running)
	if v.Host == victim {
		t.Fatalf("bk still on %s", victim)
	}
	evs, _ := e.any().Events(e.ctx(), 0, 1000, 0)
	retried := false
	for _, ev := range evs {
		if ev.VM == "bk" && ev.Kind == "backup-failed" && strings.Contains(ev.Message, victim) {
			retried = true
		}
	}
	if !retried || sb.Kind != "full" {
		t.Fatalf("backup %+v after its host died; a failed attempt recorded: %v", sb, retried)
	}

	// Each backup restored as a new VM boots with its moment's counter.
	restore := func(id, as string) guestLog {
		t.Helper()
		if out, err := e.corralctl(e.survivorName(victim), "vm", "restore", "--backup", id, "--as", as, "--wait"); err != nil {
			t.Fatalf("restore %s: %v %s", id, err, out)
		}
		var g guestLog
		testutil.Eventually(t, 90*time.Second, func() error {
			if g = e.console(as); len(g.boots) == 0 {
				return errors.New("no boot yet")
			}
			return nil
		})
		return g
	}
	for _, c := range []struct {
		id, as   string
		from, to int
	}{{incr, "bk-incr", i0, i1}, {slow, "bk-slow", s0, s1}} {
		got := restore(c.id, c.as).boots[0]
		t.Logf("%s from %s: counter %d at boot, %d..%d at the backup", c.as, c.id, got, c.from, c.to)
		if got < c.from || got > c.to {
			t.Fatalf("%s booted with counter %d; backup %s was taken while it went from %d to %d", c.as, got, c.id, c.from, c.to)
		}
	}

	// A corrupted chunk of the incremental: its restore fails before a
	// disk appears.
	raw, err := os.ReadFile(filepath.Join(dir, "backups", incr+".json"))
	if err != nil {
		t.Fatal(err)
	}
	var man struct {
		Disks []struct {
			Extents []struct {
				SHA256 string `json:"sha256"`
			} `json:"extents"`
		} `json:"disks"`
	}
	if err := json.Unmarshal(raw, &man); err != nil {
		t.Fatal(err)
	}
	sum := ""
	for _, x := range man.Disks[0].Extents {
		if x.SHA256 != "" {
			sum = x.SHA256
		}
	}
	chunk := filepath.Join(dir, "chunks", sum[:2], sum)
	data, err := os.ReadFile(chunk)
	if err != nil {
		t.Fatal(err)
	}
	data[0] ^= 0xff
	if err := os.WriteFile(chunk, data, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := e.any().RestoreBackup(e.ctx(), incr, api.RestoreRequest{As: "bk-bad"}); err != nil {
		t.Fatal(err)
	}
	e.waitVM("bk-bad", 60*time.Second, func(v api.VM) error {
		if v.State != "error" || !strings.Contains(v.Message, sum[:12]) {
			return fmt.Errorf("state %s (%s): want an error naming chunk %s", v.State, v.Message, sum[:12])
		}
		return nil
	})
	pool := filepath.Join(e.lab.SharedDir(), "pool")
	files, _ := os.ReadDir(pool)
	for _, f := range files {
		if strings.HasPrefix(f.Name(), "vm-bk-bad-") {
			t.Fatalf("%s in the pool: a corrupted backup touched a disk", f.Name())
		}
	}
	data[0] ^= 0xff // repaired, for what follows
	if err := os.WriteFile(chunk, data, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := e.any().DeleteVM(e.ctx(), "bk-bad", false); err != nil {
		t.Fatal(err)
	}

	// The same to S3: a real S3 server (versitygw over a directory of the
	// shared disk) inside a surviving lab host's namespaces.
	srvHost := e.host(e.survivorName(victim))
	s3dir := filepath.Join(e.lab.SharedDir(), "s3")
	if err := os.MkdirAll(filepath.Join(s3dir, "corral"), 0o755); err != nil {
		t.Fatal(err)
	}
	gw := srvHost.Command(context.Background(), testutil.VersityGW(t), "--access", "labkey", "--secret", "lab-secret-key-0123",
		"--port", srvHost.IP+":9000", "posix", s3dir)
	gw.Stdout, gw.Stderr = testutil.Writer(t), testutil.Writer(t)
	if err := gw.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { gw.Process.Kill(); gw.Wait() })
	secretFile := filepath.Join(t.TempDir(), "secret")
	if err := os.WriteFile(secretFile, []byte("lab-secret-key-0123\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, 60*time.Second, func() error { // until the server answers
		_, err := e.corralctl(srvHost.Name, "backup", "target", "add", "s3t", "--s3-endpoint", srvHost.IP+":9000", "--bucket", "corral",
			"--prefix", "lab/", "--access-key", "labkey", "--secret-key-file", secretFile, "--insecure")
		return err
	})
	out, err := e.corralctl(srvHost.Name, "backup", "target", "show", "s3t", "--credentials")
	if err != nil || !strings.Contains(out, "lab-secret-key-0123") {
		t.Fatalf("credentials: %v %s", err, out)
	}
	if out, _ := e.corralctl(srvHost.Name, "backup", "target", "ls"); strings.Contains(out, "lab-secret") {
		t.Fatalf("target ls shows the secret key: %s", out)
	}
	s3backup := func(args ...string) (string, int, int) {
		t.Helper()
		from := e.console("bk").counter
		out, err := e.corralctl(srvHost.Name, append([]string{"vm", "backup", "bk", "--target", "s3t", "--wait"}, args...)...)
		if err != nil {
			t.Fatalf("backup to s3: %v %s", err, out)
		}
		m := backupIDRx.FindStringSubmatch(out)
		if m == nil {
			t.Fatalf("no backup ID in %q", out)
		}
		t.Logf("%s", strings.TrimSpace(out))
		return m[1], from, e.console("bk").counter
	}
	g0 := e.waitTicks("bk", 0)
	s3full, _, _ := s3backup()
	e.waitTicks("bk", g0.counter+3)
	s3incr, c0, c1 := s3backup()
	if b := complete(s3incr, 10*time.Second); b.Kind != "incremental" || b.Parent != s3full || b.Target != "s3t" {
		t.Fatalf("second s3 backup %+v", b)
	}
	if got := restore(s3incr, "bk-s3").boots[0]; got < c0 || got > c1 {
		t.Fatalf("bk-s3 booted with counter %d; backup %s was taken while it went from %d to %d", got, s3incr, c0, c1)
	}
	if files, _ := filepath.Glob(filepath.Join(s3dir, "corral", "lab", "backups", "*.json")); len(files) != 2 {
		t.Fatalf("manifests in the bucket: %v", files)
	}
	evs, _ = e.any().Events(e.ctx(), 0, 2000, 0)
	for _, ev := range evs {
		if strings.Contains(ev.Message, "lab-secret") {
			t.Fatalf("an event carries the secret key: %+v", ev)
		}
	}

	// In place: the stopped VM is replaced by the backup's disks, keeping
	// its name and MAC address (a new incarnation, a new ID).
	before, err := e.any().VM(e.ctx(), "bk")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.any().StopVM(e.ctx(), "bk"); err != nil {
		t.Fatal(err)
	}
	e.waitVM("bk", 60*time.Second, isStopped)
	bootsBefore := len(e.console("bk").boots)
	if out, err := e.corralctl(srvHost.Name, "vm", "restore", "--backup", slow, "--in-place", "--wait"); err != nil {
		t.Fatalf("restore in place: %v %s", err, out)
	}
	after := e.waitVM("bk", 60*time.Second, running)
	if after.ID == before.ID || after.Spec.NICs != nil && before.Spec.NICs != nil && after.Spec.NICs[0].MAC != before.Spec.NICs[0].MAC {
		t.Fatalf("in place: id %s -> %s, nics %+v -> %+v", before.ID, after.ID, before.Spec.NICs, after.Spec.NICs)
	}
	var gl guestLog
	testutil.Eventually(t, 90*time.Second, func() error {
		gl = e.console("bk")
		if after.Host == before.Host && len(gl.boots) <= bootsBefore || len(gl.boots) == 0 {
			return errors.New("no boot after the restore yet")
		}
		return nil
	})
	if got := gl.boots[len(gl.boots)-1]; got < s0 || got > s1 {
		t.Fatalf("bk restored in place booted with counter %d; backup %s was taken while it went from %d to %d", got, slow, s0, s1)
	}

	// A backup schedule's retention: every 10 s, keep 2. A chain is at
	// most 7 backups (a full and 6 incrementals), so once the second
	// chain has begun the first expires whole: exactly the newest full
	// and its incremental stay.
	if out, err := e.corralctl(srvHost.Name, "vm", "backup-schedule", "bk-incr", "--target", "t1", "every 10s keep 2"); err != nil {
		t.Fatalf("backup-schedule: %v %s", err, out)
	}
	var kept []api.Backup
	made := 0
	testutil.Eventually(t, 4*time.Minute, func() error {
		made = 0
		evs, err := e.any().Events(e.ctx(), 0, 2000, 0)
		if err != nil {
			return err
		}
		for _, ev := range evs {
			if ev.VM == "bk-incr" && ev.Kind == "backup-started" && strings.Contains(ev.Message, "scheduled") {
				made++
			}
		}
		bs, err := e.any().Backups(e.ctx(), "bk-incr", "t1")
		if err != nil {
			return err
		}
		kept = nil
		fulls := 0
		for _, b := range bs {
			if b.Scheduled {
				kept = append(kept, b)
				if b.Kind == "full" {
					fulls++
				}
			}
		}
		if made < 9 || len(kept) != 2 || fulls != 1 {
			return fmt.Errorf("%d scheduled backups made, %d kept (%d full); want at least 9 made (the second chain begun), 2 kept: its full and an incremental", made, len(kept), fulls)
		}
		return nil
	})
	if _, err := e.any().SetBackupSchedule(e.ctx(), "bk-incr", "", ""); err != nil {
		t.Fatal(err)
	}
	t.Logf("backup schedule: %d made, kept %s (%s) and %s (%s)", made, kept[0].ID, kept[0].Kind, kept[1].ID, kept[1].Kind)

	// Removing: not the full while the incremental builds on it; then
	// both, and their files go.
	if out, err := e.corralctl(e.survivorName(victim), "backup", "rm", full); err == nil {
		t.Fatalf("removed %s though %s builds on it: %s", full, incr, out)
	}
	for _, id := range []string{incr, full} {
		if out, err := e.corralctl(e.survivorName(victim), "backup", "rm", id); err != nil {
			t.Fatalf("backup rm %s: %v %s", id, err, out)
		}
	}
	testutil.Eventually(t, 60*time.Second, func() error {
		for _, id := range []string{incr, full} {
			if _, err := os.Stat(filepath.Join(dir, "backups", id+".json")); err == nil {
				return fmt.Errorf("manifest of %s still there", id)
			}
		}
		if _, err := os.Stat(filepath.Join(dir, "backups", slow+".json")); err != nil {
			return fmt.Errorf("manifest of %s, which stays: %v", slow, err)
		}
		return nil
	})
	if _, err := e.any().VM(e.ctx(), "bk"); err != nil {
		t.Fatal(err)
	}
}

// survivorName is a host other than h.
func (e *env) survivorName(h string) string { return e.lab.Hosts[e.survivor(h)].Name }

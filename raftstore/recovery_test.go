package raftstore

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/corralhq/corral/internal/testutil"
	"github.com/corralhq/corral/model"
	"github.com/corralhq/corral/raftlog"
)

// TestClusterBackupAndRecover takes a backup of a 3-voter cluster's state
// on a follower, refuses damaged copies of it, recovers it as a new
// one-voter cluster in an empty directory, and adopts guests there: one
// found elsewhere than the backup says, one on a newer disk chain, one
// unknown, a second copy; the recovery ends only when every host has
// told, and HA is armed again then.
func TestClusterBackupAndRecover(t *testing.T) {
	ctx := context.Background()
	stores := startCluster(t, 3)
	leader := waitLeader(t, stores)
	on := func(v model.VM, host string) model.VM { v.Host = host; v.Desired = model.PowerRunning; return v }
	cmds := []raftlog.Command{raftlog.RegisterHost{Host: testHost("h1")}, raftlog.RegisterHost{Host: testHost("h2")}, raftlog.RegisterHost{Host: testHost("h3")},
		raftlog.CreateVM{VM: on(testVM("a"), "h1")}, raftlog.CreateVM{VM: on(testVM("b"), "h2")}, raftlog.CreateVM{VM: on(testVM("c"), "h3")},
		raftlog.SetGossipKeys{Keys: [][]byte{bytes.Repeat([]byte{7}, 32)}}}
	for _, c := range cmds {
		if _, err := leader.Apply(ctx, c); err != nil {
			t.Fatalf("%T: %v", c, err)
		}
	}
	var follower *Store
	for _, s := range stores {
		if s != leader {
			follower = s
		}
	}
	testutil.Eventually(t, 5*time.Second, func() error {
		if follower.AppliedIndex() < leader.AppliedIndex() {
			return errors.New("follower behind")
		}
		return nil
	})
	var buf bytes.Buffer
	taken := time.Date(2026, 12, 3, 2, 0, 0, 0, time.UTC)
	h, err := follower.WriteBackup(&buf, "h2", taken)
	if err != nil || h.Hosts != 3 || h.VMs != 3 || h.Applied == 0 || !h.TakenAt.Equal(taken) {
		t.Fatalf("backup: %+v %v", h, err)
	}
	data := buf.Bytes()

	// Damaged, cut and foreign files are refused before anything is built.
	flipped := bytes.Clone(data)
	flipped[len(flipped)-10] ^= 1
	for name, bad := range map[string][]byte{
		"damaged": flipped, "cut short": data[:len(data)-5], "longer": append(bytes.Clone(data), 'x'),
		"not a corral cluster backup": []byte("{\"hello\":1}\n"),
	} {
		if _, _, err := ReadBackup(bytes.NewReader(bad)); !errors.Is(err, model.ErrInvalid) || !strings.Contains(err.Error(), name) {
			t.Errorf("%s file: %v", name, err)
		}
	}
	h2, st, err := ReadBackup(bytes.NewReader(data))
	if err != nil || h2 != h || len(st.vms) != 3 || st.cluster.GossipKeys != nil {
		t.Fatalf("read back: %+v %v (gossip keys %d)", h2, err, len(st.cluster.GossipKeys))
	}

	// Recovered in an empty directory, under a name the backup holds.
	dir := t.TempDir()
	ip := "127.0.0.9"
	addr := fmt.Sprintf("%s:%d", ip, testutil.FreePort(t, ip))
	if _, err := Recover(dir, h, st, "h9", addr, time.Now()); !errors.Is(err, model.ErrInvalid) {
		t.Fatalf("recover as a host not in the backup: %v", err)
	}
	_, st, _ = ReadBackup(bytes.NewReader(data))
	rec, err := Recover(dir, h, st, "h2", addr, time.Now())
	if err != nil || !slices.Equal(rec.Waiting, []string{"h1", "h2", "h3"}) || !rec.HAWasArmed || rec.BackupIndex != h.Applied {
		t.Fatalf("recover: %+v %v", rec, err)
	}
	if _, err := Recover(dir, h, st, "h2", addr, time.Now()); !errors.Is(err, model.ErrConflict) {
		t.Fatalf("recover into a directory with state: %v", err)
	}
	s := New(Config{ID: "h2", BindAddr: addr, AdvertiseAddr: addr, Dir: dir, Logger: testutil.Logger(t), Timing: fastTiming()})
	if err := s.Open(); err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if !s.HasState() {
		t.Fatal("recovered store has no state")
	}
	waitLeader(t, []*Store{s})
	servers, err := s.Servers()
	if err != nil || len(servers) != 1 || servers[0].ID != "h2" || servers[0].Address != addr {
		t.Fatalf("servers %+v %v", servers, err)
	}
	c := s.Cluster()
	if c.Recovery == nil || !c.HADisarmed || c.Protocol != raftlog.Protocol || len(s.VMs()) != 3 {
		t.Fatalf("recovered cluster %+v, %d vms", c, len(s.VMs()))
	}
	if _, err := s.Apply(ctx, raftlog.SetHA{Disarmed: false, Time: time.Now()}); !errors.Is(err, model.ErrConflict) {
		t.Fatalf("arming HA while hosts are waited for: %v", err)
	}

	// h2 runs a (placed on h1 in the backup) on a layer the backup does
	// not know, b, and a guest nobody knows.
	a, _ := s.VM("a")
	if _, err := s.Apply(ctx, raftlog.AdoptGuests{Host: "h2", Guests: []raftlog.AdoptedGuest{
		{Name: "a", VMID: a.ID, Running: true, Layers: []uint64{3, 1, 0}},
		{Name: "b", VMID: "id-b", Running: true},
		{Name: "z", VMID: "id-z", Running: true},
	}}); err != nil {
		t.Fatal(err)
	}
	a2, _ := s.VM("a")
	if a2.Host != "h2" || a2.Generation != a.Generation+1 || !a2.Adopted || a2.Chain.Active != 3 || a2.Chain.Seq != 3 {
		t.Fatalf("adopted a: host %s gen %d adopted %v chain %+v", a2.Host, a2.Generation, a2.Adopted, a2.Chain)
	}
	if p, ok := a2.Chain.Parent(3); !ok || p != 1 {
		t.Fatalf("adopted chain %+v", a2.Chain)
	}
	// h1 claims a second copy of a: left to the operator.
	if _, err := s.Apply(ctx, raftlog.AdoptGuests{Host: "h1", Guests: []raftlog.AdoptedGuest{{Name: "a", VMID: a.ID, Running: true}}}); err != nil {
		t.Fatal(err)
	}
	r := s.Cluster().Recovery
	if !slices.Equal(r.Waiting, []string{"h3"}) || r.Adopted != 2 || r.Moved != 1 || r.Rechained != 1 || len(r.Unknown) != 2 ||
		!r.Keeps("h2", "id-z") || !r.Keeps("h1", a.ID) || r.Keeps("h2", a.ID) {
		t.Fatalf("recovery %+v", r)
	}
	if a3, _ := s.VM("a"); a3.Host != "h2" {
		t.Fatalf("a second copy moved a to %s", a3.Host)
	}
	// Sent again: counted once.
	if _, err := s.Apply(ctx, raftlog.AdoptGuests{Host: "h1", Guests: []raftlog.AdoptedGuest{{Name: "a", VMID: a.ID, Running: true}}}); err != nil {
		t.Fatal(err)
	}
	if r2 := s.Cluster().Recovery; len(r2.Unknown) != 2 || r2.Adopted != 2 {
		t.Fatalf("repeated inventory counted again: %+v", r2)
	}
	if _, err := s.Apply(ctx, raftlog.EndRecovery{Time: time.Now()}); !errors.Is(err, model.ErrConflict) || !strings.Contains(err.Error(), "h3") {
		t.Fatalf("end while h3 is waited for: %v", err)
	}
	if _, err := s.Apply(ctx, raftlog.AdoptGuests{Host: "h3"}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Apply(ctx, raftlog.EndRecovery{Time: time.Now()}); err != nil {
		t.Fatal(err)
	}
	c = s.Cluster()
	if c.Recovery != nil || c.HADisarmed {
		t.Fatalf("after the end: %+v", c)
	}
	if a4, _ := s.VM("a"); a4.Adopted {
		t.Fatal("adopted mark outlived the recovery")
	}
	if _, err := s.Apply(ctx, raftlog.AdoptGuests{Host: "h3"}); !errors.Is(err, model.ErrConflict) {
		t.Fatalf("inventory after the end: %v", err)
	}
	// The log goes on from the backup's index.
	if _, err := s.Apply(ctx, raftlog.CreateVM{VM: testVM("d")}); err != nil || s.AppliedIndex() <= h.Applied {
		t.Fatalf("write after recovery: %v (applied %d, backup %d)", err, s.AppliedIndex(), h.Applied)
	}
}

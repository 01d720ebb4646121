package e2e

import (
	"context"
	"path/filepath"
	"testing"
	"time"

	"github.com/corralhq/corral/internal/chaos"
	"github.com/corralhq/corral/internal/lab"
	"github.com/corralhq/corral/internal/testutil"
)

// TestChaosFixedSet runs a short fixed set of fault schedules on a 5-host
// lab through the chaos runner (make chaos runs random ones), each checked
// from outside corrald: no double run, no guest lost or late, no disk
// counter going back, every host's state the same, no leader change once
// the faults are over.
func TestChaosFixedSet(t *testing.T) {
	if testing.Short() {
		t.Skip("a 5-host lab with guests")
	}
	testutil.NeedRoot(t)
	corrald, _ := binaries(t)
	l := testutil.NewLab(t, lab.Config{Hosts: 5, Corrald: corrald, CorraldConfig: chaos.LabConfig, DataDirMiB: 512})
	guest := testutil.BuildGuest(t, filepath.Join(l.SharedDir(), "guest"))
	r, err := chaos.NewRunner(chaos.Config{Lab: l, Guests: 4, GuestDir: filepath.Dir(guest.Kernel),
		Budget: 60 * time.Second, Quiet: 10 * time.Second, Log: testutil.Writer(t)})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Minute)
	defer cancel()
	if err := r.Setup(ctx); err != nil {
		t.Fatal(err)
	}
	s := func(i int, steps ...chaos.Step) chaos.Schedule {
		sc := chaos.Schedule{Index: i, Steps: steps}
		for _, st := range steps {
			sc.Length = max(sc.Length, st.At+st.For)
		}
		return sc
	}
	sec := func(f float64) time.Duration { return time.Duration(f * float64(time.Second)) }
	for _, sc := range []chaos.Schedule{
		// The leader dies in the middle of another host's recovery.
		s(0, chaos.Step{At: sec(1), For: sec(15), Kind: chaos.LeaderKill, Hosts: []int{1}, Delay: sec(3)}),
		// corrald killed on one host while another's data_dir is full and a
		// guest migrates.
		s(1, chaos.Step{At: sec(1), For: sec(8), Kind: chaos.SIGKILL, Hosts: []int{2}},
			chaos.Step{At: sec(2), For: sec(8), Kind: chaos.DiskFull, Hosts: []int{3}},
			chaos.Step{At: sec(4), Kind: chaos.Migrate, Guest: 1}),
		// A 2|3 split, then packet loss, a drain and a libvirtd restart, and
		// an asymmetric partition.
		s(2, chaos.Step{At: sec(1), For: sec(8), Kind: chaos.Split, Hosts: []int{0, 1}},
			chaos.Step{At: sec(11), For: sec(5), Kind: chaos.Netem, Hosts: []int{2}, Loss: 30, Delay: 50 * time.Millisecond},
			chaos.Step{At: sec(11), For: sec(10), Kind: chaos.Drain, Hosts: []int{3}},
			chaos.Step{At: sec(12), Kind: chaos.Libvirtd, Hosts: []int{4}},
			chaos.Step{At: sec(18), For: sec(6), Kind: chaos.Asymmetric, Hosts: []int{0}}),
	} {
		res := r.Run(ctx, sc)
		t.Log(res.Summary())
		for _, a := range res.Actions {
			t.Log("  ", a)
		}
		for _, e := range res.Events {
			t.Log("   event", e)
		}
		if !res.OK() {
			t.Errorf("schedule %d: %+v", sc.Index, res)
		}
	}
}

package chaos

import (
	"reflect"
	"strings"
	"testing"
	"time"
)

func TestPieces(t *testing.T) {
	log := "noise\nCORRAL-BOOT host=g counter=0\r\nCORRAL-TICK counter=1 uptime=1.0\nCORRAL-TICK counter=2 uptime=2.0\n" +
		"[  3.1] kernel says\nCORRAL-TICK counter=3 uptime=3.0\n" +
		"CORRAL-BOOT host=g counter=3\nCORRAL-TICK counter=4 uptime=0.9\n" +
		"CORRAL-TICK counter=9 uptime=1.9\nCORRAL-TICK counter=10 uptime=2.9\nCORRAL-TICK counter=11 upt"
	got := Pieces("h1", []byte(log))
	want := []Piece{{"h1", 1, 3}, {"h1", 4, 4}, {"h1", 9, 10}}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("pieces %+v, want %+v", got, want)
	}
	if Pieces("h1", []byte("CORRAL-TICK counter=1 uptime=1")) != nil {
		t.Fatal("a line still being written counted")
	}
}

func TestCounterOverlaps(t *testing.T) {
	// A migration hands the count on; a recovery starts from the disk.
	fine := []Piece{{"h1", 1, 10}, {"h2", 11, 20}, {"h3", 21, 22}, {"h1", 23, 40}}
	if o := CounterOverlaps("v", fine); o != nil {
		t.Fatal(o)
	}
	// A second copy counting from the same disk, and a disk gone back.
	double := []Piece{{"h1", 1, 10}, {"h2", 8, 12}}
	if o := CounterOverlaps("v", double); len(o) != 1 || !strings.Contains(o[0], "1-10 on h1 and 8-12 on h2") {
		t.Fatal(o)
	}
	back := []Piece{{"h1", 1, 30}, {"h2", 31, 35}, {"h3", 20, 25}}
	if o := CounterOverlaps("v", back); len(o) != 1 {
		t.Fatal(o)
	}
	if MaxCounter(fine) != 40 {
		t.Fatal(MaxCounter(fine))
	}
}

func TestGenerateIsDeterministicAndKeepsQuorum(t *testing.T) {
	o := Options{Hosts: 5, Guests: 6, Duration: 30 * time.Second, DiskFull: true}
	kinds := map[Kind]bool{}
	for i := range 500 {
		seed := ScheduleSeed(1, i)
		a, b := Generate(i, seed, o), Generate(i, seed, o)
		if !reflect.DeepEqual(a, b) {
			t.Fatalf("schedule %d differs between two generations", i)
		}
		if len(a.Steps) < 2 || len(a.Steps) > 4 {
			t.Fatalf("schedule %d: %d steps", i, len(a.Steps))
		}
		// At every 100 ms, at most two hosts out, none hit twice.
		for at := time.Duration(0); at < a.Length; at += 100 * time.Millisecond {
			outNow, hit := 0, map[int]int{}
			for _, st := range a.Steps {
				if at < st.At || at >= st.At+max(st.For, time.Second) {
					continue
				}
				n := out(st, o.Hosts)
				outNow += n
				for _, h := range st.Hosts {
					hit[h]++
					if hit[h] > 1 {
						t.Fatalf("schedule %d (%s): h%d hit twice at %v", i, a, h+1, at)
					}
				}
			}
			if outNow > 2 {
				t.Fatalf("schedule %d (%s): %d hosts out at %v", i, a, outNow, at)
			}
		}
		for _, st := range a.Steps {
			kinds[st.Kind] = true
			if st.Kind == Netem && (st.Delay < 10*time.Millisecond || st.Delay > 150*time.Millisecond) {
				t.Fatalf("schedule %d: netem latency %v, want 10-150 ms", i, st.Delay)
			}
			for _, h := range st.Hosts {
				if h < 0 || h >= o.Hosts {
					t.Fatalf("schedule %d: host %d", i, h)
				}
			}
		}
	}
	for _, k := range []Kind{Kill, Partition, Split, Asymmetric, Blip, Netem, Libvirtd, SIGKILL, SIGTERM, LeaderKill, DiskFull, Drain, Migrate} {
		if !kinds[k] {
			t.Errorf("500 schedules never had a %s", k)
		}
	}
	if ScheduleSeed(1, 0) == ScheduleSeed(1, 1) || ScheduleSeed(1, 0) == ScheduleSeed(2, 0) {
		t.Fatal("schedule seeds collide")
	}
}

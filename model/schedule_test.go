package model

import (
	"errors"
	"testing"
	"time"
)

func TestParseSchedule(t *testing.T) {
	for text, want := range map[string]string{
		"hourly keep 24":                    "hourly keep 24",
		"daily 02:00 keep 7 daily 4 weekly": "daily 02:00 keep 7 daily 4 weekly",
		"Daily keep 3 last 7 daily":         "daily 00:00 keep 3 7 daily",
		"every 15m keep 4":                  "every 15m keep 4",
	} {
		s, err := ParseSchedule(text)
		if err != nil {
			t.Errorf("%q: %v", text, err)
			continue
		}
		if s.String() != want {
			t.Errorf("%q reads as %q, want %q", text, s, want)
		}
		again, err := ParseSchedule(s.String())
		if err != nil || again != s {
			t.Errorf("%q: its text form %q reads back as %+v, %v", text, s, again, err)
		}
	}
	for _, text := range []string{"", "hourly", "hourly keep", "hourly keep 0", "every 1s keep 1", "every 1.5s keep 1",
		"daily 25:00 keep 1", "weekly keep 1", "hourly keep 3 monthly", "hourly keep 2 daily 3 daily", "every 999h keep 1"} {
		if _, err := ParseSchedule(text); !errors.Is(err, ErrInvalid) {
			t.Errorf("%q: %v, want invalid", text, err)
		}
	}
}

func TestScheduleSlots(t *testing.T) {
	s, _ := ParseSchedule("daily 02:00 keep 1")
	at := time.Date(2026, 12, 3, 1, 59, 0, 0, time.UTC)
	if got := s.Slot(at); !got.Equal(time.Date(2026, 12, 2, 2, 0, 0, 0, time.UTC)) {
		t.Fatalf("slot at %v: %v", at, got)
	}
	if got := s.Slot(at.Add(time.Minute)); !got.Equal(time.Date(2026, 12, 3, 2, 0, 0, 0, time.UTC)) {
		t.Fatalf("slot at 02:00: %v", got)
	}
	h, _ := ParseSchedule("every 10s keep 1")
	if got := h.Slot(time.Unix(1005, 0)); got.Unix() != 1000 {
		t.Fatalf("every 10s slot at 1005: %d", got.Unix())
	}
}

func TestScheduleRetention(t *testing.T) {
	day := func(d, h int) time.Time { return time.Date(2026, 11, d, h, 0, 0, 0, time.UTC) }
	// Two a day from Nov 1 (Sunday) to Nov 20.
	var times []time.Time
	for d := 1; d <= 20; d++ {
		times = append(times, day(d, 6), day(d, 18))
	}
	s, _ := ParseSchedule("daily keep 3 last 2 daily 2 weekly")
	keep := s.Retain(times)
	var kept []time.Time
	for i, k := range keep {
		if k {
			kept = append(kept, times[i])
		}
	}
	want := []time.Time{
		day(15, 18), // week 46's newest (Nov 9 to 15)
		day(19, 18), // Nov 19's newest, one of the 3 newest
		day(20, 6),
		day(20, 18), // the newest: Nov 20's, week 47's
	}
	if len(kept) != len(want) {
		t.Fatalf("kept %v, want %v", kept, want)
	}
	for i := range want {
		if !kept[i].Equal(want[i]) {
			t.Fatalf("kept %v, want %v", kept, want)
		}
	}
}

// Package testutil holds helpers shared by corral's tests: polling with a
// deadline, free ports, loopback addresses, and a test logger.
package testutil

import (
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"strings"
	"sync"
	"testing"
	"time"
)

// Eventually polls cond every 20ms until it returns nil or timeout passes,
// then fails the test with the last error.
func Eventually(t testing.TB, timeout time.Duration, cond func() error) {
	t.Helper()
	if err := Poll(timeout, 20*time.Millisecond, cond); err != nil {
		t.Fatalf("condition not met within %v: %v", timeout, err)
	}
}

// Poll calls cond every interval until it returns nil or timeout passes, and
// returns the last error.
func Poll(timeout, interval time.Duration, cond func() error) error {
	deadline := time.Now().Add(timeout)
	for {
		err := cond()
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return err
		}
		time.Sleep(interval)
	}
}

// given holds the ports FreePort handed out in this process.
var (
	givenMu sync.Mutex
	given   = map[int]bool{}
)

// FreePort returns a TCP port that is free on ip for both TCP and UDP at the
// time of the call, and that it has not returned before in this process.
func FreePort(t testing.TB, ip string) int {
	t.Helper()
	for i := 0; i < 50; i++ {
		ln, err := net.Listen("tcp", net.JoinHostPort(ip, "0"))
		if err != nil {
			t.Fatalf("free port on %s: %v", ip, err)
		}
		port := ln.Addr().(*net.TCPAddr).Port
		pc, err := net.ListenPacket("udp", fmt.Sprintf("%s:%d", ip, port))
		ln.Close()
		if err != nil {
			continue
		}
		pc.Close()
		// The kernel may hand a closed port out again at once: never give
		// one twice in a process (a cluster's gossip and Raft ports once
		// came out equal).
		givenMu.Lock()
		again := given[port]
		given[port] = true
		givenMu.Unlock()
		if !again {
			return port
		}
	}
	t.Fatalf("no free tcp+udp port on %s", ip)
	return 0
}

// Logger returns a logger that writes through t.Log, or to stderr at debug
// level when CORRAL_TEST_LOG=debug.
func Logger(t testing.TB) *slog.Logger {
	level := slog.LevelWarn
	if os.Getenv("CORRAL_TEST_LOG") == "debug" {
		level = slog.LevelDebug
	} else if os.Getenv("CORRAL_TEST_LOG") == "info" {
		level = slog.LevelInfo
	}
	w := &tWriter{t: t}
	t.Cleanup(func() {
		w.mu.Lock()
		w.done = true
		w.mu.Unlock()
	})
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: level}))
}

// Writer returns a writer whose lines go to t.Log (until the test's
// cleanup runs).
func Writer(t testing.TB) io.Writer {
	w := &tWriter{t: t}
	t.Cleanup(func() {
		w.mu.Lock()
		w.done = true
		w.mu.Unlock()
	})
	return w
}

// tWriter sends log lines to t.Log until the test's cleanup runs; goroutines
// that log after that are silenced instead of panicking the test binary.
type tWriter struct {
	mu   sync.Mutex
	t    testing.TB
	done bool
}

func (w *tWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.done {
		w.t.Log(strings.TrimSuffix(string(p), "\n"))
	}
	return len(p), nil
}

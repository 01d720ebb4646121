package soak

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// Readings of a process from outside it: /proc for memory, descriptors
// and connections, corrald's Prometheus endpoint for goroutines (the Go
// runtime's own count; nothing else outside the process knows it).

// findProcs returns, per network namespace inode in want, the PIDs of
// processes whose command is comm. Lab hosts are network namespaces, so
// this finds each host's corrald however it was (re)started.
func findProcs(comm string, want map[uint64]bool) map[uint64][]int {
	out := map[uint64][]int{}
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return out
	}
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		ino := inode(fmt.Sprintf("/proc/%d/ns/net", pid))
		if !want[ino] {
			continue
		}
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/comm", pid))
		if err != nil || strings.TrimSpace(string(b)) != comm || zombie(pid) {
			continue
		}
		out[ino] = append(out[ino], pid)
	}
	return out
}

func inode(path string) uint64 {
	fi, err := os.Stat(path)
	if err != nil {
		return 0
	}
	return fi.Sys().(*syscall.Stat_t).Ino
}

func zombie(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return true
	}
	i := bytes.LastIndexByte(b, ')')
	return i < 0 || len(b) < i+3 || b[i+2] == 'Z'
}

// rssKiB is VmRSS of pid.
func rssKiB(pid int) (int64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	return parseRSS(b)
}

func parseRSS(status []byte) (int64, error) {
	sc := bufio.NewScanner(bytes.NewReader(status))
	for sc.Scan() {
		if rest, ok := strings.CutPrefix(sc.Text(), "VmRSS:"); ok {
			f := strings.Fields(rest)
			if len(f) == 2 && f[1] == "kB" {
				return strconv.ParseInt(f[0], 10, 64)
			}
		}
	}
	return 0, fmt.Errorf("no VmRSS in status")
}

// fds counts pid's open descriptors and returns the inodes of its
// sockets.
func fds(pid int) (int, map[uint64]bool, error) {
	dir := fmt.Sprintf("/proc/%d/fd", pid)
	ents, err := os.ReadDir(dir)
	if err != nil {
		return 0, nil, err
	}
	socks := map[uint64]bool{}
	for _, e := range ents {
		l, err := os.Readlink(filepath.Join(dir, e.Name()))
		if err != nil {
			continue
		}
		if s, ok := strings.CutPrefix(l, "socket:["); ok {
			if ino, err := strconv.ParseUint(strings.TrimSuffix(s, "]"), 10, 64); err == nil {
				socks[ino] = true
			}
		}
	}
	return len(ents), socks, nil
}

// established counts the TCP connections in pid's network namespace that
// are established and belong to one of socks, in all and by service
// (countEstablished).
func established(pid int, socks map[uint64]bool) (int, map[string]int, error) {
	n, by := 0, map[string]int{}
	for _, f := range []string{"tcp", "tcp6"} {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/net/%s", pid, f))
		if err != nil {
			return 0, nil, err
		}
		n += countEstablished(b, socks, by)
	}
	return n, by, nil
}

// countEstablished reads a /proc/net/tcp table: field 1 is the local
// address, 2 the remote one (hex IP:port), 3 the state (01 is
// ESTABLISHED), 9 the socket's inode. It adds each connection to by under
// its service and side: "raft-in" when the local port is raft's (a peer
// dialled in), "raft-out" when the remote one is, "other" for the rest.
func countEstablished(table []byte, socks map[uint64]bool, by map[string]int) int {
	n := 0
	sc := bufio.NewScanner(bytes.NewReader(table))
	sc.Scan() // header
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) < 10 || f[3] != "01" {
			continue
		}
		if ino, err := strconv.ParseUint(f[9], 10, 64); err != nil || !socks[ino] {
			continue
		}
		n++
		key := "other"
		if s, ok := services[hexPort(f[1])]; ok {
			key = s + "-in"
		} else if s, ok := services[hexPort(f[2])]; ok {
			key = s + "-out"
		}
		by[key]++
	}
	return n
}

// hexPort is the port of a /proc/net/tcp address (0 if unreadable).
func hexPort(addr string) int {
	i := strings.LastIndexByte(addr, ':')
	p, err := strconv.ParseUint(addr[i+1:], 16, 16)
	if i < 0 || err != nil {
		return 0
	}
	return int(p)
}

// scrape reads a Prometheus text endpoint. The client keeps no
// connection, so the scrape leaves no descriptor open in corrald between
// samples.
func scrape(ctx context.Context, url string) ([]byte, error) {
	ctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, err
	}
	hc := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}
	resp, err := hc.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("%s: %s", url, resp.Status)
	}
	return io.ReadAll(io.LimitReader(resp.Body, 16<<20))
}

// metricValues returns the values of the unlabelled series and of the
// labelled ones by their whole name (`name{le="0.25"}`) in a text
// exposition.
func metricValues(text []byte) map[string]float64 {
	out := map[string]float64{}
	sc := bufio.NewScanner(bytes.NewReader(text))
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || line[0] == '#' {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		if i <= 0 {
			continue
		}
		if v, err := strconv.ParseFloat(line[i+1:], 64); err == nil {
			out[line[:i]] = v
		}
	}
	return out
}

func parseGoroutines(text []byte) (int, error) {
	v, ok := metricValues(text)["go_goroutines"]
	if !ok {
		return 0, fmt.Errorf("no go_goroutines in the metrics")
	}
	return int(v), nil
}

// parseRole is the Raft state corral_raft_state marks with 1, lowercase
// ("" when none is).
func parseRole(text []byte) string {
	for k, v := range metricValues(text) {
		if st, ok := strings.CutPrefix(k, `corral_raft_state{state="`); ok && v == 1 {
			return strings.ToLower(strings.TrimSuffix(st, `"}`))
		}
	}
	return ""
}

// parseRaftTimers reads corrald's Raft timer metrics (raftstore.Timers).
func parseRaftTimers(text []byte) (*RaftTimers, bool) {
	m := metricValues(text)
	const h = "corral_raft_leader_contact_age_seconds"
	count, ok := m[h+"_count"]
	if !ok {
		return nil, false
	}
	le := func(b string) uint64 { return uint64(m[h+`_bucket{le="`+b+`"}`]) }
	return &RaftTimers{
		Contacts:          uint64(count),
		Over100ms:         uint64(count) - min(le("0.1"), uint64(count)),
		Over450ms:         uint64(count) - min(le("0.45"), uint64(count)),
		MaxMs:             m["corral_raft_leader_contact_age_max_seconds"] * 1000,
		HeartbeatTimeouts: uint64(m["corral_raft_heartbeat_timeouts_total"]),
		LeaseTimeouts:     uint64(m["corral_raft_lease_timeouts_total"]),
	}, true
}

// read samples pid: RSS and descriptors from /proc (an error when the
// process is gone), connections when /proc tells them (else -1), and
// goroutines from metricsURL (else -1). /proc is read before the scrape,
// so the scrape's own connection is not counted.
func read(ctx context.Context, pid int, metricsURL string) (Sample, error) {
	s := Sample{At: time.Now(), PID: pid, Goroutines: -1, Conns: -1}
	var err error
	if s.RSSKiB, err = rssKiB(pid); err != nil {
		return s, err
	}
	var socks map[uint64]bool
	if s.FDs, socks, err = fds(pid); err != nil {
		return s, err
	}
	if n, by, err := established(pid, socks); err == nil {
		s.Conns, s.ConnsBy = n, by
	}
	if text, err := scrape(ctx, metricsURL); err == nil {
		if n, err := parseGoroutines(text); err == nil {
			s.Goroutines = n
		}
		if rt, ok := parseRaftTimers(text); ok {
			s.Raft = rt
		}
		s.Role = parseRole(text)
	}
	return s, nil
}

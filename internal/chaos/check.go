package chaos

import (
	"bufio"
	"bytes"
	"fmt"
	"regexp"
	"slices"
	"strconv"
)

// Piece is a run of consecutive disk counter values one guest printed on
// one host's console log: the test guest reads its counter from its disk at
// boot (CORRAL-BOOT counter=N), then every second writes N+1 to the disk,
// syncs, and prints it (CORRAL-TICK counter=N+1). A live migration carries
// the count on, on another host's log.
type Piece struct {
	Host   string `json:"host"`
	Lo, Hi int64
}

var (
	bootLine = regexp.MustCompile(`CORRAL-BOOT host=\S+ counter=(\d+)`)
	tickLine = regexp.MustCompile(`CORRAL-TICK counter=(\d+) uptime=`)
)

// Pieces parses a console log into its pieces. A boot ends a piece; so does
// a tick that does not follow the one before (the guest left and came back
// by migration, or another copy wrote here). A last line without its
// newline is still being written and is left out.
func Pieces(host string, log []byte) []Piece {
	if i := bytes.LastIndexByte(log, '\n'); i >= 0 {
		log = log[:i+1]
	} else {
		return nil
	}
	var out []Piece
	var cur *Piece
	sc := bufio.NewScanner(bytes.NewReader(log))
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Bytes()
		if bootLine.Match(line) {
			cur = nil
			continue
		}
		m := tickLine.FindSubmatch(line)
		if m == nil {
			continue
		}
		n, err := strconv.ParseInt(string(m[1]), 10, 64)
		if err != nil {
			continue
		}
		if cur != nil && n == cur.Hi+1 {
			cur.Hi = n
			continue
		}
		out = append(out, Piece{Host: host, Lo: n, Hi: n})
		cur = &out[len(out)-1]
	}
	return out
}

// CounterOverlaps returns, for one guest, the pairs of pieces that share a
// counter value: the guest's disk went backwards (a copy started from an
// older disk) or two copies counted on one disk at once. Either breaks the
// promise whatever the timing was.
func CounterOverlaps(vm string, ps []Piece) []string {
	ps = slices.Clone(ps)
	slices.SortFunc(ps, func(a, b Piece) int {
		if a.Lo != b.Lo {
			return int(a.Lo - b.Lo)
		}
		return int(a.Hi - b.Hi)
	})
	var out []string
	var top Piece // the piece reaching highest so far
	for i, p := range ps {
		if i > 0 && p.Lo <= top.Hi {
			out = append(out, fmt.Sprintf("vm %s: counter %d-%d on %s and %d-%d on %s", vm, top.Lo, top.Hi, top.Host, p.Lo, p.Hi, p.Host))
		}
		if i == 0 || p.Hi > top.Hi {
			top = p
		}
	}
	return out
}

// MaxCounter is the highest value in ps (0 if none).
func MaxCounter(ps []Piece) int64 {
	var m int64
	for _, p := range ps {
		m = max(m, p.Hi)
	}
	return m
}

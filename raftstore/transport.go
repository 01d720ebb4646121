package raftstore

import (
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/hashicorp/raft"
)

// streamLayer is raft's stream layer over TCP, wrapped in mutual TLS when
// TLS configs are given: the listener refuses a peer without a certificate
// of the cluster's CA, the dialer presents this host's.
type streamLayer struct {
	net.Listener
	advertise net.Addr
	tls       *tls.Config // client side
	dialTLS   func(addr string) *tls.Config
}

func newStreamLayer(bind string, advertise string, serverTLS, clientTLS *tls.Config, dialTLS func(string) *tls.Config) (*streamLayer, error) {
	adv, err := net.ResolveTCPAddr("tcp", advertise)
	if err != nil {
		return nil, fmt.Errorf("raft advertise address %q: %w", advertise, err)
	}
	if adv.IP == nil || adv.IP.IsUnspecified() {
		return nil, fmt.Errorf("raft advertise address %q is not a routable IP", advertise)
	}
	ln, err := net.Listen("tcp", bind)
	if err != nil {
		return nil, fmt.Errorf("raft listen %s: %w", bind, err)
	}
	if serverTLS != nil {
		ln = tls.NewListener(ln, serverTLS)
	}
	return &streamLayer{Listener: ln, advertise: adv, tls: clientTLS, dialTLS: dialTLS}, nil
}

// Addr returns the advertised address, which raft hands to peers.
func (s *streamLayer) Addr() net.Addr { return s.advertise }

// Dial implements raft.StreamLayer.
func (s *streamLayer) Dial(addr raft.ServerAddress, timeout time.Duration) (net.Conn, error) {
	d := &net.Dialer{Timeout: timeout}
	if s.tls != nil {
		conf := s.tls
		if s.dialTLS != nil {
			if c := s.dialTLS(string(addr)); c != nil {
				conf = c
			}
		}
		return tls.DialWithDialer(d, "tcp", string(addr), conf)
	}
	return d.Dial("tcp", string(addr))
}

// quietTransport is raft's NetworkTransport minus the heartbeats that say
// nothing new. hashicorp/raft's leader runs a heartbeat loop for each
// follower that wakes every HeartbeatTimeout/10 to HeartbeatTimeout/5
// (50-100 ms at our timing) and sends an empty AppendEntries, on top of
// replication; and corrald always replicates: every host renews its lease
// through a Renewals entry every heartbeat_interval. A follower takes any
// AppendEntries as contact from its leader, and the leader stamps its
// contact with a follower on every replication answer as on a heartbeat's.
// So while a follower answers real AppendEntries, a heartbeat to it is
// held here: the call returns only once the follower has given no answer
// of the heartbeat's term for `window` (Timing.QuietWindow: above the
// renewal interval, below the lease by a heartbeat's round trip under
// load), and is then sent. The heartbeat loop, blocked in the call, sets no timer meanwhile: an
// idle leader wakes for replication and nothing else (its heartbeat timers
// were two in three of its wake-ups on the lab). The follower still hears
// from the leader at least every `window` plus a round trip, inside
// HeartbeatTimeout; when replication to it pauses or fails, its answers age
// past the window and the heartbeats go out again.
//
// Safety does not depend on heartbeats: they carry no entries and commit
// nothing. A held heartbeat is sent as raft made it, or not at all (the
// transport closes): raft's heartbeat loop learns nothing it would not
// have learnt from a heartbeat sent late.
type quietTransport struct {
	*raft.NetworkTransport
	window time.Duration

	mu      sync.Mutex
	answers map[raft.ServerID]answer // the last real AppendEntries answer of each follower
	closed  chan struct{}
	once    sync.Once
	held    atomic.Uint64 // heartbeats held while replication answered
	sent    atomic.Uint64 // heartbeats sent
}

type answer struct {
	at    time.Time
	term  uint64
	fresh chan struct{} // closed by the next answer
}

func newQuietTransport(n *raft.NetworkTransport, window time.Duration) *quietTransport {
	return &quietTransport{NetworkTransport: n, window: window, answers: map[raft.ServerID]answer{}, closed: make(chan struct{})}
}

// isHeartbeat is NetworkTransport's own test for a heartbeat (the RPC it
// hands to the follower's fast path).
func isHeartbeat(a *raft.AppendEntriesRequest) bool {
	return a.Term != 0 && a.PrevLogEntry == 0 && a.PrevLogTerm == 0 &&
		len(a.Entries) == 0 && a.LeaderCommitIndex == 0
}

func (t *quietTransport) heard(id raft.ServerID, term uint64) {
	t.mu.Lock()
	if a, ok := t.answers[id]; ok {
		close(a.fresh)
	}
	t.answers[id] = answer{at: time.Now(), term: term, fresh: make(chan struct{})}
	t.mu.Unlock()
}

// hold returns once follower id has not answered a real AppendEntries of
// term for the window (at once if it has not lately), or false if the
// transport closed first.
func (t *quietTransport) hold(id raft.ServerID, term uint64) bool {
	var timer *time.Timer
	defer func() {
		if timer != nil {
			timer.Stop()
		}
	}()
	for counted := false; ; counted = true {
		t.mu.Lock()
		a, ok := t.answers[id]
		t.mu.Unlock()
		left := t.window - time.Since(a.at)
		if !ok || a.term != term || left <= 0 {
			return true
		}
		if !counted {
			t.held.Add(1)
		}
		if timer == nil {
			timer = time.NewTimer(left)
		} else {
			timer.Reset(left)
		}
		select {
		case <-a.fresh:
		case <-timer.C:
		case <-t.closed:
			return false
		}
	}
}

// stopHolding makes held heartbeats give up: raft's Shutdown waits for
// its heartbeat loops before it closes the transport.
func (t *quietTransport) stopHolding() { t.once.Do(func() { close(t.closed) }) }

// Close implements raft.WithClose.
func (t *quietTransport) Close() error {
	t.stopHolding()
	return t.NetworkTransport.Close()
}

// AppendEntries implements raft.Transport.
func (t *quietTransport) AppendEntries(id raft.ServerID, target raft.ServerAddress, args *raft.AppendEntriesRequest, resp *raft.AppendEntriesResponse) error {
	hb := isHeartbeat(args)
	if hb {
		if !t.hold(id, args.Term) {
			return raft.ErrTransportShutdown
		}
		t.sent.Add(1)
	}
	err := retryStale(func() error { return t.NetworkTransport.AppendEntries(id, target, args, resp) })
	if err == nil && !hb {
		t.heard(id, resp.Term)
	}
	return err
}

// A connection NetworkTransport keeps in its pool (up to poolSize a peer)
// dies unseen when the peer restarts or drops it; the next RPC on it fails
// at once, with EOF or a reset, and raft does not try again: a vote asked
// that way counts as refused, and the election waits out an election
// timeout (on the lab, where each kill restarts a host, the slow elections
// after leader kills were these). The RPCs below are
// sent again while they fail that way, once per pooled connection and once
// more on a new one; a failed connection is not returned to the pool.
// Votes, pre-votes and AppendEntries are all safe to repeat: a voter
// grants the same candidate again in the same term, and a follower takes
// entries it already has as a no-op.
const poolSize = 3

// staleConn reports whether err is a dead connection's (not a dial's, a
// timeout's or the peer's answer).
func staleConn(err error) bool {
	return errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) ||
		errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE)
}

func retryStale(rpc func() error) error {
	err := rpc()
	for i := 0; i < poolSize && err != nil && staleConn(err); i++ {
		err = rpc()
	}
	return err
}

// RequestVote implements raft.Transport, past dead pooled connections.
func (t *quietTransport) RequestVote(id raft.ServerID, target raft.ServerAddress, args *raft.RequestVoteRequest, resp *raft.RequestVoteResponse) error {
	return retryStale(func() error { return t.NetworkTransport.RequestVote(id, target, args, resp) })
}

// RequestPreVote implements raft.WithPreVote, past dead pooled connections.
func (t *quietTransport) RequestPreVote(id raft.ServerID, target raft.ServerAddress, args *raft.RequestPreVoteRequest, resp *raft.RequestPreVoteResponse) error {
	return retryStale(func() error { return t.NetworkTransport.RequestPreVote(id, target, args, resp) })
}

// AppendEntriesPipeline implements raft.Transport: the answers that come
// back through the pipeline count as heard too.
func (t *quietTransport) AppendEntriesPipeline(id raft.ServerID, target raft.ServerAddress) (raft.AppendPipeline, error) {
	p, err := t.NetworkTransport.AppendEntriesPipeline(id, target)
	if err != nil {
		return nil, err
	}
	q := &quietPipeline{AppendPipeline: p, t: t, id: id, out: make(chan raft.AppendFuture), stop: make(chan struct{})}
	go q.relay()
	return q, nil
}

type quietPipeline struct {
	raft.AppendPipeline
	t    *quietTransport
	id   raft.ServerID
	out  chan raft.AppendFuture
	stop chan struct{}
	once sync.Once
}

// relay passes the pipeline's finished futures on, noting each answer.
func (q *quietPipeline) relay() {
	in := q.AppendPipeline.Consumer()
	for {
		select {
		case f := <-in:
			if f.Error() == nil {
				q.t.heard(q.id, f.Response().Term)
			}
			select {
			case q.out <- f:
			case <-q.stop:
				return
			}
		case <-q.stop:
			return
		}
	}
}

func (q *quietPipeline) Consumer() <-chan raft.AppendFuture { return q.out }

func (q *quietPipeline) Close() error {
	q.once.Do(func() { close(q.stop) })
	return q.AppendPipeline.Close()
}

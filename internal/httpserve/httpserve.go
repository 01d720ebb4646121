// Package httpserve runs an http.Server on a listener until a context ends,
// which is then a clean stop. The admin API, the cluster RPC and the
// metrics listener share it, and with it the limits on what one client can
// make corrald do: header size and timeouts, requests in flight, and a
// request rate per identity.
package httpserve

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"net"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/corralhq/corral/api"
)

// Limits bound one listener. Zero values take the defaults noted.
type Limits struct {
	// MaxHeaderBytes caps a request's header (default 64 KiB; larger: 431).
	MaxHeaderBytes int
	// ReadHeaderTimeout (default 10 s) and IdleTimeout (default 2 min)
	// close connections that send nothing.
	ReadHeaderTimeout, IdleTimeout time.Duration
	// MaxInFlight caps the requests handled at once; beyond it a request is
	// answered 503 at once (0: no cap).
	MaxInFlight int
	// Rate and Burst: each identity may send Rate requests a second, Burst
	// at once; beyond, 429 with Retry-After (Rate 0: no limit).
	Rate  float64
	Burst int
	// Identity names who a request counts against (default: the remote
	// address without its port).
	Identity func(*http.Request) string
	// ConnContext, when set, derives each connection's context (for
	// example to carry the peer's credentials to Identity).
	ConnContext func(ctx context.Context, c net.Conn) context.Context
}

// Serve answers on ln with h until ctx ends, then shuts down gracefully
// (2 s for requests in flight). Server errors go to log at debug level.
// A cancelled ctx returns nil.
func Serve(ctx context.Context, ln net.Listener, h http.Handler, log *slog.Logger, lim Limits) error {
	stopping := make(chan struct{})
	srv := &http.Server{
		BaseContext: func(net.Listener) context.Context {
			return context.WithValue(context.Background(), stoppingKey{}, (<-chan struct{})(stopping))
		},
		Handler:           Limit(h, lim),
		ReadHeaderTimeout: orDefault(lim.ReadHeaderTimeout, 10*time.Second),
		IdleTimeout:       orDefault(lim.IdleTimeout, 2*time.Minute),
		MaxHeaderBytes:    orDefault(lim.MaxHeaderBytes, 64<<10),
		ConnContext:       lim.ConnContext,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelDebug),
	}
	done := make(chan struct{})
	go func() {
		select {
		case <-ctx.Done():
			close(stopping)
			sctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			defer cancel()
			srv.Shutdown(sctx)
		case <-done:
		}
	}()
	err := srv.Serve(ln)
	close(done)
	if errors.Is(err, http.ErrServerClosed) {
		return nil
	}
	return err
}

type stoppingKey struct{}

// Stopping returns a channel closed when the server of a request's context
// begins to shut down: requests that never end by themselves (streams,
// long polls) end on it, so the shutdown's grace is not spent waiting for
// them. Nil (never closed) outside Serve.
func Stopping(ctx context.Context) <-chan struct{} {
	ch, _ := ctx.Value(stoppingKey{}).(<-chan struct{})
	return ch
}

func orDefault[T comparable](v, def T) T {
	var zero T
	if v == zero {
		return def
	}
	return v
}

// Limit wraps h with lim's in-flight cap and rate limit.
func Limit(h http.Handler, lim Limits) http.Handler {
	if lim.MaxInFlight <= 0 && lim.Rate <= 0 {
		return h
	}
	var slots chan struct{}
	if lim.MaxInFlight > 0 {
		slots = make(chan struct{}, lim.MaxInFlight)
	}
	identity := lim.Identity
	if identity == nil {
		identity = remoteHost
	}
	var buckets *bucketSet
	if lim.Rate > 0 {
		buckets = newBucketSet(lim.Rate, max(lim.Burst, 1))
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if buckets != nil {
			who := identity(r)
			if wait := buckets.take(who, time.Now()); wait > 0 {
				secs := int(math.Ceil(wait.Seconds()))
				w.Header().Set("Retry-After", strconv.Itoa(secs))
				refuse(w, http.StatusTooManyRequests, api.CodeRateLimited,
					fmt.Sprintf("rate limit of %g requests/s (burst %d) for %s reached; retry in %s",
						lim.Rate, max(lim.Burst, 1), who, wait.Round(time.Millisecond)))
				return
			}
		}
		if slots != nil {
			select {
			case slots <- struct{}{}:
				defer func() { <-slots }()
			default:
				refuse(w, http.StatusServiceUnavailable, api.CodeUnavailable,
					fmt.Sprintf("busy: %d requests in flight; retry", lim.MaxInFlight))
				return
			}
		}
		h.ServeHTTP(w, r)
	})
}

func refuse(w http.ResponseWriter, status int, code api.ErrorCode, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(api.Error{Code: code, Message: msg})
}

func remoteHost(r *http.Request) string {
	if h, _, err := net.SplitHostPort(r.RemoteAddr); err == nil {
		return h
	}
	return r.RemoteAddr
}

// maxIdentities bounds the rate limiter's memory: identities idle long
// enough to have a full bucket again are forgotten first; past the bound a
// new identity shares one more bucket with the other newcomers.
const maxIdentities = 4096

// bucketSet holds a token bucket per identity.
type bucketSet struct {
	mu      sync.Mutex
	rate    float64 // tokens a second
	burst   float64
	buckets map[string]*bucket
}

type bucket struct {
	tokens float64
	at     time.Time
}

func newBucketSet(rate float64, burst int) *bucketSet {
	return &bucketSet{rate: rate, burst: float64(burst), buckets: map[string]*bucket{}}
}

// take spends a token of who's bucket at now, or says how long until one
// is there.
func (s *bucketSet) take(who string, now time.Time) time.Duration {
	s.mu.Lock()
	defer s.mu.Unlock()
	b, ok := s.buckets[who]
	if !ok {
		if len(s.buckets) >= maxIdentities {
			s.prune(now)
		}
		if len(s.buckets) >= maxIdentities {
			who = "(too many clients)"
			b = s.buckets[who]
		}
		if b == nil {
			b = &bucket{tokens: s.burst, at: now}
			s.buckets[who] = b
		}
	}
	if now.After(b.at) { // callers read the clock before the lock
		b.tokens = min(s.burst, b.tokens+now.Sub(b.at).Seconds()*s.rate)
		b.at = now
	}
	if b.tokens >= 1 {
		b.tokens--
		return 0
	}
	return time.Duration((1 - b.tokens) / s.rate * float64(time.Second))
}

// prune forgets the identities whose buckets have refilled.
func (s *bucketSet) prune(now time.Time) {
	for who, b := range s.buckets {
		if b.tokens+now.Sub(b.at).Seconds()*s.rate >= s.burst {
			delete(s.buckets, who)
		}
	}
}

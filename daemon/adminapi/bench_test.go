package adminapi

import (
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/corralhq/corral/api"
	"github.com/corralhq/corral/api/client"
	"github.com/corralhq/corral/daemon/identity"
	"github.com/corralhq/corral/internal/testutil"
	"github.com/corralhq/corral/model"
)

// vmsBackend answers GET /v1/vms with a fixed list, as a daemon's view of
// its state would.
type vmsBackend struct {
	fakeBackend
	vms []api.VM
}

func (b *vmsBackend) VMs(context.Context) ([]api.VM, error) { return b.vms, nil }

// benchVMs is the list both benchmarks serve: 1,000 VMs, about 400 KB of
// JSON.
func benchVMs() []api.VM {
	vms := make([]api.VM, 1000)
	for i := range vms {
		vms[i] = api.VM{Name: fmt.Sprintf("vm-%04d", i), ID: fmt.Sprintf("%032x", i), Host: fmt.Sprintf("h%d", i%50),
			Desired: "running", State: "running", Generation: 3, Since: time.Now(), CreatedAt: time.Now(),
			Spec: api.VMSpec{VCPUs: 2, MemoryMiB: 2048}}
	}
	return vms
}

// BenchmarkSocketListVMs: GET /v1/vms of 1,000 VMs through the admin
// socket, 100 clients at once (no rate limit), the API layer alone (the
// backend hands over a ready list). Reports requests/s and the p99.
//
//	go test -run '^$' -bench ListVMs -benchtime 5s ./daemon/adminapi
func BenchmarkSocketListVMs(b *testing.B) {
	vms := benchVMs()
	c := serveWith(b, &vmsBackend{vms: vms}, func(s *Server) { s.RateLimit = 0 })
	benchList(b, len(vms), func() *client.Client { return client.New(c.Socket) })
}

// BenchmarkHTTPSListVMs is BenchmarkSocketListVMs over the HTTPS API on
// loopback: TLS (each client its own connections, handshakes included),
// a bearer token checked on every request.
func BenchmarkHTTPSListVMs(b *testing.B) {
	vms := benchVMs()
	secret := model.APITokenPrefix + strings.Repeat("5a", 32)
	tok := model.APIToken{Name: "bench", Role: model.RoleViewer, Hash: model.APITokenHash(secret)}
	s := New(&vmsBackend{vms: vms}, testutil.Logger(b))
	s.RateLimit = 0
	s.Tokens = func(sec string) (model.APIToken, bool) { return model.FindAPIToken([]model.APIToken{tok}, sec) }
	cert, err := identity.APICertificate(b.TempDir(), "bench", []string{"127.0.0.1"}, time.Now())
	if err != nil {
		b.Fatal(err)
	}
	tcp, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	ln := tls.NewListener(tcp, &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12, NextProtos: []string{"h2", "http/1.1"}})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.ServeAPI(ctx, ln) }()
	b.Cleanup(func() { cancel(); <-done })
	url, fp := "https://"+tcp.Addr().String(), identity.Fingerprint(cert.Leaf)
	benchList(b, len(vms), func() *client.Client { return client.NewRemote(url, secret, fp) })
}

// benchList runs b.N lists from 100 clients at once, each made by newClient.
func benchList(b *testing.B, want int, newClient func() *client.Client) {
	const clients = 100
	var mu sync.Mutex
	var lat []time.Duration
	b.ResetTimer()
	start := time.Now()
	var wg sync.WaitGroup
	per := max(b.N/clients, 1)
	for range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c := newClient()
			mine := make([]time.Duration, 0, per)
			for range per {
				t0 := time.Now()
				got, err := c.VMs(context.Background())
				if err != nil || len(got) != want {
					b.Errorf("list: %d VMs, %v", len(got), err)
					return
				}
				mine = append(mine, time.Since(t0))
			}
			mu.Lock()
			lat = append(lat, mine...)
			mu.Unlock()
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	b.StopTimer()
	slices.Sort(lat)
	if len(lat) > 0 {
		b.ReportMetric(float64(len(lat))/elapsed.Seconds(), "req/s")
		b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds())/1000, "p99-ms")
	}
}

package adminapi

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/corralhq/corral/api"
)

// vmsBackend answers GET /v1/vms with a fixed list, as a daemon's view of
// its state would.
type vmsBackend struct {
	fakeBackend
	vms []api.VM
}

func (b *vmsBackend) VMs(context.Context) ([]api.VM, error) { return b.vms, nil }

// BenchmarkSocketListVMs: GET /v1/vms of 1,000 VMs through the admin
// socket, 100 clients at once (no rate limit), the API layer alone (the
// backend hands over a ready list). Reports requests/s and the p99.
//
//	go test -run '^$' -bench SocketListVMs -benchtime 5s ./daemon/adminapi
func BenchmarkSocketListVMs(b *testing.B) {
	vms := make([]api.VM, 1000)
	for i := range vms {
		vms[i] = api.VM{Name: fmt.Sprintf("vm-%04d", i), ID: fmt.Sprintf("%032x", i), Host: fmt.Sprintf("h%d", i%50),
			Desired: "running", State: "running", Generation: 3, Since: time.Now(), CreatedAt: time.Now(),
			Spec: api.VMSpec{VCPUs: 2, MemoryMiB: 2048}}
	}
	c := serveWith(b, &vmsBackend{vms: vms}, func(s *Server) { s.RateLimit = 0 })
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
			mine := make([]time.Duration, 0, per)
			for range per {
				t0 := time.Now()
				got, err := c.VMs(context.Background())
				if err != nil || len(got) != len(vms) {
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

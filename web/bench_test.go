package web

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/corralhq/corral/api"
)

// fakeCluster answers the /v1 reads the portal makes with a cluster of
// hosts hosts and vms VMs, in the API's own types.
func fakeCluster(hosts, vms int) http.Handler {
	var hs []api.Host
	for i := range hosts {
		hs = append(hs, api.Host{Name: fmt.Sprintf("h%d", i+1), Gossip: "alive", RaftRole: "voter", Mode: "active", Lease: "ok", Health: "ok",
			Capacity: api.Capacity{VCPUs: 64, MemoryMiB: 262144}, Allocatable: api.Capacity{VCPUs: 64, MemoryMiB: 262144},
			Allocated: api.Capacity{VCPUs: 40, MemoryMiB: 163840}, VMs: vms / hosts, CPUPercent: 37})
	}
	var vs []api.VM
	states := []string{"running", "running", "running", "stopped", "starting"}
	for i := range vms {
		vs = append(vs, api.VM{Name: fmt.Sprintf("vm-%04d", i), Host: hs[i%hosts].Name, Desired: "running", State: states[i%len(states)],
			Project: "default", Since: time.Now().Add(-time.Hour), Spec: api.VMSpec{VCPUs: 2, MemoryMiB: 4096, HA: api.HAPolicy{Enabled: true}}})
	}
	answers := map[string]any{
		"/v1/whoami": api.Whoami{Actor: "token bench", Role: "operator"},
		"/v1/status": api.Status{Host: "h1", Leader: "h1", HAArmed: true},
		"/v1/hosts":  hs,
		"/v1/vms":    vs,
	}
	mux := http.NewServeMux()
	for path, v := range answers {
		body, _ := json.Marshal(v)
		mux.HandleFunc("GET "+path, func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "application/json")
			w.Write(body)
		})
	}
	// A VM's counters for the detail page's CPU chart: each VM keeps a
	// quarter of its vCPUs busy.
	start := time.Now()
	mux.HandleFunc("GET /v1/vms/{name}/stats", func(w http.ResponseWriter, r *http.Request) {
		for _, v := range vs {
			if v.Name == r.PathValue("name") {
				w.Header().Set("Content-Type", "application/json")
				json.NewEncoder(w).Encode(api.VMStats{Host: v.Host, State: v.State, VCPUs: v.Spec.VCPUs,
					CPUTimeNs: uint64(time.Since(start).Nanoseconds()) * uint64(v.Spec.VCPUs) / 4})
				return
			}
		}
		http.NotFound(w, r)
	})
	mux.HandleFunc("GET /v1/events", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		w.WriteHeader(200)
		// As corrald does: a first comment, without which Firefox's fetch
		// does not resolve (it waits for a byte of the body).
		fmt.Fprint(w, ": corral events\n\n")
		w.(http.Flusher).Flush()
		<-r.Context().Done()
	})
	portal := Handler()
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if Serves(r) {
			portal.ServeHTTP(w, r)
			return
		}
		mux.ServeHTTP(w, r)
	})
}

// BenchmarkDashboard50Hosts1000VMs loads the portal in a headless Chromium
// against a fake cluster of 50 hosts and 1,000 VMs, logged in, and times
// each load until the dashboard shows every host and the VM count (ms per
// op is the time to interactive); then the VM list with its 1,000 rows.
func BenchmarkDashboard50Hosts1000VMs(b *testing.B) {
	bin, err := exec.LookPath("chromium")
	if err != nil {
		b.Fatal("no chromium (Debian package chromium; scripts/deps.sh test installs it)")
	}
	srv := httptest.NewServer(fakeCluster(50, 1000))
	defer srv.Close()
	alloc, cancel := chromedp.NewExecAllocator(context.Background(),
		append(chromedp.DefaultExecAllocatorOptions[:], chromedp.ExecPath(bin), chromedp.NoSandbox, chromedp.WindowSize(1366, 768))...)
	defer cancel()
	ctx, cancelTab := chromedp.NewContext(alloc)
	defer cancelTab()
	login := chromedp.Tasks{chromedp.Navigate(srv.URL), chromedp.Evaluate(`sessionStorage.setItem('corral.token', 'corral_`+strings.Repeat("0", 64)+`')`, nil)}
	if err := chromedp.Run(ctx, login); err != nil {
		b.Fatal(err)
	}
	load := func(hash, ready string) time.Duration {
		start := time.Now()
		if err := chromedp.Run(ctx, chromedp.Navigate(srv.URL+"/"+hash), chromedp.Reload(), chromedp.Poll(ready, nil, chromedp.WithPollingInterval(5*time.Millisecond), chromedp.WithPollingTimeout(30*time.Second))); err != nil {
			b.Fatal(err)
		}
		return time.Since(start)
	}
	dashboard := `document.querySelectorAll('main table tbody tr').length === 50 && document.body.innerText.includes('1000')`
	vmList := `document.querySelectorAll('main table tbody tr').length === 1000`
	var list time.Duration
	b.ResetTimer()
	for range b.N {
		load("#/", dashboard)
	}
	b.StopTimer()
	for range 3 {
		list += load("#/vms", vmList)
	}
	b.ReportMetric(float64(list.Milliseconds())/3, "vm-list-ms")
}

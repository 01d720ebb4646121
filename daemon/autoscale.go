package daemon

import (
	"context"
	"sync"
	"time"

	"github.com/corralhq/corral/daemon/controller"
	"github.com/corralhq/corral/model"
)

// cpuSample is a member's cumulative CPU time at a moment.
type cpuSample struct {
	at    time.Time
	cpuNs uint64
	vcpus int
	vmID  string
}

// runAutoscale samples autoscaled groups while this host leads and hands
// the means to the controller's Autoscaler, which decides the counts.
func (d *Daemon) runAutoscale(ctx context.Context) error {
	a := controller.NewAutoscaler()
	prev := map[string]cpuSample{} // by VM name
	// Each round asks every running member's host for its CPU time, in
	// parallel: one RPC per member.
	every := d.cfg.Tuning.AutoscaleInterval
	if every <= 0 {
		every = 15 * time.Second
	}
	tick := time.NewTicker(every)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
		}
		if !d.leader.Leading() {
			clear(prev)
			a = controller.NewAutoscaler() // a new term starts afresh
			continue
		}
		d.autoscaleOnce(ctx, a, prev)
	}
}

func (d *Daemon) autoscaleOnce(ctx context.Context, a *controller.Autoscaler, prev map[string]cpuSample) {
	groups := map[string]model.Group{}
	for _, g := range d.store.Cluster().Groups {
		if g.Autoscale != nil {
			groups[g.Name] = g
		}
	}
	keep := map[string]bool{}
	for name := range groups {
		keep[name] = true
	}
	a.Forget(keep)
	if len(groups) == 0 {
		clear(prev)
		return
	}
	var members []model.VM
	for _, v := range d.store.VMs() {
		if _, ok := groups[v.Group]; ok && !v.Deleting && v.Actual.State == model.StateRunning {
			members = append(members, v)
		}
	}
	// Sample every running member at once.
	now := time.Now()
	samples := make([]cpuSample, len(members))
	ok := make([]bool, len(members))
	var wg sync.WaitGroup
	sctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	for i, v := range members {
		wg.Add(1)
		go func() {
			defer wg.Done()
			st, err := onHost(sctx, d, mVMStats, v.Name, hostRead{VM: v.Name}, d.localStats)
			if err == nil && st.State == string(model.StateRunning) {
				samples[i], ok[i] = cpuSample{at: now, cpuNs: st.CPUTimeNs, vcpus: max(st.VCPUs, 1), vmID: v.ID}, true
			}
		}()
	}
	wg.Wait()
	cancel()
	// Each member's use since its previous sample (same VM id: a member
	// deleted and made again starts over).
	sum, n := map[string]float64{}, map[string]int{}
	seen := map[string]bool{}
	for i, v := range members {
		if !ok[i] {
			continue
		}
		seen[v.Name] = true
		s := samples[i]
		if p, had := prev[v.Name]; had && p.vmID == s.vmID && s.cpuNs >= p.cpuNs && s.at.After(p.at) {
			use := float64(s.cpuNs-p.cpuNs) / float64(s.at.Sub(p.at).Nanoseconds()) / float64(s.vcpus)
			sum[v.Group] += use
			n[v.Group]++
		}
		prev[v.Name] = s
	}
	for name := range prev {
		if !seen[name] {
			delete(prev, name)
		}
	}
	for _, g := range groups {
		mean := 0.0
		if n[g.Name] > 0 {
			mean = sum[g.Name] / float64(n[g.Name])
		}
		count, why := a.Decide(g, mean, n[g.Name] > 0, now)
		if count == g.Count {
			continue
		}
		if _, err := d.leader.ScaleGroup(ctx, controller.ScaleGroupRequest{Name: g.Name, Count: count, Why: why}); err != nil {
			d.log.Warn("autoscale", "group", g.Name, "count", count, "err", err)
		}
	}
}

package daemon

import (
	"context"
	"time"

	"github.com/corralhq/corral/daemon/hypervisor"
	"github.com/corralhq/corral/daemon/metrics"
	"github.com/corralhq/corral/raftstore"
)

// metricsSource gives the metrics collector a snapshot of this daemon.
type metricsSource struct{ d *Daemon }

func (m metricsSource) Snapshot(ctx context.Context) metrics.Snapshot {
	d := m.d
	r := d.hw.get()
	s := metrics.Snapshot{
		Host: metrics.HostStats{
			Name: d.cfg.Name, CPUs: r.Sample.CPUs, CPUUtilization: r.Sample.CPUPercent / 100, Load1: r.Sample.Load1,
			MemoryBytes: r.Sample.MemTotal, MemAvailBytes: r.Sample.MemAvailable, Disks: map[string]float64{},
			Health: string(r.Health.State), PowerWatts: r.Sample.PowerWatts, PowerSource: r.Sample.PowerSource,
		},
		Gossip:         map[string]int{},
		LeaseHeld:      d.lease.Valid(),
		LeaseRemaining: d.lease.Remaining(),
	}
	for _, du := range r.Sample.Disks {
		s.Host.Disks[du.Path] = du.UsedPercent / 100
	}
	for _, v := range d.store.VMs() {
		if v.Host == d.cfg.Name && !v.Deleting {
			s.Host.VMs++
			s.Host.AllocatedVCPUs += v.Spec.VCPUs
			s.Host.AllocatedMemoryBytes += uint64(v.Spec.MemoryMiB) << 20
		}
	}
	st := d.store.Status()
	tm := raftstore.Timers()
	s.Raft = metrics.RaftStats{State: st.State, Term: st.Term, CommitIndex: st.CommitIndex, AppliedIndex: st.AppliedIndex,
		ContactAges: metrics.Histogram{Bounds: raftstore.ContactBounds, Counts: tm.ContactCounts, Count: tm.ContactCount,
			Sum: tm.ContactSum, Max: tm.ContactMax},
		HeartbeatTimeouts: tm.HeartbeatTimeouts, LeaseTimeouts: tm.LeaseTimeouts}
	if servers, err := d.store.Servers(); err == nil {
		for _, sv := range servers {
			if sv.Voter {
				s.Raft.Voters++
			} else {
				s.Raft.Nonvoters++
			}
		}
	}
	for _, mem := range d.members.Members() {
		s.Gossip[string(mem.State)]++
	}
	s.HostModes = map[string]int{}
	for _, h := range d.store.Hosts() {
		s.HostModes[string(h.Mode)]++
	}
	if d.store.IsLeader() {
		if ages, err := d.leader.LeaseAges(ctx, struct{}{}); err == nil {
			s.LeaseAges = map[string]time.Duration{}
			for _, a := range ages {
				s.LeaseAges[a.Host] = a.Age
			}
		}
	}
	if doms, err := d.driver.List(ctx); err == nil {
		for _, dom := range doms {
			if dom.State != hypervisor.Running {
				continue
			}
			st, err := d.driver.Stats(ctx, dom.Name)
			if err != nil {
				continue
			}
			vs := metrics.VMStats{Name: dom.Name, CPUSeconds: float64(st.CPUTime) / 1e9, MemoryBytes: st.MemoryKiB << 10, VCPUs: st.VCPUs}
			for _, dk := range st.Disks {
				vs.Disks = append(vs.Disks, metrics.DiskStats{Device: dk.Name, ReadBytes: dk.ReadBytes, WriteBytes: dk.WriteBytes, ReadOps: dk.ReadReqs, WriteOps: dk.WriteReqs})
			}
			for _, n := range st.NICs {
				vs.NICs = append(vs.NICs, metrics.NICStats{Interface: n.Name, RxBytes: n.RxBytes, TxBytes: n.TxBytes, RxPackets: n.RxPackets,
					TxPackets: n.TxPackets, RxErrors: n.RxErrs, TxErrors: n.TxErrs, RxDrops: n.RxDrop, TxDrops: n.TxDrop})
			}
			s.VMs = append(s.VMs, vs)
		}
	}
	return s
}

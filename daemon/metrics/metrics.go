// Package metrics exports corral's Prometheus metrics: the host's capacity,
// use and health, its VMs' counters from libvirt, Raft and gossip health,
// lease ages, and recovery and migration counts and durations. Gauges are
// read at scrape time from a Source; counters and histograms are fed by the
// controller through Recorder. Names follow Prometheus conventions: corral_
// prefix, base units, _total counters, labels bounded by hosts, VMs and
// devices.
package metrics

import (
	"context"
	"log/slog"
	"net"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/corralhq/corral/internal/httpserve"
)

// Snapshot is what a scrape reads.
type Snapshot struct {
	Host   HostStats
	VMs    []VMStats
	Raft   RaftStats
	Gossip map[string]int // members by state
	// HostModes counts the hosts in cluster state by mode.
	HostModes map[string]int
	// LeaseHeld and LeaseRemaining: this host's own lease.
	LeaseHeld      bool
	LeaseRemaining time.Duration
	// LeaseAges: on the leader, time since each host's last renewal.
	LeaseAges map[string]time.Duration
}

// HostStats is this host.
type HostStats struct {
	Name                       string
	CPUs                       int
	CPUUtilization             float64 // 0..1
	Load1                      float64
	MemoryBytes, MemAvailBytes uint64
	Disks                      map[string]float64 // path -> used ratio
	Health                     string
	PowerWatts                 float64
	PowerSource                string // sensor, rapl, estimate
	AllocatedVCPUs             int
	AllocatedMemoryBytes       uint64
	VMs                        int
}

// VMStats are one running VM's counters.
type VMStats struct {
	Name        string
	CPUSeconds  float64
	MemoryBytes uint64
	VCPUs       int
	Disks       []DiskStats
	NICs        []NICStats
}

// DiskStats are a VM disk's counters.
type DiskStats struct {
	Device                string
	ReadBytes, WriteBytes int64
	ReadOps, WriteOps     int64
}

// NICStats are a VM NIC's counters.
type NICStats struct {
	Interface            string
	RxBytes, TxBytes     int64
	RxPackets, TxPackets int64
	RxErrors, TxErrors   int64
	RxDrops, TxDrops     int64
}

// RaftStats are this host's Raft node.
type RaftStats struct {
	State                           string
	Term, CommitIndex, AppliedIndex uint64
	Voters, Nonvoters               int
	// ContactAges: on a leader, its voters' contact ages at each lease
	// check (process-wide, since start); the timeouts likewise.
	ContactAges                      Histogram
	HeartbeatTimeouts, LeaseTimeouts uint64
}

// Histogram is a cumulative histogram: Counts[i] observations <= Bounds[i].
type Histogram struct {
	Bounds   []time.Duration
	Counts   []uint64
	Count    uint64
	Sum, Max time.Duration
}

// Source provides snapshots.
type Source interface {
	Snapshot(ctx context.Context) Snapshot
}

// Metrics holds the registry and the event-fed series.
type Metrics struct {
	reg        *prometheus.Registry
	recoveries prometheus.Counter
	recovery   prometheus.Histogram
	fenced     *prometheus.CounterVec
	migrations *prometheus.CounterVec
	migration  prometheus.Histogram
}

// New builds the registry with a collector over src.
func New(src Source) *Metrics {
	m := &Metrics{reg: prometheus.NewRegistry()}
	m.recoveries = prometheus.NewCounter(prometheus.CounterOpts{Name: "corral_recoveries_total",
		Help: "VMs restarted on another host after their host was declared dead (counted by the leader)."})
	m.recovery = prometheus.NewHistogram(prometheus.HistogramOpts{Name: "corral_recovery_duration_seconds",
		Help:    "From a host being declared dead to each of its recovered VMs running again.",
		Buckets: []float64{0.25, 0.5, 1, 2, 4, 8, 16, 32, 64}})
	m.fenced = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "corral_hosts_fenced_total",
		Help: "Hosts the leader declared dead, by how (lease or fence_command)."}, []string{"how"})
	m.migrations = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "corral_migrations_total",
		Help: "Live migrations finished, by result and reason (drain, failback, balance, operator)."}, []string{"result", "reason"})
	m.migration = prometheus.NewHistogram(prometheus.HistogramOpts{Name: "corral_migration_duration_seconds",
		Help: "Duration of live migrations.", Buckets: []float64{0.5, 1, 2, 4, 8, 16, 32, 64, 128}})
	m.reg.MustRegister(m.recoveries, m.recovery, m.fenced, m.migrations, m.migration, &collector{src: src},
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

// Recovered records a VM running again after its host's death.
func (m *Metrics) Recovered(d time.Duration) {
	m.recoveries.Inc()
	m.recovery.Observe(d.Seconds())
}

// Fenced records a host declared dead.
func (m *Metrics) Fenced(how string) { m.fenced.WithLabelValues(how).Inc() }

// Migrated records a live migration's end.
func (m *Metrics) Migrated(reason string, d time.Duration, ok bool) {
	result := "ok"
	if !ok {
		result = "failed"
	}
	m.migrations.WithLabelValues(result, reason).Inc()
	m.migration.Observe(d.Seconds())
}

// Handler serves /metrics.
func (m *Metrics) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{}))
	return mux
}

// Serve answers on ln until ctx ends.
func (m *Metrics) Serve(ctx context.Context, ln net.Listener, log *slog.Logger) error {
	return httpserve.Serve(ctx, ln, m.Handler(), log, httpserve.Limits{MaxInFlight: 16})
}

type collector struct{ src Source }

func desc(name, help string, labels ...string) *prometheus.Desc {
	return prometheus.NewDesc(name, help, labels, nil)
}

var (
	dHostCPUs     = desc("corral_host_cpus", "Logical CPUs of this host.")
	dHostCPUUtil  = desc("corral_host_cpu_utilization_ratio", "CPU use of this host between samples (0-1).")
	dHostLoad     = desc("corral_host_load1", "1-minute load average of this host.")
	dHostMem      = desc("corral_host_memory_bytes", "Memory of this host.")
	dHostMemAvail = desc("corral_host_memory_available_bytes", "Memory available on this host.")
	dHostDisk     = desc("corral_host_disk_used_ratio", "Use of the file systems holding data_dir and the storage pool (0-1).", "path")
	dHostHealth   = desc("corral_host_health", "Hardware health of this host: 1 for the current state.", "state")
	dHostPower    = desc("corral_host_power_watts", "Power draw of this host: measured by a sensor or the CPU packages' RAPL counters, or estimated from CPU use, as source says.", "source")
	dHostAllocCPU = desc("corral_host_allocated_vcpus", "vCPUs of the VMs placed on this host.")
	dHostAllocMem = desc("corral_host_allocated_memory_bytes", "Memory of the VMs placed on this host.")
	dHostVMs      = desc("corral_host_vms", "VMs placed on this host.")

	dVMCPU    = desc("corral_vm_cpu_seconds_total", "CPU time used by a VM running on this host.", "vm")
	dVMMem    = desc("corral_vm_memory_bytes", "Memory of a VM running on this host.", "vm")
	dVMVCPUs  = desc("corral_vm_vcpus", "vCPUs of a VM running on this host.", "vm")
	dVMDiskR  = desc("corral_vm_disk_read_bytes_total", "Bytes read from a VM disk.", "vm", "device")
	dVMDiskW  = desc("corral_vm_disk_written_bytes_total", "Bytes written to a VM disk.", "vm", "device")
	dVMDiskRO = desc("corral_vm_disk_reads_total", "Read requests of a VM disk.", "vm", "device")
	dVMDiskWO = desc("corral_vm_disk_writes_total", "Write requests of a VM disk.", "vm", "device")
	dVMNetRx  = desc("corral_vm_network_receive_bytes_total", "Bytes received by a VM NIC.", "vm", "interface")
	dVMNetTx  = desc("corral_vm_network_transmit_bytes_total", "Bytes sent by a VM NIC.", "vm", "interface")
	dVMNetRxP = desc("corral_vm_network_receive_packets_total", "Packets received by a VM NIC.", "vm", "interface")
	dVMNetTxP = desc("corral_vm_network_transmit_packets_total", "Packets sent by a VM NIC.", "vm", "interface")
	dVMNetErr = desc("corral_vm_network_errors_total", "Errors of a VM NIC, by direction.", "vm", "interface", "direction")
	dVMNetDrp = desc("corral_vm_network_drops_total", "Drops of a VM NIC, by direction.", "vm", "interface", "direction")

	dRaftState   = desc("corral_raft_state", "Raft state of this host: 1 for the current one.", "state")
	dRaftTerm    = desc("corral_raft_term", "Current Raft term.")
	dRaftCommit  = desc("corral_raft_commit_index", "Raft commit index.")
	dRaftApplied = desc("corral_raft_applied_index", "Raft index applied to the local state.")
	dRaftVoters  = desc("corral_raft_servers", "Raft servers by suffrage.", "suffrage")
	dRaftContact = desc("corral_raft_leader_contact_age_seconds", "On a leader: a voter's time since its last contact, sampled at each leader-lease check; the leader steps down when a quorum's passes the lease timeout.")
	dRaftContMax = desc("corral_raft_leader_contact_age_max_seconds", "The largest leader contact age sampled since corrald started.")
	dRaftHBTO    = desc("corral_raft_heartbeat_timeouts_total", "Times this host, a follower, heard no leader within the heartbeat timeout and stood for election.")
	dRaftLeaseTO = desc("corral_raft_lease_timeouts_total", "Times this host, a leader, reached no quorum within the leader lease and stepped down.")
	dGossip      = desc("corral_gossip_members", "Members of the gossip pool by state, as this host sees them.", "state")
	dHostModes   = desc("corral_cluster_hosts", "Hosts in cluster state by mode (active, maintenance, fenced, standby).", "mode")
	dLeaseHeld   = desc("corral_lease_held", "1 when this host holds a valid lease.")
	dLeaseLeft   = desc("corral_lease_remaining_seconds", "Time left on this host's lease.")
	dLeaseAge    = desc("corral_host_lease_age_seconds", "On the leader: time since each host's last lease renewal.", "host")
)

func (c *collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{dHostCPUs, dHostCPUUtil, dHostLoad, dHostMem, dHostMemAvail, dHostDisk, dHostHealth, dHostPower,
		dHostAllocCPU, dHostAllocMem, dHostVMs, dVMCPU, dVMMem, dVMVCPUs, dVMDiskR, dVMDiskW, dVMDiskRO, dVMDiskWO,
		dVMNetRx, dVMNetTx, dVMNetRxP, dVMNetTxP, dVMNetErr, dVMNetDrp, dRaftState, dRaftTerm, dRaftCommit,
		dRaftApplied, dRaftVoters, dRaftContact, dRaftContMax, dRaftHBTO, dRaftLeaseTO, dGossip, dHostModes, dLeaseHeld, dLeaseLeft, dLeaseAge} {
		ch <- d
	}
}

func (c *collector) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	s := c.src.Snapshot(ctx)
	g := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
	}
	cnt := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, v, labels...)
	}
	h := s.Host
	g(dHostCPUs, float64(h.CPUs))
	g(dHostCPUUtil, h.CPUUtilization)
	g(dHostLoad, h.Load1)
	if h.PowerSource != "" {
		g(dHostPower, h.PowerWatts, h.PowerSource)
	}
	g(dHostMem, float64(h.MemoryBytes))
	g(dHostMemAvail, float64(h.MemAvailBytes))
	for p, r := range h.Disks {
		g(dHostDisk, r, p)
	}
	for _, st := range []string{"ok", "degraded", "failing"} {
		v := 0.0
		if h.Health == st {
			v = 1
		}
		g(dHostHealth, v, st)
	}
	g(dHostAllocCPU, float64(h.AllocatedVCPUs))
	g(dHostAllocMem, float64(h.AllocatedMemoryBytes))
	g(dHostVMs, float64(h.VMs))
	for _, v := range s.VMs {
		cnt(dVMCPU, v.CPUSeconds, v.Name)
		g(dVMMem, float64(v.MemoryBytes), v.Name)
		g(dVMVCPUs, float64(v.VCPUs), v.Name)
		for _, d := range v.Disks {
			cnt(dVMDiskR, float64(d.ReadBytes), v.Name, d.Device)
			cnt(dVMDiskW, float64(d.WriteBytes), v.Name, d.Device)
			cnt(dVMDiskRO, float64(d.ReadOps), v.Name, d.Device)
			cnt(dVMDiskWO, float64(d.WriteOps), v.Name, d.Device)
		}
		for _, n := range v.NICs {
			cnt(dVMNetRx, float64(n.RxBytes), v.Name, n.Interface)
			cnt(dVMNetTx, float64(n.TxBytes), v.Name, n.Interface)
			cnt(dVMNetRxP, float64(n.RxPackets), v.Name, n.Interface)
			cnt(dVMNetTxP, float64(n.TxPackets), v.Name, n.Interface)
			cnt(dVMNetErr, float64(n.RxErrors), v.Name, n.Interface, "receive")
			cnt(dVMNetErr, float64(n.TxErrors), v.Name, n.Interface, "transmit")
			cnt(dVMNetDrp, float64(n.RxDrops), v.Name, n.Interface, "receive")
			cnt(dVMNetDrp, float64(n.TxDrops), v.Name, n.Interface, "transmit")
		}
	}
	for _, st := range []string{"Leader", "Follower", "Candidate", "Shutdown"} {
		v := 0.0
		if s.Raft.State == st {
			v = 1
		}
		g(dRaftState, v, st)
	}
	g(dRaftTerm, float64(s.Raft.Term))
	g(dRaftCommit, float64(s.Raft.CommitIndex))
	g(dRaftApplied, float64(s.Raft.AppliedIndex))
	g(dRaftVoters, float64(s.Raft.Voters), "voter")
	g(dRaftVoters, float64(s.Raft.Nonvoters), "nonvoter")
	if ca := s.Raft.ContactAges; len(ca.Bounds) == len(ca.Counts) {
		buckets := make(map[float64]uint64, len(ca.Bounds))
		for i, b := range ca.Bounds {
			buckets[b.Seconds()] = ca.Counts[i]
		}
		ch <- prometheus.MustNewConstHistogram(dRaftContact, ca.Count, ca.Sum.Seconds(), buckets)
		g(dRaftContMax, ca.Max.Seconds())
	}
	cnt(dRaftHBTO, float64(s.Raft.HeartbeatTimeouts))
	cnt(dRaftLeaseTO, float64(s.Raft.LeaseTimeouts))
	for _, st := range []string{"alive", "dead", "left"} {
		g(dGossip, float64(s.Gossip[st]), st)
	}
	for _, m := range []string{"active", "maintenance", "fenced", "standby"} {
		g(dHostModes, float64(s.HostModes[m]), m)
	}
	held := 0.0
	if s.LeaseHeld {
		held = 1
	}
	g(dLeaseHeld, held)
	g(dLeaseLeft, s.LeaseRemaining.Seconds())
	for host, age := range s.LeaseAges {
		g(dLeaseAge, age.Seconds(), host)
	}
}

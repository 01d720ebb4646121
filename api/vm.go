package api

import "time"

// Disk is one disk of a VM: an overlay on a base image, or a blank volume.
type Disk struct {
	Image   string `json:"image,omitempty"`
	SizeMiB int64  `json:"size_mib,omitempty"`
}

// Kernel boots a VM directly from a kernel and initrd (paths on the hosts).
type Kernel struct {
	Kernel  string `json:"kernel"`
	Initrd  string `json:"initrd,omitempty"`
	Cmdline string `json:"cmdline,omitempty"`
}

// NIC is a network interface on a corral network.
type NIC struct {
	Network string `json:"network"`
	MAC     string `json:"mac,omitempty"`
}

// HAPolicy says how corral reacts to crashes and host failures.
type HAPolicy struct {
	Enabled          bool `json:"enabled"`
	Priority         int  `json:"priority"`
	MaxRestart       int  `json:"max_restart"`
	RestartWindowSec int  `json:"restart_window_s"`
	MaxRelocate      int  `json:"max_relocate"`
}

// VMSpec is what a VM is made of.
type VMSpec struct {
	VCPUs        int               `json:"vcpus"`
	MemoryMiB    int64             `json:"memory_mib"`
	Disks        []Disk            `json:"disks,omitempty"`
	Kernel       *Kernel           `json:"kernel,omitempty"`
	NICs         []NIC             `json:"nics,omitempty"`
	UserData     string            `json:"user_data,omitempty"`
	Labels       map[string]string `json:"labels,omitempty"`
	AntiAffinity string            `json:"anti_affinity,omitempty"`
	Require      map[string]string `json:"require,omitempty"`
	HA           HAPolicy          `json:"ha"`
	Health       *HealthCheck      `json:"health,omitempty"`
	// Prefer and Avoid are soft placement rules: among the hosts that
	// fit, placement takes the one with the highest sum of the weights
	// of the Prefer rules it meets less those of the Avoid rules it meets.
	Prefer []SoftRule `json:"prefer,omitempty"`
	Avoid  []SoftRule `json:"avoid,omitempty"`
}

// SoftRule is met by a host carrying the label Key=Value (Kind "host"),
// or by a host running another VM that carries it (Kind "vm"); Weight is
// 1..100.
type SoftRule struct {
	Kind   string `json:"kind"`
	Key    string `json:"key"`
	Value  string `json:"value"`
	Weight int    `json:"weight"`
}

// RuleCheck says whether a VM's host meets one of its placement rules
// (required labels, anti-affinity group, spread set, soft rules).
type RuleCheck struct {
	Rule   string `json:"rule"`
	Met    bool   `json:"met"`
	Detail string `json:"detail,omitempty"`
}

// HealthCheck is how the VM's host tells whether the running guest serves:
// Exec, a shell command the QEMU guest agent runs in the guest (healthy
// when it exits 0), or TCPPort, a port on the address the agent reports
// (healthy when the host can connect); exactly one. Every IntervalSec
// (10), each check given TimeoutSec (5); Retries (3) failures in a row
// make the guest unhealthy, one pass healthy; failures within StartSec
// (60) of the guest's start do not count until it was healthy once.
type HealthCheck struct {
	Exec        string `json:"exec,omitempty"`
	TCPPort     int    `json:"tcp_port,omitempty"`
	IntervalSec int    `json:"interval_s,omitempty"`
	TimeoutSec  int    `json:"timeout_s,omitempty"`
	Retries     int    `json:"retries,omitempty"`
	StartSec    int    `json:"start_s,omitempty"`
}

// VMCreateRequest is the body of POST /v1/vms. HA nil takes the defaults
// (enabled, max_restart 3 in 600 s, max_relocate 2).
type VMCreateRequest struct {
	Name    string    `json:"name"`
	Spec    VMSpec    `json:"spec"`
	HA      *HAPolicy `json:"ha,omitempty"`
	Host    string    `json:"host,omitempty"`
	Stopped bool      `json:"stopped,omitempty"`
	// Project holds the VM (empty: the caller's token's, else default).
	Project string `json:"project,omitempty"`
}

// VMResizeRequest is the body of PUT /v1/vms/{name}/resize.
type VMResizeRequest struct {
	VCPUs     int   `json:"vcpus"`
	MemoryMiB int64 `json:"memory_mib"`
	Restart   bool  `json:"restart,omitempty"`
}

// SnapshotCreateRequest is the body of POST /v1/vms/{name}/snapshots.
// Memory saves the running guest's RAM with its disks (a memory snapshot:
// a revert to it resumes the guest where it was, rather than booting it);
// a stopped VM has none to save.
type SnapshotCreateRequest struct {
	Name   string `json:"name"`
	Memory bool   `json:"memory,omitempty"`
}

// SnapshotScheduleRequest is the body of PUT
// /v1/vms/{name}/snapshot-schedule: Schedule is "WHEN keep RETENTION"
// (WHEN: hourly, daily [HH:MM] in UTC, or every DURATION; RETENTION: counts
// each followed by last, daily or weekly), e.g. "hourly keep 24", "daily
// 02:00 keep 7 daily 4 weekly", "every 15m keep 4"; empty removes the
// schedule. The leader takes a snapshot named auto-YYYYMMDD-HHMMSS at each
// slot and removes the scheduled snapshots the schedule no longer keeps
// (never the VM's other snapshots).
type SnapshotScheduleRequest struct {
	Schedule string `json:"schedule"`
}

// Snapshot is a named, frozen state of all of a VM's disks. A stopped VM's
// snapshot is ready at once; a running guest's is "creating" until its
// host has moved the guest's disks onto a new layer, and is gone again if
// the host failed to (a snapshot-failed event says why).
type Snapshot struct {
	Name      string    `json:"name"`
	CreatedAt time.Time `json:"created_at"`
	State     string    `json:"state"` // creating or ready
	// Consistency, once ready: frozen (the guest agent froze the guest's
	// file systems), crash (as after a power cut: no agent froze them),
	// stopped (the guest was not running) or memory (its RAM was saved
	// with its disks, the guest paused in between).
	Consistency string `json:"consistency,omitempty"`
	// Message says more (why the guest was not frozen).
	Message string `json:"message,omitempty"`
	// Memory: a memory snapshot, holding the guest's RAM too.
	Memory bool `json:"memory,omitempty"`
}

// VM is a VM as any host reports it from cluster state.
type VM struct {
	Name       string `json:"name"`
	ID         string `json:"id"`
	Host       string `json:"host"`
	Desired    string `json:"desired"` // running or stopped
	State      string `json:"state"`   // pending, starting, running, stopping, stopped, crashed, failed, error, deleting
	Message    string `json:"message,omitempty"`
	Generation uint64 `json:"generation"`
	// Since is when the guest started (running) or entered State.
	Since       time.Time `json:"since,omitzero"`
	Restarts    int       `json:"restarts,omitempty"`
	Relocations int       `json:"relocations,omitempty"`
	Failed      string    `json:"failed,omitempty"`
	Deleting    bool      `json:"deleting,omitempty"`
	// PendingRestart: a resize waits for the guest's next start.
	PendingRestart bool      `json:"pending_restart,omitempty"`
	ReportedAt     time.Time `json:"reported_at,omitzero"`
	CreatedAt      time.Time `json:"created_at"`
	Spec           VMSpec    `json:"spec"`
	// MigratingTo is the target of a live migration in progress.
	MigratingTo string `json:"migrating_to,omitempty"`
	// Home is the host a drain moved the VM from (restore --failback).
	Home    string `json:"home,omitempty"`
	Project string `json:"project"`
	// Group is the group the VM is a member of.
	Group string `json:"group,omitempty"`
	// Health is the running guest's health when its spec has a check:
	// starting, healthy or unhealthy (HealthDetail says why).
	Health       string `json:"health,omitempty"`
	HealthDetail string `json:"health_detail,omitempty"`
	// Rules says which of its placement rules its host meets (only in
	// the answer about one VM, GET /v1/vms/{name}).
	Rules []RuleCheck `json:"rules,omitempty"`
	// Snapshots of its disks, oldest first.
	Snapshots []Snapshot `json:"snapshots,omitempty"`
	// Backup is the backup of the VM under way, if any.
	Backup *BackupJob `json:"backup,omitempty"`
	// RestoringFrom is the backup a new VM's disks are being restored
	// from (before its first start; Message says how far).
	RestoringFrom string `json:"restoring_from,omitempty"`
	// SnapshotSchedule is the VM's snapshot schedule, in its canonical
	// text form ("hourly keep 24"), if it has one; SnapshotScheduleLast
	// the latest slot it took.
	SnapshotSchedule     string    `json:"snapshot_schedule,omitempty"`
	SnapshotScheduleLast time.Time `json:"snapshot_schedule_last,omitzero"`
	// BackupSchedule is the VM's backup schedule ("daily 02:00 keep 7"),
	// if it has one, to BackupTarget; BackupScheduleLast the latest slot
	// it started.
	BackupSchedule     string    `json:"backup_schedule,omitempty"`
	BackupTarget       string    `json:"backup_target,omitempty"`
	BackupScheduleLast time.Time `json:"backup_schedule_last,omitzero"`
	// BackupScheduleFrom names the VM's project when its backup schedule
	// is the project's (Project.BackupSchedule), not one of its own.
	BackupScheduleFrom string `json:"backup_schedule_from,omitempty"`
}

// ConsoleHello is the first message of an interactive console session
// (GET /v1/vms/{name}/console/attach, a WebSocket): the VM, the host its
// guest runs on, and whether this session may type (one writer at a time;
// other sessions read).
type ConsoleHello struct {
	VM      string `json:"vm"`
	Host    string `json:"host"`
	Writer  bool   `json:"writer"`
	Message string `json:"message,omitempty"`
}

// ConsoleLog is the tail of a VM's serial console log.
type ConsoleLog struct {
	Host string `json:"host"`
	Log  string `json:"log"`
}

// VMStats are a running VM's counters, from its host's hypervisor.
type VMStats struct {
	Host         string      `json:"host"`
	State        string      `json:"state"`
	CPUTimeNs    uint64      `json:"cpu_time_ns"`
	VCPUs        int         `json:"vcpus"`
	MemoryKiB    uint64      `json:"memory_kib"`
	MaxMemoryKiB uint64      `json:"max_memory_kib"`
	Disks        []DiskStats `json:"disks"`
	NICs         []NICStats  `json:"nics"`
}

// DiskStats are block device counters.
type DiskStats struct {
	Name       string `json:"name"`
	ReadBytes  int64  `json:"read_bytes"`
	WriteBytes int64  `json:"write_bytes"`
	ReadReqs   int64  `json:"read_reqs"`
	WriteReqs  int64  `json:"write_reqs"`
}

// NICStats are interface counters.
type NICStats struct {
	Name      string `json:"name"`
	RxBytes   int64  `json:"rx_bytes"`
	TxBytes   int64  `json:"tx_bytes"`
	RxPackets int64  `json:"rx_packets"`
	TxPackets int64  `json:"tx_packets"`
	RxErrs    int64  `json:"rx_errs"`
	TxErrs    int64  `json:"tx_errs"`
	RxDrop    int64  `json:"rx_drop"`
	TxDrop    int64  `json:"tx_drop"`
}

// Image is a base image in the storage pool.
type Image struct {
	Name             string    `json:"name"`
	Format           string    `json:"format"`
	SizeBytes        int64     `json:"size_bytes"`
	VirtualSizeBytes int64     `json:"virtual_size_bytes"`
	SHA256           string    `json:"sha256"`
	CreatedAt        time.Time `json:"created_at"`
	Project          string    `json:"project"`
}

// Event is one step the cluster took.
type Event struct {
	Seq     uint64    `json:"seq"`
	Time    time.Time `json:"time"`
	Kind    string    `json:"kind"`
	Host    string    `json:"host,omitempty"`
	VM      string    `json:"vm,omitempty"`
	Message string    `json:"message,omitempty"`
	// Actor, Source and RequestID: who asked for it (a uid on the admin
	// socket), from where, and the request id the API answered with; empty
	// for what corral does by itself.
	Actor     string `json:"actor,omitempty"`
	Source    string `json:"source,omitempty"`
	RequestID string `json:"request_id,omitempty"`
	// Project is the project of the event's VM (empty: default, or none).
	Project string `json:"project,omitempty"`
}

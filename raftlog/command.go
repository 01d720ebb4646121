package raftlog

import (
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/corralhq/corral/model"
)

// Type identifies a log entry. Numbers are never reused. An entry whose type
// has IgnoreUnknown set may be skipped by a daemon that does not know it;
// any other unknown type is refused (logged, state unchanged), so a new
// type without the bit is written only behind a Feature (protocol.go).
type Type uint8

// IgnoreUnknown marks entry types that older daemons may skip.
const IgnoreUnknown Type = 0x80

// Entry types. Append only; never renumber.
const (
	TypeRegisterHost  Type = 1
	TypeSetHostLabels Type = 2
	TypeSetHostMode   Type = 3
	TypeRemoveHost    Type = 4

	TypeCreateVM     Type = 10
	TypePlaceVM      Type = 11
	TypeDeleteVM     Type = 12
	TypeSetVMPower   Type = 13
	TypeRestartVM    Type = 14
	TypeResizeVM     Type = 15
	TypeMarkVMDelete Type = 16
	TypeReportVMs    Type = 17
	TypeFailVM       Type = 18

	TypePutImage    Type = 20
	TypeDeleteImage Type = 21

	TypeAddEvents Type = 25

	TypeFenceHost       Type = 40
	TypeSetHostDraining Type = 41
	TypeStartMigration  Type = 42
	TypeFinishMigration Type = 43
	TypeAbortMigration  Type = 44
	TypeSetHA           Type = 45
	// SetHostStopped is advisory (a leader that does not know it fences
	// as before), so older daemons may skip it during a rolling upgrade.
	TypeSetHostStopped = IgnoreUnknown | 46
	// Renewals records lease renewals the leader is about to grant
	// (FeatureCommittedLeases). It changes no state, so older daemons may
	// skip it; a leader trusts what it knows of renewals only once the
	// feature is enabled, that is once no daemon skips it.
	TypeRenewals = IgnoreUnknown | 47

	TypeCreateNetwork Type = 50
	TypeDeleteNetwork Type = 51

	TypeAddJoinToken    Type = 60
	TypeRevokeJoinToken Type = 61
	TypeSetGossipKeys   Type = 62
	// SetProtocol is not IgnoreUnknown: a corrald that does not know it
	// is older than the protocol it records, and must not go on as if it
	// were not there (a protocol 1 corrald logs it as refused).
	TypeSetProtocol Type = 63
	// API tokens (FeatureAPITokens): not skippable, since a replica that
	// skipped a revocation would go on admitting the token.
	TypeAddAPIToken    Type = 64
	TypeRevokeAPIToken Type = 65
	// Projects (FeatureProjects): not skippable, for the same reason.
	TypeSetProject    Type = 66
	TypeDeleteProject Type = 67
	// Groups (FeatureGroups): not skippable, since a replica that skipped
	// one would not hold the count the leader keeps.
	TypeSetGroup    Type = 68
	TypeDeleteGroup Type = 69
	// Snapshots (FeatureSnapshots): not skippable, since a replica that
	// skipped one would start the VM on another layer of its disks.
	TypeTakeSnapshot   Type = 70
	TypeFinishSnapshot Type = 71
	TypeRevertSnapshot Type = 72
	TypeDeleteSnapshot Type = 73
	TypeForgetLayers   Type = 74
	TypeMergeLayers    Type = 75
	TypeSetSnapPolicy  Type = 76
	// Backups (FeatureBackups): not skippable, for the same reason.
	TypePutBackupTarget    Type = 77
	TypeDeleteBackupTarget Type = 78
	TypeStartBackup        Type = 79
	TypeBackupProgress     Type = 80
	TypeAssignBackup       Type = 81
	TypeFinishBackup       Type = 82
	TypeDeleteBackup       Type = 83
	TypeSetBackupPolicy    Type = 84
	// Project backup schedules (FeatureProjectBackups): not skippable.
	TypeSetProjectBackupPolicy Type = 85
	// Recovery (FeatureRecovery): not skippable, since a replica that
	// skipped an adoption would place the guest where it does not run.
	TypeAdoptGuests Type = 86
	TypeEndRecovery Type = 87

	TypeBatch Type = 30
)

// ErrUnknownType is returned by Decode for an entry type this daemon does not
// know and may not skip.
var ErrUnknownType = errors.New("unknown log entry type")

// ErrBadEntry is what applying an entry that does not decode returns; the
// state is unchanged.
var ErrBadEntry = errors.New("undecodable raft entry")

// Command is a typed body of a log entry.
type Command interface {
	Type() Type
}

// RegisterHost records a host's addresses, version and capacity. The first
// registration also sets mode active, RegisteredAt and labels; later ones keep
// labels, mode and RegisteredAt.
type RegisterHost struct {
	Host model.Host `json:"host"`
}

// SetHostLabels sets the labels in Set and removes those in Remove.
type SetHostLabels struct {
	Name   string            `json:"name"`
	Set    map[string]string `json:"set,omitempty"`
	Remove []string          `json:"remove,omitempty"`
}

// SetHostMode changes a host's mode.
type SetHostMode struct {
	Name string         `json:"name"`
	Mode model.HostMode `json:"mode"`
}

// RemoveHost forgets a host. Refused while VMs are assigned to it. With
// Time set, the certificates issued to its name until then are revoked
// (model.Cluster.Revoked).
type RemoveHost struct {
	Name string    `json:"name"`
	Time time.Time `json:"time,omitzero"`
}

// CreateVM adds a VM. Refused when the name or ID is taken.
type CreateVM struct {
	VM model.VM `json:"vm"`
}

// PlaceVM assigns a VM to a host, provided its generation is still
// Generation (compare and set); the VM's generation is then bumped and its
// actual state reset to pending. Relocation counts the move against the
// VM's max_relocate.
type PlaceVM struct {
	Name       string `json:"name"`
	Host       string `json:"host"`
	Generation uint64 `json:"generation"`
	Relocation bool   `json:"relocation,omitempty"`
}

// DeleteVM forgets a VM at once (its host cleans up when it sees the
// domain is no longer wanted).
type DeleteVM struct {
	Name string `json:"name"`
}

// SetVMPower sets the desired power state; ClearFailed forgets a failure,
// the relocation count and the reported crash restarts (an operator's
// start).
type SetVMPower struct {
	Name        string           `json:"name"`
	Desired     model.PowerState `json:"desired"`
	ClearFailed bool             `json:"clear_failed,omitempty"`
}

// RestartVM asks the VM's host to restart it (bumps RestartSeq).
type RestartVM struct {
	Name string `json:"name"`
}

// ResizeVM changes vCPUs and memory (bumps SpecVersion); the host applies
// it at the guest's next start.
type ResizeVM struct {
	Name      string `json:"name"`
	VCPUs     int    `json:"vcpus"`
	MemoryMiB int64  `json:"memory_mib"`
}

// MarkVMDelete starts the removal of a VM: its host destroys the domain
// and deletes its disks, then reports "deleted", which forgets the VM.
type MarkVMDelete struct {
	Name string `json:"name"`
}

// VMReport is a host's report about one VM it runs.
type VMReport struct {
	Name        string        `json:"name"`
	Generation  uint64        `json:"generation"`
	State       model.VMState `json:"state"`
	Since       time.Time     `json:"since,omitzero"`
	Message     string        `json:"message,omitempty"`
	Restarts    int           `json:"restarts,omitempty"`
	SpecVersion uint64        `json:"spec_version,omitempty"`
	// RestartTimes are the times of the crash restarts Restarts counts
	// (model.Actual.RestartTimes); at most the VM's max_restart. Sent and
	// kept only with FeatureRestartTimes.
	RestartTimes []time.Time `json:"restart_times,omitempty"`
	// Health and HealthDetail are the guest's health (model.Actual.Health);
	// sent and kept only with FeatureHealthChecks.
	Health       string `json:"health,omitempty"`
	HealthDetail string `json:"health_detail,omitempty"`
	// Layer is the disk layer a running guest runs on: a report of the
	// guest running on the layer it was to be resumed onto ends that
	// resume (model.Chain.Resume). Sent and used only with
	// FeatureMemorySnapshots.
	Layer uint64 `json:"layer,omitempty"`
}

// FeatureRestartTimes: VM reports carry RestartTimes, and the state
// machine keeps them, refuses more than max_restart, and clears the
// restarts on an operator's start and a finished migration. A protocol 1
// leader refuses a report with the field (strict RPC decoding), and a
// protocol 1 replica would apply the report without it (diverging state),
// so hosts send it and the state machine applies those rules only from
// protocol 2 on.
var FeatureRestartTimes = Feature{Name: "restart times in VM reports", Since: 2}

// ReportVMs records reports from Host. A report is applied only while the
// VM is placed on Host with the report's generation; others are stale and
// ignored. A "deleted" report about a VM being deleted forgets the VM. A
// report with more restart times than the VM's max_restart refuses the
// whole command (model.ErrInvalid).
type ReportVMs struct {
	Host    string     `json:"host"`
	Time    time.Time  `json:"time"`
	Reports []VMReport `json:"reports"`
}

// FailVM marks a VM failed (corral gives up on it) if its generation is
// still Generation.
type FailVM struct {
	Name       string `json:"name"`
	Generation uint64 `json:"generation"`
	Reason     string `json:"reason"`
}

// PutImage records a base image in the storage pool.
type PutImage struct {
	Image model.Image `json:"image"`
}

// DeleteImage forgets an image; refused while a VM's disk uses it.
type DeleteImage struct {
	Name string `json:"name"`
}

// FenceHost records that the leader declared a host dead: mode fenced.
type FenceHost struct {
	Name   string    `json:"name"`
	Reason string    `json:"reason"`
	Time   time.Time `json:"time"`
}

// SetHostDraining starts or ends a drain of a host.
type SetHostDraining struct {
	Name     string `json:"name"`
	Draining bool   `json:"draining"`
}

// SetHostStopped records that corrald on a host stopped cleanly, its guests
// still running (At set), or that it renewed its lease again (At zero).
type SetHostStopped struct {
	Name string    `json:"name"`
	At   time.Time `json:"at,omitzero"`
}

// Renewals records that the leader is about to grant the lease renewals
// of Hosts. The leader grants a renewal only once this entry has
// committed, so every later leader has it in its log: each replica notes
// when it applied the entry (on its own monotonic clock, a time after
// the renewal was sent), and a new leader counts each host's lease from
// that note instead of from its own election. It changes no state.
type Renewals struct {
	Hosts []string `json:"hosts"`
}

// StartMigration records the intent to live-migrate a VM to Target.
type StartMigration struct {
	Name       string    `json:"name"`
	Generation uint64    `json:"generation"`
	Target     string    `json:"target"`
	Reason     string    `json:"reason"`
	Time       time.Time `json:"time"`
}

// FinishMigration moves a VM's placement to the migration's target once
// libvirt reported success: the generation is bumped and the actual state
// (running since...) carried over, except the crash restarts: the target
// counts its own from zero.
type FinishMigration struct {
	Name       string `json:"name"`
	Generation uint64 `json:"generation"`
	Target     string `json:"target"`
}

// AbortMigration forgets a migration that failed; the VM stays where it is.
type AbortMigration struct {
	Name       string `json:"name"`
	Generation uint64 `json:"generation"`
}

// AddJoinToken records a join token. Tokens expired at Time are dropped
// first; refused when the ID is taken or MaxJoinTokens are kept.
type AddJoinToken struct {
	Token model.JoinToken `json:"token"`
	Time  time.Time       `json:"time"`
}

// SetGossipKeys sets the cluster's gossip keyring (1 to 4 keys of 16, 24
// or 32 bytes), the key in use first.
type SetGossipKeys struct {
	Keys [][]byte `json:"keys"`
}

// SetProtocol raises the cluster's protocol (model.Cluster.Protocol) to
// Protocol. The leader writes it once every host in state (and every
// alive host in gossip) runs at least that protocol; it is never lowered
// (a lower one is refused). From then on features up to Protocol are
// used, a host below it is not registered, and a corrald below it does
// not start.
type SetProtocol struct {
	Protocol int `json:"protocol"`
}

// AddAPIToken records an API token. Tokens expired at Time are dropped
// first; refused when the name is taken or MaxAPITokens are kept.
type AddAPIToken struct {
	Token model.APIToken `json:"token"`
	Time  time.Time      `json:"time"`
}

// RevokeAPIToken forgets an API token: every host refuses it once it has
// applied this.
type RevokeAPIToken struct {
	Name string `json:"name"`
}

// SetProject creates a project (Create; refused when it exists) or sets
// an existing one's description and quota (DefaultProject always exists).
type SetProject struct {
	Project model.Project `json:"project"`
	Create  bool          `json:"create,omitempty"`
}

// DeleteProject removes a project that holds nothing: no VM, network,
// image or API token.
type DeleteProject struct {
	Name string `json:"name"`
}

// SetGroup creates a group (Create; refused when the name is taken) or
// updates an existing one: its template (members already there keep their
// spec until a roll-out replaces them), batch, pause and autoscale, its
// count kept; or, with CountOnly, its count alone. An update whose
// Group.Version is set is refused when the group's is another (it was
// read before a template change).
type SetGroup struct {
	Group  model.Group `json:"group"`
	Create bool        `json:"create,omitempty"`
	// CountOnly changes only the count of the existing group Group.Name
	// (a scale, by an operator or the autoscaler): a template changed
	// meanwhile is kept.
	CountOnly bool `json:"count_only,omitempty"`
}

// DeleteGroup removes a group. Its members are marked for deletion, or,
// with KeepVMs, stay as ordinary VMs outside any group.
type DeleteGroup struct {
	Name    string `json:"name"`
	KeepVMs bool   `json:"keep_vms,omitempty"`
}

// RevokeJoinToken forgets a join token: it admits no host from then on.
type RevokeJoinToken struct {
	ID string `json:"id"`
}

// SetHA arms or disarms fencing and recovery cluster-wide.
type SetHA struct {
	Disarmed bool      `json:"disarmed"`
	Time     time.Time `json:"time"`
}

// CreateNetwork adds a network; refused when the name, VNI or VLAN is taken.
type CreateNetwork struct {
	Network model.Network `json:"network"`
}

// DeleteNetwork removes a network; refused while a VM has a NIC on it.
type DeleteNetwork struct {
	Name string `json:"name"`
}

// TakeSnapshot records a snapshot of a VM's disks (model.VM.TakeSnapshot);
// with Slot set, the scheduled snapshot of that slot, named after it
// (model.VM.TakeScheduledSnapshot; Snapshot is ignored). With Memory, the
// guest's RAM too (model.VM.TakeMemorySnapshot; FeatureMemorySnapshots;
// never with Slot).
type TakeSnapshot struct {
	Name     string    `json:"name"`
	Snapshot string    `json:"snapshot,omitempty"`
	Time     time.Time `json:"time"`
	Slot     time.Time `json:"slot,omitzero"`
	Memory   bool      `json:"memory,omitempty"`
}

// SetSnapshotPolicy sets a VM's snapshot schedule; nil removes it.
type SetSnapshotPolicy struct {
	Name     string          `json:"name"`
	Schedule *model.Schedule `json:"schedule,omitempty"`
	Time     time.Time       `json:"time"`
}

// FinishSnapshot records how the VM's host took a running guest's
// snapshot: Error set, it failed (model.VM.FinishSnapshot). Applied only
// while the VM is placed on Host at Generation.
type FinishSnapshot struct {
	Name        string `json:"name"`
	Host        string `json:"host"`
	Generation  uint64 `json:"generation"`
	Snapshot    string `json:"snapshot"`
	Consistency string `json:"consistency,omitempty"`
	Message     string `json:"message,omitempty"`
	Error       string `json:"error,omitempty"`
}

// RevertSnapshot puts a VM's disks back to a snapshot.
type RevertSnapshot struct {
	Name     string `json:"name"`
	Snapshot string `json:"snapshot"`
}

// DeleteSnapshot forgets a snapshot; its layer may die.
type DeleteSnapshot struct {
	Name     string `json:"name"`
	Snapshot string `json:"snapshot"`
}

// ForgetLayers drops dead layers of a VM whose files its host deleted,
// and dead memory images (model.Chain.DeadMemory; FeatureMemorySnapshots).
type ForgetLayers struct {
	Name   string   `json:"name"`
	Layers []uint64 `json:"layers"`
	Memory []uint64 `json:"memory,omitempty"`
}

// MergeLayers records that a VM's host committed layer From of its disks
// into layer Into (model.VM.MergeLayers).
type MergeLayers struct {
	Name string `json:"name"`
	Into uint64 `json:"into"`
	From uint64 `json:"from"`
}

// PutBackupTarget adds a backup target.
type PutBackupTarget struct {
	Target model.BackupTarget `json:"target"`
}

// DeleteBackupTarget removes a backup target; refused while the catalog
// or a job names it, unless Force, which forgets its backups too.
type DeleteBackupTarget struct {
	Name  string `json:"name"`
	Force bool   `json:"force,omitempty"`
}

// StartBackup begins a backup job of a VM (model.VM.StartBackup); with
// Slot, the job of that slot of the VM's backup schedule.
type StartBackup struct {
	Name string          `json:"name"`
	Job  model.BackupJob `json:"job"`
	Time time.Time       `json:"time"`
	Slot time.Time       `json:"slot,omitzero"`
}

// SetBackupPolicy sets a VM's backup schedule to Target; a nil Schedule
// removes it.
type SetBackupPolicy struct {
	Name     string          `json:"name"`
	Target   string          `json:"target,omitempty"`
	Schedule *model.Schedule `json:"schedule,omitempty"`
	Time     time.Time       `json:"time"`
}

// AdoptGuests is a host's inventory in a recovered cluster
// (model.Recovery): the corral guests it runs, and the disk chains it found
// newer than the state's for the stopped VMs placed on it. Applied only
// while Host is waited for; it takes Host out of the wait.
type AdoptGuests struct {
	Host   string         `json:"host"`
	Guests []AdoptedGuest `json:"guests,omitempty"`
	Time   time.Time      `json:"time"`
}

// AdoptedGuest is one guest of an inventory. Running: its QEMU runs on
// the host, which then adopts it; else only its chain is news. Layers
// are the layers of its disk 0, top first down to 0, when known.
type AdoptedGuest struct {
	Name    string   `json:"name"`
	VMID    string   `json:"vm_id"`
	Running bool     `json:"running,omitempty"`
	Layers  []uint64 `json:"layers,omitempty"`
}

// MaxAdoptedGuests bounds one inventory.
const MaxAdoptedGuests = 10000

// EndRecovery ends a recovery (model.Recovery). Without Force it is
// refused while a host is waited for; HA is armed again if it was.
type EndRecovery struct {
	Force bool      `json:"force,omitempty"`
	Time  time.Time `json:"time"`
}

// SetProjectBackupPolicy sets a project's backup schedule to Target (a
// nil Schedule removes it), and with it the inherited schedule of each of
// its VMs without one of its own (model.VM.FollowProjectBackups).
type SetProjectBackupPolicy struct {
	Project  string          `json:"project"`
	Target   string          `json:"target,omitempty"`
	Schedule *model.Schedule `json:"schedule,omitempty"`
	Time     time.Time       `json:"time"`
}

// BackupProgress records how far a VM's backup job has come; applied only
// while Host runs it.
type BackupProgress struct {
	Name  string `json:"name"`
	ID    string `json:"id"`
	Host  string `json:"host"`
	Done  int64  `json:"done"`
	Total int64  `json:"total"`
}

// AssignBackup gives a VM's backup job (waiting for a host, or whose host
// failed) to Host.
type AssignBackup struct {
	Name string `json:"name"`
	ID   string `json:"id"`
	Host string `json:"host"`
}

// FinishBackup ends an attempt of a VM's backup job on Host: with Error,
// it failed (retried at RetryAt, or given up after
// model.MaxBackupAttempts); else the backup enters the catalog.
type FinishBackup struct {
	Name    string            `json:"name"`
	ID      string            `json:"id"`
	Host    string            `json:"host"`
	Time    time.Time         `json:"time"`
	Error   string            `json:"error,omitempty"`
	RetryAt time.Time         `json:"retry_at,omitzero"`
	Stats   model.BackupStats `json:"stats"`
}

// DeleteBackup removes a backup from the catalog; refused while another
// builds on it.
type DeleteBackup struct {
	ID string `json:"id"`
}

// AddEvents appends to the event log; the state machine numbers them.
type AddEvents struct {
	Events []model.Event `json:"events"`
}

// Batch applies several commands in one log entry, in order. Each command
// succeeds or fails on its own; Apply returns a BatchResult.
type Batch struct {
	Entries [][]byte `json:"entries"`
}

func (RegisterHost) Type() Type       { return TypeRegisterHost }
func (SetHostLabels) Type() Type      { return TypeSetHostLabels }
func (SetHostMode) Type() Type        { return TypeSetHostMode }
func (RemoveHost) Type() Type         { return TypeRemoveHost }
func (CreateVM) Type() Type           { return TypeCreateVM }
func (PlaceVM) Type() Type            { return TypePlaceVM }
func (DeleteVM) Type() Type           { return TypeDeleteVM }
func (SetVMPower) Type() Type         { return TypeSetVMPower }
func (RestartVM) Type() Type          { return TypeRestartVM }
func (ResizeVM) Type() Type           { return TypeResizeVM }
func (MarkVMDelete) Type() Type       { return TypeMarkVMDelete }
func (ReportVMs) Type() Type          { return TypeReportVMs }
func (FailVM) Type() Type             { return TypeFailVM }
func (PutImage) Type() Type           { return TypePutImage }
func (DeleteImage) Type() Type        { return TypeDeleteImage }
func (AddEvents) Type() Type          { return TypeAddEvents }
func (FenceHost) Type() Type          { return TypeFenceHost }
func (SetHostDraining) Type() Type    { return TypeSetHostDraining }
func (StartMigration) Type() Type     { return TypeStartMigration }
func (FinishMigration) Type() Type    { return TypeFinishMigration }
func (AbortMigration) Type() Type     { return TypeAbortMigration }
func (SetHA) Type() Type              { return TypeSetHA }
func (AddJoinToken) Type() Type       { return TypeAddJoinToken }
func (RevokeJoinToken) Type() Type    { return TypeRevokeJoinToken }
func (AddAPIToken) Type() Type        { return TypeAddAPIToken }
func (RevokeAPIToken) Type() Type     { return TypeRevokeAPIToken }
func (SetProject) Type() Type         { return TypeSetProject }
func (DeleteProject) Type() Type      { return TypeDeleteProject }
func (SetGroup) Type() Type           { return TypeSetGroup }
func (DeleteGroup) Type() Type        { return TypeDeleteGroup }
func (SetGossipKeys) Type() Type      { return TypeSetGossipKeys }
func (SetProtocol) Type() Type        { return TypeSetProtocol }
func (SetHostStopped) Type() Type     { return TypeSetHostStopped }
func (Renewals) Type() Type           { return TypeRenewals }
func (CreateNetwork) Type() Type      { return TypeCreateNetwork }
func (DeleteNetwork) Type() Type      { return TypeDeleteNetwork }
func (Batch) Type() Type              { return TypeBatch }
func (TakeSnapshot) Type() Type       { return TypeTakeSnapshot }
func (FinishSnapshot) Type() Type     { return TypeFinishSnapshot }
func (RevertSnapshot) Type() Type     { return TypeRevertSnapshot }
func (DeleteSnapshot) Type() Type     { return TypeDeleteSnapshot }
func (ForgetLayers) Type() Type       { return TypeForgetLayers }
func (MergeLayers) Type() Type        { return TypeMergeLayers }
func (SetSnapshotPolicy) Type() Type  { return TypeSetSnapPolicy }
func (PutBackupTarget) Type() Type    { return TypePutBackupTarget }
func (DeleteBackupTarget) Type() Type { return TypeDeleteBackupTarget }
func (StartBackup) Type() Type        { return TypeStartBackup }
func (BackupProgress) Type() Type     { return TypeBackupProgress }
func (AssignBackup) Type() Type       { return TypeAssignBackup }
func (FinishBackup) Type() Type       { return TypeFinishBackup }
func (DeleteBackup) Type() Type       { return TypeDeleteBackup }
func (SetBackupPolicy) Type() Type    { return TypeSetBackupPolicy }
func (AdoptGuests) Type() Type        { return TypeAdoptGuests }
func (EndRecovery) Type() Type        { return TypeEndRecovery }

func (SetProjectBackupPolicy) Type() Type { return TypeSetProjectBackupPolicy }

// Encode serializes c as one type byte followed by its JSON body.
func Encode(c Command) ([]byte, error) {
	body, err := json.Marshal(c)
	if err != nil {
		return nil, fmt.Errorf("encode %T: %w", c, err)
	}
	return append([]byte{byte(c.Type())}, body...), nil
}

// MustEncode is Encode for commands that cannot fail to marshal (all of
// ours: plain structs of strings, numbers and maps).
func MustEncode(c Command) []byte {
	b, err := Encode(c)
	if err != nil {
		panic(err)
	}
	return b
}

// Decode parses an entry. It returns (nil, nil) for an unknown type that
// carries IgnoreUnknown, and an error wrapping ErrUnknownType for any other
// unknown type.
func Decode(data []byte) (Command, error) {
	if len(data) == 0 {
		return nil, errors.New("empty log entry")
	}
	t, body := Type(data[0]), data[1:]
	switch t {
	case TypeRegisterHost:
		return decodeAs[RegisterHost](t, body)
	case TypeSetHostLabels:
		return decodeAs[SetHostLabels](t, body)
	case TypeSetHostMode:
		return decodeAs[SetHostMode](t, body)
	case TypeRemoveHost:
		return decodeAs[RemoveHost](t, body)
	case TypeCreateVM:
		return decodeAs[CreateVM](t, body)
	case TypePlaceVM:
		return decodeAs[PlaceVM](t, body)
	case TypeDeleteVM:
		return decodeAs[DeleteVM](t, body)
	case TypeSetVMPower:
		return decodeAs[SetVMPower](t, body)
	case TypeRestartVM:
		return decodeAs[RestartVM](t, body)
	case TypeResizeVM:
		return decodeAs[ResizeVM](t, body)
	case TypeMarkVMDelete:
		return decodeAs[MarkVMDelete](t, body)
	case TypeReportVMs:
		return decodeAs[ReportVMs](t, body)
	case TypeFailVM:
		return decodeAs[FailVM](t, body)
	case TypePutImage:
		return decodeAs[PutImage](t, body)
	case TypeDeleteImage:
		return decodeAs[DeleteImage](t, body)
	case TypeAddEvents:
		return decodeAs[AddEvents](t, body)
	case TypeTakeSnapshot:
		return decodeAs[TakeSnapshot](t, body)
	case TypeFinishSnapshot:
		return decodeAs[FinishSnapshot](t, body)
	case TypeRevertSnapshot:
		return decodeAs[RevertSnapshot](t, body)
	case TypeDeleteSnapshot:
		return decodeAs[DeleteSnapshot](t, body)
	case TypeForgetLayers:
		return decodeAs[ForgetLayers](t, body)
	case TypeMergeLayers:
		return decodeAs[MergeLayers](t, body)
	case TypeSetSnapPolicy:
		return decodeAs[SetSnapshotPolicy](t, body)
	case TypePutBackupTarget:
		return decodeAs[PutBackupTarget](t, body)
	case TypeDeleteBackupTarget:
		return decodeAs[DeleteBackupTarget](t, body)
	case TypeStartBackup:
		return decodeAs[StartBackup](t, body)
	case TypeBackupProgress:
		return decodeAs[BackupProgress](t, body)
	case TypeAssignBackup:
		return decodeAs[AssignBackup](t, body)
	case TypeFinishBackup:
		return decodeAs[FinishBackup](t, body)
	case TypeDeleteBackup:
		return decodeAs[DeleteBackup](t, body)
	case TypeSetBackupPolicy:
		return decodeAs[SetBackupPolicy](t, body)
	case TypeSetProjectBackupPolicy:
		return decodeAs[SetProjectBackupPolicy](t, body)
	case TypeAdoptGuests:
		return decodeAs[AdoptGuests](t, body)
	case TypeEndRecovery:
		return decodeAs[EndRecovery](t, body)
	case TypeFenceHost:
		return decodeAs[FenceHost](t, body)
	case TypeSetHostDraining:
		return decodeAs[SetHostDraining](t, body)
	case TypeSetHostStopped:
		return decodeAs[SetHostStopped](t, body)
	case TypeRenewals:
		return decodeAs[Renewals](t, body)
	case TypeStartMigration:
		return decodeAs[StartMigration](t, body)
	case TypeFinishMigration:
		return decodeAs[FinishMigration](t, body)
	case TypeAbortMigration:
		return decodeAs[AbortMigration](t, body)
	case TypeSetHA:
		return decodeAs[SetHA](t, body)
	case TypeAddJoinToken:
		return decodeAs[AddJoinToken](t, body)
	case TypeRevokeJoinToken:
		return decodeAs[RevokeJoinToken](t, body)
	case TypeAddAPIToken:
		return decodeAs[AddAPIToken](t, body)
	case TypeRevokeAPIToken:
		return decodeAs[RevokeAPIToken](t, body)
	case TypeSetProject:
		return decodeAs[SetProject](t, body)
	case TypeDeleteProject:
		return decodeAs[DeleteProject](t, body)
	case TypeSetGroup:
		return decodeAs[SetGroup](t, body)
	case TypeDeleteGroup:
		return decodeAs[DeleteGroup](t, body)
	case TypeSetGossipKeys:
		return decodeAs[SetGossipKeys](t, body)
	case TypeSetProtocol:
		return decodeAs[SetProtocol](t, body)
	case TypeCreateNetwork:
		return decodeAs[CreateNetwork](t, body)
	case TypeDeleteNetwork:
		return decodeAs[DeleteNetwork](t, body)
	case TypeBatch:
		return decodeAs[Batch](t, body)
	}
	if t&IgnoreUnknown != 0 {
		return nil, nil
	}
	return nil, fmt.Errorf("type %d: %w", t, ErrUnknownType)
}

func decodeAs[C Command](t Type, body []byte) (Command, error) {
	var c C
	if err := json.Unmarshal(body, &c); err != nil {
		return nil, fmt.Errorf("decode entry type %d: %w", t, err)
	}
	return c, nil
}

// BatchResult is what Apply returns for a Batch: one error (or nil) per
// entry, in order.
type BatchResult []error

// Server is one member of the Raft configuration.
type Server struct {
	ID      string `json:"id"`
	Address string `json:"address"`
	Voter   bool   `json:"voter"`
}

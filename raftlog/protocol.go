package raftlog

import (
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/corralhq/corral/model"
)

// Protocol is the cluster protocol this build speaks: what it writes into
// the Raft log and sends over the cluster RPC and gossip. Hosts one
// protocol apart interoperate (N and N-1); anything newer than the oldest
// host knows is used only behind a Feature.
//
//  1. Every release up to fc84968. Such a corrald gossips no protocol
//     (0 reads as 1), refuses an RPC request with a field it does not
//     know, and refuses (logs, state unchanged) a log entry of a type it
//     does not know unless the type has IgnoreUnknown.
//  2. The SetProtocol entry; VM reports carry restart times
//     (FeatureRestartTimes); host.remove takes force (FeatureForceRemove).
//  3. Events carry who asked for them (FeatureAudit).
//  4. API tokens for the HTTPS API (FeatureAPITokens); projects with
//     quotas, and the project of VMs, networks, images, tokens and events
//     (FeatureProjects).
//  5. VM groups: the SetGroup and DeleteGroup entries, the group of VMs
//     and the spread set of VM specs (FeatureGroups).
//  6. Health checks: the health check of VM specs, and the health of VM
//     reports (FeatureHealthChecks).
//  7. Soft placement rules: the prefer and avoid rules of VM specs
//     (FeatureSoftRules); the cluster.balance RPC method (FeatureBalance).
//  8. Snapshots: the disk chain of VMs and the snapshot entries
//     (FeatureSnapshots); backups: targets, jobs and the catalog
//     (FeatureBackups).
//  9. Snapshots with the guest's memory (FeatureMemorySnapshots); backup
//     schedules of projects (FeatureProjectBackups); the adoption of
//     running guests by a cluster recovered from a backup of its state
//     (FeatureRecovery).
//  10. Committed lease renewals: the Renewals entry, after which a new
//     leader counts leases from the renewals in its log rather than from
//     its election (FeatureCommittedLeases).
const Protocol = 10

// Feature is something a newer protocol added that a host of an older one
// would refuse or misread: a log entry type or field, an RPC method or
// field, a gossip field whose meaning others rely on. It may be used only
// once the cluster's protocol (model.Cluster.Protocol, raised by the
// leader through SetProtocol once every host runs at least that protocol,
// and never lowered) reaches Since. Gating on the recorded protocol rather
// than on the hosts' current ones means a feature, once used, can never
// meet a host that does not know it: hosts below the recorded protocol
// are not registered, and a corrald below it does not start.
type Feature struct {
	Name  string
	Since int
}

// FeatureForceRemove: the host.remove request's force field (host rm
// --force), which a protocol 1 leader refuses as an unknown field.
var FeatureForceRemove = Feature{Name: "host rm --force", Since: 2}

// FeatureAudit: events carry their actor, source and request id. A
// protocol 2 replica would decode such an event without them (entries are
// decoded leniently), and replicas would then hold different logs.
var FeatureAudit = Feature{Name: "the audit fields of events", Since: 3}

// FeatureAPITokens: the AddAPIToken and RevokeAPIToken entries, which a
// protocol 3 replica would refuse (it could not check the tokens).
var FeatureAPITokens = Feature{Name: "API tokens", Since: 4}

// FeatureProjects: the SetProject and DeleteProject entries, and the
// project fields of VMs, networks, images, API tokens and events, which a
// protocol 3 replica would drop (it decodes leniently) and then hold
// other state.
var FeatureProjects = Feature{Name: "projects", Since: 4}

// FeatureGroups: the SetGroup and DeleteGroup entries, VM.Group and
// VMSpec.Spread, which a protocol 4 replica would refuse or drop.
var FeatureGroups = Feature{Name: "VM groups", Since: 5}

// FeatureHealthChecks: VMSpec.Health and the health fields of VM reports,
// which a protocol 5 replica would drop (diverging state) and a protocol
// 5 leader would refuse (strict RPC decoding).
var FeatureHealthChecks = Feature{Name: "health checks", Since: 6}

// FeatureSoftRules: VMSpec.Prefer and VMSpec.Avoid, which a protocol 6
// replica would drop (diverging state) and a protocol 6 leader would
// refuse (strict RPC decoding).
var FeatureSoftRules = Feature{Name: "soft placement rules", Since: 7}

// FeatureBalance: the cluster.balance RPC method, which a protocol 6
// leader does not serve, and the standby host mode, which a protocol 6
// replica would refuse (diverging state).
var FeatureBalance = Feature{Name: "the balancer", Since: 7}

// FeatureSnapshots: the TakeSnapshot, FinishSnapshot, RevertSnapshot,
// DeleteSnapshot, ForgetLayers, MergeLayers and SetSnapshotPolicy entries,
// model.VM.Chain and model.VM.SnapshotPolicy, which a
// protocol 7 replica would refuse or drop, and a protocol 7 host would not
// follow (it would start the VM on layer 0 of its disks).
var FeatureSnapshots = Feature{Name: "snapshots", Since: 8}

// FeatureBackups: the backup entries, model.VM.Backup and Restore, and the
// backup targets and catalog of model.Cluster, which a protocol 7 replica
// would refuse or drop.
var FeatureBackups = Feature{Name: "backups", Since: 8}

// FeatureMemorySnapshots: TakeSnapshot.Memory, ForgetLayers.Memory,
// VMReport.Layer, model.Snapshot.Memory and model.Chain's Resume and
// DeadMemory, which a protocol 8 replica would drop (and a protocol 8 host
// would take the snapshot without the memory, or revert to it with a cold
// boot).
var FeatureMemorySnapshots = Feature{Name: "memory snapshots", Since: 9}

// FeatureProjectBackups: the SetProjectBackupPolicy entry and
// model.Project.BackupPolicy, which a protocol 8 replica would refuse.
var FeatureProjectBackups = Feature{Name: "project backup schedules", Since: 9}

// FeatureRecovery: model.Cluster.Recovery and the AdoptGuests and
// EndRecovery entries of a cluster recovered from a backup of its state.
var FeatureRecovery = Feature{Name: "cluster recovery", Since: 9}

// FeatureCommittedLeases: every leader commits a Renewals entry before it
// grants the renewals in it, so a new leader knows every lease granted
// before it and needs no grace after its election. A protocol 9 leader
// grants without one, and a protocol 9 replica skips the entry, so a
// leader relies on it only once every host commits them.
var FeatureCommittedLeases = Feature{Name: "committed lease renewals", Since: 10}

// Enabled reports whether f may be used in a cluster whose state is c.
func (f Feature) Enabled(c model.Cluster) bool { return ClusterProtocol(c) >= f.Since }

// Check returns nil when f may be used, or an error (model.ErrConflict)
// saying which hosts hold it back.
func (f Feature) Check(c model.Cluster, hosts []model.Host) error {
	if f.Enabled(c) {
		return nil
	}
	var older []string
	for _, h := range hosts {
		if p := HostProtocol(h); p < f.Since {
			older = append(older, fmt.Sprintf("%s (protocol %d, version %s)", h.Name, p, orUnknown(h.Version)))
		}
	}
	why := "the leader has not raised it yet"
	if len(older) > 0 {
		slices.Sort(older)
		why = "hosts recorded below it: " + strings.Join(older, ", ") + "; a leader of protocol 1 records none"
	}
	return fmt.Errorf("%s needs cluster protocol %d; the cluster is at protocol %d until every host runs a corral that speaks %d (%s): upgrade them first: %w",
		f.Name, f.Since, ClusterProtocol(c), f.Since, why, model.ErrConflict)
}

func orUnknown(s string) string {
	if s == "" {
		return "unknown"
	}
	return s
}

// ClusterProtocol is the protocol recorded in c; 1 when none is.
func ClusterProtocol(c model.Cluster) int { return max(c.Protocol, 1) }

// HostProtocol is the protocol h ran when last registered; 1 when none is
// recorded (registered by, or gossiping as, a protocol 1 corrald).
func HostProtocol(h model.Host) int { return max(h.Protocol, 1) }

// ErrProtocol: this corrald speaks an older protocol than the cluster's
// state records, so it would misread the log; it must not run.
var ErrProtocol = errors.New("corrald is older than the cluster's protocol")

// CheckProtocol returns an error wrapping ErrProtocol when a corrald
// speaking own may not run on a state whose cluster is c.
func CheckProtocol(own int, c model.Cluster) error {
	if cp := ClusterProtocol(c); own < cp {
		return fmt.Errorf("this corrald speaks cluster protocol %d, but the cluster's state records protocol %d "+
			"(every host ran protocol %d or later when it was raised, and it is never lowered): %w; "+
			"install a corral release of protocol %d or later on this host (the version the other hosts run) and start it again",
			own, cp, cp, ErrProtocol, cp)
	}
	return nil
}

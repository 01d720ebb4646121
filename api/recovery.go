package api

import "time"

// ClusterBackup is a consistent copy of the cluster's state (GET
// /v1/cluster/backup, admin). Data is the whole file that `corrald recover
// --from` reads; it holds the secret keys of S3 backup targets, so keep
// it as you keep a password.
type ClusterBackup struct {
	TakenAt time.Time `json:"taken_at"`
	Host    string    `json:"host"`
	// Applied is the Raft index of the state it holds.
	Applied  uint64 `json:"applied"`
	Protocol int    `json:"protocol"`
	Hosts    int    `json:"hosts"`
	VMs      int    `json:"vms"`
	SHA256   string `json:"sha256"`
	Data     []byte `json:"data"`
}

// Recovery is a cluster recovered from a backup of its state, while it
// adopts the guests its hosts run (GET /v1/cluster/recovery; null when the
// cluster is not recovering).
type Recovery struct {
	At          time.Time `json:"at"`
	By          string    `json:"by"`
	BackupAt    time.Time `json:"backup_at"`
	BackupIndex uint64    `json:"backup_index"`
	// Waiting are the hosts that have not told what they run: until none
	// is, no host starts, stops or removes a guest.
	Waiting   []string `json:"waiting"`
	Adopted   int      `json:"adopted"`
	Moved     int      `json:"moved"`
	Rechained int      `json:"rechained"`
	// Unknown are running guests the state does not know: they run on
	// until the recovery ends, then their hosts remove them (their disks
	// stay in the pool).
	Unknown    []ForeignGuest `json:"unknown"`
	HAWasArmed bool           `json:"ha_was_armed"`
}

// ForeignGuest is a guest a recovering cluster found and does not know.
type ForeignGuest struct {
	Host string `json:"host"`
	Name string `json:"name"`
	VMID string `json:"vm_id"`
	Why  string `json:"why"`
}

// RecoveryEndRequest ends a recovery (POST /v1/cluster/recovery/end).
// Force: while hosts are still waited for — the operator vouches that
// they run no guest (powered off).
type RecoveryEndRequest struct {
	Force bool `json:"force,omitempty"`
}

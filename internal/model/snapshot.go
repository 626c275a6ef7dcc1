package model

import "time"

// SnapshotState is where a snapshot is in its one-way life.
type SnapshotState string

// Snapshot states. A snapshot only moves forward: writing → sealed → claimed,
// or to discarded from any state. A claimed snapshot is never claimed again.
const (
	SnapshotWriting   SnapshotState = "writing"
	SnapshotSealed    SnapshotState = "sealed"
	SnapshotClaimed   SnapshotState = "claimed"
	SnapshotDiscarded SnapshotState = "discarded"
)

// Snapshot is the store's record of a machine's snapshot.
type Snapshot struct {
	ID             string        `json:"id"`
	MachineID      string        `json:"machine_id"`
	State          SnapshotState `json:"state"`
	BootGeneration uint64        `json:"boot_generation"`
	Runtime        string        `json:"runtime"`
	RuntimeVersion string        `json:"runtime_version"`
	Dir            string        `json:"dir"`
	SizeBytes      int64         `json:"size_bytes"`
	Checksum       string        `json:"checksum"`
	// Image identifies the root filesystem the snapshot was taken on (see
	// snapshot.Seal.Image); ImageDigest is its OCI manifest digest, if any,
	// which garbage collection keeps while the record exists.
	Image       string    `json:"image,omitempty"`
	ImageDigest string    `json:"image_digest,omitempty"`
	CreatedAt   time.Time `json:"created_at"`
	ClaimedAt   time.Time `json:"claimed_at,omitempty"`
	// Reason, when set, says why the snapshot cannot be restored although
	// the machine is suspended: its image was left behind when the machine
	// moved to this host (the next start is a cold start that gives it).
	Reason string `json:"reason,omitempty"`
	// HostRunDir: the sandbox the snapshot was taken from had its
	// /run/torpor mounted from the host (package machine, rundir.go), so
	// its restore must mount it again.
	HostRunDir bool `json:"host_run_dir,omitempty"`
}

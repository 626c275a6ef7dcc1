package cluster

import (
	"encoding/json"
	"time"

	"github.com/torpor-dev/torpor/internal/model"
)

// prefix holds every key of the cluster.
const prefix = "/torpor/"

const clusterIDKey = prefix + "cluster-id"

func hostKey(id string) string              { return prefix + "hosts/" + id }
func hostCfgKey(id string) string           { return prefix + "hostcfg/" + id }
func placeKey(id string) string             { return prefix + "place/" + id }
func ownerKey(id string) string             { return prefix + "owners/" + id }
func machineKey(id string) string           { return prefix + "machines/" + id }
func nameKey(app, n string) string          { return prefix + "names/" + app + "/" + n }
func appKey(app string) string              { return prefix + "apps/" + app }
func appGenKey(app string) string           { return prefix + "appgen/" + app }
func appLeaseKey(app string) string         { return prefix + "appleases/" + app }
func tokenKey(id string) string             { return prefix + "tokens/" + id }
func snapshotKey(machine, id string) string { return prefix + "snapshots/" + machine + "/" + id }
func kindPrefix(kind string) string         { return prefix + kind + "/" }

// hostRecord is a host's registration.
type hostRecord struct {
	ID             string    `json:"id"`
	Advertise      string    `json:"advertise"`
	CPUs           int       `json:"cpus"`
	MemoryMB       int       `json:"memory_mb"`
	DiskBytes      int64     `json:"disk_bytes"`
	Runtime        string    `json:"runtime"`
	RuntimeVersion string    `json:"runtime_version"`
	CPU            string    `json:"cpu"`
	Instance       string    `json:"instance"` // the data directory's identity (see marker)
	JoinedAt       time.Time `json:"joined_at"`
}

// hostConfig is what outlives a host's lease: its last registration and
// whether it is cordoned.
type hostConfig struct {
	Host     hostRecord `json:"host"`
	Cordoned bool       `json:"cordoned"`
}

// entry is a machine's record in the directory, as its owner last
// published it.
type entry struct {
	Machine  model.Machine   `json:"machine"`
	Snapshot *model.Snapshot `json:"snapshot,omitempty"`
}

// Snapshot claim states.
const (
	snapSealed  = "sealed"
	snapClaimed = "claimed"
)

// snapRecord is a snapshot's cluster-wide record: absent or sealed until
// one host claims it, then claimed for ever (until the machine goes).
type snapRecord struct {
	Machine   string    `json:"machine"`
	Host      string    `json:"host"`
	State     string    `json:"state"`
	ClaimedBy string    `json:"claimed_by,omitempty"`
	ClaimedAt time.Time `json:"claimed_at,omitzero"`
	// Stored: the image is in the snapshot store, under the key of
	// (Machine, Snapshot.ID); Snapshot is its record (checksum, identity).
	Stored   bool            `json:"stored,omitempty"`
	Snapshot *model.Snapshot `json:"snapshot,omitempty"`
	CPU      string          `json:"cpu,omitempty"` // the seal's host: the CPU features it needs
}

// tokenRecord is an API token with the hash of its secret.
type tokenRecord struct {
	Token model.Token `json:"token"`
	Hash  []byte      `json:"hash"`
}

func mustJSON(v any) string {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err) // only our own record types, which always marshal
	}
	return string(b)
}

package model

import "time"

// Host is one host of a torpor cluster, as GET /v1/hosts serves it.
type Host struct {
	ID        string `json:"id"`
	Advertise string `json:"advertise"`
	// Status is "up" while the host holds its cluster lease, "down" after.
	Status   string `json:"status"`
	Cordoned bool   `json:"cordoned"`
	// Capacity and what the machines it owns reserve of it.
	CPUs             int   `json:"cpus"`
	MemoryMB         int   `json:"memory_mb"`
	DiskBytes        int64 `json:"disk_bytes"`
	ReservedCPUs     int   `json:"reserved_cpus"`
	ReservedMemoryMB int   `json:"reserved_memory_mb"`
	Machines         int   `json:"machines"`
	// Runtime, RuntimeVersion and CPU (architecture and CPU feature flags)
	// decide whose snapshots it can restore.
	Runtime        string    `json:"runtime"`
	RuntimeVersion string    `json:"runtime_version"`
	CPU            string    `json:"cpu"`
	JoinedAt       time.Time `json:"joined_at,omitzero"`
}

// DrainReport is the answer of POST /v1/hosts/{id}/drain: what became of
// each machine of the host.
type DrainReport struct {
	Host  string       `json:"host"`
	Moves []MoveResult `json:"moves"`
}

// MoveResult is one machine's move off a drained host.
type MoveResult struct {
	Machine string `json:"machine"`
	App     string `json:"app"`
	To      string `json:"to,omitempty"`
	// State is the machine's state on its new host.
	State State `json:"state,omitempty"`
	// Snapshot: "carried", "left behind" or "" (none); Reason says why
	// one was left behind.
	Snapshot string `json:"snapshot,omitempty"`
	Reason   string `json:"reason,omitempty"`
	// Error says why the machine could not move (it stays where it was).
	Error string `json:"error,omitempty"`
}

package model

import "time"

// VolumeState is where a volume is in its life. The names are Fly's.
type VolumeState string

// Volume states. A volume is "creating" while its filesystem is made,
// "created" once it can be mounted (attached or not), "extending" while it
// grows, "destroying" while its files are removed; the answer to a destroy
// says "destroyed", and the record is gone after it.
const (
	VolumeCreating   VolumeState = "creating"
	VolumeCreated    VolumeState = "created"
	VolumeExtending  VolumeState = "extending"
	VolumeDestroying VolumeState = "destroying"
	VolumeDestroyed  VolumeState = "destroyed"
)

// Volume is a persistent volume as stored and as served by the API (Fly's
// Volume). A volume belongs to one app and is attached to at most one of its
// machines at a time.
type Volume struct {
	ID    string      `json:"id"`
	Name  string      `json:"name"`
	App   string      `json:"app_name"`
	State VolumeState `json:"state"`
	// SizeGB is the volume's size in GiB (Fly's "GB").
	SizeGB int `json:"size_gb"`
	// FSSizeGB is a torpor extension: the size its filesystem has grown
	// to. It is less than SizeGB after an extend that has to wait for the
	// machine using the volume to restart (see ExtendVolumeResponse).
	FSSizeGB  int    `json:"fs_size_gb"`
	Region    string `json:"region"`
	Zone      string `json:"zone"`
	Encrypted bool   `json:"encrypted"`
	// AttachedMachineID is the machine whose config mounts the volume; nil
	// (JSON null, as Fly sends it) when none does.
	AttachedMachineID *string `json:"attached_machine_id"`
	// AttachedAllocID is Fly's Nomad allocation; always null here.
	AttachedAllocID   *string   `json:"attached_alloc_id"`
	CreatedAt         time.Time `json:"created_at"`
	HostDedicationID  string    `json:"host_dedication_id"`
	SnapshotRetention int       `json:"snapshot_retention"`
	AutoBackupEnabled bool      `json:"auto_backup_enabled"`
	FSType            string    `json:"fstype"`
	// HostStatus is "ok" when the volume's filesystem is mounted on the
	// host and healthy, "error" when it cannot be (see Error).
	HostStatus string `json:"host_status,omitempty"`
	// Usage of the filesystem (statfs), filled in when the volume is read.
	BlockSize   int64  `json:"block_size"`
	Blocks      uint64 `json:"blocks"`
	BlocksFree  uint64 `json:"blocks_free"`
	BlocksAvail uint64 `json:"blocks_avail"`
	// Error is a torpor extension: why the volume cannot be mounted (its
	// backing file is missing or its filesystem corrupt), when it cannot.
	Error string `json:"error,omitempty"`
}

// Attached reports whether a machine holds the volume.
func (v Volume) Attached() bool { return v.AttachedMachineID != nil && *v.AttachedMachineID != "" }

// CreateVolumeRequest is the body of POST /v1/apps/{app}/volumes: Fly's
// fields, which its clients send with null for what is unset.
type CreateVolumeRequest struct {
	Name              string `json:"name"`
	Region            string `json:"region,omitempty"`
	SizeGB            *int   `json:"size_gb,omitempty"`
	Encrypted         *bool  `json:"encrypted,omitempty"`
	RequireUniqueZone *bool  `json:"require_unique_zone,omitempty"`
	MachinesOnly      *bool  `json:"machines_only,omitempty"`
	SnapshotRetention *int   `json:"snapshot_retention,omitempty"`
	AutoBackupEnabled *bool  `json:"auto_backup_enabled,omitempty"`
	FSType            string `json:"fstype,omitempty"`
	// SnapshotID restores a volume snapshot (not supported: torpor takes
	// no volume snapshots).
	SnapshotID string `json:"snapshot_id,omitempty"`
	// SourceVolumeID forks another volume of the app: the new volume
	// starts as a copy of it.
	SourceVolumeID string `json:"source_volume_id,omitempty"`
	// Compute and ComputeImage are placement hints for the machine the
	// volume is meant for; one host places nothing, so they are only checked.
	Compute           *Guest `json:"compute,omitempty"`
	ComputeImage      string `json:"compute_image,omitempty"`
	HostDedicationID  string `json:"host_dedication_id,omitempty"`
	UniqueZoneAppWide *bool  `json:"unique_zone_app_wide,omitempty"`
}

// UpdateVolumeRequest is the body of PUT /v1/apps/{app}/volumes/{id}.
type UpdateVolumeRequest struct {
	SnapshotRetention *int  `json:"snapshot_retention,omitempty"`
	AutoBackupEnabled *bool `json:"auto_backup_enabled,omitempty"`
}

// ExtendVolumeRequest is the body of .../volumes/{id}/extend.
type ExtendVolumeRequest struct {
	SizeGB int `json:"size_gb"`
}

// ExtendVolumeResponse is the answer of .../volumes/{id}/extend.
type ExtendVolumeResponse struct {
	Volume Volume `json:"volume"`
	// NeedsRestart says the filesystem could not grow while a running
	// machine uses it (the host does not allow an online resize): it grows
	// when that machine next starts or resumes. When false, the machine
	// sees the new size at once.
	NeedsRestart bool `json:"needs_restart"`
}

// Mount is one entry of config.mounts: a volume of the machine's app,
// mounted read-write at Path.
type Mount struct {
	// Volume is the volume's ID (vol_...).
	Volume string `json:"volume"`
	Path   string `json:"path"`
	// Name is the volume's name; filled in from the volume when empty.
	Name string `json:"name,omitempty"`
	// SizeGB and Encrypted are filled in from the volume, as Fly does.
	SizeGB    int  `json:"size_gb,omitempty"`
	Encrypted bool `json:"encrypted,omitempty"`
	// Fly's automatic extension; torpor refuses a non-zero value (extend
	// volumes with .../extend).
	ExtendThresholdPercent int `json:"extend_threshold_percent,omitempty"`
	AddSizeGB              int `json:"add_size_gb,omitempty"`
	SizeGBLimit            int `json:"size_gb_limit,omitempty"`
}

package volume

import (
	"fmt"
	"path"
	"strings"

	"github.com/torpor-dev/torpor/internal/identifiers"
	"github.com/torpor-dev/torpor/internal/model"
)

// Bounds and defaults of a volume (Fly's, where Fly has one).
const (
	DefaultSizeGB            = 1
	DefaultMaxSizeGB         = 500
	defaultSnapshotRetention = 5
	maxSnapshotRetention     = 60
	maxMounts                = 8
	maxMountPath             = 4096
)

func invalid(format string, args ...any) error {
	return model.Errorf(model.KindInvalid, format, args...)
}

// checkCreate checks a create request, naming the field and the rule.
func (m *Manager) checkCreate(req *model.CreateVolumeRequest) error {
	if err := identifiers.VolumeName("name", req.Name); err != nil {
		return err
	}
	if err := identifiers.Region("region", req.Region); err != nil {
		return err
	}
	if req.SourceVolumeID != "" {
		if err := identifiers.VolumeID("source_volume_id", req.SourceVolumeID); err != nil {
			return err
		}
	}
	switch {
	case req.SizeGB != nil && (*req.SizeGB < 1 || *req.SizeGB > m.cfg.MaxSizeGB):
		return invalid("size_gb must be between 1 and %d, got %d", m.cfg.MaxSizeGB, *req.SizeGB)
	case req.FSType != "" && req.FSType != "ext4":
		return invalid("fstype must be \"ext4\" (the default), got %q: raw volumes are not supported", req.FSType)
	case req.SnapshotRetention != nil && (*req.SnapshotRetention < 1 || *req.SnapshotRetention > maxSnapshotRetention):
		return invalid("snapshot_retention must be between 1 and %d days, got %d", maxSnapshotRetention, *req.SnapshotRetention)
	case req.SnapshotID != "":
		return invalid("snapshot_id: volume snapshots are not supported (fork a volume with source_volume_id instead)")
	case len(req.ComputeImage) > 4096 || !printable(req.ComputeImage):
		return invalid("compute_image must be at most 4096 printable characters")
	case len(req.HostDedicationID) > 128 || !printable(req.HostDedicationID):
		return invalid("host_dedication_id must be at most 128 printable characters")
	}
	if c := req.Compute; c != nil && (c.CPUs < 0 || c.MemoryMB < 0 || c.GPUs < 0) {
		return invalid("compute.cpus, compute.memory_mb and compute.gpus must not be negative")
	}
	return nil
}

// checkUpdate checks an update request.
func checkUpdate(req *model.UpdateVolumeRequest) error {
	if r := req.SnapshotRetention; r != nil && (*r < 1 || *r > maxSnapshotRetention) {
		return invalid("snapshot_retention must be between 1 and %d days, got %d", maxSnapshotRetention, *r)
	}
	return nil
}

// CheckMounts checks config.mounts on its own (the volumes themselves are
// checked when the machine takes them, see Attach): each names a volume ID
// once, at an absolute path that is not the root, not a kernel filesystem
// and not inside another mount's path.
func CheckMounts(mounts []model.Mount) error {
	if len(mounts) > maxMounts {
		return invalid("config.mounts: at most %d mounts, got %d", maxMounts, len(mounts))
	}
	seen := map[string]int{}
	for i, mt := range mounts {
		field := fmt.Sprintf("config.mounts[%d]", i)
		switch {
		case mt.Volume == "":
			return invalid("%s.volume is required (the volume's ID, vol_...)", field)
		case !identifiers.IsVolumeID(mt.Volume):
			return identifiers.VolumeID(field+".volume", mt.Volume)
		case mt.Name != "" && !identifiers.IsVolumeName(mt.Name):
			return identifiers.VolumeName(field+".name", mt.Name)
		case mt.ExtendThresholdPercent != 0 || mt.AddSizeGB != 0 || mt.SizeGBLimit != 0:
			return invalid("%s: automatic extension (extend_threshold_percent, add_size_gb, size_gb_limit) is not supported; "+
				"grow the volume with POST /v1/apps/{app}/volumes/{id}/extend", field)
		case mt.SizeGB < 0:
			return invalid("%s.size_gb must not be negative", field)
		}
		if err := checkMountPath(field+".path", mt.Path); err != nil {
			return err
		}
		if j, ok := seen[mt.Volume]; ok {
			return invalid("%s.volume: volume %s is already mounted by config.mounts[%d]", field, mt.Volume, j)
		}
		seen[mt.Volume] = i
		for j := range i {
			if p, q := mt.Path, mounts[j].Path; p == q || strings.HasPrefix(p, q+"/") || strings.HasPrefix(q, p+"/") {
				return invalid("%s.path %q overlaps config.mounts[%d].path %q", field, p, j, q)
			}
		}
	}
	return nil
}

// reservedPaths are where a volume may not go: the kernel's filesystems
// and the files torpor provides.
var reservedPaths = []string{"/proc", "/sys", "/dev", "/etc/hosts", "/etc/hostname", "/etc/resolv.conf", "/.fly", "/.torpor"}

func checkMountPath(field, p string) error {
	switch {
	case p == "":
		return invalid("%s is required (an absolute path inside the machine, e.g. /data)", field)
	case len(p) > maxMountPath || strings.ContainsRune(p, 0) || !printable(p):
		return invalid("%s must be at most %d printable characters", field, maxMountPath)
	case !strings.HasPrefix(p, "/"):
		return invalid("%s %q must be an absolute path", field, p)
	case path.Clean(p) != p:
		return invalid("%s %q must be a clean path (no trailing slash, \".\", \"..\" or double slashes); use %q", field, p, path.Clean(p))
	case p == "/":
		return invalid("%s must not be / (the machine's root filesystem)", field)
	}
	for _, r := range reservedPaths {
		if p == r || strings.HasPrefix(p, r+"/") || strings.HasPrefix(r, p+"/") {
			return invalid("%s %q must not be or contain %s, which torpor provides", field, p, r)
		}
	}
	return nil
}

// printable reports whether s has no control characters.
func printable(s string) bool {
	return !strings.ContainsFunc(s, func(c rune) bool { return c < 0x20 || c == 0x7f })
}

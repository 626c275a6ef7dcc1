package machine

import (
	"path/filepath"

	"github.com/torpor-dev/torpor/internal/diskusage"
	"github.com/torpor-dev/torpor/internal/runtime"
)

// SnapshotUsage is what snapshot images take on disk now.
type SnapshotUsage struct {
	// Images counts the image directories of every machine (sealed, being
	// written, or claimed and not yet deleted).
	Images int
	// Bytes is the disk space their files take (allocated blocks), the
	// trash of restored images waiting to be deleted included, and what
	// the runtime keeps of its own for them (runtime.DiskUser: the gvisor
	// driver's pages files for running machines' next suspends).
	Bytes int64
}

// SnapshotUsage measures the snapshot images on disk. It walks the
// machines' snapshot directories without taking any machine's lock, so a
// suspend or resume running meanwhile may or may not be counted.
func (m *Manager) SnapshotUsage() (SnapshotUsage, error) {
	var u SnapshotUsage
	dirs, err := filepath.Glob(filepath.Join(m.cfg.DataDir, "machines", "*", "snapshots", "*"))
	if err != nil {
		return u, err
	}
	trash, _ := filepath.Glob(filepath.Join(m.trashDir(), "*"))
	if du, ok := m.rt.(runtime.DiskUser); ok {
		n, err := du.DiskBytes()
		if err != nil {
			return u, err
		}
		u.Bytes += n
	}
	for i, dir := range append(dirs, trash...) {
		du, err := diskusage.Of(dir)
		if err != nil {
			return u, err
		}
		if i < len(dirs) {
			u.Images++
		}
		u.Bytes += du.Allocated
	}
	return u, nil
}

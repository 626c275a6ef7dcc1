package machine

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"

	"github.com/torpor-dev/torpor/internal/model"
	"github.com/torpor-dev/torpor/internal/runtime"
)

// A machine's /run/torpor, where the app finds its generation file
// (docs/app-authors.md), is a directory of the host mounted read-only into
// the machine, one per boot generation: DATA_DIR/machines/<id>/run-<gen>.
// The daemon writes the file there itself (written aside, then renamed), at
// a cold start before the boot and after a restore before the thaw, so that
// no process has to start inside the machine for it: after a restore that
// process ran beside the clock reading, and two processes started at once
// in a sandbox slowed each other (the pair took 36-59 ms where the reading
// alone took 26 ms; docs/benchmarks.md).
//
// The directory also tells which machines have it: a sandbox is restored
// with the mounts it was booted with, and one booted by a daemon before
// this one (adopted, then suspended) has no such mount. Its generation file
// is then written from inside, as before (frozenGenerationScript). The
// snapshot record carries the fact (model.Snapshot.HostRunDir) to another
// host when the machine moves.

// guestRunPrefix starts the name of a boot generation's run directory.
const guestRunPrefix = "run-"

// guestRunDir is the host directory behind /run/torpor of mc's current boot
// generation.
func (m *Manager) guestRunDir(mc model.Machine) string {
	return filepath.Join(m.machineDir(mc.ID), guestRunPrefix+strconv.FormatUint(mc.BootGeneration, 10))
}

// hasGuestRunDir reports whether mc's current boot generation mounts its
// /run/torpor from the host.
func (m *Manager) hasGuestRunDir(mc model.Machine) bool {
	fi, err := os.Stat(m.guestRunDir(mc))
	return err == nil && fi.IsDir()
}

// makeGuestRunDir creates the run directory of mc's new boot generation
// with its first generation file, and deletes those of older generations
// (a cold start discards their snapshots too).
func (m *Manager) makeGuestRunDir(mc model.Machine) error {
	dir := m.guestRunDir(mc)
	old, _ := filepath.Glob(filepath.Join(m.machineDir(mc.ID), guestRunPrefix+"*"))
	for _, d := range old {
		if d != dir {
			if err := os.RemoveAll(d); err != nil {
				return err
			}
		}
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	return writeGenerationFile(dir, generation{boot: mc.BootGeneration})
}

// adoptGuestRunDir creates, for a machine that moved here suspended, the run
// directory its snapshot's sandbox was booted with, if it had one.
func (m *Manager) adoptGuestRunDir(mc model.Machine, snap *model.Snapshot) error {
	if snap == nil || !snap.HostRunDir || snap.State != model.SnapshotSealed {
		return nil
	}
	return os.MkdirAll(m.guestRunDir(mc), 0o755)
}

// guestRunMount is the mount of mc's run directory, if it has one.
func (m *Manager) guestRunMount(mc model.Machine) []runtime.Mount {
	if !m.hasGuestRunDir(mc) {
		return nil
	}
	return []runtime.Mount{{Source: m.guestRunDir(mc), Destination: filepath.Dir(generationFile), ReadOnly: true}}
}

// writeGenerationFile replaces dir's generation file with g's content,
// atomically: a reader sees the old file or the new one.
func writeGenerationFile(dir string, g generation) error {
	name := filepath.Join(dir, filepath.Base(generationFile))
	tmp := name + ".tmp"
	if err := os.WriteFile(tmp, []byte(g.content()), 0o644); err != nil {
		return fmt.Errorf("writing %s: %w", generationFile, err)
	}
	if err := os.Rename(tmp, name); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("writing %s: %w", generationFile, err)
	}
	return nil
}

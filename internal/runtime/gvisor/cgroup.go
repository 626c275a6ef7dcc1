package gvisor

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	specs "github.com/opencontainers/runtime-spec/specs-go"
)

// cgroupRoot is where the host's cgroup file systems are mounted.
var cgroupRoot = "/sys/fs/cgroup"

// cgroupParent is the cgroup every sandbox's cgroup is made in
// (config.json's cgroupsPath is cgroupParent/ID, spec.go).
const cgroupParent = "torpor"

// cgroupDirs are the directories of sandbox id's cgroup that exist: the
// one of the unified hierarchy (cgroup v2), or one per v1 hierarchy.
func cgroupDirs(id string) []string {
	var dirs []string
	if _, err := os.Stat(filepath.Join(cgroupRoot, "cgroup.controllers")); err == nil {
		dir := filepath.Join(cgroupRoot, cgroupParent, id)
		if _, err := os.Stat(dir); err == nil {
			dirs = append(dirs, dir)
		}
		return dirs
	}
	hierarchies, _ := os.ReadDir(cgroupRoot)
	for _, h := range hierarchies {
		dir := filepath.Join(cgroupRoot, h.Name(), cgroupParent, id)
		if _, err := os.Stat(dir); err == nil {
			dirs = append(dirs, dir)
		}
	}
	return dirs
}

// oomKilled reports whether the kernel's OOM killer killed a process of
// sandbox id's cgroup for exceeding the cgroup's memory limit: the
// oom_kill counter of memory.events (v2) or memory.oom_control (v1). The
// cgroup is the sandbox's own, made at its boot, so any kill counts. With
// gVisor, the process killed is the sandbox itself (its Sentry holds the
// guest's memory), and runsc reports the guest's init killed by SIGKILL.
func oomKilled(id string) bool {
	for _, dir := range cgroupDirs(id) {
		for _, file := range []string{"memory.events", "memory.oom_control"} {
			data, err := os.ReadFile(filepath.Join(dir, file))
			if err != nil {
				continue
			}
			if n, ok := counter(data, "oom_kill"); ok && n > 0 {
				return true
			}
		}
	}
	return false
}

// counter finds "name N" among the lines of a cgroup file.
func counter(data []byte, name string) (int64, bool) {
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), " ")
		if ok && k == name {
			n, err := strconv.ParseInt(strings.TrimSpace(v), 10, 64)
			return n, err == nil
		}
	}
	return 0, false
}

// removeCgroups removes what is left of sandbox id's cgroup once the
// sandbox is deleted (issue 17, F16: an empty cgroup stayed behind now and
// then). runsc removes only the cgroups it made: one that existed when the
// sandbox booted (left by a create the daemon's death cut short) is reused
// and then stays for good; and a cgroup whose last process has not
// finished exiting cannot be removed yet (rmdir: EBUSY), so it retries for
// up to a second.
func removeCgroups(id string) error {
	deadline := time.Now().Add(time.Second)
	for {
		var busy error
		for _, dir := range cgroupDirs(id) {
			if err := os.Remove(dir); err != nil && !errors.Is(err, os.ErrNotExist) {
				busy = err
			}
		}
		if busy == nil || time.Now().After(deadline) {
			return busy
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Limits during checkpoint and restore.
//
// A machine's CPU quota (guest.cpus) throttles the sandbox while it saves
// or loads its memory: a 1 GiB restore spent 0.95–1.2 s throttled under a
// 1-CPU quota, and loading pages ran at 0.93 GB/s instead of 2.2–2.5 GB/s
// without it (issue 16). Its memory limit, which also bounds the page cache
// the sandbox's writes are charged to, evicted a checkpoint image as it was
// being written, so sealing it read it back from disk. So:
//
//   - Checkpoint lifts the CPU quota and doubles the memory limit of the
//     sandbox's cgroup just before `runsc checkpoint` (the app is frozen by
//     then; the sandbox dies after a checkpoint, so nothing needs putting
//     back unless the sandbox keeps running: a failed checkpoint, or
//     CheckpointLive, which put the limits back);
//   - Restore creates the sandbox's cpu cgroup itself, without a quota,
//     before `runsc restore`, which then uses the directory as it finds it
//     (runsc leaves a pre-created cgroup controller alone: it neither
//     configures nor deletes it), and writes the quota once the restore has
//     returned, before the app is thawed. The memory controller is still
//     runsc's, configured from config.json, so the sandbox's memory size is
//     the same as at boot. The driver removes the cgroup directories left
//     (Kill, a failed restore, after a checkpoint: removeCgroups) and any
//     leftover before a Boot, so a cold-booted sandbox always gets runsc's own,
//     limited cgroup; and Wait, which supervises every sandbox the daemon
//     runs or adopts, writes the quota if a daemon died before it did.
//
// This is cgroup v1 only (the hierarchies under /sys/fs/cgroup, where runsc
// looks); on a cgroup v2 host the driver leaves limits to runsc as before.

// cgroupV1 reports whether the host has the cgroup v1 cpu and memory
// hierarchies the driver adjusts.
var cgroupV1 = sync.OnceValue(func() bool {
	if _, err := os.Stat(filepath.Join(cgroupRoot, "cgroup.controllers")); err == nil {
		return false // unified (v2) hierarchy at the root
	}
	for _, c := range []string{"cpu", "memory"} {
		if _, err := os.Stat(filepath.Join(cgroupRoot, c, "tasks")); err != nil {
			return false
		}
	}
	return true
})

// cgroupDir is the sandbox id's directory in the v1 controller.
func cgroupDir(controller, id string) string {
	return filepath.Join(cgroupRoot, controller, cgroupParent, id)
}

// readInt reads a cgroup file holding one integer.
func readInt(path string) (int64, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return 0, err
	}
	return strconv.ParseInt(strings.TrimSpace(string(data)), 10, 64)
}

// writeInt writes one integer to a cgroup file.
func writeInt(path string, v int64) error {
	if err := os.WriteFile(path, []byte(strconv.FormatInt(v, 10)), 0o644); err != nil {
		return fmt.Errorf("gvisor: cgroup: %w", err)
	}
	return nil
}

// setCPUQuota gives the cpu cgroup at dir a quota of cpus CPUs per
// cpuPeriodUS (ociResources' numbers); cpus <= 0 lifts the quota.
func setCPUQuota(dir string, cpus int) error {
	if cpus <= 0 {
		return writeInt(filepath.Join(dir, "cpu.cfs_quota_us"), -1)
	}
	if err := writeInt(filepath.Join(dir, "cpu.cfs_period_us"), cpuPeriodUS); err != nil {
		return err
	}
	return writeInt(filepath.Join(dir, "cpu.cfs_quota_us"), int64(cpus)*cpuPeriodUS)
}

// unlimited is what cgroup v1 reads back for "no memory limit" (a page-
// aligned LONG_MAX); anything at least this large counts as unlimited.
const unlimited = int64(1) << 62

// liftedLimits is what liftForCheckpoint changed, to put back.
type liftedLimits struct {
	id       string
	quota    int64 // the cpu.cfs_quota_us before, 0: untouched
	memLimit int64 // the memory.limit_in_bytes before, 0: untouched
}

// liftForCheckpoint lifts sandbox id's CPU quota and doubles its memory
// limit (headroom for the page cache of the image being written). What it
// could not change it leaves: a checkpoint under the limits works, slower.
// keep (Config.KeepLimits) changes nothing, keepMemory
// (Config.KeepMemoryLimit) leaves the memory limit.
func liftForCheckpoint(id string, keep, keepMemory bool) liftedLimits {
	l := liftedLimits{id: id}
	if keep || !cgroupV1() {
		return l
	}
	cpu := cgroupDir("cpu", id)
	if q, err := readInt(filepath.Join(cpu, "cpu.cfs_quota_us")); err == nil && q > 0 {
		if writeInt(filepath.Join(cpu, "cpu.cfs_quota_us"), -1) == nil {
			l.quota = q
		}
	}
	limitFile := filepath.Join(cgroupDir("memory", id), "memory.limit_in_bytes")
	if m, err := readInt(limitFile); !keepMemory && err == nil && m > 0 && m < unlimited/2 {
		if writeInt(limitFile, 2*m) == nil {
			l.memLimit = m
		}
	}
	return l
}

// restore puts back the limits liftForCheckpoint changed, for a sandbox
// that keeps running.
func (l liftedLimits) restore() error {
	var errs []error
	if l.quota > 0 {
		errs = append(errs, writeInt(filepath.Join(cgroupDir("cpu", l.id), "cpu.cfs_quota_us"), l.quota))
	}
	if l.memLimit > 0 {
		errs = append(errs, writeInt(filepath.Join(cgroupDir("memory", l.id), "memory.limit_in_bytes"), l.memLimit))
	}
	return errors.Join(errs...)
}

// precreateCPUCgroup creates sandbox id's cpu cgroup without a quota, for
// a restore (see above). It reports whether it did: false (and no error)
// when the machine has no CPU quota, the host is not cgroup v1 or keep
// (Config.KeepLimits) is set.
func precreateCPUCgroup(id string, cpus int, keep bool) (bool, error) {
	if keep || cpus <= 0 || !cgroupV1() {
		return false, nil
	}
	dir := cgroupDir("cpu", id)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return false, fmt.Errorf("gvisor: creating the cpu cgroup: %w", err)
	}
	// A directory left by an earlier restore keeps its quota: lift it.
	return true, setCPUQuota(dir, 0)
}

// ensureCPUQuota gives sandbox id's cpu cgroup the quota its config.json in
// bundle asks for, if the cgroup has none: a restore whose daemon died
// between runsc returning and the quota being written leaves the driver's
// cgroup without one. Best effort: what it cannot read or write it leaves.
func ensureCPUQuota(id, bundle string) {
	if !cgroupV1() || bundle == "" {
		return
	}
	data, err := os.ReadFile(filepath.Join(bundle, configFile))
	if err != nil {
		return
	}
	var spec specs.Spec
	if json.Unmarshal(data, &spec) != nil || spec.Linux == nil || spec.Linux.Resources == nil ||
		spec.Linux.Resources.CPU == nil || spec.Linux.Resources.CPU.Quota == nil || *spec.Linux.Resources.CPU.Quota <= 0 {
		return
	}
	file := filepath.Join(cgroupDir("cpu", id), "cpu.cfs_quota_us")
	if q, err := readInt(file); err == nil && q <= 0 {
		_ = writeInt(file, *spec.Linux.Resources.CPU.Quota)
	}
}

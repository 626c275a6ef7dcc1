package gvisor

import (
	"fmt"
	"os"
	"slices"
	"strings"
)

// Huge pages for machine memory. runsc backs a sandbox's memory with a
// memfd and asks the kernel for transparent huge pages on it
// (-app-huge-pages, on by default), but only when two host settings allow
// it (runsc/boot/loader.go, createMemoryFile):
//   - the shmem policy (ShmemEnabledPath) is "always", "within_size" or
//     "force"; or it is "advise" and
//   - the huge page defrag policy (DefragPath) is "always", "defer" or
//     "never": under "madvise" or "defer+madvise" a fault in a region that
//     asked for huge pages may stall in direct compaction where the host's
//     own anonymous memory would not, so runsc stays with 4 KiB pages.
//
// docs/suspend-resume.md#huge-pages says what the daemon sets. Debian's
// defaults are shmem "never" and defrag "madvise": every page of a
// checkpoint is then saved from, and every page of a restore loaded into,
// 4 KiB pages. Measured on a 2-core AMD EPYC VM (2026-12-04), a 64 MiB
// heap restored into a sandbox created ahead, 3 restores each: runsc's
// page loading 47–62 ms (1.1–1.5 GB/s) with shmem "advise" and defrag
// "madvise", 19 ms (3.7 GB/s) with defrag "defer"; outside gVisor, a
// 256 MiB read from the page cache into a fresh memfd mapping took 200–275
// ms with 4 KiB pages and 27 ms with huge pages (once the host had the
// memory at hand).

// ShmemEnabledPath is the host's shmem transparent huge page policy.
const ShmemEnabledPath = "/sys/kernel/mm/transparent_hugepage/shmem_enabled"

// DefragPath is the host's transparent huge page defrag policy.
const DefragPath = "/sys/kernel/mm/transparent_hugepage/defrag"

// ShmemHugePages reads the policy in path (ShmemEnabledPath or
// DefragPath): the word in brackets, e.g. "never" of "always within_size
// advise [never] deny force".
func ShmemHugePages(path string) (string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return "", fmt.Errorf("gvisor: reading the huge page policy %s: %w", path, err)
	}
	s := string(b)
	i, j := strings.IndexByte(s, '['), strings.IndexByte(s, ']')
	if i < 0 || j < i {
		return "", fmt.Errorf("gvisor: %s: no policy in brackets in %q", path, strings.TrimSpace(s))
	}
	return s[i+1 : j], nil
}

// EnableShmemHugePages sets the policy in path to "advise" when it is
// "never", so that runsc's huge pages take effect; it changes nothing
// else: "deny" is an operator's explicit choice, and "always",
// "within_size" and "force" grant them already. "advise" only gives huge
// pages to mappings that ask for them (madvise MADV_HUGEPAGE), so the rest
// of the host is unaffected. It returns the policy before and after.
func EnableShmemHugePages(path string) (before, after string, err error) {
	return setPolicy(path, "advise", "never")
}

// EnableHugePageDefrag sets the defrag policy in path (DefragPath) to
// "defer" when it is "madvise" or "defer+madvise", which runsc refuses
// huge pages under (with shmem "advise"). Only regions that asked for huge
// pages differ between those and "defer": their faults wake kcompactd
// instead of compacting memory themselves, which is what the host's other
// anonymous memory gets already. "always" and "never" are an operator's
// choice and runsc takes them. It returns the policy before and after.
func EnableHugePageDefrag(path string) (before, after string, err error) {
	return setPolicy(path, "defer", "madvise", "defer+madvise")
}

// setPolicy writes want to path when its policy is one of from.
func setPolicy(path, want string, from ...string) (before, after string, err error) {
	before, err = ShmemHugePages(path)
	if err != nil || !slices.Contains(from, before) {
		return before, before, err
	}
	if err := os.WriteFile(path, []byte(want), 0o644); err != nil {
		return before, before, fmt.Errorf("gvisor: setting the huge page policy %s to %s: %w", path, want, err)
	}
	after, err = ShmemHugePages(path)
	return before, after, err
}

// HugePagesGranted reports whether runsc backs machine memory with huge
// pages under the shmem policy and the defrag policy (as
// runsc/boot/loader.go decides it).
func HugePagesGranted(shmem, defrag string) bool {
	switch shmem {
	case "always", "within_size", "force":
		return true
	case "advise":
		return defrag == "always" || defrag == "defer" || defrag == "never"
	}
	return false
}

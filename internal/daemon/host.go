package daemon

import (
	goruntime "runtime"

	"golang.org/x/sys/unix"
)

// What this host gives machines by default (--host-memory-mb, --host-cpus).

// hostMemoryMB is the host's memory less a reserve for the daemon, runsc's
// own processes and the page cache: a tenth, at least 512 MB and at most
// 4 GiB. 0 when the kernel does not say.
func hostMemoryMB() int {
	var si unix.Sysinfo_t
	if unix.Sysinfo(&si) != nil {
		return 0
	}
	total := int(uint64(si.Totalram) * uint64(si.Unit) >> 20)
	return max(0, total-min(max(total/10, 512), 4096))
}

// hostCPUs is the number of CPUs the daemon may use.
func hostCPUs() int { return goruntime.NumCPU() }

// machineLimits returns cfg's host sizes with their defaults filled in:
// 0 takes the host's (less a reserve), -1 is no limit.
func machineLimits(cfg Config) (memoryMB, cpus int) {
	memoryMB, cpus = cfg.HostMemoryMB, cfg.HostCPUs
	if memoryMB == 0 {
		memoryMB = hostMemoryMB()
	}
	if cpus == 0 {
		cpus = hostCPUs()
	}
	return max(memoryMB, 0), max(cpus, 0)
}

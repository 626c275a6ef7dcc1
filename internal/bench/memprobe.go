package bench

import (
	"bufio"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// MemoryProbe says how fast this host gives out memory that nothing here
// has touched lately. A suspend writes its snapshot into new page cache and
// a resume loads it into new sandbox memory, so at 1 GiB they can go no
// faster than this. On a bare-metal host that is the kernel zeroing pages
// (several GB/s); in a VM whose guest kernel returns freed memory to the
// hypervisor (free page reporting, as on this project's CI and bench hosts)
// memory beyond what the guest still holds must be faulted in by the
// hypervisor again, page by page: an order of magnitude slower.
type MemoryProbe struct {
	StepMiB int       `json:"step_mib"`
	StepsMS []float64 `json:"steps_ms"` // the first touch of each step, in order
	// FastGBps is the median rate of the steps before the first slow one;
	// SlowGBps that of the slow ones and KneeMiB the memory touched before
	// the first (both 0: every step was fast).
	FastGBps float64 `json:"fast_gbps"`
	SlowGBps float64 `json:"slow_gbps,omitempty"`
	KneeMiB  int     `json:"knee_mib,omitempty"`
	// PageReporting describes the guest kernel's free page reporting when
	// it is on ("" otherwise).
	PageReporting string `json:"page_reporting,omitempty"`
}

// probeStepMiB is the probe's step.
const probeStepMiB = 256

// slowFactor: a step this many times slower than the first steps' median
// counts as slow.
const slowFactor = 3

// probeMemory maps anonymous memory stepMiB at a time, up to maxMiB (less
// if the host has less than three times that available), and times the
// first write to each of its 4 KiB pages, without huge pages. It stops
// three steps after the first slow one. Everything is unmapped before it
// returns.
func probeMemory(maxMiB, stepMiB int) (*MemoryProbe, error) {
	if stepMiB <= 0 || maxMiB < stepMiB {
		return nil, fmt.Errorf("memory probe: step %d MiB, at most %d MiB", stepMiB, maxMiB)
	}
	if avail := memAvailableMiB(); avail > 0 && maxMiB > avail/3 {
		maxMiB = avail / 3
	}
	var maps [][]byte
	defer func() {
		for _, m := range maps {
			_ = unix.Munmap(m)
		}
	}()
	page := os.Getpagesize()
	var steps []float64
	slowAfter := -1
	for len(steps)*stepMiB+stepMiB <= maxMiB {
		m, err := unix.Mmap(-1, 0, stepMiB<<20, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS)
		if err != nil {
			return nil, fmt.Errorf("memory probe: %w", err)
		}
		maps = append(maps, m)
		_ = unix.Madvise(m, unix.MADV_NOHUGEPAGE)
		start := time.Now()
		for off := 0; off < len(m); off += page {
			m[off] = 1
		}
		steps = append(steps, float64(time.Since(start).Microseconds())/1e3)
		if slowAfter < 0 && slowStep(steps, len(steps)-1) {
			slowAfter = len(steps) - 1
		}
		if slowAfter >= 0 && len(steps) >= slowAfter+3 {
			break
		}
	}
	if len(steps) == 0 {
		return nil, fmt.Errorf("memory probe: less than %d MiB to spare", stepMiB)
	}
	p := summarizeProbe(steps, stepMiB)
	p.PageReporting = pageReporting("/sys")
	return p, nil
}

// slowStep reports whether step i (from the fourth on) took slowFactor
// times the median of the first three.
func slowStep(steps []float64, i int) bool {
	return i >= 3 && steps[i] > slowFactor*Percentile(steps[:3], 50)
}

// summarizeProbe turns the steps' times into rates (slowStep says which
// are slow); the rates are those of the p50 steps, as the report's p50s.
func summarizeProbe(steps []float64, stepMiB int) *MemoryProbe {
	p := &MemoryProbe{StepMiB: stepMiB, StepsMS: steps}
	var fast, slow []float64
	for i, ms := range steps {
		if slowStep(steps, i) {
			if p.KneeMiB == 0 {
				p.KneeMiB = i * stepMiB
			}
			slow = append(slow, ms)
		} else if p.KneeMiB == 0 {
			fast = append(fast, ms)
		}
	}
	rate := func(ms float64) float64 { return float64(stepMiB<<20) / (ms / 1e3) / 1e9 }
	p.FastGBps = rate(Percentile(fast, 50))
	if len(slow) > 0 {
		p.SlowGBps = rate(Percentile(slow, 50))
	}
	return p
}

// memAvailableMiB is /proc/meminfo's MemAvailable in MiB (0 if unknown).
func memAvailableMiB() int {
	f, err := os.Open("/proc/meminfo")
	if err != nil {
		return 0
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "MemAvailable:"); ok {
			kb, _ := strconv.Atoi(strings.TrimSuffix(strings.TrimSpace(v), " kB"))
			return kb >> 10
		}
	}
	return 0
}

// virtioBalloonReporting is the virtio feature bit of free page reporting
// (VIRTIO_BALLOON_F_REPORTING).
const virtioBalloonReporting = 5

// pageReporting describes free page reporting under sys (normally /sys)
// when a virtio balloon device negotiated it: the guest kernel hands free
// blocks of 2^order pages back to the hypervisor.
func pageReporting(sys string) string {
	devs, _ := filepath.Glob(filepath.Join(sys, "bus/virtio/drivers/virtio_balloon/virtio*/features"))
	on := false
	for _, d := range devs {
		bits, err := os.ReadFile(d)
		if err == nil && len(bits) > virtioBalloonReporting && bits[virtioBalloonReporting] == '1' {
			on = true
		}
	}
	if !on {
		return ""
	}
	desc := "on (virtio balloon)"
	if order, err := os.ReadFile(filepath.Join(sys, "module/page_reporting/parameters/page_reporting_order")); err == nil {
		if n, err := strconv.Atoi(strings.TrimSpace(string(order))); err == nil && n >= 0 && n < 20 {
			desc += fmt.Sprintf(", free blocks of %d KiB and up returned to the hypervisor", (os.Getpagesize()>>10)<<n)
		}
	}
	return desc
}

// String is the report's sentence about the probe.
func (p *MemoryProbe) String() string {
	if p == nil {
		return ""
	}
	s := fmt.Sprintf("Fresh memory (first write to each 4 KiB page of anonymous memory, %d MiB at a time, before the scenarios): %.2f GB/s", p.StepMiB, p.FastGBps)
	if p.SlowGBps > 0 {
		s += fmt.Sprintf(" for the first %d MiB, then %.2f GB/s", p.KneeMiB, p.SlowGBps)
	} else {
		s += fmt.Sprintf(" over all %d MiB", p.StepMiB*len(p.StepsMS))
	}
	if p.PageReporting != "" {
		s += "; free page reporting " + p.PageReporting
	}
	return s + ". A suspend writes its snapshot into new page cache and a resume loads it into new memory: beyond what the host holds ready, neither can go faster than the slower rate."
}

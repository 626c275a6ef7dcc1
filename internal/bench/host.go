package bench

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	goruntime "runtime"
	"runtime/debug"
	"strings"
	"time"

	"github.com/torpor-dev/torpor/internal/runtime/gvisor"
)

// Result is a whole benchmark run.
type Result struct {
	Started      time.Time        `json:"started"`
	Finished     time.Time        `json:"finished"`
	Host         HostInfo         `json:"host"`
	Runs         int              `json:"runs"`
	PollInterval string           `json:"poll_interval"`
	Scenarios    []ScenarioResult `json:"scenarios"`
	Images       *ImageResult     `json:"images,omitempty"`
	// DaemonFlags are the in-process daemon's flags that differ from
	// torpor serve's defaults (e.g. --clock-gate), for comparing runs.
	DaemonFlags []string `json:"daemon_flags,omitempty"`
}

// HostInfo describes where the numbers were measured.
type HostInfo struct {
	CPU       string `json:"cpu"`
	Cores     int    `json:"cores"`
	Kernel    string `json:"kernel"`
	Runsc     string `json:"runsc"`
	Torpor    string `json:"torpor"` // the VCS revision the binary was built from
	Go        string `json:"go"`
	LoadStart string `json:"load_start"` // /proc/loadavg's 1, 5 and 15 minute averages
	LoadEnd   string `json:"load_end"`
	// Memory is the fresh-memory probe taken before the scenarios
	// (Config.MemoryProbeMiB; nil when off).
	Memory *MemoryProbe `json:"memory_probe,omitempty"`
	// HugePages says the host's huge page policies once the daemon
	// started, and whether runsc backs machine memory with huge pages
	// under them (gvisor.HugePagesGranted).
	HugePages string `json:"huge_pages,omitempty"`
}

// hugePageState describes the host's huge page policies for the report.
func hugePageState() string {
	shmem, err1 := gvisor.ShmemHugePages(gvisor.ShmemEnabledPath)
	defrag, err2 := gvisor.ShmemHugePages(gvisor.DefragPath)
	if err := errors.Join(err1, err2); err != nil {
		return "unknown (" + err.Error() + ")"
	}
	verdict := "runsc backs machine memory with huge pages"
	if !gvisor.HugePagesGranted(shmem, defrag) {
		verdict = "runsc uses 4 KiB pages for machine memory"
	}
	return fmt.Sprintf("shmem_enabled %s, defrag %s: %s", shmem, defrag, verdict)
}

// hostInfo reads the host's description; what it cannot read is "unknown".
func hostInfo(runscPath string) HostInfo {
	return HostInfo{
		CPU:       cpuModel(),
		Cores:     goruntime.NumCPU(),
		Kernel:    firstLine("/proc/sys/kernel/osrelease"),
		Runsc:     runscVersion(runscPath),
		Torpor:    revision(),
		Go:        goruntime.Version(),
		LoadStart: loadAverage(),
	}
}

func cpuModel() string {
	f, err := os.Open("/proc/cpuinfo")
	if err != nil {
		return "unknown"
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if k, v, ok := strings.Cut(sc.Text(), ":"); ok && strings.TrimSpace(k) == "model name" {
			return strings.TrimSpace(v)
		}
	}
	return "unknown"
}

func firstLine(path string) string {
	data, err := os.ReadFile(path)
	if err != nil {
		return "unknown"
	}
	line, _, _ := strings.Cut(string(data), "\n")
	return strings.TrimSpace(line)
}

// loadAverage is the 1, 5 and 15 minute load averages.
func loadAverage() string {
	fields := strings.Fields(firstLine("/proc/loadavg"))
	if len(fields) < 3 {
		return "unknown"
	}
	return strings.Join(fields[:3], " ")
}

// runscVersion is runsc's version line and the start of its binary's
// sha256 (builds from the Go module all say VERSION_MISSING).
func runscVersion(path string) string {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, path, "--version").Output()
	if err != nil {
		return "unknown (" + path + ")"
	}
	line, _, _ := strings.Cut(string(out), "\n")
	f, err := os.Open(path)
	if err != nil {
		return line
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return line
	}
	return strings.TrimSpace(line) + " (sha256:" + hex.EncodeToString(h.Sum(nil))[:12] + ")"
}

// revision is the VCS revision of this binary, "+dirty" when modified.
func revision() string {
	info, ok := debug.ReadBuildInfo()
	if !ok {
		return "unknown"
	}
	var rev, dirty string
	for _, s := range info.Settings {
		switch s.Key {
		case "vcs.revision":
			rev = s.Value
		case "vcs.modified":
			if s.Value == "true" {
				dirty = "+dirty"
			}
		}
	}
	if rev == "" {
		return gitRevision()
	}
	return rev[:min(12, len(rev))] + dirty
}

// gitRevision asks git about the working directory, for binaries built
// without VCS stamping (-buildvcs=false, go run).
func gitRevision() string {
	out, err := exec.Command("git", "describe", "--always", "--dirty").Output()
	if err != nil {
		return "unknown"
	}
	return strings.TrimSpace(string(out)) + " (git describe of the working directory)"
}

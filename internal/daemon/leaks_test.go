package daemon_test

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// hostCounts is what one daemon holds on the host, counted from outside:
// the soak test compares these before, during and after its load.
type hostCounts struct {
	Procs      int // runsc processes of this daemon (and their descendants)
	Mounts     int // mount points under the data and run directories
	Netns      int // /run/netns/torpor-<id> of this daemon's machines
	Veths      int // tpv-* links of this daemon's machines
	Bridges    int // tpb-* bridges of this daemon's network range
	MachineDir int // entries of DATA/machines and RUN/machines
	Snapshots  int // snapshot directories of all machines
	Files      int // non-directory files under the data and run directories
	FDs        int // the daemon's open file descriptors
	Threads    int // the daemon's OS threads
	Goroutines int // the daemon's goroutines (-1 if unknown)
}

// leakable is c without the counts that may legitimately stay above their
// baseline: the Go runtime keeps the OS threads it once needed.
func (c hostCounts) leakable() hostCounts {
	c.Threads = 0
	return c
}

func (c hostCounts) String() string {
	return fmt.Sprintf("procs=%d mounts=%d netns=%d veths=%d bridges=%d machine-dirs=%d snapshots=%d files=%d fds=%d threads=%d goroutines=%d",
		c.Procs, c.Mounts, c.Netns, c.Veths, c.Bridges, c.MachineDir, c.Snapshots, c.Files, c.FDs, c.Threads, c.Goroutines)
}

// counter counts what one daemon holds on the host.
type counter struct {
	d        *daemon
	runDir   string
	bridgeOf string   // name prefix of the bridges of the daemon's range
	ids      []string // every machine the test created
}

// bridgePrefixOf is the tpb- name prefix of the bridges carved out of a
// /16 network range (package network names a bridge after its /24).
func bridgePrefixOf(cidr string) string {
	ip, _, err := net.ParseCIDR(cidr)
	if err != nil || ip.To4() == nil {
		return "tpb-invalid"
	}
	a := ip.To4()
	return fmt.Sprintf("tpb-%02x%02x", a[0], a[1])
}

// bridgeOf is the name of the bridge serving addr's /24, as package network
// derives it ("tpb-" and the hex of the first three octets).
func bridgeOf(addr netip.Addr) string {
	a := addr.As4()
	return fmt.Sprintf("tpb-%02x%02x%02x", a[0], a[1], a[2])
}

// vethOf is the host-side veth name of a machine, as package network derives it.
func vethOf(id string) string {
	sum := sha256.Sum256([]byte(id))
	return "tpv-" + hex.EncodeToString(sum[:5])
}

func (c *counter) count() hostCounts {
	pid := c.d.cmd.Process.Pid
	out := hostCounts{
		Procs:      len(runscProcs(c.d.dataDir, pid)),
		Mounts:     mountsUnder(c.d.dataDir, c.runDir),
		Snapshots:  len(globDirs(filepath.Join(c.d.dataDir, "machines", "*", "snapshots", "*"))),
		MachineDir: len(globDirs(filepath.Join(c.d.dataDir, "machines", "*"))) + len(globDirs(filepath.Join(c.runDir, "machines", "*"))),
		Files:      countFiles(c.d.dataDir) + countFiles(c.runDir),
		FDs:        countDir(fmt.Sprintf("/proc/%d/fd", pid)),
		Threads:    procStatus(pid, "Threads"),
		Goroutines: c.goroutines(),
	}
	for _, id := range c.ids {
		if _, err := os.Stat("/run/netns/torpor-" + id); err == nil {
			out.Netns++
		}
		if _, err := net.InterfaceByName(vethOf(id)); err == nil {
			out.Veths++
		}
	}
	ifs, _ := net.Interfaces()
	for _, i := range ifs {
		if strings.HasPrefix(i.Name, c.bridgeOf) {
			out.Bridges++
		}
	}
	return out
}

// runscProcs returns the processes whose command line names dataDir (runsc
// is always given --root=DATA/runsc), other than the daemon itself, and all
// their descendants.
func runscProcs(dataDir string, daemonPid int) []int {
	entries, _ := os.ReadDir("/proc")
	parent := map[int]int{}
	var roots []int
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		parent[pid] = procPPid(pid)
		cmdline, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
		if pid != daemonPid && bytes.Contains(cmdline, []byte(dataDir)) {
			roots = append(roots, pid)
		}
	}
	ours := map[int]bool{}
	for _, r := range roots {
		ours[r] = true
	}
	for pid := range parent {
		for p, hops := parent[pid], 0; p > 1 && hops < 64; p, hops = parent[p], hops+1 {
			if ours[p] {
				ours[pid] = true
				break
			}
		}
	}
	var out []int
	for pid := range ours {
		out = append(out, pid)
	}
	return out
}

// procStat returns the fields of /proc/<pid>/stat after the command name
// (state, ppid, ...: field 3 onwards of proc(5)), nil if the process is gone.
// The name may hold spaces and parentheses, so it is skipped by its last ')'.
func procStat(pid int) []string {
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return nil
	}
	i := bytes.LastIndexByte(stat, ')')
	if i < 0 {
		return nil
	}
	return strings.Fields(string(stat[i+1:]))
}

// procStatSum returns the sum of two numeric fields of procStat (0 if unknown).
func procStatSum(pid, a, b int) int64 {
	f := procStat(pid)
	if len(f) <= max(a, b) {
		return 0
	}
	x, _ := strconv.ParseInt(f[a], 10, 64)
	y, _ := strconv.ParseInt(f[b], 10, 64)
	return x + y
}

// procPPid returns a process's parent pid (0 if unknown).
func procPPid(pid int) int {
	f := procStat(pid)
	if len(f) < 2 {
		return 0
	}
	ppid, _ := strconv.Atoi(f[1])
	return ppid
}

// procCPUTicks returns a process's user+system CPU time in clock ticks.
func procCPUTicks(pid int) int64 { return procStatSum(pid, 11, 12) }

// procChildTicks returns the CPU time, in clock ticks, of a process's
// children it has waited for (cutime + cstime): for the daemon, its runsc
// commands.
func procChildTicks(pid int) int64 { return procStatSum(pid, 13, 14) }

// procStatus returns a numeric field of /proc/<pid>/status (kB for memory
// fields), -1 if unknown.
func procStatus(pid int, field string) int {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return -1
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), field+":"); ok {
			n, err := strconv.Atoi(strings.Fields(v)[0])
			if err != nil {
				return -1
			}
			return n
		}
	}
	return -1
}

// procPssKB returns a process's proportional set size in kB (shared pages
// split among their users), -1 if unknown.
func procPssKB(pid int) int {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/smaps_rollup", pid))
	if err != nil {
		return -1
	}
	for _, line := range strings.Split(string(data), "\n") {
		if v, ok := strings.CutPrefix(line, "Pss:"); ok {
			n, _ := strconv.Atoi(strings.Fields(v)[0])
			return n
		}
	}
	return -1
}

// mountsUnder counts the host mount points under any of dirs.
func mountsUnder(dirs ...string) int {
	data, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return -1
	}
	n := 0
	for _, line := range strings.Split(string(data), "\n") {
		f := strings.Fields(line)
		if len(f) < 5 {
			continue
		}
		for _, d := range dirs {
			if f[4] == d || strings.HasPrefix(f[4], d+"/") {
				n++
				break
			}
		}
	}
	return n
}

// mountPointsUnder lists them, for failure messages.
func mountPointsUnder(dirs ...string) []string {
	data, _ := os.ReadFile("/proc/self/mountinfo")
	var out []string
	for _, line := range strings.Split(string(data), "\n") {
		f := strings.Fields(line)
		if len(f) < 5 {
			continue
		}
		for _, d := range dirs {
			if f[4] == d || strings.HasPrefix(f[4], d+"/") {
				out = append(out, f[4])
			}
		}
	}
	return out
}

func globDirs(pattern string) []string {
	matches, _ := filepath.Glob(pattern)
	return matches
}

func countDir(dir string) int {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return -1
	}
	return len(entries)
}

// countFiles counts the non-directory files under root.
func countFiles(root string) int { return len(listFiles(root)) }

// listFiles lists the non-directory files under root but the network
// state file, which stays once written (checkNetworkState checks that it
// is empty at the end).
func listFiles(root string) []string {
	var out []string
	filepath.WalkDir(root, func(path string, e os.DirEntry, err error) error {
		if err == nil && !e.IsDir() && path != filepath.Join(root, "network", "network.json") {
			out = append(out, path)
		}
		return nil
	})
	return out
}

// newFiles returns the paths in now that are not in before.
func newFiles(before, now []string) []string {
	had := map[string]bool{}
	for _, p := range before {
		had[p] = true
	}
	var out []string
	for _, p := range now {
		if !had[p] {
			out = append(out, p)
		}
	}
	return out
}

// goroutines reads the daemon's goroutine count from its /debug/pprof/
// endpoint (torpor serve --pprof); -1 if that fails.
func (c *counter) goroutines() int {
	text, err := c.d.adminGet("/debug/pprof/goroutine?debug=1")
	if err != nil {
		return -1
	}
	// "goroutine profile: total 42"
	first, _, _ := strings.Cut(text, "\n")
	n, err := strconv.Atoi(strings.TrimSpace(strings.TrimPrefix(first, "goroutine profile: total")))
	if err != nil {
		return -1
	}
	return n
}

// checkNetworkState checks that the daemon's network state file, if any,
// allocates nothing.
func checkNetworkState(t interface{ Errorf(string, ...any) }, dataDir string) {
	data, err := os.ReadFile(filepath.Join(dataDir, "network", "network.json"))
	if err != nil {
		return
	}
	var st struct {
		Apps     map[string]any `json:"apps"`
		Machines map[string]any `json:"machines"`
	}
	if err := json.Unmarshal(data, &st); err != nil {
		t.Errorf("network state: %v", err)
		return
	}
	if len(st.Apps) != 0 || len(st.Machines) != 0 {
		t.Errorf("network state still allocates %d app subnets and %d machine addresses: %s", len(st.Apps), len(st.Machines), data)
	}
}

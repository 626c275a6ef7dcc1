package bench

import (
	"context"
	_ "embed"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/torpor-dev/torpor/internal/client"
	"github.com/torpor-dev/torpor/internal/machine"
)

// AppSource is the measured app, app.py beside this file.
//
//go:embed app.py
var AppSource string

// Init is an app's init cost: what it does before it serves.
type Init struct {
	Name   string `json:"name"`   // as the flag and the tables name it
	Target string `json:"target"` // the init time it stands for, e.g. "~2 s"
	// Seconds is the app's INIT_SECONDS: 0 for a light app, else how long
	// its heavy init (imports, loading and indexing data) runs.
	Seconds float64 `json:"seconds"`
}

// Scenario is one cell of the matrix: an init cost and a resident size.
type Scenario struct {
	Init       Init `json:"init"`
	ResidentMB int  `json:"resident_mb"` // the app's RSS target
	GuestMB    int  `json:"guest_mb"`    // the machine's guest.memory_mb
}

// String names the scenario in progress lines.
func (s Scenario) String() string {
	return fmt.Sprintf("init %s (%s), %d MiB resident", s.Init.Name, s.Init.Target, s.ResidentMB)
}

// Config says what to measure and where.
type Config struct {
	// API is the address of a running daemon to drive; empty runs a daemon
	// in-process with RunscPath and NetworkRange.
	API          string
	Token        string
	DataDir      string // the daemon's data dir, for snapshot sizes (set for an in-process daemon)
	RunscPath    string
	NetworkRange string
	// Image is what the machines run: an OCI image reference, or a root
	// filesystem directory, which an in-process benchmark builds an OCI
	// image of and pushes to a local registry it starts (the machines then
	// run that image, and the image benchmark compares the two).
	Image string
	// RootFS is the directory Image was built from (set by Run).
	RootFS string
	// ImageRuns is the rounds of the image benchmark (0: none).
	ImageRuns    int
	App          string
	Inits        []Init
	ResidentMB   []int
	GuestSlackMB int // guest.memory_mb = resident + this
	CPUs         int
	Runs         int
	PollInterval time.Duration
	// Raw adds, to each run, a restore of the same snapshot with runsc
	// alone (see rawRestore): needs the daemon's data dir and runsc.
	Raw bool
	// ProxyWake adds, to each run, a wake of the machine by a request
	// through the daemon's proxy (on 127.0.0.1): the machine gets a
	// service on a free port.
	ProxyWake bool
	// Warm adds, to each run, a resume into a sandbox created ahead
	// (machine/warm.go): the machine is suspended again with the
	// in-process daemon's warm-sandbox budget on, and resumed once its
	// sandbox is precreated; the plain resume runs with the budget off.
	// Needs the in-process daemon (ignored with API).
	Warm bool
	// SyncSnapshots runs the in-process daemon with --sync-snapshots: each
	// snapshot is flushed to disk before the suspend returns.
	SyncSnapshots bool
	// KeepHugePagePolicies runs the in-process daemon with
	// --host-huge-pages=false: it leaves the host's huge page policies as
	// they are, rather than setting them so that runsc uses huge pages.
	KeepHugePagePolicies bool
	// NoPagesReuse runs the in-process daemon with --no-pages-reuse: each
	// suspend writes a new pages file.
	NoPagesReuse bool
	// ClockGate runs the in-process daemon with --clock-gate: each resume
	// reads the machine's clock before the app continues.
	ClockGate bool
	// MemoryProbeMiB is the most memory the fresh-memory probe touches
	// before the scenarios (see MemoryProbe); 0 skips it.
	MemoryProbeMiB int
	OutDir         string    // results go here; empty writes no files
	Out            io.Writer // the Markdown report
	Progress       io.Writer // one line per step
}

// daemonFlags are the in-process daemon's settings that differ from torpor
// serve's defaults, as serve flags (none when driving a daemon by API).
func (c *Config) daemonFlags() []string {
	if c.API != "" {
		return nil
	}
	var out []string
	if c.ClockGate {
		out = append(out, "--clock-gate")
	}
	if c.SyncSnapshots {
		out = append(out, "--sync-snapshots")
	}
	if c.KeepHugePagePolicies {
		out = append(out, "--host-huge-pages=false")
	}
	if c.NoPagesReuse {
		out = append(out, "--no-pages-reuse")
	}
	return out
}

// Validate reports the first bad setting, naming its flag.
func (c *Config) Validate() error {
	switch {
	case c.Runs < 1:
		return fmt.Errorf("--runs must be at least 1, got %d", c.Runs)
	case len(c.Inits) == 0:
		return errors.New("--init must name at least one init cost")
	case len(c.ResidentMB) == 0:
		return errors.New("--memory must name at least one size")
	case c.PollInterval <= 0:
		return fmt.Errorf("--poll-interval must be positive, got %s", c.PollInterval)
	case c.CPUs < 1:
		return fmt.Errorf("--cpus must be at least 1, got %d", c.CPUs)
	case c.MemoryProbeMiB != 0 && c.MemoryProbeMiB < probeStepMiB:
		return fmt.Errorf("--memory-probe must be 0 (off) or at least %d MiB, got %d", probeStepMiB, c.MemoryProbeMiB)
	}
	for _, mb := range c.ResidentMB {
		if mb < 32 {
			return fmt.Errorf("--memory sizes must be at least 32 MiB (the interpreter alone is ~20), got %d", mb)
		}
	}
	return nil
}

// Scenarios is the matrix the config asks for, init cost by init cost.
func (c *Config) Scenarios() []Scenario {
	var ss []Scenario
	for _, in := range c.Inits {
		for _, mb := range c.ResidentMB {
			ss = append(ss, Scenario{Init: in, ResidentMB: mb, GuestMB: mb + c.GuestSlackMB})
		}
	}
	return ss
}

// Run measures every scenario, prints the report and writes the result
// files. Everything it created is removed before it returns, also on error.
func Run(ctx context.Context, cfg Config) (res *Result, err error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.Progress == nil {
		cfg.Progress = io.Discard
	}
	res = &Result{Started: time.Now().UTC(), Runs: cfg.Runs, PollInterval: cfg.PollInterval.String(), DaemonFlags: cfg.daemonFlags()}
	res.Host = hostInfo(cfg.RunscPath)
	if cfg.MemoryProbeMiB > 0 {
		fmt.Fprintf(cfg.Progress, "%s probing fresh memory (up to %d MiB)\n", time.Now().Format("15:04:05"), cfg.MemoryProbeMiB)
		if res.Host.Memory, err = probeMemory(cfg.MemoryProbeMiB, probeStepMiB); err != nil {
			return nil, err
		}
	}
	var reg *benchRegistry
	if cfg.API == "" && isDir(cfg.Image) {
		if reg, err = startRegistry(); err != nil {
			return nil, err
		}
		defer reg.stop()
		cfg.RootFS = cfg.Image
	}
	var warm *machine.Manager
	if cfg.Warm && cfg.API != "" {
		progress(cfg, "no warm resumes: they need the in-process daemon (no --socket), whose warm sandboxes the benchmark turns on and off")
	}
	if cfg.API == "" {
		d, err := startDaemon(ctx, cfg, reg)
		if err != nil {
			return nil, err
		}
		if cfg.Warm {
			warm = d.machines
		}
		defer func() { err = errors.Join(err, d.stop(cfg.Progress)) }()
		cfg.API, cfg.DataDir = "unix://"+d.socket, d.dataDir
	}
	res.Host.HugePages = hugePageState() // as the daemon left them
	if reg != nil {
		if cfg.Image, err = reg.pushRootFS(ctx, cfg, cfg.RootFS); err != nil {
			return nil, err
		}
	}
	c, err := client.New(cfg.API, cfg.Token)
	if err != nil {
		return nil, err
	}
	if _, err := c.CreateApp(ctx, cfg.App, ""); err != nil {
		return nil, fmt.Errorf("create app %s: %w", cfg.App, err)
	}
	defer func() {
		if derr := c.DeleteApp(context.Background(), cfg.App); derr != nil {
			err = errors.Join(err, fmt.Errorf("delete app %s: %w", cfg.App, derr))
		}
	}()
	var raw *rawRestore
	if cfg.Raw {
		if raw, err = newRawRestore(cfg); err != nil {
			return nil, err
		}
		if raw == nil {
			progress(cfg, "no raw runsc restores: the daemon's data dir or runsc is unknown")
		}
		defer func() { err = errors.Join(err, raw.close()) }()
	}
	for _, s := range cfg.Scenarios() {
		sr, err := runScenario(ctx, c, cfg, s, raw, warm)
		res.Scenarios = append(res.Scenarios, sr)
		if err != nil {
			return res, fmt.Errorf("%s: %w", s, err)
		}
	}
	if cfg.ImageRuns > 0 && cfg.RootFS != "" {
		icfg := cfg
		icfg.Runs = cfg.ImageRuns
		res.Images, err = runImages(ctx, c, icfg)
		if err != nil {
			return res, fmt.Errorf("images: %w", err)
		}
	}
	res.Finished = time.Now().UTC()
	res.Host.LoadEnd = loadAverage()
	return res, report(cfg, res)
}

// Rerender prints the report of a saved result (a results JSON file) and
// writes its files again, e.g. after the report's format changed.
func Rerender(cfg Config, path string) error {
	raw, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	var res Result
	if err := json.Unmarshal(raw, &res); err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	if len(res.Scenarios) == 0 {
		return fmt.Errorf("%s: no scenarios", path)
	}
	if cfg.Progress == nil {
		cfg.Progress = io.Discard
	}
	return report(cfg, &res)
}

// report prints the Markdown report and writes the result files.
func report(cfg Config, res *Result) error {
	md := Markdown(res)
	if cfg.Out != nil {
		fmt.Fprint(cfg.Out, md)
	}
	if cfg.OutDir == "" {
		return nil
	}
	files, err := WriteFiles(cfg.OutDir, res, md)
	for _, f := range files {
		fmt.Fprintf(cfg.Progress, "wrote %s\n", f)
	}
	return err
}

// progress prints a timestamped progress line.
func progress(cfg Config, format string, args ...any) {
	fmt.Fprintf(cfg.Progress, "%s "+format+"\n", append([]any{time.Now().Format("15:04:05")}, args...)...)
}

// dataDirSet reports whether snapshot sizes can be read from disk.
func (c *Config) dataDirSet() bool {
	if c.DataDir == "" {
		return false
	}
	_, err := os.Stat(c.DataDir)
	return err == nil
}

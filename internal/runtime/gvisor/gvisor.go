package gvisor

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/torpor-dev/torpor/internal/runtime"
)

// DefaultPlatform is the runsc platform used when Config.Platform is empty.
const DefaultPlatform = "systrap"

// overlayFlag makes the root filesystem writable inside the sandbox through
// an overlay whose upper layer is sandbox memory. Alternatives rejected:
//   - "root:self" (runsc's default) keeps the upper layer in a hidden
//     filestore file created inside the rootfs directory, i.e. it writes into
//     the rootfs that all machines share;
//   - "root:dir=..." puts the filestore on host disk outside the image: the
//     restore would depend on a second host file staying in sync with it;
//   - "none" with a read-only root makes every write fail (EROFS).
//
// With "root:memory" the writes are ordinary sandbox memory, so they are
// saved in the checkpoint image (pages.img) and come back on restore. The
// cost: files written count against the machine's memory.
const overlayFlag = "--overlay2=root:memory"

// Config configures the gVisor driver.
type Config struct {
	// RunscPath is the runsc binary to run.
	RunscPath string
	// RootDir is runsc's state directory (--root). Must be absolute; it is
	// created (0700) if missing.
	RootDir string
	// Platform is the runsc platform (--platform); DefaultPlatform if empty.
	Platform string
	// ExtraFlags are extra global runsc flags added to every invocation
	// (e.g. "--debug"). Flags set by the driver come first; runsc lets later
	// flags override earlier ones.
	ExtraFlags []string
	// Debug adds --debug and --debug-log=<bundle>/debug/ to the commands that
	// concern a bundle (boot, restore, checkpoint). Verbose and slow: for
	// diagnosing runsc only.
	Debug bool
	// BackgroundRestore makes Restore return once the sandbox's kernel state
	// is loaded, while its memory pages keep loading in the background (runsc
	// restore --background); the app waits only for the pages it touches.
	// See restoreArgs for what it costs.
	BackgroundRestore bool
	// KeepLimits checkpoints and restores under the machine's CPU quota
	// and memory limit, as before issue 16 (see cgroup.go): for measuring
	// what lifting them buys.
	KeepLimits bool
	// KeepMemoryLimit checkpoints under the machine's memory limit (the
	// CPU quota is still lifted unless KeepLimits): for measuring what the
	// headroom buys.
	KeepMemoryLimit bool
	// NoPagesReuse makes every checkpoint write a new pages file instead of
	// writing over the one the sandbox was restored from (reuse.go).
	NoPagesReuse bool
	// Log is where the driver says what it could not do its usual way
	// (e.g. a control socket it fell back from); slog.Default() if nil.
	Log *slog.Logger
}

// Runtime is the gVisor sandbox driver. Its methods are safe for concurrent
// use; serializing operations on one sandbox is the caller's job.
type Runtime struct {
	cfg     Config
	version string

	// closing ends with Close; it bounds the `runsc wait` processes, which
	// must not outlive the daemon (see Wait).
	closing context.Context
	close   context.CancelFunc

	mu sync.Mutex
	// gone holds the IDs Kill or Checkpoint has just seen absent or
	// deleted, so that the Kill and the Boot or Restore that follow (the
	// manager always kills first) need not ask runsc again: one runsc
	// invocation less, ~7-12 ms, on every start, two on a resume.
	gone map[string]bool
	// fellBack holds the sandboxes whose control socket could not be used
	// (logged once each; see control.go).
	fellBack map[string]bool
	// procs holds each sandbox's process as runsc last reported it, for
	// Running when runsc cannot answer (check.go).
	procs map[string]sandboxProc
	// precreated holds the sandboxes Precreate made and no Restore, Kill
	// or DiscardPrecreated has used or deleted since (precreate.go).
	precreated map[string]precreatedSandbox
	// waits holds the Waits in progress, by sandbox (waitconnect.go).
	waits map[string][]*waitReg
}

// markGone records that id has no sandbox now.
func (r *Runtime) markGone(id string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.gone == nil {
		r.gone = map[string]bool{}
	}
	r.gone[id] = true
}

// isGone reports whether id is known to have no sandbox now, keeping the
// mark for the Boot or Restore that follows.
func (r *Runtime) isGone(id string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.gone[id]
}

// takeGone reports whether Kill saw id absent since the last Boot or
// Restore of it, and forgets it.
func (r *Runtime) takeGone(id string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	gone := r.gone[id]
	delete(r.gone, id)
	return gone
}

var _ runtime.Runtime = (*Runtime)(nil)

// New checks cfg, creates the runsc state directory and computes the
// runtime version (runsc --version plus a hash of the binary).
func New(cfg Config) (*Runtime, error) {
	if cfg.RunscPath == "" {
		return nil, errors.New("gvisor: RunscPath is required")
	}
	if !filepath.IsAbs(cfg.RootDir) {
		return nil, fmt.Errorf("gvisor: RootDir %q must be an absolute path", cfg.RootDir)
	}
	if cfg.Platform == "" {
		cfg.Platform = DefaultPlatform
	}
	if err := os.MkdirAll(cfg.RootDir, 0o700); err != nil {
		return nil, fmt.Errorf("gvisor: creating runsc root dir: %w", err)
	}
	version, err := runscVersion(cfg.RunscPath)
	if err != nil {
		return nil, err
	}
	if err := pinNullNetns(cfg.RootDir); err != nil {
		return nil, err
	}
	r := &Runtime{cfg: cfg, version: version}
	r.closing, r.close = context.WithCancel(context.Background())
	r.sweepPagesFiles(r.closing)
	return r, nil
}

// Close ends every Wait (runtime.ErrClosed) and its `runsc wait` process and
// releases what the driver holds on the host outside sandboxes (the null
// network namespace mount, see nullNetnsFile). Sandboxes keep running; a
// Runtime made by New again adopts them.
func (r *Runtime) Close() error {
	r.close()
	return unpinNullNetns(r.cfg.RootDir)
}

// Name returns "gvisor".
func (r *Runtime) Name() string { return "gvisor" }

// Version returns runsc's version line followed by a short sha256 of the
// runsc binary, so that a rebuilt runsc counts as another version even when
// it reports the same version string (pinned module builds report
// "VERSION_MISSING").
func (r *Runtime) Version() string { return r.version }

// runscVersion runs "runsc --version" and hashes the binary.
func runscVersion(runsc string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, runsc, "--version").CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("gvisor: runsc --version: %w: %s", err, bytes.TrimSpace(out))
	}
	line, _, _ := strings.Cut(string(out), "\n")
	sum, err := fileSHA256(runsc)
	if err != nil {
		return "", fmt.Errorf("gvisor: hashing runsc binary: %w", err)
	}
	return fmt.Sprintf("%s (sha256:%s)", strings.TrimSpace(line), sum[:12]), nil
}

// fileSHA256 returns the hex sha256 of the file at path.
func fileSHA256(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return "", err
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

// globalFlags returns the runsc flags common to every invocation.
func (r *Runtime) globalFlags() []string {
	flags := []string{"--root=" + r.cfg.RootDir, "--platform=" + r.cfg.Platform, overlayFlag}
	return append(flags, r.cfg.ExtraFlags...)
}

// bundleFlags returns the logging flags for commands about the sandbox whose
// bundle is dir: runsc's log (which otherwise goes to stdout, i.e. the
// console) and panic log go to files in the bundle.
func (r *Runtime) bundleFlags(dir string) []string {
	flags := []string{
		"--log=" + filepath.Join(dir, logFile),
		"--panic-log=" + filepath.Join(dir, panicLogFile),
	}
	if r.cfg.Debug {
		flags = append(flags, "--debug", "--debug-log="+filepath.Join(dir, "debug")+"/")
	}
	return flags
}

// Files the driver keeps in a bundle.
const (
	configFile     = "config.json"
	logFile        = "runsc.log"
	panicLogFile   = "runsc-panic.log"
	checkpointMark = "torpor-checkpointed" // pid of the sandbox being checkpointed
)

// command builds "runsc <global flags> <extra> <sub> <args...>".
func (r *Runtime) command(ctx context.Context, extra []string, sub string, args ...string) *exec.Cmd {
	argv := append(r.globalFlags(), extra...)
	argv = append(argv, sub)
	argv = append(argv, args...)
	cmd := exec.CommandContext(ctx, r.cfg.RunscPath, argv...)
	// Bound how long we wait for output pipes once runsc has exited, in case a
	// process it started keeps them open.
	cmd.WaitDelay = 5 * time.Second
	return cmd
}

// run runs a runsc subcommand that starts no long-lived process, capturing
// stdout and stderr separately. Errors name the subcommand and carry stderr.
func (r *Runtime) run(ctx context.Context, sub string, args ...string) (stdout []byte, err error) {
	return output(ctx, r.command(ctx, nil, sub, args...), sub, args)
}

// output runs cmd (runsc sub args...) and returns its stdout; errors carry stderr.
func output(ctx context.Context, cmd *exec.Cmd, sub string, args []string) ([]byte, error) {
	return outputStarted(ctx, cmd, sub, args, nil)
}

// outputStarted is output that also tells started, if not nil, the pid of
// runsc once it runs.
func outputStarted(ctx context.Context, cmd *exec.Cmd, sub string, args []string, started func(pid int)) ([]byte, error) {
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Start()
	if err == nil {
		if started != nil {
			started(cmd.Process.Pid)
		}
		err = cmd.Wait()
	}
	if err != nil {
		return out.Bytes(), &Error{Subcommand: sub, Args: args, Err: ctxErr(ctx, unavailable(err)), Detail: strings.TrimSpace(errb.String())}
	}
	return out.Bytes(), nil
}

// ctxErr prefers the context's error when the context ended, since a killed
// runsc says nothing useful.
func ctxErr(ctx context.Context, err error) error {
	if ctx.Err() != nil {
		return fmt.Errorf("%w (%v)", ctx.Err(), err)
	}
	return err
}

// Error is a failed runsc invocation.
type Error struct {
	Subcommand string   // e.g. "restore"
	Args       []string // arguments after the subcommand
	Err        error    // how the command failed (exit status, context)
	Detail     string   // runsc's stderr and/or the tail of its log
}

func (e *Error) Error() string {
	msg := fmt.Sprintf("runsc %s %s: %v", e.Subcommand, strings.Join(e.Args, " "), e.Err)
	if e.Detail != "" {
		msg += ": " + e.Detail
	}
	return msg
}

func (e *Error) Unwrap() error { return e.Err }

// isNotExist reports whether err is runsc saying the container does not exist.
func isNotExist(err error) bool {
	var re *Error
	return errors.As(err, &re) && strings.Contains(re.Detail, "does not exist")
}

// logTail returns the last lines (at most 15, about 2 KiB) of the log file at
// path, for error messages; "" if there is none.
func logTail(path string) string {
	const maxBytes = 2048
	f, err := os.Open(path)
	if err != nil {
		return ""
	}
	defer f.Close()
	seeked := false
	if st, err := f.Stat(); err == nil && st.Size() > maxBytes {
		_, err = f.Seek(st.Size()-maxBytes, io.SeekStart)
		seeked = err == nil
	}
	var lines []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		lines = append(lines, sc.Text())
	}
	if seeked && len(lines) > 0 {
		lines = lines[1:] // partial line
	}
	if len(lines) > 15 {
		lines = lines[len(lines)-15:]
	}
	return strings.Join(lines, "\n")
}

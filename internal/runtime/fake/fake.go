// Package fake is an in-memory runtime.Runtime for unit tests of the machine
// lifecycle. A sandbox's "memory" is a counter that a checkpoint writes into
// the image directory and a restore reads back, so tests can tell a resume
// from a cold start; every restore is recorded so tests can prove that no
// image is restored twice. Failures are injected per operation. Calls are
// logged in order (Calls) so tests can check what ran before what; Exec runs
// a test-supplied function (ExecFunc).
package fake

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"

	"github.com/torpor-dev/torpor/internal/runtime"
)

// Runtime is the fake driver.
type Runtime struct {
	mu        sync.Mutex
	sandboxes map[string]*Sandbox
	version   string
	fail      map[string]error
	// Restores lists the image directories restored, in order.
	Restores []string
	// Boots counts cold boots.
	Boots int
	// ExecFunc, if set, answers Exec for a running sandbox (it is called
	// without the runtime's lock held, so it may block on ctx).
	ExecFunc func(ctx context.Context, id string, args []string) ([]byte, error)
	// RunFunc, if set, answers Run for a running sandbox (without the
	// runtime's lock held).
	RunFunc func(ctx context.Context, id string, cmd runtime.Command) (runtime.CommandResult, error)
	// OnCheckpoint, if set, is called by Checkpoint and CheckpointLive with the sandbox's
	// ID before it writes the image (without the runtime's lock held), so
	// that a test can hold a checkpoint in progress.
	OnCheckpoint func(id string)
	// OnPrecreate, if set, is called by Precreate with ctx and the
	// sandbox's ID first (without the runtime's lock held), so that a test
	// can hold a precreate in progress; an error fails the Precreate.
	OnPrecreate func(ctx context.Context, id string) error
	calls       []string
	diskBytes   int64
	execEnv     map[string][]string // by command name, of its last Exec
	// precreated holds the specs of the sandboxes Precreate made and no
	// Restore, Kill or DiscardPrecreated has used or deleted since.
	precreated map[string]runtime.Spec
}

// Sandbox is one fake sandbox.
type Sandbox struct {
	Spec    runtime.Spec
	Counter int // its "memory"
	exited  chan struct{}
	status  runtime.ExitStatus
	broken  chan struct{} // closed by BreakWait
	waitErr error
}

// New returns a fake runtime reporting version.
func New(version string) *Runtime {
	return &Runtime{sandboxes: map[string]*Sandbox{}, version: version, fail: map[string]error{}, precreated: map[string]runtime.Spec{},
		execEnv: map[string][]string{}}
}

// Fail makes the next call of op ("boot", "checkpoint", "restore",
// "signal-all", "wait", "state", "prepare-restore", "disk-bytes") fail with
// err.
func (r *Runtime) Fail(op string, err error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.fail[op] = err
}

func (r *Runtime) takeFailure(op string) error {
	err := r.fail[op]
	delete(r.fail, op)
	return err
}

// SetDiskBytes sets what DiskBytes reports: the disk space of files the
// driver keeps of its own (runtime.DiskUser).
func (r *Runtime) SetDiskBytes(n int64) { r.mu.Lock(); r.diskBytes = n; r.mu.Unlock() }

// DiskBytes implements runtime.DiskUser; Fail("disk-bytes") makes it fail.
func (r *Runtime) DiskBytes() (int64, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if err := r.takeFailure("disk-bytes"); err != nil {
		return 0, err
	}
	return r.diskBytes, nil
}

// Name implements runtime.Runtime.
func (r *Runtime) Name() string { return "fake" }

// Version implements runtime.Runtime.
func (r *Runtime) Version() string { return r.version }

// SetVersion changes the version, as an upgraded runtime would.
func (r *Runtime) SetVersion(v string) { r.mu.Lock(); r.version = v; r.mu.Unlock() }

// Boot implements runtime.Runtime.
func (r *Runtime) Boot(ctx context.Context, spec runtime.Spec) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.record("boot")
	if err := r.takeFailure("boot"); err != nil {
		return err
	}
	if _, ok := r.sandboxes[spec.ID]; ok {
		return fmt.Errorf("sandbox %s exists", spec.ID)
	}
	r.Boots++
	r.sandboxes[spec.ID] = &Sandbox{Spec: spec, exited: make(chan struct{})}
	return nil
}

// Tick advances a running sandbox's counter, as its app would.
func (r *Runtime) Tick(id string, n int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if s, ok := r.sandboxes[id]; ok {
		s.Counter += n
	}
}

// Counter reads a running sandbox's counter (-1 if absent).
func (r *Runtime) Counter(id string) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	if s, ok := r.sandboxes[id]; ok {
		return s.Counter
	}
	return -1
}

// Spec returns the spec a running sandbox was booted or restored with.
func (r *Runtime) Spec(id string) (runtime.Spec, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	s, ok := r.sandboxes[id]
	if !ok {
		return runtime.Spec{}, false
	}
	return s.Spec, true
}

// Crash kills a sandbox's processes from outside, as a SIGKILL of runsc's
// sandbox process would: it stops (Wait reports SIGKILL) but stays known to
// the runtime, stopped, until killed (deleted). It reports whether a running
// sandbox was there.
func (r *Runtime) Crash(id string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	s, ok := r.sandboxes[id]
	if !ok || s.stopped() {
		return false
	}
	r.record("crash")
	r.stop(s, runtime.ExitStatus{Signal: "SIGKILL"})
	return true
}

// stopped reports whether the sandbox's process has exited.
func (s *Sandbox) stopped() bool {
	select {
	case <-s.exited:
		return true
	default:
		return false
	}
}

// RestoreCounts returns how many times each image was restored, keyed by
// the image's name: the base name of its directory without a ".claimed"
// suffix (a snapshot ID), so a claimed and an unclaimed path of one image
// count together.
func (r *Runtime) RestoreCounts() map[string]int {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := map[string]int{}
	for _, dir := range r.Restores {
		n[strings.TrimSuffix(filepath.Base(dir), ".claimed")]++
	}
	return n
}

// Exit makes a sandbox's process exit on its own with code.
func (r *Runtime) Exit(id string, code int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if s, ok := r.sandboxes[id]; ok {
		r.stop(s, runtime.ExitStatus{Code: code})
	}
}

func (r *Runtime) stop(s *Sandbox, st runtime.ExitStatus) {
	select {
	case <-s.exited:
	default:
		s.status = st
		close(s.exited)
	}
}

// Checkpoint implements runtime.Runtime.
func (r *Runtime) Checkpoint(ctx context.Context, id, imageDir string) error {
	r.mu.Lock()
	hook := r.OnCheckpoint
	r.mu.Unlock()
	if hook != nil {
		hook(id)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	s, err := r.checkpointable(id)
	if err != nil {
		return err
	}
	data := []byte(strconv.Itoa(s.Counter))
	if err := os.WriteFile(filepath.Join(imageDir, "checkpoint.img"), data, 0o600); err != nil {
		return err
	}
	r.stop(s, runtime.ExitStatus{Signal: "checkpoint"})
	delete(r.sandboxes, id)
	return nil
}

// Restore implements runtime.Runtime.
func (r *Runtime) Restore(ctx context.Context, spec runtime.Spec, imageDir string) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.record("restore")
	r.Restores = append(r.Restores, imageDir)
	if err := r.takeFailure("restore"); err != nil {
		return err
	}
	if _, ok := r.sandboxes[spec.ID]; ok {
		return fmt.Errorf("sandbox %s exists", spec.ID)
	}
	if pre, ok := r.precreated[spec.ID]; ok {
		delete(r.precreated, spec.ID)
		if reflect.DeepEqual(pre, spec) {
			r.record("restore-precreated")
		} else {
			r.record("discard-precreated")
		}
	}
	data, err := os.ReadFile(filepath.Join(imageDir, "checkpoint.img"))
	if err != nil {
		return err
	}
	n, err := strconv.Atoi(string(data))
	if err != nil {
		return err
	}
	r.sandboxes[spec.ID] = &Sandbox{Spec: spec, Counter: n, exited: make(chan struct{})}
	return nil
}

// SignalAll implements runtime.Runtime: it only records the signal.
func (r *Runtime) SignalAll(ctx context.Context, id, signal string) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.record("signal-all " + signal)
	if err := r.takeFailure("signal-all"); err != nil {
		return err
	}
	if s, ok := r.sandboxes[id]; !ok || s.stopped() {
		return runtime.ErrNotFound
	}
	return nil
}

// Signal implements runtime.Runtime. The fake app handles SIGUSR1,
// SIGUSR2, SIGHUP, SIGWINCH and SIGCONT (they are only logged); every other
// signal ends it.
func (r *Runtime) Signal(ctx context.Context, id, signal string) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.record("signal " + signal)
	s, ok := r.sandboxes[id]
	if !ok || s.stopped() {
		return runtime.ErrNotFound
	}
	switch signal {
	case "SIGUSR1", "SIGUSR2", "SIGHUP", "SIGWINCH", "SIGCONT":
		return nil
	}
	r.stop(s, runtime.ExitStatus{Signal: signal})
	return nil
}

// Kill implements runtime.Runtime.
func (r *Runtime) Kill(ctx context.Context, id string) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	delete(r.precreated, id)
	if s, ok := r.sandboxes[id]; ok {
		r.stop(s, runtime.ExitStatus{Signal: "SIGKILL"})
		delete(r.sandboxes, id)
	}
	return nil
}

// Wait implements runtime.Runtime.
func (r *Runtime) Wait(ctx context.Context, id string) (runtime.ExitStatus, error) {
	r.mu.Lock()
	if err := r.takeFailure("wait"); err != nil {
		r.mu.Unlock()
		return runtime.ExitStatus{}, err
	}
	s, ok := r.sandboxes[id]
	var broken chan struct{}
	if ok {
		if s.broken == nil {
			s.broken = make(chan struct{})
		}
		broken = s.broken
	}
	r.mu.Unlock()
	if !ok {
		return runtime.ExitStatus{}, runtime.ErrNotFound
	}
	select {
	case <-s.exited:
		return s.status, nil
	case <-broken:
		r.mu.Lock()
		defer r.mu.Unlock()
		return runtime.ExitStatus{}, s.waitErr
	case <-ctx.Done():
		return runtime.ExitStatus{}, ctx.Err()
	}
}

// BreakWait makes the Waits pending on sandbox id fail with err, as those
// of a runtime whose tools fail for a moment do: the sandbox runs on.
func (r *Runtime) BreakWait(id string, err error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if s, ok := r.sandboxes[id]; ok && s.broken != nil {
		s.waitErr = err
		close(s.broken)
		s.broken = nil
	}
}

// State implements runtime.Runtime.
func (r *Runtime) State(ctx context.Context, id string) (runtime.Status, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if err := r.takeFailure("state"); err != nil {
		return "", err
	}
	s, ok := r.sandboxes[id]
	if _, pre := r.precreated[id]; !ok && pre {
		return runtime.StatusCreated, nil
	}
	if !ok {
		return runtime.StatusAbsent, nil
	}
	select {
	case <-s.exited:
		return runtime.StatusStopped, nil
	default:
		return runtime.StatusRunning, nil
	}
}

// PrepareRestore implements runtime.Preparer: it fails when Fail("prepare-restore", err) says so.
func (r *Runtime) PrepareRestore(ctx context.Context, spec runtime.Spec) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.takeFailure("prepare-restore")
}

// Running implements runtime.Checker; it never fails.
func (r *Runtime) Running(ctx context.Context, id string) (bool, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	s, ok := r.sandboxes[id]
	if !ok {
		return false, nil
	}
	select {
	case <-s.exited:
		return false, nil
	default:
		return true, nil
	}
}

// Exec implements runtime.Runtime: ExecFunc answers for a running
// sandbox; without one the command succeeds with no output. ExecEnv
// tells what env a command was given.
func (r *Runtime) Exec(ctx context.Context, id string, args []string, env ...string) ([]byte, error) {
	r.mu.Lock()
	r.record("exec " + strings.Join(args, " "))
	if len(args) > 0 {
		r.execEnv[args[0]] = slices.Clone(env)
	}
	s, ok := r.sandboxes[id]
	fn := r.ExecFunc
	r.mu.Unlock()
	if !ok {
		return nil, runtime.ErrNotFound
	}
	select {
	case <-s.exited:
		return nil, runtime.ErrNotFound
	default:
	}
	if fn == nil {
		return nil, nil
	}
	return fn(ctx, id, args)
}

// ExecEnv is the env the last Exec of the command named name (its args[0])
// was given.
func (r *Runtime) ExecEnv(name string) []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.execEnv[name]
}

// record logs a call. Callers hold r.mu.
func (r *Runtime) record(call string) { r.calls = append(r.calls, call) }

// Calls returns the calls made so far, in order: "boot", "checkpoint",
// "restore", "signal SIG", "exec ARGS..." (arguments joined by spaces).
func (r *Runtime) Calls() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]string(nil), r.calls...)
}

// ResetCalls forgets the calls logged so far.
func (r *Runtime) ResetCalls() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.calls = nil
}

var _ runtime.Precreator = (*Runtime)(nil)

// Precreate implements runtime.Precreator: it records spec (Fail("precreate", err) makes it fail).
func (r *Runtime) Precreate(ctx context.Context, spec runtime.Spec) error {
	if r.OnPrecreate != nil {
		if err := r.OnPrecreate(ctx, spec.ID); err != nil {
			return err
		}
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.record("precreate")
	if err := r.takeFailure("precreate"); err != nil {
		return err
	}
	if _, ok := r.sandboxes[spec.ID]; ok {
		return fmt.Errorf("sandbox %s exists", spec.ID)
	}
	r.precreated[spec.ID] = spec
	return nil
}

// Precreated implements runtime.Precreator.
func (r *Runtime) Precreated(spec runtime.Spec) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	pre, ok := r.precreated[spec.ID]
	return ok && reflect.DeepEqual(pre, spec)
}

// DiscardPrecreated implements runtime.Precreator.
func (r *Runtime) DiscardPrecreated(ctx context.Context, id string) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if _, ok := r.precreated[id]; ok {
		r.record("discard-precreated")
		delete(r.precreated, id)
	}
	return nil
}

// PrecreatedIDs lists the sandboxes precreated now, sorted.
func (r *Runtime) PrecreatedIDs() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	ids := make([]string, 0, len(r.precreated))
	for id := range r.precreated {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	return ids
}

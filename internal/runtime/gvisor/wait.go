package gvisor

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/torpor-dev/torpor/internal/runtime"
)

// ErrCheckpointed is returned by Wait when the sandbox it waited on was
// checkpointed: its process did not exit, it was saved (and may be restored).
var ErrCheckpointed = errors.New("sandbox was checkpointed")

// containerState is the JSON printed by "runsc state".
type containerState struct {
	ID     string `json:"id"`
	Status string `json:"status"`
	Pid    int    `json:"pid"` // the sandbox process; -1 once stopped
	Bundle string `json:"bundle"`
}

// runningState is state for a sandbox that should be running (a
// checkpoint's): read from runsc's state file when that says running and
// the sandbox process is alive, and nil (no sandbox) when there is no state
// file, which is what runsc itself goes by; either saves spawning runsc
// (8-12 ms). Anything else (another status, a process gone, a file the
// driver cannot read) asks `runsc state`, which also brings the file up to
// date.
func (r *Runtime) runningState(ctx context.Context, id string) (*containerState, error) {
	cs, err := r.controlState(id)
	switch {
	case errors.Is(err, runtime.ErrNotFound):
		return nil, nil
	case err == nil && cs.Status == "running" && cs.BundleDir != "" && cs.Sandbox.Pid > 0 && !processExited(cs.Sandbox.Pid):
		return &containerState{ID: id, Status: cs.Status, Pid: cs.Sandbox.Pid, Bundle: cs.BundleDir}, nil
	}
	return r.state(ctx, id)
}

// state runs "runsc state"; it returns nil (and no error) if the sandbox
// does not exist.
func (r *Runtime) state(ctx context.Context, id string) (*containerState, error) {
	out, err := r.run(ctx, "state", id)
	if err != nil {
		if isNotExist(err) {
			return nil, nil
		}
		return nil, err
	}
	var st containerState
	if err := json.Unmarshal(out, &st); err != nil {
		return nil, fmt.Errorf("gvisor: runsc state %s: parsing %q: %w", id, out, err)
	}
	if st.Pid > 0 && st.Status == string(runtime.StatusRunning) {
		r.remember(id, st.Pid)
	}
	if st.Status != string(runtime.StatusStopped) && processExited(st.Pid) {
		// runsc checks the sandbox with kill(pid, 0), which succeeds on a
		// zombie: an exited sandbox counts as running until whoever adopted
		// it (init) reaps it, which can take seconds.
		st.Status = string(runtime.StatusStopped)
	}
	return &st, nil
}

// processExited reports whether pid has exited: no such process, or a
// zombie waiting to be reaped.
func processExited(pid int) bool {
	if pid <= 0 {
		return false
	}
	data, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return errors.Is(err, os.ErrNotExist)
	}
	// The state field follows the command name, which is in parentheses.
	i := bytes.LastIndexByte(data, ')')
	if i < 0 || i+2 >= len(data) {
		return false
	}
	state := data[i+2]
	return state == 'Z' || state == 'X'
}

// State reports the sandbox's status as runsc sees it; StatusAbsent (and no
// error) if runsc has no record of it.
func (r *Runtime) State(ctx context.Context, id string) (runtime.Status, error) {
	st, err := r.state(ctx, id)
	if err != nil {
		return "", err
	}
	if st == nil {
		return runtime.StatusAbsent, nil
	}
	switch s := runtime.Status(st.Status); s {
	case runtime.StatusCreated, runtime.StatusRunning, runtime.StatusPaused, runtime.StatusStopped:
		return s, nil
	default: // "creating" (mid-create) and anything newer
		return runtime.StatusCreated, nil
	}
}

// waitResult is the JSON printed by "runsc wait".
type waitResult struct {
	ID         string `json:"id"`
	ExitStatus int    `json:"exitStatus"` // 128+signal if killed by a signal
}

// Wait blocks until the sandbox's init process exits, using "runsc wait",
// which asks the sandbox itself and so works whichever daemon process booted
// it. It returns:
//   - the exit status; a signal death is reported as Code 128+n with Signal
//     set (runsc cannot tell it apart from exit(128+n));
//   - Code -1 (and no error) if the process had exited before anyone waited:
//     runsc no longer knows the status; but 137/SIGKILL if this driver sent
//     the process SIGKILL while the Wait was in progress (waitFailed);
//   - ErrCheckpointed if the sandbox was checkpointed instead of exiting;
//   - runtime.ErrNotFound if there is no such sandbox;
//   - runtime.ErrClosed if Close ended the wait;
//   - ctx's error if ctx ends first.
//
// The `runsc wait` process (~22 MiB) lives no longer than the wait, Close
// or the daemon: it is killed when ctx ends or Close is called, and the
// kernel kills it when the daemon dies (PR_SET_PDEATHSIG), so restarts do not
// pile up one orphaned wait per running machine (issue 17, F10).
func (r *Runtime) Wait(ctx context.Context, id string) (runtime.ExitStatus, error) {
	reg := r.registerWait(id)
	defer r.unregisterWait(id, reg)
	st, err := r.state(ctx, id)
	if err != nil {
		return runtime.ExitStatus{}, err
	}
	if st == nil {
		return runtime.ExitStatus{}, fmt.Errorf("gvisor: wait %s: %w", id, runtime.ErrNotFound)
	}
	// Every sandbox the daemon runs or adopts is waited on: this is where
	// one restored by a daemon that died before applying its CPU quota
	// (cgroup.go) gets it.
	ensureCPUQuota(id, st.Bundle)
	wctx, stop := context.WithCancel(ctx)
	defer context.AfterFunc(r.closing, stop)()
	defer stop()
	out, waitErr := r.runWait(wctx, id, reg)
	switch {
	case ctx.Err() != nil:
		return runtime.ExitStatus{}, ctx.Err()
	case wctx.Err() != nil:
		return runtime.ExitStatus{}, fmt.Errorf("gvisor: wait %s: %w", id, runtime.ErrClosed)
	}
	// A checkpoint ends the sandbox as if its process had exited (status 0)
	// or breaks runsc wait's connection: the marker tells them apart.
	if checkpointedSandbox(st) {
		return runtime.ExitStatus{}, fmt.Errorf("gvisor: wait %s: %w", id, ErrCheckpointed)
	}
	if waitErr != nil {
		return r.waitFailed(ctx, id, waitErr, reg.sigkilled())
	}
	var res waitResult
	if err := json.Unmarshal(bytes.TrimSpace(out), &res); err != nil {
		return runtime.ExitStatus{}, fmt.Errorf("gvisor: runsc wait %s: parsing %q: %w", id, out, err)
	}
	es := exitStatus(res.ExitStatus)
	// Read before Kill deletes the sandbox and its cgroup (issue 17, F16).
	es.OOMKilled = es.Signal == "SIGKILL" && oomKilled(id)
	return es, nil
}

// runWait runs "runsc wait id", which the kernel kills if the daemon dies.
// Only the OS thread that forks it dying would also send the signal; Go ends
// a thread only when a goroutine locked to it returns, and such a goroutine
// never forks runsc.
func (r *Runtime) runWait(ctx context.Context, id string, reg *waitReg) ([]byte, error) {
	cmd := r.command(ctx, nil, "wait", id)
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	return outputStarted(ctx, cmd, "wait", []string{id}, reg.started)
}

// waitFailed decides what a failed "runsc wait" means: the sandbox stopped
// (or was deleted) without runsc being able to report a status, or a real
// error. A sandbox whose init this driver sent SIGKILL during the wait
// (sigkilled, markKilled) died of it, as far as anyone can tell: it is
// reported so, 137/SIGKILL, where runsc lost the status.
func (r *Runtime) waitFailed(ctx context.Context, id string, waitErr error, sigkilled bool) (runtime.ExitStatus, error) {
	st, err := r.state(ctx, id)
	if err != nil {
		return runtime.ExitStatus{}, errors.Join(waitErr, err)
	}
	if st == nil || st.Status == string(runtime.StatusStopped) {
		if sigkilled {
			es := exitStatus(128 + int(unix.SIGKILL))
			es.OOMKilled = oomKilled(id)
			return es, nil
		}
		return runtime.ExitStatus{Code: -1, OOMKilled: oomKilled(id)}, nil
	}
	return runtime.ExitStatus{}, waitErr
}

// checkpointedSandbox reports whether Checkpoint has been run on the sandbox
// process st describes (the marker names the sandbox pid, so a marker left by
// an earlier incarnation of the same ID does not count).
func checkpointedSandbox(st *containerState) bool {
	if st.Bundle == "" || st.Pid <= 0 {
		return false
	}
	data, err := os.ReadFile(filepath.Join(st.Bundle, checkpointMark))
	return err == nil && string(data) == strconv.Itoa(st.Pid)
}

// exitStatus converts runsc's exit status to the runtime's.
func exitStatus(status int) runtime.ExitStatus {
	es := runtime.ExitStatus{Code: status}
	if status > 128 && status < 128+65 {
		if name := unix.SignalName(unix.Signal(status - 128)); name != "" {
			es.Signal = name
		}
	}
	return es
}

// pidWatch watches a process that is not our child (the sandbox process is
// reparented away from runsc) through a pidfd, so that a recycled pid cannot
// be mistaken for it.
type pidWatch struct {
	pid int
	fd  int // -1: pidfd unavailable or the process was already gone
}

// watchPid starts watching pid. Open it before triggering the exit.
func watchPid(pid int) *pidWatch {
	w := &pidWatch{pid: pid, fd: -1}
	if pid > 0 {
		fd, err := unix.PidfdOpen(pid, 0)
		switch {
		case err == nil:
			w.fd = fd
		case errors.Is(err, unix.ESRCH):
			w.pid = 0 // already gone
		}
	}
	return w
}

// Wait blocks until the process has exited, ctx ends or timeout passes.
func (w *pidWatch) Wait(ctx context.Context, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for !w.exited() {
		if err := ctx.Err(); err != nil {
			return err
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("pid %d still running after %v", w.pid, timeout)
		}
		w.sleep(10 * time.Millisecond)
	}
	return nil
}

// exited reports whether the process has exited (zombies count).
func (w *pidWatch) exited() bool {
	if w.fd >= 0 {
		fds := []unix.PollFd{{Fd: int32(w.fd), Events: unix.POLLIN}}
		n, err := unix.Poll(fds, 0)
		return err == nil && n > 0
	}
	if w.pid <= 0 {
		return true
	}
	// No pidfd (old kernel, or the process was gone when we looked).
	return unix.Kill(w.pid, 0) == unix.ESRCH
}

// sleep waits up to d, returning early when the pidfd becomes readable.
func (w *pidWatch) sleep(d time.Duration) {
	if w.fd < 0 {
		time.Sleep(d)
		return
	}
	fds := []unix.PollFd{{Fd: int32(w.fd), Events: unix.POLLIN}}
	_, _ = unix.Poll(fds, int(d/time.Millisecond))
}

// Close releases the pidfd.
func (w *pidWatch) Close() {
	if w.fd >= 0 {
		_ = unix.Close(w.fd)
		w.fd = -1
	}
}

// SandboxPID returns the host PID of the sandbox process of id (0 if the
// sandbox does not exist or has stopped). Crash tests kill it to simulate
// a runtime crash.
func (r *Runtime) SandboxPID(ctx context.Context, id string) (int, error) {
	st, err := r.state(ctx, id)
	if err != nil || st == nil || st.Status == string(runtime.StatusStopped) || st.Pid <= 0 {
		return 0, err
	}
	return st.Pid, nil
}

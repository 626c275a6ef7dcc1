package gvisor

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"golang.org/x/sys/unix"

	"github.com/torpor-dev/torpor/internal/runtime"
)

// Timeouts for steps the caller's context may not bound tightly enough.
const (
	stopTimeout    = 30 * time.Second // sandbox exit after checkpoint or SIGKILL
	cleanupTimeout = 30 * time.Second // delete --force after a failed boot/restore
)

// Boot writes config.json and runs the sandbox detached ("runsc run
// --detach", i.e. create and start in one runsc invocation). It returns once
// the process has been started.
func (r *Runtime) Boot(ctx context.Context, spec runtime.Spec) error {
	if err := validateSpec(spec); err != nil {
		return err
	}
	if err := writeConfig(spec); err != nil {
		return err
	}
	return r.startSandbox(ctx, spec, "run", "--detach", "--bundle="+spec.Bundle, spec.ID)
}

// Restore writes config.json (the same as Boot's for the same spec) and
// restores the sandbox from the image in imageDir. It returns once the
// process runs again. The container's stdio goes to spec.Console, as after
// Boot.
func (r *Runtime) Restore(ctx context.Context, spec runtime.Spec, imageDir string) error {
	if err := r.restore(ctx, spec, imageDir); err != nil {
		return err
	}
	r.keepPagesFile(spec.ID, imageDir) // for the next checkpoint (reuse.go)
	return nil
}

func (r *Runtime) restore(ctx context.Context, spec runtime.Spec, imageDir string) error {
	if err := validateSpec(spec); err != nil {
		return err
	}
	if err := checkImage(imageDir); err != nil {
		return err
	}
	// A sandbox precreated for this very spec only needs the image loaded
	// (precreate.go); one precreated for another spec is deleted first.
	if p, ok := r.takePrecreated(spec.ID); ok {
		if digest, err := specDigest(spec); err == nil && digest == p.digest {
			return r.restorePrecreated(ctx, spec, imageDir, p)
		}
		r.cleanup(ctx, spec.ID)
		r.markGone(spec.ID)
	}
	if err := writeConfig(spec); err != nil {
		return err
	}
	return r.startSandbox(ctx, spec, "restore", r.restoreArgs(spec, imageDir)...)
}

// restoreArgs returns the arguments of "runsc restore".
//
// With Config.BackgroundRestore, --background: runsc returns before all
// pages are loaded and keeps loading them in the sandbox afterwards. On a
// 2-core host it is slower end to end, though: the loading then competes
// with the clock check, the thaw and the app's first answer (resume to first
// byte, p50 of 8: 313 vs 267 ms at 64 MiB, 1571 vs 1213 ms at 1 GiB), so it
// is off by default. Its other costs: a failure
// to load pages is no longer reported by Restore (the sandbox dies later and
// its supervisor sees the exit), and it only works on uncompressed images.
// The image files may be deleted once Restore returns: runsc opened them
// before it started, and the sandbox reads through those descriptors.
func (r *Runtime) restoreArgs(spec runtime.Spec, imageDir string) []string {
	args := []string{"--detach", "--bundle=" + spec.Bundle, "--image-path=" + imageDir}
	if r.cfg.BackgroundRestore {
		args = append(args, "--background")
	}
	return append(args, spec.ID)
}

// startSandbox runs a runsc command that creates a sandbox (run or restore)
// with the container's stdio wired to the console: stdin /dev/null, stdout
// and stderr the console opened read-write. The sandbox inherits these, so
// they must never be pipes we read to EOF. runsc's own diagnostics go to
// files in the bundle; on failure their tail is in the error, and whatever
// was half-created is deleted.
func (r *Runtime) startSandbox(ctx context.Context, spec runtime.Spec, sub string, args ...string) error {
	// Refuse an existing ID up front: the cleanup after a failure below
	// would otherwise delete a sandbox that is not ours to delete. Kill
	// may just have made sure there is none.
	if !r.takeGone(spec.ID) {
		st, err := r.state(ctx, spec.ID)
		if err != nil {
			return err
		}
		if st != nil {
			return fmt.Errorf("gvisor: %s %s: sandbox already exists (%s)", sub, spec.ID, st.Status)
		}
	}
	console, err := openConsole(spec.Console)
	if err != nil {
		return err
	}
	defer console.Close()
	devnull, err := os.Open(os.DevNull)
	if err != nil {
		return fmt.Errorf("gvisor: %w", err)
	}
	defer devnull.Close()

	// A restore runs without the CPU quota, which is applied once it has
	// returned; a boot gets runsc's own cgroup (cgroup.go).
	var lifted bool
	if sub == "restore" {
		lifted, err = precreateCPUCgroup(spec.ID, spec.CPUs, r.cfg.KeepLimits)
	} else {
		// A leftover cgroup (a restore's own cpu one, or one a boot cut
		// short left) would be reused by runsc as it is: remove it, and if
		// it is busy (on a shared test host, another daemon's frozen
		// sandbox of the same machine), give it the machine's quota.
		if removeCgroups(spec.ID) != nil && cgroupV1() && spec.CPUs > 0 {
			_ = setCPUQuota(cgroupDir("cpu", spec.ID), spec.CPUs)
		}
	}
	if err != nil {
		return err
	}
	extra := append(r.bundleFlags(spec.Bundle), networkFlag(spec.NetNS))
	cmd := r.command(ctx, extra, sub, args...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = devnull, console, console
	if err := cmd.Run(); err != nil {
		r.cleanup(ctx, spec.ID)
		return &Error{Subcommand: sub, Args: args, Err: ctxErr(ctx, unavailable(err)), Detail: logTail(filepath.Join(spec.Bundle, logFile))}
	}
	if lifted {
		if err := setCPUQuota(cgroupDir("cpu", spec.ID), spec.CPUs); err != nil {
			r.cleanup(ctx, spec.ID)
			return err
		}
	}
	return nil
}

// openConsole opens the console for the container's stdout and stderr. A
// FIFO is opened read-write, which never blocks and means the container's
// writes never fail for want of a reader (they block when the FIFO is full
// and nobody drains it). Anything else is opened for appending (created if
// missing): gVisor writes to host files at their offset 0 otherwise. An
// empty path means /dev/null.
func openConsole(path string) (*os.File, error) {
	if path == "" {
		path = os.DevNull
	}
	flags := os.O_RDWR
	if fi, err := os.Stat(path); err != nil || fi.Mode()&os.ModeNamedPipe == 0 {
		flags = os.O_WRONLY | os.O_APPEND | os.O_CREATE
	}
	f, err := os.OpenFile(path, flags, 0o600)
	if err != nil {
		return nil, fmt.Errorf("gvisor: opening console: %w", err)
	}
	return f, nil
}

// checkImage checks that imageDir holds a checkpoint image.
func checkImage(imageDir string) error {
	if !filepath.IsAbs(imageDir) {
		return fmt.Errorf("gvisor: image dir %q must be an absolute path", imageDir)
	}
	if _, err := os.Stat(filepath.Join(imageDir, "checkpoint.img")); err != nil {
		return fmt.Errorf("gvisor: no checkpoint image in %s: %w", imageDir, err)
	}
	return nil
}

// cleanup force-deletes what a failed run/restore may have left, with its
// own deadline since ctx may be the reason it failed.
func (r *Runtime) cleanup(ctx context.Context, id string) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), cleanupTimeout)
	defer cancel()
	_, _ = r.run(ctx, "delete", "--force", id)
	_ = removeCgroups(id)
}

// Checkpoint saves the sandbox to imageDir (which must exist and be empty)
// with "runsc checkpoint", waits for the sandbox to stop (runsc returns
// before it has), then deletes it. On success imageDir holds the image.
//
// Beware: the sandbox does not survive a checkpoint that fails once it has
// started saving (gVisor kills it whatever the outcome), so on error the
// sandbox may be stopped or gone.
func (r *Runtime) Checkpoint(ctx context.Context, id, imageDir string) error {
	if err := checkEmptyDir(imageDir); err != nil {
		return err
	}
	st, err := r.runningState(ctx, id)
	if err != nil {
		return err
	}
	if st == nil {
		return fmt.Errorf("gvisor: checkpoint %s: %w", id, runtime.ErrNotFound)
	}
	mark := filepath.Join(st.Bundle, checkpointMark)
	if err := os.WriteFile(mark, []byte(strconv.Itoa(st.Pid)), 0o600); err != nil {
		return fmt.Errorf("gvisor: writing checkpoint marker: %w", err)
	}
	stopped := watchPid(st.Pid)
	defer stopped.Close()

	lifted := liftForCheckpoint(id, r.cfg.KeepLimits, r.cfg.KeepMemoryLimit)
	r.offerPagesFile(id, imageDir) // written over in place (reuse.go)
	args := []string{"--image-path=" + imageDir, id}
	cmd := r.command(ctx, r.bundleFlags(st.Bundle), "checkpoint", args...)
	out, err := cmd.CombinedOutput()
	withdrawPagesFile(imageDir)
	if err != nil {
		if !processExited(st.Pid) {
			// Failed before saving began: the sandbox still runs. (Once saving
			// has begun gVisor stops the sandbox even on failure; the marker
			// then stays and a pending Wait reports ErrCheckpointed rather
			// than a made-up exit.)
			_ = os.Remove(mark)
			_ = lifted.restore()
		}
		detail := string(out) + logTail(filepath.Join(st.Bundle, logFile))
		return &Error{Subcommand: "checkpoint", Args: args, Err: ctxErr(ctx, err), Detail: detail}
	}
	// runsc only returns once the image is written, so if the sandbox does
	// not stop within stopTimeout, delete --force stops it; but if ctx ends
	// first the caller gets the sandbox back as it is.
	if err := stopped.Wait(ctx, stopTimeout); err != nil && ctx.Err() != nil {
		return fmt.Errorf("gvisor: waiting for sandbox %s to stop after checkpoint: %w", id, err)
	}
	if _, err := r.run(ctx, "delete", "--force", id); err != nil && !isNotExist(err) {
		return err
	}
	_ = removeCgroups(id) // see Kill (the driver's own cpu cgroup too)
	r.markGone(id)
	return checkImage(imageDir)
}

// checkEmptyDir checks that dir is an existing, empty directory.
func checkEmptyDir(dir string) error {
	if !filepath.IsAbs(dir) {
		return fmt.Errorf("gvisor: image dir %q must be an absolute path", dir)
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		return fmt.Errorf("gvisor: image dir: %w", err)
	}
	if len(entries) != 0 {
		return fmt.Errorf("gvisor: image dir %s is not empty", dir)
	}
	return nil
}

// Signal sends signal (a name such as "SIGTERM" or "TERM", or a number) to
// the sandbox's init process.
func (r *Runtime) Signal(ctx context.Context, id, signal string) error {
	if signal == "" {
		return errors.New("gvisor: empty signal")
	}
	r.awaitWaits(ctx, id, waitConnectMax)
	if err := r.kill(ctx, id, id, signal); err != nil {
		return err
	}
	if sig, ok := signalNumber(signal); ok && sig == unix.SIGKILL {
		r.markKilled(id)
	}
	return nil
}

// SignalAll sends signal to every process in the sandbox (what runsc kill
// --all does, through the control socket; by spawning it when the socket
// cannot be used).
func (r *Runtime) SignalAll(ctx context.Context, id, signal string) error {
	if signal == "" {
		return errors.New("gvisor: empty signal")
	}
	err := r.controlSignalAll(ctx, id, signal)
	if !errors.Is(err, errNoControl) {
		return err
	}
	r.controlFallback(id, "signal", err)
	return r.kill(ctx, id, "--all", id, signal)
}

// kill runs "runsc kill args..." for sandbox id.
func (r *Runtime) kill(ctx context.Context, id string, args ...string) error {
	if _, err := r.run(ctx, "kill", args...); err != nil {
		if isNotExist(err) {
			return fmt.Errorf("gvisor: signal %s: %w", id, runtime.ErrNotFound)
		}
		return err
	}
	return nil
}

// Kill sends SIGKILL, gives the sandbox a moment to exit (so that a
// concurrent Wait sees the exit status), then deletes it with "runsc delete
// --force". An absent sandbox is not an error; one that this driver has
// deleted since it last started one with that ID (after a checkpoint, a
// kill) is known absent without asking runsc.
func (r *Runtime) Kill(ctx context.Context, id string) error {
	r.takePrecreated(id) // deleted below like any other sandbox
	r.dropPagesFile(id)
	if r.isGone(id) {
		return nil
	}
	st, err := r.state(ctx, id)
	if err != nil {
		return err
	}
	if st == nil {
		r.markGone(id)
		// What a create cut short (the daemon killed mid-boot) may have
		// left; runsc only removes cgroups it made itself.
		_ = removeCgroups(id)
		return nil
	}
	// A paused sandbox would only see the signal once resumed: delete it
	// straight away.
	if st.Pid > 0 && st.Status == string(runtime.StatusRunning) {
		stopped := watchPid(st.Pid)
		defer stopped.Close()
		// Errors are fine: the process may be exiting already; delete --force
		// below is what must succeed.
		if _, err := r.run(ctx, "kill", id, "KILL"); err == nil {
			r.markKilled(id)
			_ = stopped.Wait(ctx, 5*time.Second)
		}
	}
	if _, err := r.run(ctx, "delete", "--force", id); err != nil && !isNotExist(err) {
		return err
	}
	r.markGone(id)
	// A cgroup still busy after a second is not worth failing the kill
	// for: the sandbox is gone, and its next boot reuses the cgroup.
	_ = removeCgroups(id)
	return nil
}

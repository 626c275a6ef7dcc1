package machine

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"

	"github.com/torpor-dev/torpor/internal/model"
	"github.com/torpor-dev/torpor/internal/store"
)

// What the app is told of suspend and resume (docs/app-authors.md):
//
//	suspend: pre_suspend hook → checkpoint
//	resume:  restore → clock check + generation file → post_resume hook → resume signal
//	boot:    TORPOR_BOOT_GENERATION in the environment, generation file
//
// Everything runs inside the machine through the runtime's Exec, while the
// operation holds the machine's lock.

// Hook names, as in config.hooks and in events.
const (
	hookPreSuspend = "pre_suspend"
	hookPostResume = "post_resume"
)

// generationFile is where the app finds its boot generation and resume count.
const generationFile = "/run/torpor/generation"

// frozenGenerationScript writes the generation file (its first argument)
// inside a machine booted without a host run directory (rundir.go: booted
// by an earlier daemon), whose processes are all stopped (after a
// restore), where no one can read the file half-written: it writes in
// place, with shell builtins only (the directory is there since the boot's
// generation file), so that the shell starts no process: each costs
// several milliseconds under gVisor, and this runs on the resume's critical
// path.
const frozenGenerationScript = `[ -d /run/torpor ] || mkdir -p /run/torpor; printf '%s' "$1" > ` + generationFile

// clockArgv reads the machine's wall clock after a restore: one process,
// no shell (the clock check; see settleClock).
var clockArgv = []string{"date", "+%s.%N"}

// probeEnv is added to the environment of the daemon's own processes in
// a machine that read or write for it (the clock reading, the generation
// file): the C locale and UTC, whatever the image sets, so that nothing
// they print depends on the image, and date loads no locale (with the
// image's LANG=C.UTF-8 the first reading after a restore took 35 ms p50,
// with LC_ALL=C 22 ms).
var probeEnv = []string{"LC_ALL=C", "TZ=UTC0"}

// Bounds of the daemon's own steps inside the machine.
const (
	generationTimeout = 10 * time.Second
	signalTimeout     = 10 * time.Second
	maxClockSkew      = 50 * time.Millisecond
	hookOutputTail    = 1024 // bytes of a hook's output kept in events and errors
)

// hooksOf returns the machine's hooks; never nil.
func hooksOf(cfg model.MachineConfig) model.Hooks {
	if cfg.Hooks == nil {
		return model.Hooks{}
	}
	return *cfg.Hooks
}

// stepCtx bounds one step by d alone: not by the operation's deadline,
// which a long hook may have used up, nor by the client's cancellation.
func stepCtx(ctx context.Context, d time.Duration) (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.WithoutCancel(ctx), d)
}

// hookRun is what one run of a hook did.
type hookRun struct {
	name     string
	timeout  time.Duration
	err      error // nil if it exited 0
	timedOut bool
	exitCode int // -1 when unknown (timeout, exec failure)
	output   string
	duration time.Duration
}

// runHook runs hook h inside the machine, bounded by its timeout. When the
// timeout passes, the runtime kills the hook's process group.
func (m *Manager) runHook(ctx context.Context, mc model.Machine, name string, h *model.Hook) *hookRun {
	timeout := h.Timeout.Duration
	if timeout <= 0 {
		timeout = defaultHookTimeout
	}
	hctx, cancel := stepCtx(ctx, timeout)
	defer cancel()
	begin := time.Now()
	out, err := m.rt.Exec(hctx, sandboxID(mc.ID), h.Cmd)
	hr := &hookRun{name: name, timeout: timeout, err: err, exitCode: exitCode(err),
		output: outputTail(out), duration: time.Since(begin)}
	hr.timedOut = err != nil && errors.Is(hctx.Err(), context.DeadlineExceeded)
	if hr.timedOut {
		hr.exitCode = -1
	}
	m.log.Info("hook ran", "machine", mc.ID, "hook", name, "status", hr.status(), "duration", hr.duration, "err", err)
	return hr
}

func (r *hookRun) ok() bool { return r.err == nil }

// status is "ok", "failed" or "timeout".
func (r *hookRun) status() string {
	switch {
	case r.err == nil:
		return "ok"
	case r.timedOut:
		return "timeout"
	}
	return "failed"
}

// result describes the run for an event; nil for no run.
func (r *hookRun) result() *model.HookResult {
	if r == nil {
		return nil
	}
	res := &model.HookResult{Status: r.status(), DurationMS: r.duration.Milliseconds(), ExitCode: r.exitCode, Output: r.output}
	if r.err != nil && !r.timedOut && r.exitCode < 0 {
		res.Error = r.err.Error()
	}
	return res
}

// describe says in a sentence what went wrong.
func (r *hookRun) describe() string {
	var msg string
	switch {
	case r.timedOut:
		msg = fmt.Sprintf("%s hook timed out after %s and was killed", r.name, r.timeout)
	case r.exitCode >= 0:
		msg = fmt.Sprintf("%s hook exited with status %d", r.name, r.exitCode)
	default:
		msg = fmt.Sprintf("%s hook could not run: %v", r.name, r.err)
	}
	if r.output != "" {
		msg += "; output: " + r.output
	}
	return msg
}

// exitCode is the exit status carried by err: 0 for nil, -1 if none.
func exitCode(err error) int {
	if err == nil {
		return 0
	}
	var ec interface{ ExitCode() int }
	if errors.As(err, &ec) {
		return ec.ExitCode()
	}
	return -1
}

// outputTail is the end of a hook's output, trimmed, at most hookOutputTail bytes.
func outputTail(out []byte) string {
	out = bytes.TrimSpace(out)
	if len(out) > hookOutputTail {
		out = out[len(out)-hookOutputTail:]
	}
	return strings.ToValidUTF8(string(out), "?")
}

// preSuspend runs the pre_suspend hook, if any. When it fails the suspend
// is called off: the machine goes back to started, an event says why, and
// the returned error is a conflict (HTTP 409): the app refused to be
// suspended now; nothing is wrong with the request or the daemon.
func (m *Manager) preSuspend(ctx context.Context, mc model.Machine) (*hookRun, error) {
	h := hooksOf(mc.Config).PreSuspend
	if h == nil {
		return nil, nil
	}
	hr := m.runHook(ctx, mc, hookPreSuspend, h)
	if hr.ok() {
		return hr, nil
	}
	msg := "suspend aborted: " + hr.describe()
	_, err := m.enter(mc.ID, model.StateStarted, deleteSnapshot, event(model.EventSuspend, "failed", model.SourceFlyd,
		&model.SuspendDetails{Error: msg, MachineState: model.StateStarted, PreSuspend: hr.result()}))
	if err != nil {
		return hr, model.Errorf(model.KindInternal, "%s; then: %v", msg, err)
	}
	return hr, model.Errorf(model.KindConflict, "%s; the machine is still started", msg)
}

// postResume runs the post_resume hook, if any, recording it in notice;
// a failure also yields a "post_resume" event with status "failed". It never
// undoes the resume.
func (m *Manager) postResume(ctx context.Context, mc model.Machine, notice *model.AppNotice) []model.Event {
	h := hooksOf(mc.Config).PostResume
	if h == nil {
		return nil
	}
	hr := m.runHook(ctx, mc, hookPostResume, h)
	notice.PostResume = hr.result()
	if hr.ok() {
		return nil
	}
	res := hr.result()
	res.Error = hr.describe()
	return []model.Event{event(model.EventPostResume, "failed", model.SourceFlyd, res)}
}

// afterRestore tells a just-restored app that it was resumed, in order:
// generation file (and, with Config.ClockGate, the clock check), the thaw,
// post_resume hook, resume signal. What happened is returned for the
// resume event; a failed post_resume also yields its own event. Nothing
// here undoes the resume.
func (m *Manager) afterRestore(ctx context.Context, mc model.Machine, snap model.Snapshot) (*model.AppNotice, []model.Event) {
	begin := time.Now()
	count := m.lastResumeCount(mc) + 1
	notice := &model.AppNotice{ResumeCount: count}
	g := generation{boot: mc.BootGeneration, resumes: count, suspendedAt: snap.CreatedAt, resumedAt: time.Now()}
	// The generation file is written on the host (rundir.go) or, for a
	// machine booted without a host run directory, by a process in the
	// frozen machine, beside the clock reading if there is one: two
	// processes at once, neither of which forks.
	written := make(chan error, 1)
	if m.hasGuestRunDir(mc) {
		written <- writeGenerationFile(m.guestRunDir(mc), g)
	} else {
		go func() {
			written <- m.writeGeneration(ctx, mc, g)
		}()
	}
	if m.cfg.ClockGate {
		clock, reads := m.settleClock(ctx, mc)
		notice.ClockReads = reads
		clock.record(notice)
		if !clock.ok() {
			m.log.Warn("machine clock off after resume", "machine", mc.ID, "skew", clock.skew, "uncertainty", clock.uncertainty)
		}
	}
	if err := <-written; err != nil {
		notice.GenerationFileError = err.Error()
	}
	m.fault("resume/after-clock", mc.ID)
	m.thaw(ctx, mc, notice)
	m.fault("resume/after-thaw", mc.ID)
	evs := m.postResume(ctx, mc, notice)
	m.resumeSignal(ctx, mc, notice)
	notice.NoticeMS = time.Since(begin).Milliseconds()
	return notice, evs
}

// Clock settling after a restore (Config.ClockGate): should the sandbox
// serve a wrong time for a while, the check is repeated while the app is
// still frozen. (It was once thought to serve the snapshot's time for tens
// of milliseconds; that was datagrams the test app had sent before the
// checkpoint, delivered after the restore: docs/app-authors.md#the-clock.)
const (
	clockSettleTries = 20
	clockSettlePause = 50 * time.Millisecond
)

// settleClock reads the machine's clock, again and again while it is off,
// for about a second at most; the app stays frozen meanwhile, and is
// thawed (thaw) only after a reading that is right or the last try. It
// returns the last reading and how many it took.
func (m *Manager) settleClock(ctx context.Context, mc model.Machine) (clockCheck, int) {
	clock, err := m.readClock(ctx, mc)
	reads := 1
	for ; reads < clockSettleTries && err == nil && !clock.ok(); reads++ {
		time.Sleep(clockSettlePause)
		clock, err = m.readClock(ctx, mc)
	}
	if err != nil {
		m.log.Warn("read the machine's clock after a resume", "machine", mc.ID, "err", err)
	}
	return clock, reads
}

// readClock reads the machine's wall clock once, inside (clockArgv).
func (m *Manager) readClock(ctx context.Context, mc model.Machine) (clockCheck, error) {
	cctx, cancel := stepCtx(ctx, generationTimeout)
	defer cancel()
	before := time.Now()
	out, err := m.rt.Exec(cctx, sandboxID(mc.ID), clockArgv, probeEnv...)
	clock := newClockCheck(out, before, time.Now())
	if err != nil {
		return clock, fmt.Errorf("%v; output: %s", err, outputTail(out))
	}
	return clock, nil
}

// thaw continues the processes frozen for the checkpoint (see suspend).
func (m *Manager) thaw(ctx context.Context, mc model.Machine, notice *model.AppNotice) {
	sctx, cancel := stepCtx(ctx, signalTimeout)
	defer cancel()
	if err := m.rt.SignalAll(sctx, sandboxID(mc.ID), "SIGCONT"); err != nil {
		notice.ThawError = err.Error()
	}
}

// resumeSignal sends hooks.resume_signal, if set, to the machine's init process.
func (m *Manager) resumeSignal(ctx context.Context, mc model.Machine, notice *model.AppNotice) {
	sig := hooksOf(mc.Config).ResumeSignal
	if sig == "" {
		return
	}
	sctx, cancel := stepCtx(ctx, signalTimeout)
	defer cancel()
	notice.ResumeSignal = sig
	if err := m.rt.Signal(sctx, sandboxID(mc.ID), sig); err != nil {
		notice.ResumeSignalError = err.Error()
	}
}

// generation is what the generation file tells the app.
type generation struct {
	boot        uint64
	resumes     int
	suspendedAt time.Time // zero before the first resume
	resumedAt   time.Time // zero before the first resume
}

// content is the file: KEY=VALUE lines, like an env file.
func (g generation) content() string {
	return fmt.Sprintf("TORPOR_BOOT_GENERATION=%d\nTORPOR_RESUME_COUNT=%d\nTORPOR_SUSPENDED_AT=%s\nTORPOR_RESUMED_AT=%s\n",
		g.boot, g.resumes, timestamp(g.suspendedAt), timestamp(g.resumedAt))
}

// timestamp formats t as RFC 3339 UTC with milliseconds; "" for the zero time.
func timestamp(t time.Time) string {
	if t.IsZero() {
		return ""
	}
	return t.UTC().Format("2006-01-02T15:04:05.000Z07:00")
}

// writeGeneration (re)writes the generation file inside a machine booted
// without a host run directory (rundir.go). Such a machine's /run/torpor is
// in its root filesystem, which lives in its memory, so the file is part of
// every snapshot: it must be rewritten after each restore.
func (m *Manager) writeGeneration(ctx context.Context, mc model.Machine, g generation) error {
	gctx, cancel := stepCtx(ctx, generationTimeout)
	defer cancel()
	out, err := m.rt.Exec(gctx, sandboxID(mc.ID), []string{"/bin/sh", "-c", frozenGenerationScript, "sh", g.content()}, probeEnv...)
	if err != nil {
		return fmt.Errorf("writing %s: %v; output: %s", generationFile, err, outputTail(out))
	}
	return nil
}

// clockCheck compares the machine's wall clock, read once inside, with the
// host's: the read happened between before and after (host time), so the
// skew is measured against their midpoint, give or take half the interval.
type clockCheck struct {
	measured    bool
	skew        time.Duration // machine minus host
	uncertainty time.Duration
}

// newClockCheck reads the first line of out as Unix seconds ("date
// +%s.%N").
func newClockCheck(out []byte, before, after time.Time) clockCheck {
	line, _, _ := strings.Cut(string(out), "\n")
	secs, err := strconv.ParseFloat(strings.TrimSpace(line), 64)
	if err != nil || secs <= 0 {
		return clockCheck{}
	}
	whole, frac := math.Modf(secs)
	inside := time.Unix(int64(whole), int64(frac*1e9))
	half := after.Sub(before) / 2
	return clockCheck{measured: true, skew: inside.Sub(before.Add(half)), uncertainty: half}
}

// ok reports whether the clock is certainly within maxClockSkew, or unmeasured.
func (c clockCheck) ok() bool {
	return !c.measured || c.skew.Abs()-c.uncertainty <= maxClockSkew
}

// record adds the check to a notice.
func (c clockCheck) record(notice *model.AppNotice) {
	if !c.measured {
		return
	}
	skew, unc, ok := millis(c.skew), millis(c.uncertainty), c.ok()
	notice.ClockSkewMS, notice.ClockUncertaintyMS, notice.ClockOK = &skew, &unc, &ok
}

// millis is d in milliseconds, rounded to 0.1 ms.
func millis(d time.Duration) float64 {
	return math.Round(float64(d)/1e5) / 10
}

// lastResumeCount is how often the machine has been resumed in its current
// boot generation, as recorded (resume_count) by the newest event of that
// generation that carries one; 0 if none does (e.g. right after a cold
// start).
func (m *Manager) lastResumeCount(mc model.Machine) int {
	var evs []model.Event
	if err := m.store.View(func(tx *store.Tx) error {
		var err error
		evs, err = tx.Events(mc.ID, 0)
		return err
	}); err != nil {
		m.log.Warn("read events", "machine", mc.ID, "err", err)
		return 0
	}
	for _, ev := range evs { // newest first
		notice, gen := noticeOf(ev)
		if notice == nil || notice.ResumeCount == 0 {
			continue
		}
		if gen != mc.BootGeneration {
			return 0
		}
		return notice.ResumeCount
	}
	return 0
}

// noticeOf returns what an event says the app was told, and in which boot
// generation: resumes and the failed suspends restored from their image.
func noticeOf(ev model.Event) (*model.AppNotice, uint64) {
	if d := ev.Start(); d != nil {
		return d.AppNotice, d.BootGeneration
	}
	if d := ev.Suspend(); d != nil {
		return d.AppNotice, d.BootGeneration
	}
	return nil, 0
}

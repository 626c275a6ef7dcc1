package machine

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/torpor-dev/torpor/internal/model"
)

// exitErr is an exec error carrying an exit status, as the gVisor driver's is.
type exitErr int

func (e exitErr) Error() string { return fmt.Sprintf("exit status %d", int(e)) }
func (e exitErr) ExitCode() int { return int(e) }

// machineExec answers the fake runtime's Exec like a machine would: the
// clock read prints the clock (offset by skew), the generation script's file
// content (machines booted without a host run directory) is kept; hook
// commands are answered by hooks[cmd].
type machineExec struct {
	mu          sync.Mutex
	skew        time.Duration
	generations []string // contents written, in order
	hooks       map[string]func(ctx context.Context) ([]byte, error)
}

func (x *machineExec) exec(ctx context.Context, id string, args []string) ([]byte, error) {
	x.mu.Lock()
	defer x.mu.Unlock()
	if len(args) >= 5 && args[2] == frozenGenerationScript {
		x.generations = append(x.generations, args[4])
		return nil, nil
	}
	if slices.Equal(args, clockArgv) {
		now := time.Now().Add(x.skew)
		return fmt.Appendf(nil, "%d.%09d\n", now.Unix(), now.Nanosecond()), nil
	}
	if fn, ok := x.hooks[args[0]]; ok {
		x.mu.Unlock()
		defer x.mu.Lock()
		return fn(ctx)
	}
	return nil, exitErr(127)
}

func (x *machineExec) lastGeneration() string {
	x.mu.Lock()
	defer x.mu.Unlock()
	if len(x.generations) == 0 {
		return ""
	}
	return x.generations[len(x.generations)-1]
}

// generation reads machine id's generation file from the host directory
// its sandbox mounts at /run/torpor ("" without one).
func (e *env) generation(id string) string {
	e.t.Helper()
	spec, _ := e.rt.Spec(sandboxID(id))
	for _, mnt := range spec.Mounts {
		if mnt.Destination == "/run/torpor" {
			if !mnt.ReadOnly {
				e.t.Errorf("/run/torpor is mounted read-write")
			}
			b, err := os.ReadFile(filepath.Join(mnt.Source, "generation"))
			if err != nil {
				e.t.Fatal(err)
			}
			return string(b)
		}
	}
	return ""
}

func ok(out string) func(context.Context) ([]byte, error) {
	return func(context.Context) ([]byte, error) { return []byte(out), nil }
}

func fail(code int, out string) func(context.Context) ([]byte, error) {
	return func(context.Context) ([]byte, error) { return []byte(out), exitErr(code) }
}

// hang runs until the hook's timeout kills it.
func hang(ctx context.Context) ([]byte, error) {
	<-ctx.Done()
	return []byte("still working"), ctx.Err()
}

// hookEnv is an env whose machines have hooks answered by x.
func hookEnv(t *testing.T, x *machineExec) *env {
	e := newEnv(t)
	e.rt.ExecFunc = x.exec
	return e
}

func (e *env) createWith(hooks *model.Hooks) model.Machine {
	e.t.Helper()
	cfg := e.config()
	cfg.Hooks = hooks
	mc, err := e.m.Create(context.Background(), "app", model.CreateMachineRequest{Config: cfg})
	e.must(err)
	return mc
}

func hook(cmd string, timeout time.Duration) *model.Hook {
	return &model.Hook{Cmd: []string{cmd}, Timeout: model.Duration{Duration: timeout}}
}

// detail reads a nested event detail such as "pre_suspend.status".
func detail(ev model.Event, path string) any { return ev.Field(path) }

func TestHookConfigValidation(t *testing.T) {
	e := newEnv(t)
	cases := map[string]*model.Hooks{
		"config.hooks.pre_suspend.cmd":     {PreSuspend: &model.Hook{}},
		"config.hooks.post_resume.cmd":     {PostResume: &model.Hook{Cmd: []string{""}}},
		"config.hooks.pre_suspend.timeout": {PreSuspend: hook("/x", 500*time.Millisecond)},
		"config.hooks.post_resume.timeout": {PostResume: hook("/x", 6*time.Minute)},
		"config.hooks.resume_signal":       {ResumeSignal: "SIGNOPE"},
	}
	for field, hooks := range cases {
		cfg := e.config()
		cfg.Hooks = hooks
		_, err := e.m.Create(context.Background(), "app", model.CreateMachineRequest{Config: cfg})
		if model.KindOf(err) != model.KindInvalid || !strings.Contains(err.Error(), field) {
			t.Errorf("%s: got %v", field, err)
		}
	}
	cfg := e.config()
	cfg.Hooks = &model.Hooks{ResumeSignal: "SIGKILL"}
	if _, err := e.m.Create(context.Background(), "app", model.CreateMachineRequest{Config: cfg}); model.KindOf(err) != model.KindInvalid {
		t.Errorf("resume_signal SIGKILL accepted: %v", err)
	}

	mc := e.createWith(&model.Hooks{PreSuspend: &model.Hook{Cmd: []string{"/x"}}, ResumeSignal: "usr2"})
	h := e.get(mc.ID).Config.Hooks
	if h.PreSuspend.Timeout.Duration != 10*time.Second || h.ResumeSignal != "SIGUSR2" {
		t.Fatalf("normalized hooks = %+v / %+v", h, h.PreSuspend)
	}
}

func TestHooksRunInOrderAroundSuspendAndResume(t *testing.T) {
	for _, gate := range []bool{false, true} {
		t.Run(fmt.Sprintf("clock gate %v", gate), func(t *testing.T) {
			x := &machineExec{hooks: map[string]func(context.Context) ([]byte, error){
				"/pre": ok("flushed"), "/post": ok("reconnected"),
			}}
			e := hookEnv(t, x)
			if gate {
				e.cfg.ClockGate = true
				e.restart()
			}
			mc := e.createWith(&model.Hooks{PreSuspend: hook("/pre", time.Second), PostResume: hook("/post", time.Second), ResumeSignal: "SIGUSR2"})
			e.rt.ResetCalls()

			e.must(e.m.Suspend(context.Background(), "app", mc.ID))
			e.start(mc.ID)

			// The app is frozen from before the checkpoint until its
			// generation file is written (on the host: no exec) and, with
			// the gate, its clock is checked.
			want := []string{"exec /pre", "signal-all SIGSTOP", "checkpoint", "restore", "signal-all SIGCONT", "exec /post", "signal SIGUSR2"}
			if gate {
				want = slices.Insert(want, 4, "exec date")
			}
			var got []string
			for _, c := range e.rt.Calls() {
				if c == "checkpoint" || c == "restore" || strings.HasPrefix(c, "signal") || strings.HasPrefix(c, "exec") {
					got = append(got, strings.Join(strings.Fields(c)[:min(2, len(strings.Fields(c)))], " "))
				}
			}
			if strings.Join(got, ", ") != strings.Join(want, ", ") {
				t.Fatalf("calls = %q, want %q", got, want)
			}
			sus := e.lastEvent(mc.ID, "suspend")
			if detail(sus, "pre_suspend.status") != "ok" || detail(sus, "pre_suspend.duration_ms") == nil {
				t.Fatalf("suspend event = %+v", sus)
			}
			res := e.lastEvent(mc.ID, "resume")
			if detail(res, "post_resume.status") != "ok" || detail(res, "post_resume.output") != "reconnected" ||
				detail(res, "resume_count") != 1.0 || detail(res, "resume_signal") != "SIGUSR2" {
				t.Fatalf("resume event = %+v", res)
			}
			if gate {
				if detail(res, "clock_ok") != true || detail(res, "clock_reads") != 1.0 {
					t.Fatalf("resume event with the clock gate = %+v", res)
				}
				// The daemon's own processes run in the C locale and UTC (probeEnv).
				if got := e.rt.ExecEnv("date"); !slices.Equal(got, probeEnv) {
					t.Errorf("date ran with env %q, want %q", got, probeEnv)
				}
			} else if detail(res, "clock_ok") != nil || detail(res, "clock_reads") != nil || detail(res, "clock_skew_ms") != nil {
				t.Fatalf("resume event without the clock gate says something of a clock reading: %+v", res)
			}
			e.wantState(mc.ID, model.StateStarted)
			if e.rt.Counter(sandboxID(mc.ID)) < 0 {
				t.Fatal("the resume signal ended the app")
			}
		})
	}
}

func TestGenerationFileAndResumeCount(t *testing.T) {
	x := &machineExec{}
	e := hookEnv(t, x)
	mc := e.create()
	if g := e.generation(mc.ID); g != "TORPOR_BOOT_GENERATION=1\nTORPOR_RESUME_COUNT=0\nTORPOR_SUSPENDED_AT=\nTORPOR_RESUMED_AT=\n" {
		t.Fatalf("generation file at boot = %q", g)
	}
	if spec, _ := e.rt.Spec(sandboxID(mc.ID)); !contains(spec.Env, "TORPOR_BOOT_GENERATION=1") {
		t.Fatalf("env = %v", spec.Env)
	}
	for i := 1; i <= 2; i++ {
		e.must(e.m.Suspend(context.Background(), "app", mc.ID))
		e.start(mc.ID)
		g := e.generation(mc.ID)
		if !strings.Contains(g, fmt.Sprintf("TORPOR_BOOT_GENERATION=1\nTORPOR_RESUME_COUNT=%d\n", i)) ||
			strings.Contains(g, "SUSPENDED_AT=\n") || strings.Contains(g, "RESUMED_AT=\n") {
			t.Fatalf("generation file after resume %d = %q", i, g)
		}
	}
	e.must(e.m.Stop(context.Background(), "app", mc.ID, model.StopRequest{}))
	e.start(mc.ID) // cold start: generation 2, no resume yet
	if g := e.generation(mc.ID); !strings.HasPrefix(g, "TORPOR_BOOT_GENERATION=2\nTORPOR_RESUME_COUNT=0\n") {
		t.Fatalf("generation file after cold start = %q", g)
	}
	e.must(e.m.Suspend(context.Background(), "app", mc.ID))
	e.restart() // the count survives a daemon restart
	e.start(mc.ID)
	if g := e.generation(mc.ID); !strings.HasPrefix(g, "TORPOR_BOOT_GENERATION=2\nTORPOR_RESUME_COUNT=1\n") {
		t.Fatalf("generation file after resume in generation 2 = %q", g)
	}
	if len(x.generations) != 0 {
		t.Fatalf("the generation file was written from inside the machine: %q", x.generations)
	}
	if dirs, _ := filepath.Glob(filepath.Join(e.cfg.DataDir, "machines", mc.ID, "run-*")); len(dirs) != 1 {
		t.Fatalf("run directories %q after a cold start into generation 2, want run-2 alone", dirs)
	}
}

// A machine booted by a daemon before host run directories (adopted
// running, then suspended) has its /run/torpor in its memory: its resume
// mounts nothing there and writes the file from inside, frozen, as before;
// its next cold start gets a host run directory.
func TestGenerationFileOfAMachineBootedWithoutRunDir(t *testing.T) {
	x := &machineExec{}
	e := hookEnv(t, x)
	mc := e.create()
	if err := os.RemoveAll(e.m.guestRunDir(e.get(mc.ID))); err != nil {
		t.Fatal(err)
	}
	e.must(e.m.Suspend(context.Background(), "app", mc.ID))
	e.start(mc.ID)
	if g := e.generation(mc.ID); g != "" {
		t.Fatalf("a restore mounted a run directory the sandbox was not booted with (file %q)", g)
	}
	if g := x.lastGeneration(); !strings.HasPrefix(g, "TORPOR_BOOT_GENERATION=1\nTORPOR_RESUME_COUNT=1\n") {
		t.Fatalf("generation file written inside after the resume = %q", g)
	}
	if got := e.rt.ExecEnv("/bin/sh"); !slices.Equal(got, probeEnv) {
		t.Errorf("the generation script ran with env %q, want %q", got, probeEnv)
	}
	e.must(e.m.Stop(context.Background(), "app", mc.ID, model.StopRequest{}))
	e.start(mc.ID)
	if g := e.generation(mc.ID); !strings.HasPrefix(g, "TORPOR_BOOT_GENERATION=2\nTORPOR_RESUME_COUNT=0\n") {
		t.Fatalf("generation file after the cold start = %q", g)
	}
}

func contains(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}

func TestPreSuspendFailureKeepsMachineStarted(t *testing.T) {
	cases := map[string]struct {
		run        func(context.Context) ([]byte, error)
		status     string
		errMention string
	}{
		"exit":    {fail(3, "busy: 2 jobs running"), "failed", "exited with status 3"},
		"timeout": {hang, "timeout", "timed out after 1s"},
	}
	for name, c := range cases {
		t.Run(name, func(t *testing.T) {
			x := &machineExec{hooks: map[string]func(context.Context) ([]byte, error){"/pre": c.run, "/post": ok("")}}
			e := hookEnv(t, x)
			mc := e.createWith(&model.Hooks{PreSuspend: hook("/pre", time.Second), PostResume: hook("/post", time.Second)})
			e.rt.ResetCalls()
			err := e.m.Suspend(context.Background(), "app", mc.ID)
			if model.KindOf(err) != model.KindConflict || !strings.Contains(err.Error(), c.errMention) {
				t.Fatalf("suspend = %v, want a conflict saying %q", err, c.errMention)
			}
			e.wantState(mc.ID, model.StateStarted)
			ev := e.lastEvent(mc.ID, "suspend")
			if ev.Status != "failed" || detail(ev, "pre_suspend.status") != c.status || detail(ev, "pre_suspend.output") == nil ||
				!strings.Contains(fmt.Sprint(ev.Field("error")), c.errMention) {
				t.Fatalf("suspend event = %+v", ev)
			}
			for _, call := range e.rt.Calls() {
				if call == "checkpoint" || call == "exec /post" {
					t.Fatalf("%s after a failed pre_suspend: %q", call, e.rt.Calls())
				}
			}
			if _, ok := e.snapshotRecord(mc.ID); ok {
				t.Fatal("aborted suspend left a snapshot record")
			}
			// Still supervised: its own exit stops it.
			e.rt.Exit(sandboxID(mc.ID), 1)
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			if _, err := e.m.Wait(ctx, "app", mc.ID, []model.State{model.StateStopped}); err != nil {
				t.Fatal(err)
			}
		})
	}
}

func TestPostResumeFailureDoesNotUndoResume(t *testing.T) {
	x := &machineExec{hooks: map[string]func(context.Context) ([]byte, error){"/post": fail(1, "model not found")}}
	e := hookEnv(t, x)
	mc := e.createWith(&model.Hooks{PostResume: hook("/post", time.Second), ResumeSignal: "SIGUSR1"})
	e.rt.Tick(sandboxID(mc.ID), 7)
	e.must(e.m.Suspend(context.Background(), "app", mc.ID))
	if resp := e.start(mc.ID); !resp.FromSnapshot {
		t.Fatal("not resumed")
	}
	e.wantState(mc.ID, model.StateStarted)
	if e.rt.Counter(sandboxID(mc.ID)) != 7 {
		t.Fatal("memory lost")
	}
	res := e.lastEvent(mc.ID, "resume")
	if res.Status != "started" || detail(res, "post_resume.status") != "failed" || detail(res, "post_resume.exit_code") != 1.0 {
		t.Fatalf("resume event = %+v", res)
	}
	hev := e.lastEvent(mc.ID, "post_resume")
	if hev.Status != "failed" || !strings.Contains(fmt.Sprint(hev.Field("error")), "model not found") {
		t.Fatalf("post_resume event = %+v", hev)
	}
	if !contains(e.rt.Calls(), "signal SIGUSR1") {
		t.Fatal("no resume signal after a failed post_resume")
	}
}

func TestCheckpointFailureAfterPreSuspendRunsPostResume(t *testing.T) {
	x := &machineExec{hooks: map[string]func(context.Context) ([]byte, error){"/pre": ok(""), "/post": ok("")}}
	e := hookEnv(t, x)
	mc := e.createWith(&model.Hooks{PreSuspend: hook("/pre", time.Second), PostResume: hook("/post", time.Second)})
	e.rt.Fail("checkpoint", errors.New("no space left on device"))
	if err := e.m.Suspend(context.Background(), "app", mc.ID); err == nil {
		t.Fatal("suspend succeeded")
	}
	e.wantState(mc.ID, model.StateStarted)
	if ev := e.lastEvent(mc.ID, "suspend"); detail(ev, "post_resume.status") != "ok" {
		t.Fatalf("suspend event = %+v", ev)
	}
	if !contains(e.rt.Calls(), "exec /post") {
		t.Fatalf("post_resume did not run: %q", e.rt.Calls())
	}
}

func TestClockCheckFlagsSkew(t *testing.T) {
	x := &machineExec{skew: 2 * time.Second}
	e := hookEnv(t, x)
	e.cfg.ClockGate = true
	e.restart()
	mc := e.create()
	e.must(e.m.Suspend(context.Background(), "app", mc.ID))
	e.start(mc.ID)
	res := e.lastEvent(mc.ID, "resume")
	skew, _ := res.Field("clock_skew_ms").(float64)
	if res.Field("clock_ok") != false || skew < 1900 || skew > 2100 || res.Field("clock_reads") != float64(clockSettleTries) {
		t.Fatalf("resume event = %+v", res)
	}
}

package machine

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/torpor-dev/torpor/internal/model"
)

// gpuConfig is a machine with one GPU, opted into host-memory mode or not,
// with the given hooks and, if autostop, a service that autosuspends.
func (e *env) gpuConfig(mode string, hooks *model.Hooks, autostop bool) model.MachineConfig {
	cfg := e.config()
	cfg.Guest.GPUs = 1
	cfg.Guest.GPUKind = "a10"
	cfg.Guest.GPUSuspend = mode
	cfg.Hooks = hooks
	if autostop {
		auto := model.AutostopSuspend
		cfg.Services = []model.Service{{InternalPort: 8080, Autostop: &auto}}
	}
	return cfg
}

func gpuHooks() *model.Hooks {
	return &model.Hooks{PreSuspend: hook("/offload", time.Second), PostResume: hook("/reload", time.Second)}
}

func gpuExec() *machineExec {
	return &machineExec{hooks: map[string]func(context.Context) ([]byte, error){
		"/offload": ok(`{"offloaded": true}`), "/reload": ok(`{"loaded": true}`),
	}}
}

func TestGPUSuspendRefusedWithoutOptIn(t *testing.T) {
	e := hookEnv(t, gpuExec())
	// Hooks alone do not make a GPU machine eligible: the opt-in is explicit.
	for name, hooks := range map[string]*model.Hooks{"no hooks": nil, "hooks": gpuHooks()} {
		t.Run(name, func(t *testing.T) {
			mc, err := e.m.Create(context.Background(), "app", model.CreateMachineRequest{Config: e.gpuConfig("", hooks, false)})
			e.must(err)
			err = e.m.Suspend(context.Background(), "app", mc.ID)
			if model.KindOf(err) != model.KindPrecondition || !strings.Contains(err.Error(), "guest.gpus is 1") ||
				!strings.Contains(err.Error(), `guest.gpu_suspend "host-memory"`) {
				t.Fatalf("suspend = %v, want 412 naming guest.gpus and the opt-in", err)
			}
			e.wantState(mc.ID, model.StateStarted)
			if _, ok := e.snapshotRecord(mc.ID); ok {
				t.Fatal("refused suspend left a snapshot record")
			}

			_, err = e.m.Create(context.Background(), "app", model.CreateMachineRequest{Config: e.gpuConfig("", hooks, true)})
			if model.KindOf(err) != model.KindInvalid || !strings.Contains(err.Error(), "config.services[0].autostop") ||
				!strings.Contains(err.Error(), "guest.gpus") {
				t.Fatalf("create with autostop=suspend = %v, want 400 naming autostop and guest.gpus", err)
			}
		})
	}
}

func TestGPUSuspendHostMemoryAllowed(t *testing.T) {
	x := gpuExec()
	e := hookEnv(t, x)
	// autostop "suspend" is accepted for such a machine.
	mc, err := e.m.Create(context.Background(), "app", model.CreateMachineRequest{Config: e.gpuConfig(model.GPUSuspendHostMemory, gpuHooks(), true)})
	e.must(err)
	if got := e.get(mc.ID).Config.Guest.GPUSuspend; got != model.GPUSuspendHostMemory {
		t.Fatalf("stored gpu_suspend = %q", got)
	}
	e.rt.Tick(sandboxID(mc.ID), 5)
	e.rt.ResetCalls()

	e.must(e.m.Suspend(context.Background(), "app", mc.ID))
	e.wantState(mc.ID, model.StateSuspended)
	if resp := e.start(mc.ID); !resp.FromSnapshot {
		t.Fatal("not resumed from the snapshot")
	}
	if e.rt.Counter(sandboxID(mc.ID)) != 5 {
		t.Fatal("resume lost the machine's memory")
	}
	var got []string
	for _, c := range e.rt.Calls() {
		if c == "checkpoint" || c == "restore" || c == "exec /offload" || c == "exec /reload" {
			got = append(got, c)
		}
	}
	if want := "exec /offload, checkpoint, restore, exec /reload"; strings.Join(got, ", ") != want {
		t.Fatalf("calls = %q, want %s", got, want)
	}
	if ev := e.lastEvent(mc.ID, "resume"); detail(ev, "post_resume.status") != "ok" {
		t.Fatalf("resume event = %+v", ev)
	}

	// A GPU machine whose offload fails is not suspended: 409, still started.
	x.hooks["/offload"] = fail(1, "POST /offload failed: HTTP Error 500")
	err = e.m.Suspend(context.Background(), "app", mc.ID)
	if model.KindOf(err) != model.KindConflict || !strings.Contains(err.Error(), "HTTP Error 500") {
		t.Fatalf("suspend with a failing offload = %v, want 409", err)
	}
	e.wantState(mc.ID, model.StateStarted)
}

func TestGPUSuspendValidation(t *testing.T) {
	e := newEnv(t)
	post := &model.Hooks{PostResume: hook("/reload", time.Second)}
	pre := &model.Hooks{PreSuspend: hook("/offload", time.Second)}
	cases := []struct {
		name  string
		mode  string
		hooks *model.Hooks
		want  []string
	}{
		{"unknown value", "gpu-memory", gpuHooks(), []string{"config.guest.gpu_suspend", `"gpu-memory"`, `"host-memory"`}},
		{"no hooks", model.GPUSuspendHostMemory, nil,
			[]string{"config.guest.gpu_suspend", "requires both config.hooks.pre_suspend and config.hooks.post_resume",
				"missing config.hooks.pre_suspend and config.hooks.post_resume"}},
		{"signal only", model.GPUSuspendHostMemory, &model.Hooks{ResumeSignal: "SIGUSR2"},
			[]string{"requires both", "missing config.hooks.pre_suspend and config.hooks.post_resume"}},
		{"no pre_suspend", model.GPUSuspendHostMemory, post, []string{"requires both", "missing config.hooks.pre_suspend"}},
		{"no post_resume", model.GPUSuspendHostMemory, pre, []string{"requires both", "missing config.hooks.post_resume"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			for _, autostop := range []bool{false, true} {
				_, err := e.m.Create(context.Background(), "app", model.CreateMachineRequest{Config: e.gpuConfig(c.mode, c.hooks, autostop)})
				if model.KindOf(err) != model.KindInvalid {
					t.Fatalf("create = %v, want 400", err)
				}
				for _, w := range c.want {
					if !strings.Contains(err.Error(), w) {
						t.Fatalf("create = %v, want it to say %q", err, w)
					}
				}
			}
		})
	}

	// An update is checked the same way.
	mc, err := e.m.Create(context.Background(), "app", model.CreateMachineRequest{Config: e.gpuConfig(model.GPUSuspendHostMemory, gpuHooks(), false)})
	e.must(err)
	_, err = e.m.Update(context.Background(), "app", mc.ID, model.UpdateMachineRequest{Config: e.gpuConfig(model.GPUSuspendHostMemory, pre, false)})
	if model.KindOf(err) != model.KindInvalid || !strings.Contains(err.Error(), "missing config.hooks.post_resume") {
		t.Fatalf("update dropping post_resume = %v, want 400", err)
	}

	// The opt-in is accepted (and checked) without GPUs too: one config for
	// hosts with and without GPUs; such a machine is eligible anyway.
	cfg := e.gpuConfig(model.GPUSuspendHostMemory, gpuHooks(), true)
	cfg.Guest.GPUs = 0
	if _, err := e.m.Create(context.Background(), "app", model.CreateMachineRequest{Config: cfg}); err != nil {
		t.Fatalf("gpus 0 with host-memory mode: %v", err)
	}
	cfg.Hooks = nil
	cfg.Services = nil
	if _, err := e.m.Create(context.Background(), "app", model.CreateMachineRequest{Config: cfg}); model.KindOf(err) != model.KindInvalid {
		t.Fatalf("gpus 0, host-memory mode without hooks = %v, want 400", err)
	}
}

package machine

import (
	"context"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/torpor-dev/torpor/internal/model"
	"github.com/torpor-dev/torpor/internal/runtime"
)

// eventsOf returns the machine's events of type typ, newest first.
func (e *env) eventsOf(id, typ string) []model.Event {
	e.t.Helper()
	evs, err := e.m.Events(context.Background(), "app", id)
	e.must(err)
	var out []model.Event
	for _, ev := range evs {
		if ev.Type == typ {
			out = append(out, ev)
		}
	}
	return out
}

// TestStartDuringCheckpointResumesFromTheNewSnapshot holds a suspend's
// checkpoint in progress and starts the machine meanwhile: the save cannot
// be abandoned (interrupt.go), so the suspend completes and the start,
// which waited for it, resumes the machine from the new snapshot, its state
// kept.
func TestStartDuringCheckpointResumesFromTheNewSnapshot(t *testing.T) {
	e := newEnv(t)
	mc := e.create()
	sid := sandboxID(mc.ID)
	e.rt.Tick(sid, 41)
	inCheckpoint, release := make(chan struct{}), make(chan struct{})
	e.rt.OnCheckpoint = func(string) { close(inCheckpoint); <-release }
	suspended := make(chan error, 1)
	go func() { suspended <- e.m.Suspend(context.Background(), "app", mc.ID) }()
	<-inCheckpoint
	if st := e.get(mc.ID).State; st != model.StateSuspending {
		t.Fatalf("state during the checkpoint = %s", st)
	}
	started := make(chan model.StartResponse, 1)
	go func() { started <- e.start(mc.ID) }()
	time.Sleep(50 * time.Millisecond) // the start asks to cancel, too late
	close(release)
	e.must(<-suspended)
	resp := <-started
	if resp.PreviousState != model.StateSuspended || !resp.FromSnapshot {
		t.Errorf("start answered %+v, want a resume from the snapshot just taken", resp)
	}
	got := e.get(mc.ID)
	if got.State != model.StateStarted || got.BootGeneration != mc.BootGeneration {
		t.Errorf("machine %s in generation %d, want started in %d", got.State, got.BootGeneration, mc.BootGeneration)
	}
	if n := e.rt.Counter(sid); n != 41 {
		t.Errorf("counter = %d, want 41: the state was not restored", n)
	}
	if ev := e.eventsOf(mc.ID, model.EventSuspend)[0]; ev.Status != "suspended" {
		t.Errorf("suspend event %+v, want suspended", ev)
	}
	e.rt.OnCheckpoint = nil
}

// TestStartCancelsSuspendBeforeCheckpoint cancels a suspend while its
// pre_suspend hook runs: the checkpoint never runs, and the app gets its
// post_resume hook.
func TestStartCancelsSuspendBeforeCheckpoint(t *testing.T) {
	e := newEnv(t)
	cfg := e.config()
	cfg.Hooks = &model.Hooks{PreSuspend: &model.Hook{Cmd: []string{"/pre"}}, PostResume: &model.Hook{Cmd: []string{"/post"}}}
	mc, err := e.m.Create(context.Background(), "app", model.CreateMachineRequest{Config: cfg})
	e.must(err)
	inHook, release := make(chan struct{}), make(chan struct{})
	e.rt.ExecFunc = func(ctx context.Context, id string, args []string) ([]byte, error) {
		if args[0] == "/pre" {
			close(inHook)
			<-release
		}
		return nil, nil
	}
	suspended := make(chan error, 1)
	go func() { suspended <- e.m.Suspend(context.Background(), "app", mc.ID) }()
	<-inHook
	started := make(chan model.StartResponse, 1)
	go func() { started <- e.start(mc.ID) }()
	time.Sleep(50 * time.Millisecond)
	close(release)
	wantKind(t, <-suspended, model.KindConflict, "cancelled by a start (before checkpoint)")
	if resp := <-started; resp.PreviousState != model.StateSuspending {
		t.Errorf("start answered %+v", resp)
	}
	calls := e.rt.Calls()
	if slices.Contains(calls, "checkpoint") || !slices.Contains(calls, "exec /post") {
		t.Errorf("calls %v: want no checkpoint and the post_resume hook", calls)
	}
	if st := e.get(mc.ID).State; st != model.StateStarted {
		t.Errorf("state %s", st)
	}
}

// TestStartWithoutLeaseCannotCancelSuspend: a caller the machine's lease
// refuses cannot cancel the holder's suspend either.
func TestStartWithoutLeaseCannotCancelSuspend(t *testing.T) {
	e := newEnv(t)
	mc := e.create()
	l, err := e.m.AcquireLease(context.Background(), "app", mc.ID, model.LeaseParams{TTL: time.Minute, Owner: "deployer"})
	e.must(err)
	holder := model.WithLeaseNonce(context.Background(), l.Nonce)
	inCheckpoint, release := make(chan struct{}), make(chan struct{})
	e.rt.OnCheckpoint = func(string) { close(inCheckpoint); <-release }
	suspended := make(chan error, 1)
	go func() { suspended <- e.m.Suspend(holder, "app", mc.ID) }()
	<-inCheckpoint
	startErr := make(chan error, 1)
	go func() { _, err := e.m.Start(context.Background(), "app", mc.ID); startErr <- err }()
	time.Sleep(50 * time.Millisecond)
	close(release)
	e.must(<-suspended)
	wantKind(t, <-startErr, model.KindConflict, "leased by \"deployer\"")
	if st := e.get(mc.ID).State; st != model.StateSuspended {
		t.Errorf("state %s, want suspended", st)
	}
}

// TestLeases checks acquire, refresh, release and expiry, and that every
// guarded operation needs the nonce while the lease holds, the daemon's own
// excepted; leases survive a daemon restart.
func TestLeases(t *testing.T) {
	e := newEnv(t)
	mc := e.create()
	ctx := context.Background()
	l, err := e.m.AcquireLease(ctx, "app", mc.ID, model.LeaseParams{TTL: time.Minute, Owner: "deployer", Description: "deploy"})
	e.must(err)
	if len(l.Nonce) != 32 || l.Owner != "deployer" || l.Version != mc.Version || l.ExpiresAt < time.Now().Add(50*time.Second).Unix() {
		t.Fatalf("lease %+v", l)
	}
	_, err = e.m.AcquireLease(ctx, "app", mc.ID, model.LeaseParams{TTL: time.Minute})
	wantKind(t, err, model.KindConflict, "leased by \"deployer\"")

	holder := model.WithLeaseNonce(ctx, l.Nonce)
	other := model.WithLeaseNonce(ctx, "0123456789abcdef0123456789abcdef")
	ops := map[string]func(ctx context.Context) error{
		"stop":    func(ctx context.Context) error { return e.m.Stop(ctx, "app", mc.ID, model.StopRequest{}) },
		"suspend": func(ctx context.Context) error { return e.m.Suspend(ctx, "app", mc.ID) },
		"start":   func(ctx context.Context) error { _, err := e.m.Start(ctx, "app", mc.ID); return err },
		"cordon":  func(ctx context.Context) error { return e.m.Cordon(ctx, "app", mc.ID, true) },
		"restart": func(ctx context.Context) error { return e.m.Restart(ctx, "app", mc.ID, model.RestartRequest{}) },
		"update": func(ctx context.Context) error {
			_, err := e.m.Update(ctx, "app", mc.ID, model.UpdateMachineRequest{Config: e.config(), SkipLaunch: true})
			return err
		},
		"destroy": func(ctx context.Context) error { return e.m.Destroy(ctx, "app", mc.ID, true) },
	}
	for _, op := range ops {
		wantKind(t, op(ctx), model.KindConflict, "fly-machine-lease-nonce")
		wantKind(t, op(other), model.KindConflict, "leased by")
		wantKind(t, op(model.WithSource(ctx, model.SourceProxy)), model.KindConflict, "leased by")
	}
	// Not guarded, as on Fly: signal, exec, metadata.
	e.must(e.m.SetMetadata(ctx, "app", mc.ID, "k", "v", false))
	if _, err := e.m.Exec(ctx, "app", mc.ID, model.ExecRequest{Command: []string{"true"}}); err != nil {
		t.Fatal(err)
	}
	// The holder goes through; so does the daemon's own restart policy.
	e.must(ops["cordon"](holder))
	e.must(e.m.Cordon(model.WithSource(ctx, model.SourceFlyd), "app", mc.ID, false))

	// Refresh keeps the nonce and moves the expiry.
	r, err := e.m.AcquireLease(holder, "app", mc.ID, model.LeaseParams{TTL: 2 * time.Hour})
	e.must(err)
	if r.Nonce != l.Nonce || r.ExpiresAt < time.Now().Add(time.Hour).Unix() || r.Description != "deploy" {
		t.Fatalf("refreshed lease %+v", r)
	}
	// A daemon restart keeps it.
	e.restart()
	got, err := e.m.GetLease(ctx, "app", mc.ID)
	if err != nil || got != r {
		t.Fatalf("lease after restart = %+v, %v; want %+v", got, err, r)
	}
	wantKind(t, ops["stop"](ctx), model.KindConflict, "leased by")

	// Release needs the nonce; then anyone may act, and GET says "lease not found".
	wantKind(t, e.m.ReleaseLease(ctx, "app", mc.ID), model.KindConflict, "give the lease's nonce")
	wantKind(t, e.m.ReleaseLease(other, "app", mc.ID), model.KindConflict, "nonce mismatch")
	e.must(e.m.ReleaseLease(holder, "app", mc.ID))
	e.must(e.m.ReleaseLease(holder, "app", mc.ID)) // released already: fine
	_, err = e.m.GetLease(ctx, "app", mc.ID)
	wantKind(t, err, model.KindNotFound, "lease not found")
	wantKind(t, ops["stop"](holder), model.KindConflict, "no longer held")
	e.must(ops["stop"](ctx))

	// Leases expire by their time alone.
	l, err = e.m.AcquireLease(ctx, "app", mc.ID, model.LeaseParams{TTL: time.Second})
	e.must(err)
	time.Sleep(1100 * time.Millisecond)
	if _, err := e.m.GetLease(ctx, "app", mc.ID); !model.IsNotFound(err) {
		t.Fatalf("expired lease: %v", err)
	}
	e.must(ops["start"](ctx))
	_, err = e.m.AcquireLease(model.WithLeaseNonce(ctx, l.Nonce), "app", mc.ID, model.LeaseParams{})
	wantKind(t, err, model.KindConflict, "no longer held")

	// A create with lease_ttl leases the new machine to its caller.
	created, err := e.m.Create(model.WithCaller(ctx, "token:ci"), "app", model.CreateMachineRequest{Config: e.config(), LeaseTTL: 60})
	e.must(err)
	cl, err := e.m.GetLease(ctx, "app", created.ID)
	if err != nil || cl.Nonce != created.Nonce || created.Nonce == "" || cl.Owner != "token:ci" || created.State != model.StateStarted {
		t.Fatalf("create with lease_ttl: machine %+v, lease %+v, %v", created, cl, err)
	}
	wantKind(t, e.m.Stop(ctx, "app", created.ID, model.StopRequest{}), model.KindConflict, "leased by")
	// Destroying a machine ends its lease.
	e.must(e.m.Destroy(model.WithLeaseNonce(ctx, cl.Nonce), "app", created.ID, true))
	if _, err := e.m.GetLease(ctx, "app", created.ID); !model.IsNotFound(err) {
		t.Fatalf("lease of a destroyed machine: %v", err)
	}
}

// TestUpdateVersionsAndKeptExtensions: every update makes a new version
// (and instance ID), current_version guards against a concurrent update,
// torpor extensions a Fly-typed client did not send are kept, and versions
// lists them newest first.
func TestUpdateVersionsAndKeptExtensions(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	cfg := e.config()
	cfg.Init.Workdir = "/srv"
	cfg.Hooks = &model.Hooks{ResumeSignal: "SIGUSR2"}
	mc, err := e.m.Create(ctx, "app", model.CreateMachineRequest{Config: cfg})
	e.must(err)
	if mc.InstanceID != mc.Version || len(mc.Version) != 26 {
		t.Fatalf("created machine version %q, instance %q", mc.Version, mc.InstanceID)
	}
	// As a Fly client sends it: no extensions (Given records none).
	fly := model.UpdateMachineRequest{Config: e.config(), Decoded: model.Decoded{Given: map[string]bool{}}}
	fly.Config.Env = map[string]string{"NEW": "1"}
	up, err := e.m.Update(ctx, "app", mc.ID, fly)
	e.must(err)
	if up.Version == mc.Version || up.InstanceID != up.Version || up.BootGeneration != mc.BootGeneration+1 {
		t.Fatalf("updated machine version %q instance %q generation %d", up.Version, up.InstanceID, up.BootGeneration)
	}
	if up.Config.Init.Workdir != "/srv" || up.Config.Hooks == nil || up.Config.Hooks.ResumeSignal != "SIGUSR2" || up.Config.Env["NEW"] != "1" {
		t.Fatalf("update by a Fly client lost torpor's fields: %+v", up.Config)
	}
	// Given explicitly (null), an extension is cleared.
	clear := model.UpdateMachineRequest{Config: e.config(), Decoded: model.Decoded{Given: map[string]bool{"/hooks": true}}}
	clear.CurrentVersion = up.Version
	up2, err := e.m.Update(ctx, "app", mc.ID, clear)
	e.must(err)
	if up2.Config.Hooks != nil || up2.Config.Init.Workdir != "/srv" {
		t.Fatalf("update clearing hooks: %+v", up2.Config)
	}
	stale := clear
	_, err = e.m.Update(ctx, "app", mc.ID, stale)
	wantKind(t, err, model.KindConflict, "updated meanwhile")

	vs, err := e.m.Versions(ctx, "app", mc.ID)
	e.must(err)
	if len(vs) != 3 || vs[0].Version != up2.Version || vs[2].Version != mc.Version || vs[2].UserConfig.Hooks == nil {
		t.Fatalf("versions %+v", vs)
	}
	// A wait on the current version returns; on an old one it fails.
	if _, err := e.m.WaitFor(ctx, "app", mc.ID, model.WaitOptions{States: []string{"started"}, Version: up2.Version}); err != nil {
		t.Fatal(err)
	}
	_, err = e.m.WaitFor(ctx, "app", mc.ID, model.WaitOptions{States: []string{"started"}, Version: mc.Version})
	wantKind(t, err, model.KindConflict, "updated since")
	_, err = e.m.WaitFor(ctx, "app", mc.ID, model.WaitOptions{States: []string{"started"}, Version: "NOSUCHVERSION"})
	wantKind(t, err, model.KindInvalid, "no such version")
}

// TestWaitFromEventAndSettled: from_event_id only counts a state reached
// after that event; settled and failed are wait targets.
func TestWaitFromEventAndSettled(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	mc := e.create()
	evs, err := e.m.Events(ctx, "app", mc.ID)
	e.must(err)
	last := evs[0].ID
	short, cancel := context.WithTimeout(ctx, 100*time.Millisecond)
	defer cancel()
	_, err = e.m.WaitFor(short, "app", mc.ID, model.WaitOptions{States: []string{"started"}, FromEventID: last})
	wantKind(t, err, model.KindTimeout, "timed out")
	go func() {
		time.Sleep(50 * time.Millisecond)
		e.m.Stop(ctx, "app", mc.ID, model.StopRequest{})
		e.m.Start(ctx, "app", mc.ID)
	}()
	if _, err := e.m.WaitFor(ctx, "app", mc.ID, model.WaitOptions{States: []string{"started"}, FromEventID: last}); err != nil {
		t.Fatal(err)
	}
	if got, err := e.m.WaitFor(ctx, "app", mc.ID, model.WaitOptions{States: []string{model.WaitSettled}}); err != nil || got.State != model.StateStarted {
		t.Fatalf("wait settled = %s, %v", got.State, err)
	}
	_, err = e.m.WaitFor(ctx, "app", mc.ID, model.WaitOptions{FromEventID: "other-1"})
	wantKind(t, err, model.KindInvalid, "not an event of machine")
	// A failed start leaves the machine stopped: that is Fly's "failed".
	e.must(e.m.Stop(ctx, "app", mc.ID, model.StopRequest{}))
	e.rt.Fail("boot", errors.New("no boot"))
	e.m.Start(ctx, "app", mc.ID)
	if got, err := e.m.WaitFor(ctx, "app", mc.ID, model.WaitOptions{States: []string{model.WaitFailed}}); err != nil || got.State != model.StateStopped {
		t.Fatalf("wait failed = %s, %v", got.State, err)
	}
}

// TestRestartSignalExecPsMetadata covers Fly's operations beyond the
// lifecycle on the fake runtime.
func TestRestartSignalExecPsMetadata(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	mc := e.create()

	e.must(e.m.Restart(ctx, "app", mc.ID, model.RestartRequest{Signal: "term"}))
	got := e.get(mc.ID)
	if got.State != model.StateStarted || got.BootGeneration != mc.BootGeneration+1 {
		t.Fatalf("after restart: %s generation %d", got.State, got.BootGeneration)
	}
	if r := e.eventsOf(mc.ID, model.EventRestart); len(r) != 1 || r[0].Request.(*model.RestartDetails).Signal != "SIGTERM" {
		t.Fatalf("restart events %+v", r)
	}
	e.must(e.m.Restart(ctx, "app", mc.ID, model.RestartRequest{ForceStop: true}))
	e.must(e.m.Suspend(ctx, "app", mc.ID))
	e.must(e.m.Restart(ctx, "app", mc.ID, model.RestartRequest{}))
	if got := e.get(mc.ID); got.State != model.StateStarted || len(e.rt.Restores) != 0 {
		t.Fatalf("restart of a suspended machine: %s, restores %v", got.State, e.rt.Restores)
	}
	e.must(e.m.Stop(ctx, "app", mc.ID, model.StopRequest{}))
	wantKind(t, e.m.Restart(ctx, "app", mc.ID, model.RestartRequest{}), model.KindConflict, "start it instead")
	e.start(mc.ID)

	// Signals by name or number; the fake app survives SIGUSR1 only.
	e.must(e.m.Signal(ctx, "app", mc.ID, "usr1"))
	e.must(e.m.Signal(ctx, "app", mc.ID, "10"))
	wantKind(t, e.m.Signal(ctx, "app", mc.ID, "SIGNOPE"), model.KindInvalid, "unknown signal")
	if calls := e.rt.Calls(); !slices.Contains(calls, "signal SIGUSR1") {
		t.Errorf("calls %v", calls)
	}

	// Exec: command or cmd (split as a shell would), exit code, output, timeout.
	e.rt.RunFunc = func(ctx context.Context, id string, cmd runtime.Command) (runtime.CommandResult, error) {
		if cmd.Args[0] == "sleep" {
			<-ctx.Done()
			return runtime.CommandResult{}, ctx.Err()
		}
		return runtime.CommandResult{Stdout: []byte(strings.Join(cmd.Args, "|")), Stderr: cmd.Stdin, ExitCode: 7}, nil
	}
	res, err := e.m.Exec(ctx, "app", mc.ID, model.ExecRequest{Cmd: `sh -c 'echo "a b"' x\ y`, Stdin: "in"})
	e.must(err)
	if res.Stdout != `sh|-c|echo "a b"|x y` || res.Stderr != "in" || res.ExitCode != 7 {
		t.Fatalf("exec = %+v", res)
	}
	_, err = e.m.Exec(ctx, "app", mc.ID, model.ExecRequest{Command: []string{"sleep", "9"}, Timeout: 1})
	wantKind(t, err, model.KindTimeout, "timed out after 1s")
	for _, bad := range []model.ExecRequest{{}, {Cmd: `echo "open`}, {Command: []string{"a"}, Cmd: "b"}, {Command: []string{"a"}, Timeout: 601}} {
		_, err := e.m.Exec(ctx, "app", mc.ID, bad)
		wantKind(t, err, model.KindInvalid, "")
	}

	ps, err := e.m.Processes(ctx, "app", mc.ID, model.ProcessSort{By: "pid", Desc: true})
	if err != nil || len(ps) != 1 || ps[0].PID != 1 || ps[0].Command != "/app" || ps[0].ListenSockets == nil {
		t.Fatalf("ps = %+v, %v", ps, err)
	}
	_, err = e.m.Processes(ctx, "app", mc.ID, model.ProcessSort{By: "size"})
	wantKind(t, err, model.KindInvalid, "sort_by")

	// Metadata: set and delete one key in the current version, no restart.
	gen := e.get(mc.ID).BootGeneration
	e.must(e.m.SetMetadata(ctx, "app", mc.ID, "fly_process_group", "web", false))
	e.must(e.m.SetMetadata(ctx, "app", mc.ID, "other", "x", false))
	e.must(e.m.SetMetadata(ctx, "app", mc.ID, "other", "", true))
	md, err := e.m.Metadata(ctx, "app", mc.ID)
	if err != nil || len(md) != 1 || md["fly_process_group"] != "web" {
		t.Fatalf("metadata %v, %v", md, err)
	}
	got = e.get(mc.ID)
	vs, _ := e.m.Versions(ctx, "app", mc.ID)
	if got.BootGeneration != gen || got.State != model.StateStarted || vs[0].UserConfig.Metadata["fly_process_group"] != "web" {
		t.Fatalf("after metadata: %+v, version config %+v", got, vs[0].UserConfig.Metadata)
	}
	wantKind(t, e.m.SetMetadata(ctx, "app", mc.ID, "a b", "x", false), model.KindInvalid, "invalid key")

	// Lists filter by state, region and metadata.
	other := e.create()
	e.must(e.m.Stop(ctx, "app", other.ID, model.StopRequest{}))
	for _, c := range []struct {
		opts model.ListOptions
		want int
	}{
		{model.ListOptions{}, 2},
		{model.ListOptions{States: []model.State{model.StateStopped}}, 1},
		{model.ListOptions{Region: "elsewhere"}, 0},
		{model.ListOptions{Region: "local"}, 2},
		{model.ListOptions{Metadata: map[string]string{"fly_process_group": "web"}}, 1},
		{model.ListOptions{Metadata: map[string]string{"fly_process_group": "worker"}}, 0},
	} {
		ms, err := e.m.ListMachines(ctx, "app", c.opts)
		if err != nil || len(ms) != c.want {
			t.Errorf("list %+v: %d machines, %v; want %d", c.opts, len(ms), err, c.want)
		}
	}
	e.must(e.m.Destroy(ctx, "app", other.ID, true))
	if ms, _ := e.m.ListMachines(ctx, "app", model.ListOptions{IncludeDeleted: true}); len(ms) != 2 {
		t.Errorf("list with include_deleted: %d machines", len(ms))
	}
}

// TestAutoDestroyAndSize: config.auto_destroy destroys a machine whose
// process is done; config.size fills in the guest.
func TestAutoDestroyAndSize(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	cfg := e.config()
	cfg.AutoDestroy, cfg.Size = true, "shared-cpu-2x"
	mc, err := e.m.Create(ctx, "app", model.CreateMachineRequest{Config: cfg})
	e.must(err)
	if g := mc.Config.Guest; g.CPUs != 2 || g.MemoryMB != 512 || g.CPUKind != "shared" {
		t.Fatalf("guest from size: %+v", g)
	}
	e.rt.Exit(sandboxID(mc.ID), 0)
	if _, err := e.m.Wait(ctx, "app", mc.ID, []model.State{model.StateDestroyed}); err != nil {
		t.Fatal(err)
	}
	cfg.Size = "huge"
	_, err = e.m.Create(ctx, "app", model.CreateMachineRequest{Config: cfg})
	wantKind(t, err, model.KindInvalid, "not one of Fly's sizes")
	// swap_size_mb is kept as Fly's init.swap_size_mb.
	cfg.Size, cfg.SwapSizeMB = "", 512
	mc, err = e.m.Create(ctx, "app", model.CreateMachineRequest{Config: cfg, SkipLaunch: true})
	e.must(err)
	if mc.Config.SwapSizeMB != 0 || mc.Config.Init.SwapSizeMB == nil || *mc.Config.Init.SwapSizeMB != 512 {
		t.Fatalf("swap: %d, %v", mc.Config.SwapSizeMB, mc.Config.Init.SwapSizeMB)
	}
	wantKind(t, e.m.Suspend(ctx, "app", mc.ID), model.KindPrecondition, "swap")
}

package machine

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"

	"github.com/torpor-dev/torpor/internal/model"
)

// sizedEnv is an env whose host gives machines hostMB and hostCPUs, with
// app quotas appMB and appCPUs (0: none).
func sizedEnv(t *testing.T, hostMB, hostCPUs, appMB, appCPUs int) *env {
	e := newEnv(t)
	e.cfg.HostMemoryMB, e.cfg.HostCPUs, e.cfg.AppMemoryQuotaMB, e.cfg.AppCPUQuota = hostMB, hostCPUs, appMB, appCPUs
	e.restart()
	return e
}

func (e *env) sized(app string, memoryMB, cpus int, skipLaunch bool) (model.Machine, error) {
	cfg := e.config()
	cfg.Guest = model.Guest{MemoryMB: memoryMB, CPUs: cpus}
	return e.m.Create(context.Background(), app, model.CreateMachineRequest{Config: cfg, SkipLaunch: skipLaunch})
}

// TestTenantSizesAreBoundedByHostAndQuota is issue 17's F5 (sizes): a
// config asking for more memory or CPUs than the host has, or than one app
// may use, is refused at create and at update, naming the field and the
// limit. Before the fix `memory_mb: 65536, cpus: 64` was accepted on a
// 23 GiB, 2-CPU host.
func TestTenantSizesAreBoundedByHostAndQuota(t *testing.T) {
	e := sizedEnv(t, 4096, 2, 2048, 0)
	for _, c := range []struct {
		mem, cpus int
		want      string
	}{
		{65536, 1, "config.guest.memory_mb is 65536, more than this host can give machines: 4096 MB"},
		{256, 64, "config.guest.cpus is 64, more than this host's 2 CPUs"},
		{3072, 1, "config.guest.memory_mb is 3072, over the app's quota of 2048 MB"},
	} {
		_, err := e.sized("app", c.mem, c.cpus, false)
		if model.KindOf(err) != model.KindQuota || !strings.Contains(err.Error(), c.want) {
			t.Fatalf("create with memory_mb %d, cpus %d: %v, want a quota error %q", c.mem, c.cpus, err, c.want)
		}
	}
	mc, err := e.sized("app", 512, 2, false)
	e.must(err)
	cfg := mc.Config
	cfg.Guest.MemoryMB = 65536
	_, err = e.m.Update(context.Background(), "app", mc.ID, model.UpdateMachineRequest{Config: cfg})
	if model.KindOf(err) != model.KindQuota || !strings.Contains(err.Error(), "config.guest.memory_mb") {
		t.Fatalf("update to 65536 MB: %v, want a quota error naming config.guest.memory_mb", err)
	}
	if got := e.get(mc.ID); got.State != model.StateStarted || got.Config.Guest.MemoryMB != 512 {
		t.Fatalf("a refused update changed the machine: %s, %d MB", got.State, got.Config.Guest.MemoryMB)
	}
}

// TestAdmissionControlKeepsStartsWithinHostMemory: concurrent starts are
// admitted one after the other, so 8 starts of 256 MB machines on a host
// with 1024 MB for machines admit exactly 4; the others are refused with a
// conflict that says why, and leave their machine stopped.
func TestAdmissionControlKeepsStartsWithinHostMemory(t *testing.T) {
	e := sizedEnv(t, 1024, 0, 0, 0)
	var ids []string
	for range 8 {
		mc, err := e.sized("app", 256, 1, true)
		e.must(err)
		ids = append(ids, mc.ID)
	}
	var wg sync.WaitGroup
	errs := make([]error, len(ids))
	for i, id := range ids {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, errs[i] = e.m.Start(context.Background(), "app", id)
		}()
	}
	wg.Wait()
	admitted := 0
	for i, err := range errs {
		switch {
		case err == nil:
			admitted++
			e.wantState(ids[i], model.StateStarted)
		case model.KindOf(err) == model.KindConflict && errors.Is(err, errAdmission) && strings.Contains(err.Error(), "the host has 0 of its 1024 MB"):
			e.wantState(ids[i], model.StateCreated)
		default:
			t.Fatalf("start %d: %v", i, err)
		}
	}
	if admitted != 4 {
		t.Fatalf("%d of 8 concurrent 256 MB starts admitted with 1024 MB free, want 4", admitted)
	}
}

// TestAppQuotaCountsRunningMachines: an app's memory quota counts its
// running machines (not its stopped or suspended ones, nor other apps'),
// at create, start and resume.
func TestAppQuotaCountsRunningMachines(t *testing.T) {
	e := sizedEnv(t, 0, 0, 768, 0)
	_, err := e.m.CreateApp(context.Background(), model.App{Name: "other"})
	e.must(err)
	var ms []model.Machine
	for range 3 {
		mc, err := e.sized("app", 256, 1, false)
		e.must(err)
		ms = append(ms, mc)
	}
	fourth, err := e.sized("app", 256, 1, false)
	if model.KindOf(err) != model.KindConflict || !strings.Contains(err.Error(), `app "app"'s running machines already use 768 of its 768 MB quota`) {
		t.Fatalf("fourth 256 MB machine of a 768 MB quota: %v, want a conflict", err)
	}
	e.wantState(fourth.ID, model.StateCreated)
	if _, err := e.sized("other", 256, 1, false); err != nil {
		t.Fatalf("another app's machine counted against this app's quota: %v", err)
	}
	// A suspended machine holds no memory: the fourth may start; the
	// suspended one may not resume until another stops.
	e.must(e.m.Suspend(context.Background(), "app", ms[0].ID))
	e.start(fourth.ID)
	if _, err := e.m.Start(context.Background(), "app", ms[0].ID); model.KindOf(err) != model.KindConflict {
		t.Fatalf("resume past the quota: %v, want a conflict", err)
	}
	if _, ok := e.snapshotRecord(ms[0].ID); !ok {
		t.Fatal("a resume refused by admission control lost the snapshot")
	}
	e.wantState(ms[0].ID, model.StateSuspended)
	e.must(e.m.Stop(context.Background(), "app", ms[1].ID, model.StopRequest{}))
	if resp := e.start(ms[0].ID); !resp.FromSnapshot {
		t.Fatalf("resume after a stop freed the quota: %+v, want from the snapshot", resp)
	}
}

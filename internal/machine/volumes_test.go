package machine

import (
	"context"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/torpor-dev/torpor/internal/model"
	"github.com/torpor-dev/torpor/internal/runtime"
	"github.com/torpor-dev/torpor/internal/store"
)

// fakeVolumes is the edge of the host's volumes: it hands out a directory
// per volume, records syncs, and fails Prepare for volumes marked broken.
// Which machine holds which volume is the real thing (volume.Attach, in
// the manager's transactions, on volume records in the store).
type fakeVolumes struct {
	mu     sync.Mutex
	dir    string
	broken map[string]string
	syncs  map[string]int
}

func (f *fakeVolumes) Prepare(ctx context.Context, app, machineID, id string) (string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if why := f.broken[id]; why != "" {
		return "", model.Errorf(model.KindUnavailable, "volume %s cannot be mounted: %s", id, why)
	}
	return f.dir + "/" + id, nil
}

func (f *fakeVolumes) Sync(ctx context.Context, id string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.syncs[id]++
	return nil
}

func (f *fakeVolumes) synced(id string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.syncs[id]
}

// newVolumeEnv is an env whose manager mounts volumes, with one volume
// record, "vol_aaaa", in the app.
func newVolumeEnv(t *testing.T) (*env, *fakeVolumes) {
	e := newEnv(t)
	fv := &fakeVolumes{dir: t.TempDir(), broken: map[string]string{}, syncs: map[string]int{}}
	e.cfg.Volumes = fv
	e.restart()
	for _, id := range []string{"vol_aaaa", "vol_bbbb"} {
		v := model.Volume{ID: id, Name: "data", App: "app", State: model.VolumeCreated, SizeGB: 1, CreatedAt: time.Now()}
		if err := e.st.Update(func(tx *store.Tx) error { return tx.PutVolume(v) }); err != nil {
			t.Fatal(err)
		}
	}
	return e, fv
}

func (e *env) mounting(ids ...string) model.MachineConfig {
	cfg := e.config()
	for i, id := range ids {
		cfg.Mounts = append(cfg.Mounts, model.Mount{Volume: id, Path: "/data" + strings.Repeat("x", i)})
	}
	return cfg
}

func (e *env) holder(id string) string {
	e.t.Helper()
	var v model.Volume
	e.st.View(func(tx *store.Tx) (err error) { v, err = tx.Volume(id); return err })
	if v.AttachedMachineID == nil {
		return ""
	}
	return *v.AttachedMachineID
}

func TestMountsAttachOneMachineAtATime(t *testing.T) {
	e, _ := newVolumeEnv(t)
	ctx := context.Background()
	a, err := e.m.Create(ctx, "app", model.CreateMachineRequest{Config: e.mounting("vol_aaaa")})
	if err != nil {
		t.Fatal(err)
	}
	if e.holder("vol_aaaa") != a.ID || a.Config.Mounts[0].Name != "data" || a.Config.Mounts[0].SizeGB != 1 {
		t.Fatalf("after create: holder %q, mounts %+v", e.holder("vol_aaaa"), a.Config.Mounts)
	}
	spec, _ := e.rt.Spec(sandboxID(a.ID))
	if !hasMount(spec, e.cfg.Volumes.(*fakeVolumes).dir+"/vol_aaaa", "/data") {
		t.Fatalf("sandbox mounts %+v", spec.Mounts)
	}
	_, err = e.m.Create(ctx, "app", model.CreateMachineRequest{Config: e.mounting("vol_aaaa")})
	if model.KindOf(err) != model.KindConflict || !strings.Contains(err.Error(), "vol_aaaa") || !strings.Contains(err.Error(), a.ID) {
		t.Fatalf("second machine: %v", err)
	}
	if ms, _ := e.m.List(ctx, "app"); len(ms) != 1 {
		t.Fatalf("a refused create left %d machines", len(ms))
	}
	// An update that would take a held volume is refused before the
	// machine is stopped for it.
	b := e.create()
	calls := len(e.rt.Calls())
	_, err = e.m.Update(ctx, "app", b.ID, model.UpdateMachineRequest{Config: e.mounting("vol_aaaa")})
	if model.KindOf(err) != model.KindConflict {
		t.Fatalf("update taking a held volume: %v", err)
	}
	if got := e.get(b.ID).State; got != model.StateStarted || len(e.rt.Calls()) != calls {
		t.Fatalf("refused update: machine %s, runtime calls %v", got, e.rt.Calls()[calls:])
	}
	// Moving a's mount to the other volume releases the first.
	if _, err := e.m.Update(ctx, "app", a.ID, model.UpdateMachineRequest{Config: e.mounting("vol_bbbb")}); err != nil {
		t.Fatal(err)
	}
	if e.holder("vol_aaaa") != "" || e.holder("vol_bbbb") != a.ID {
		t.Fatalf("after the update: holders %q, %q", e.holder("vol_aaaa"), e.holder("vol_bbbb"))
	}
	// Destroying the machine releases its volume.
	if err := e.m.Destroy(ctx, "app", a.ID, true); err != nil {
		t.Fatal(err)
	}
	if e.holder("vol_bbbb") != "" {
		t.Fatal("destroyed machine still holds its volume")
	}
	if err := e.m.DeleteApp(ctx, "app"); model.KindOf(err) != model.KindConflict {
		t.Fatalf("delete of an app with volumes (and a machine): %v", err)
	}
}

func TestVolumesSyncedAfterTheSandboxAndBrokenVolumesStopTheStart(t *testing.T) {
	e, fv := newVolumeEnv(t)
	ctx := context.Background()
	m, err := e.m.Create(ctx, "app", model.CreateMachineRequest{Config: e.mounting("vol_aaaa")})
	if err != nil {
		t.Fatal(err)
	}
	if err := e.m.Suspend(ctx, "app", m.ID); err != nil {
		t.Fatal(err)
	}
	if fv.synced("vol_aaaa") != 1 {
		t.Fatalf("volume synced %d times by a suspend", fv.synced("vol_aaaa"))
	}
	// The volume breaks while the machine is suspended: the start is
	// refused, and the machine keeps its snapshot.
	fv.mu.Lock()
	fv.broken["vol_aaaa"] = "its backing file is missing"
	fv.mu.Unlock()
	_, err = e.m.Start(ctx, "app", m.ID)
	if model.KindOf(err) != model.KindUnavailable || !strings.Contains(err.Error(), "backing file") {
		t.Fatalf("start with a broken volume: %v", err)
	}
	if got := e.get(m.ID).State; got != model.StateSuspended {
		t.Fatalf("machine %s after the refused start", got)
	}
	if _, ok, _ := e.snapshot(m.ID); !ok {
		t.Fatal("the refused start discarded the snapshot")
	}
	fv.mu.Lock()
	delete(fv.broken, "vol_aaaa")
	fv.mu.Unlock()
	if resp, err := e.m.Start(ctx, "app", m.ID); err != nil || !resp.FromSnapshot {
		t.Fatalf("start once the volume is back: %+v, %v", resp, err)
	}
	if err := e.m.Stop(ctx, "app", m.ID, model.StopRequest{}); err != nil {
		t.Fatal(err)
	}
	if fv.synced("vol_aaaa") != 2 {
		t.Fatalf("volume synced %d times after a suspend and a stop", fv.synced("vol_aaaa"))
	}
}

func (e *env) snapshot(id string) (model.Snapshot, bool, error) {
	var s model.Snapshot
	var ok bool
	err := e.st.View(func(tx *store.Tx) (err error) { s, ok, err = tx.Snapshot(id); return err })
	return s, ok, err
}

// hasMount reports whether spec binds source at dest, read-write.
func hasMount(spec runtime.Spec, source, dest string) bool {
	for _, mt := range spec.Mounts {
		if mt.Source == source && mt.Destination == dest && !mt.ReadOnly {
			return true
		}
	}
	return false
}

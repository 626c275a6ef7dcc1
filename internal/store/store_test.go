package store

import (
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"github.com/torpor-dev/torpor/internal/model"
)

func openTemp(t *testing.T) (*Store, string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "torpor.db")
	s, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	return s, path
}

func TestAppsAndMachinesSurviveReopen(t *testing.T) {
	s, path := openTemp(t)
	err := s.Update(func(tx *Tx) error {
		if err := tx.CreateApp(model.App{Name: "web", CreatedAt: time.Now()}); err != nil {
			return err
		}
		m := model.Machine{ID: "m1", App: "web", State: model.StateSuspended, BootGeneration: 3}
		if err := tx.PutMachine(m); err != nil {
			return err
		}
		if err := tx.PutConfig("m1", "v1", model.MachineConfig{Image: "img"}, model.ImageRef{}); err != nil {
			return err
		}
		return tx.PutSnapshot(model.Snapshot{ID: "s1", MachineID: "m1", State: model.SnapshotSealed, BootGeneration: 3})
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Update(func(tx *Tx) error { return tx.CreateApp(model.App{Name: "web"}) }); model.KindOf(err) != model.KindConflict {
		t.Fatalf("duplicate app: got %v, want conflict", err)
	}
	s.Close()

	s, err = Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	err = s.View(func(tx *Tx) error {
		m, err := tx.Machine("m1")
		if err != nil {
			return err
		}
		if m.State != model.StateSuspended || m.BootGeneration != 3 {
			t.Errorf("machine after reopen = %+v", m)
		}
		snap, ok, err := tx.Snapshot("m1")
		if err != nil || !ok || snap.State != model.SnapshotSealed {
			t.Errorf("snapshot after reopen = %+v %v %v", snap, ok, err)
		}
		cfgs, err := tx.Configs("m1")
		if err != nil || cfgs["v1"].Image != "img" {
			t.Errorf("configs = %v %v", cfgs, err)
		}
		ms, err := tx.Machines("web")
		if err != nil || len(ms) != 1 {
			t.Errorf("machines(web) = %v %v", ms, err)
		}
		ms, _ = tx.Machines("other")
		if len(ms) != 0 {
			t.Errorf("machines(other) = %v", ms)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

func TestFailedUpdateCommitsNothing(t *testing.T) {
	s, _ := openTemp(t)
	defer s.Close()
	boom := model.Errorf(model.KindConflict, "boom")
	err := s.Update(func(tx *Tx) error {
		if err := tx.PutMachine(model.Machine{ID: "m1", State: model.StateStarting}); err != nil {
			return err
		}
		return boom
	})
	if err != boom {
		t.Fatalf("got %v", err)
	}
	s.View(func(tx *Tx) error {
		if _, err := tx.Machine("m1"); !model.IsNotFound(err) {
			t.Errorf("machine written by a failed transaction: %v", err)
		}
		return nil
	})
}

func TestEventsNewestFirstAndBounded(t *testing.T) {
	s, _ := openTemp(t)
	defer s.Close()
	for i := 0; i < maxEvents+20; i++ {
		err := s.Update(func(tx *Tx) error {
			_, err := tx.AppendEvent("m1", model.Event{Type: "start", Timestamp: int64(i)})
			return err
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	s.View(func(tx *Tx) error {
		evs, err := tx.Events("m1", 0)
		if err != nil {
			t.Fatal(err)
		}
		if len(evs) != maxEvents {
			t.Fatalf("kept %d events, want %d", len(evs), maxEvents)
		}
		if evs[0].Timestamp != int64(maxEvents+19) || evs[len(evs)-1].Timestamp != 20 {
			t.Errorf("order: first %d last %d", evs[0].Timestamp, evs[len(evs)-1].Timestamp)
		}
		last3, _ := tx.Events("m1", 3)
		if len(last3) != 3 || last3[0].ID == "" {
			t.Errorf("limit: %v", last3)
		}
		return nil
	})
}

func TestDeleteMachineRemovesEverything(t *testing.T) {
	s, _ := openTemp(t)
	defer s.Close()
	s.Update(func(tx *Tx) error {
		tx.PutMachine(model.Machine{ID: "m1"})
		tx.PutConfig("m1", "v1", model.MachineConfig{}, model.ImageRef{})
		tx.AppendEvent("m1", model.Event{Type: "x"})
		tx.PutSnapshot(model.Snapshot{MachineID: "m1"})
		return tx.DeleteMachine("m1")
	})
	s.View(func(tx *Tx) error {
		if _, err := tx.Machine("m1"); !model.IsNotFound(err) {
			t.Error("machine kept")
		}
		if evs, _ := tx.Events("m1", 0); len(evs) != 0 {
			t.Error("events kept")
		}
		if _, ok, _ := tx.Snapshot("m1"); ok {
			t.Error("snapshot kept")
		}
		return nil
	})
}

// Issue 17, F12: each update recorded a config version for good. A
// machine keeps its newest MaxConfigVersions.
func TestConfigVersionsBounded(t *testing.T) {
	s, _ := openTemp(t)
	defer s.Close()
	var versions []string
	for i := 0; i < 3*MaxConfigVersions; i++ {
		v := fmt.Sprintf("v%03d", i)
		versions = append(versions, v)
		if err := s.Update(func(tx *Tx) error {
			return tx.PutConfig("m1", v, model.MachineConfig{Image: "img"}, model.ImageRef{})
		}); err != nil {
			t.Fatal(err)
		}
	}
	var got map[string]model.MachineConfig
	s.View(func(tx *Tx) (err error) { got, err = tx.Configs("m1"); return })
	if len(got) != MaxConfigVersions {
		t.Fatalf("%d versions kept, want %d", len(got), MaxConfigVersions)
	}
	for _, v := range versions[len(versions)-MaxConfigVersions:] {
		if _, ok := got[v]; !ok {
			t.Errorf("version %s, one of the newest, is gone", v)
		}
	}
}

// Issue 17, F12: destroyed machines kept every record. A destroyed
// machine keeps one config version and its last events, and an app keeps
// its MaxDestroyedPerApp most recently destroyed machines.
func TestDestroyedMachinesAreBounded(t *testing.T) {
	s, _ := openTemp(t)
	defer s.Close()
	base := time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)
	n := MaxDestroyedPerApp + 30
	for i := 0; i < n; i++ {
		id := fmt.Sprintf("m%04d", i)
		err := s.Update(func(tx *Tx) error {
			m := model.Machine{ID: id, App: "web", State: model.StateStarted, Version: "v009"}
			if err := tx.PutMachine(m); err != nil {
				return err
			}
			for v := 0; v < 10; v++ {
				if err := tx.PutConfig(id, fmt.Sprintf("v%03d", v), model.MachineConfig{Image: "img"}, model.ImageRef{}); err != nil {
					return err
				}
			}
			for e := 0; e < 2*DestroyedEventsKept; e++ {
				if _, err := tx.AppendEvent(id, model.Event{Type: "start"}); err != nil {
					return err
				}
			}
			m.State, m.UpdatedAt = model.StateDestroyed, base.Add(time.Duration(i)*time.Minute)
			return tx.PutMachine(m)
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	// Another app's machine is not counted against web's.
	if err := s.Update(func(tx *Tx) error {
		return tx.PutMachine(model.Machine{ID: "other", App: "api", State: model.StateDestroyed, UpdatedAt: base})
	}); err != nil {
		t.Fatal(err)
	}
	err := s.View(func(tx *Tx) error {
		ms, err := tx.Machines("")
		if err != nil {
			return err
		}
		if len(ms) != MaxDestroyedPerApp+1 {
			t.Errorf("%d machine records, want %d of web and 1 of api", len(ms), MaxDestroyedPerApp)
		}
		if _, err := tx.Machine(fmt.Sprintf("m%04d", n-MaxDestroyedPerApp-1)); model.KindOf(err) != model.KindNotFound {
			t.Errorf("the newest of the dropped machines is still there (%v)", err)
		}
		last := fmt.Sprintf("m%04d", n-1)
		cfgs, err := tx.Configs(last)
		if _, ok := cfgs["v009"]; err != nil || len(cfgs) != 1 || !ok {
			t.Errorf("a destroyed machine keeps versions %v (%v), want its current one", cfgs, err)
		}
		evs, err := tx.Events(last, 0)
		if err != nil || len(evs) != DestroyedEventsKept {
			t.Errorf("a destroyed machine keeps %d events (%v), want %d", len(evs), err, DestroyedEventsKept)
		}
		_, err = tx.Machine("other")
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
}

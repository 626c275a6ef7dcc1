package store

import (
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
		if err := tx.PutConfig("m1", "v1", model.MachineConfig{Image: "img"}); err != nil {
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
		tx.PutConfig("m1", "v1", model.MachineConfig{})
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

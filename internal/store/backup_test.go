package store

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"sync/atomic"
	"testing"
	"time"

	"github.com/torpor-dev/torpor/internal/model"
)

// A backup taken while writers commit is one transaction's state: every
// backup verifies, and the two records each writer transaction changes
// together agree in it.
func TestBackupWhileWritingIsConsistent(t *testing.T) {
	s, _ := openTemp(t)
	defer s.Close()
	fill(t, s, 50)
	var stop atomic.Bool
	done := make(chan error)
	go func() {
		var n int
		for !stop.Load() {
			n++
			err := s.Update(func(tx *Tx) error {
				for _, id := range []string{"pair-a", "pair-b"} {
					if err := tx.PutMachine(model.Machine{ID: id, App: "app0", Name: fmt.Sprint(n), State: model.StateStopped}); err != nil {
						return err
					}
				}
				_, err := tx.AppendEvent("m0001", model.Event{Type: "update", Status: fmt.Sprint(n)})
				return err
			})
			if err != nil {
				done <- err
				return
			}
		}
		done <- nil
	}()
	for i := 0; i < 20; i++ {
		if _, err := s.Backup(); err != nil {
			t.Fatal(err)
		}
		b, err := OpenWith(BackupPath(s.Path()), Options{NoCompact: true})
		if err != nil {
			t.Fatalf("backup %d: %v", i, err)
		}
		var a, c model.Machine
		err = b.View(func(tx *Tx) error {
			var err error
			if a, err = tx.Machine("pair-a"); err != nil && model.KindOf(err) != model.KindNotFound {
				return err
			}
			c, err = tx.Machine("pair-b")
			if model.KindOf(err) == model.KindNotFound {
				err = nil
			}
			return err
		})
		b.Close()
		if err != nil {
			t.Fatal(err)
		}
		if a.Name != c.Name {
			t.Fatalf("backup %d holds half a transaction: pair-a at %q, pair-b at %q", i, a.Name, c.Name)
		}
	}
	stop.Store(true)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

// RestoreBackup sets the damaged store aside, byte for byte, and puts the
// verified backup in its place; the backup stays.
func TestRestoreBackupSetsTheDamagedStoreAside(t *testing.T) {
	path, want := filledStore(t, 100)
	s, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Backup(); err != nil {
		t.Fatal(err)
	}
	s.Close()
	// Damage the store: half of it is gone.
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	damaged := data[:len(data)/3]
	if err := os.WriteFile(path, damaged, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := Open(path); !errors.Is(err, ErrDamaged) {
		t.Fatalf("open of the damaged store: %v, want ErrDamaged", err)
	}
	aside, err := RestoreBackup(path, time.Date(2026, 12, 2, 14, 0, 0, 0, time.UTC))
	if err != nil {
		t.Fatal(err)
	}
	if aside != path+".corrupt-20261202T140000Z" {
		t.Errorf("damaged store set aside as %s", aside)
	}
	if got, err := os.ReadFile(aside); err != nil || !bytes.Equal(got, damaged) {
		t.Errorf("the damaged store was not kept as it was (%v)", err)
	}
	if err := VerifyFile(BackupPath(path)); err != nil {
		t.Errorf("the backup after the restore: %v", err)
	}
	s, err = OpenWith(path, Options{ExpectData: true, NoCompact: true})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if got := dump(t, s); !sameRecords(got, want) {
		t.Errorf("restored store has %d records, want the backup's %d", len(got), len(want))
	}
	// A damaged backup is never restored.
	if err := os.WriteFile(BackupPath(path), damaged, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := RestoreBackup(path+"x", time.Now()); err == nil {
		t.Error("restored from a missing backup")
	}
	if _, err := RestoreBackup(path, time.Now()); !errors.Is(err, ErrDamaged) {
		t.Errorf("restore from a damaged backup: %v, want ErrDamaged", err)
	}
}

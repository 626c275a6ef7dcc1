//go:build faults

package store

import (
	"errors"
	"syscall"
	"testing"

	"github.com/torpor-dev/torpor/internal/model"
)

// The write fault fails the Updates it picks as a full disk would, and
// keeps nothing of them.
func TestWriteFaultFailsUpdates(t *testing.T) {
	s, _ := openTemp(t)
	defer s.Close()
	s.SetWriteFault(func(n int) error {
		if n == 2 {
			return syscall.ENOSPC
		}
		return nil
	})
	put := func(id string) error {
		return s.Update(func(tx *Tx) error { return tx.PutMachine(model.Machine{ID: id, App: "a"}) })
	}
	if err := put("m1"); err != nil {
		t.Fatal(err)
	}
	if err := put("m2"); !errors.Is(err, syscall.ENOSPC) {
		t.Fatalf("second update: %v, want ENOSPC", err)
	}
	s.SetWriteFault(nil)
	if err := put("m3"); err != nil {
		t.Fatal(err)
	}
	s.View(func(tx *Tx) error {
		if _, err := tx.Machine("m2"); model.KindOf(err) != model.KindNotFound {
			t.Errorf("the failed update was kept: %v", err)
		}
		return nil
	})
}

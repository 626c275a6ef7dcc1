package daemon

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/torpor-dev/torpor/internal/store"
)

// DefaultStoreBackupInterval is how often the daemon refreshes the
// verified backup of its store (Config.StoreBackupInterval).
const DefaultStoreBackupInterval = 10 * time.Minute

func (s *System) storePath() string { return filepath.Join(s.cfg.DataDir, "torpor.db") }

// openStore opens the store, refusing a damaged one and an absent or empty
// one when the data directory says there was a store (issue 17, F13), after
// restoring the backup first with Config.RestoreStoreBackup. It writes a
// verified backup at once, then every StoreBackupInterval and at close.
func (s *System) openStore(context.Context) error {
	path := s.storePath()
	if s.cfg.RestoreStoreBackup {
		// A flag left in a unit file must not roll a whole store back to
		// its last backup at every restart.
		if err := store.VerifyFile(path); err == nil {
			return fmt.Errorf("--restore-store-backup: the store %s is whole (every record reads): there is nothing to restore; start without the flag", path)
		}
		aside, err := store.RestoreBackup(path, time.Now())
		if err != nil {
			return err
		}
		s.restoredStore = true
		s.log.Warn("restored the store from its verified backup: machines created or changed since are forgotten or as they were then",
			"backup", store.BackupPath(path), "damaged_store_set_aside_as", aside)
	}
	st, err := store.OpenWith(path, store.Options{ExpectData: s.expectStore()})
	if err != nil {
		return s.storeError(err)
	}
	for _, note := range st.Notes {
		s.log.Warn("store", "note", note)
	}
	s.Store = st
	// Closers run in reverse: this one, registered first, runs after the
	// machines and the API are done with the store.
	stop := s.backUpStorePeriodically()
	s.onClose(func() {
		stop()
		s.backUpStore("shutdown")
		st.Close()
	})
	s.backUpStore("start-up")
	return nil
}

// expectStore reports whether the data directory holds what only a store
// can explain (machine directories, a store backup): then an absent or
// empty store is an accident, not a first start.
func (s *System) expectStore() bool {
	if _, err := os.Stat(store.BackupPath(s.storePath())); err == nil {
		return true
	}
	entries, _ := os.ReadDir(filepath.Join(s.cfg.DataDir, "machines"))
	return len(entries) > 0
}

// storeError says what an operator does about a store that does not open.
func (s *System) storeError(err error) error {
	backup := store.BackupPath(s.storePath())
	restore := fmt.Sprintf("; the daemon keeps a verified backup at %s: start with `torpor serve --restore-store-backup` to set the damaged store aside and restore it (docs/reliability.md, \"Recovering a damaged store\")", backup)
	if _, serr := os.Stat(backup); serr != nil {
		restore = fmt.Sprintf("; there is no backup at %s to restore (docs/reliability.md, \"Recovering a damaged store\")", backup)
	}
	switch {
	case errors.Is(err, store.ErrLocked):
		return fmt.Errorf("%w (is another torpor daemon using %s?)", err, s.cfg.DataDir)
	case errors.Is(err, store.ErrMissing):
		return fmt.Errorf("%w, but %s holds machines or a store backup: refusing to start on an empty store, which would orphan them%s", err, s.cfg.DataDir, restore)
	case errors.Is(err, store.ErrDamaged):
		return fmt.Errorf("%w%s", err, restore)
	}
	return err
}

// backUpStore refreshes the store's verified backup, logging the outcome.
func (s *System) backUpStore(why string) {
	start := time.Now()
	n, err := s.Store.Backup()
	if err != nil {
		s.log.Error("store backup failed: the previous backup is kept", "when", why, "err", err)
		return
	}
	s.log.Info("store backed up", "when", why, "file", store.BackupPath(s.storePath()), "bytes", n, "took", time.Since(start).Round(time.Millisecond))
}

// backUpStorePeriodically backs the store up every StoreBackupInterval
// (a negative interval: never) until the returned stop is called.
func (s *System) backUpStorePeriodically() (stop func()) {
	every := s.cfg.StoreBackupInterval
	if every == 0 {
		every = DefaultStoreBackupInterval
	}
	if every < 0 {
		return func() {}
	}
	done, finished := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(finished)
		t := time.NewTicker(every)
		defer t.Stop()
		for {
			select {
			case <-done:
				return
			case <-t.C:
				s.backUpStore("periodic")
			}
		}
	}()
	return func() { close(done); <-finished }
}

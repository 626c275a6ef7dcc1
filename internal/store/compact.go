package store

import (
	"fmt"
	"os"
	"path/filepath"

	bolt "go.etcd.io/bbolt"
)

// bbolt never gives a file's pages back to the file system: pages freed by
// deletes are reused, but a store that once grew (a tenant's burst of
// writes, issue 17 F12) keeps its size. Open rewrites such a file compactly
// when it is at least compactMinBytes and at least half of it is free.
const compactMinBytes = 8 << 20

// compactIfMostlyFree rewrites the open store into a new file when most of
// it is free, verifies the copy, and puts it in the store's place. It
// returns a note saying what it did ("" if nothing).
func (s *Store) compactIfMostlyFree() (string, error) {
	fi, err := os.Stat(s.path)
	if err != nil {
		return "", err
	}
	var used int64
	err = s.db.View(func(tx *bolt.Tx) error {
		used = tx.Size() - int64(s.db.Stats().FreePageN)*int64(s.db.Info().PageSize)
		return nil
	})
	if err != nil || fi.Size() < compactMinBytes || used*2 > fi.Size() {
		return "", err
	}
	tmp := s.path + ".compact"
	os.Remove(tmp)
	dst, err := bolt.Open(tmp, 0o600, &bolt.Options{Timeout: lockTimeout})
	if err != nil {
		return "", fmt.Errorf("compact store %s: %w", s.path, err)
	}
	err = bolt.Compact(dst, s.db, 4<<20)
	if cerr := dst.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = VerifyFile(tmp)
	}
	if err != nil {
		os.Remove(tmp)
		return "", fmt.Errorf("compact store %s: %w", s.path, err)
	}
	after, err := os.Stat(tmp)
	if err != nil {
		return "", err
	}
	if err := s.db.Close(); err != nil {
		return "", err
	}
	if err := os.Rename(tmp, s.path); err != nil {
		return "", err
	}
	if err := syncDir(filepath.Dir(s.path)); err != nil {
		return "", err
	}
	if s.db, err = openBolt(s.path, false); err != nil {
		return "", err
	}
	return fmt.Sprintf("compacted the store from %d to %d bytes (%d bytes were in use)", fi.Size(), after.Size(), used), nil
}

// syncDir makes a rename in dir durable.
func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

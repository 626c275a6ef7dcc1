package store

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	bolt "go.etcd.io/bbolt"
)

// BackupPath is where the verified backup of the store at path is kept.
func BackupPath(path string) string { return path + ".backup" }

// Backup writes a consistent copy of the store to BackupPath: from one
// read transaction (writers go on meanwhile), into a temporary file that
// is synced and verified whole (VerifyFile) before it replaces the
// previous backup. A backup that does not verify leaves the previous one
// in place. It returns the backup's size.
func (s *Store) Backup() (int64, error) {
	dst := BackupPath(s.path)
	tmp := dst + ".tmp"
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return 0, fmt.Errorf("back up the store: %w", err)
	}
	var n int64
	err = s.db.View(func(tx *bolt.Tx) error {
		var err error
		n, err = tx.WriteTo(f)
		return err
	})
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = VerifyFile(tmp)
	}
	if err == nil {
		err = os.Rename(tmp, dst)
	}
	if err == nil {
		err = syncDir(filepath.Dir(dst))
	}
	if err != nil {
		os.Remove(tmp)
		return 0, fmt.Errorf("back up the store to %s: %w", dst, err)
	}
	return n, nil
}

// RestoreBackup puts the verified backup of the store at path in its
// place: the backup is verified first, then the store file (damaged, or
// missing) is moved aside to path.corrupt-<UTC time> and the backup copied
// (not moved: it stays the backup) to path. It returns where the damaged
// file went ("" if there was none). The store must not be open.
func RestoreBackup(path string, now time.Time) (string, error) {
	backup := BackupPath(path)
	if _, err := os.Stat(backup); err != nil {
		return "", fmt.Errorf("restore the store backup: %w", err)
	}
	if err := VerifyFile(backup); err != nil {
		return "", fmt.Errorf("restore the store backup: the backup %s does not verify: %w", backup, err)
	}
	aside := ""
	if _, err := os.Stat(path); err == nil {
		aside = path + ".corrupt-" + now.UTC().Format("20060102T150405Z")
		if err := os.Rename(path, aside); err != nil {
			return "", fmt.Errorf("restore the store backup: set the damaged store aside: %w", err)
		}
	} else if !errors.Is(err, os.ErrNotExist) {
		return "", err
	}
	tmp := path + ".restore"
	if err := copyFile(tmp, backup); err != nil {
		return aside, fmt.Errorf("restore the store backup: %w", err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return aside, fmt.Errorf("restore the store backup: %w", err)
	}
	return aside, syncDir(filepath.Dir(path))
}

// Package store owns torpor's persistent state: apps, machines, their config
// versions, events, snapshot records, machine leases, API tokens (hashed),
// which app owns each published host port, volume records and image
// records (references and the content they resolved to), kept in one
// embedded bbolt
// database.
// Every change happens in a transaction (Store.Update), so a record set that
// must change together — a snapshot claim and the machine's state, say — is
// committed atomically and survives a daemon crash as a whole or not at all.
package store

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"sync/atomic"
	"time"

	bolt "go.etcd.io/bbolt"
	berrors "go.etcd.io/bbolt/errors"
)

// Bucket names.
var (
	bucketApps      = []byte("apps")
	bucketMachines  = []byte("machines")
	bucketConfigs   = []byte("configs")    // machine id → bucket of version → config
	bucketEvents    = []byte("events")     // machine id → bucket of seq → event
	bucketSnapshots = []byte("snapshots")  // machine id → current snapshot record
	bucketTokens    = []byte("tokens")     // token id → token and the hash of its secret
	bucketPorts     = []byte("ports")      // host port → the app that owns it (model.PortClaim)
	bucketVolumes   = []byte("volumes")    // volume id → volume record
	bucketLeases    = []byte("leases")     // machine id → its lease (leases.go)
	bucketAppLeases = []byte("app_leases") // app name → its deploy lease (leases.go)
	bucketImages    = []byte("images")     // manifest digest → image content
	bucketImageTags = []byte("image_tags") // app NUL reference → image tag
	topBuckets      = [][]byte{bucketApps, bucketMachines, bucketConfigs, bucketEvents, bucketSnapshots, bucketTokens, bucketPorts, bucketVolumes, bucketLeases, bucketAppLeases,
		bucketImages, bucketImageTags}
)

// Store is the embedded database.
type Store struct {
	db   *bolt.DB
	path string
	// Notes are what Open found and repaired or worked around (a damaged
	// meta page it opened past, a compaction), for the daemon to log.
	Notes []string
	// The write fault point of test builds (faults_on.go).
	writeFaultFn atomic.Pointer[func(int) error]
	faultN       atomic.Int64
}

// Options tune OpenWith.
type Options struct {
	// ExpectData refuses a store file that is absent or empty (ErrMissing):
	// the caller knows of state (machine directories, a backup) that only
	// a store can explain, and a fresh store would silently orphan it.
	ExpectData bool
	// NoCompact skips the compaction of a mostly free file at open.
	NoCompact bool
}

// lockTimeout bounds the wait for bbolt's lock on the file.
const lockTimeout = 2 * time.Second

// ErrLocked marks a store file another process has open.
var ErrLocked = errors.New("the store file is locked by another process")

// Open opens (creating if needed) the database at path.
func Open(path string) (*Store, error) { return OpenWith(path, Options{}) }

// OpenWith opens the database at path, creating it unless opts.ExpectData.
// Before bbolt maps the file it checks the file's length against its meta
// pages; once open it reads every record and has bbolt check every page
// (integrity.go). A damaged file is refused with ErrDamaged, never opened
// on part of its state.
func OpenWith(path string, opts Options) (*Store, error) {
	size, note, err := checkFile(path)
	if err != nil {
		return nil, fmt.Errorf("open store %s: %w", path, err)
	}
	if size == 0 && opts.ExpectData {
		return nil, fmt.Errorf("open store %s: %w", path, ErrMissing)
	}
	s := &Store{path: path}
	if note != "" {
		s.Notes = append(s.Notes, note)
	}
	if s.db, err = openBolt(path, note != ""); err != nil {
		return nil, err
	}
	if !opts.NoCompact {
		if note, err := s.compactIfMostlyFree(); err != nil {
			s.db.Close()
			return nil, err
		} else if note != "" {
			s.Notes = append(s.Notes, note)
		}
	}
	err = s.db.Update(func(tx *bolt.Tx) error {
		for _, b := range topBuckets {
			if _, err := tx.CreateBucketIfNotExists(b); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		s.db.Close()
		return nil, fmt.Errorf("init store %s: %w", path, err)
	}
	return s, nil
}

// openBolt opens and checks the bbolt file at path. With rewriteMeta (one
// meta page is damaged, checkFile), it first commits a transaction that
// changes nothing: bbolt writes it to the slot of the damaged meta page,
// since the next transaction's slot is the one the whole page is not in.
func openBolt(path string, rewriteMeta bool) (*bolt.DB, error) {
	var db *bolt.DB
	err := guard("opening", func() error {
		var err error
		if db, err = bolt.Open(path, 0o600, &bolt.Options{Timeout: lockTimeout}); err != nil || !rewriteMeta {
			return err
		}
		return db.Update(func(*bolt.Tx) error { return nil })
	})
	if err != nil {
		if db != nil {
			db.Close()
		}
		return nil, openError(path, err)
	}
	if err := checkRecords(db); err != nil {
		db.Close()
		return nil, fmt.Errorf("open store %s: %w", path, err)
	}
	return db, nil
}

// openError classes what bbolt.Open returned: a lock it could not take,
// a file that is not a whole store, anything else as is.
func openError(path string, err error) error {
	switch {
	case errors.Is(err, berrors.ErrTimeout):
		return fmt.Errorf("open store %s: %w (waited %s)", path, ErrLocked, lockTimeout)
	case errors.Is(err, ErrDamaged):
		return fmt.Errorf("open store %s: %w", path, err)
	case errors.Is(err, berrors.ErrInvalid), errors.Is(err, berrors.ErrChecksum), errors.Is(err, berrors.ErrVersionMismatch):
		return fmt.Errorf("open store %s: %w: %w", path, ErrDamaged, err)
	}
	return fmt.Errorf("open store %s: %w", path, err)
}

// Path is the file the store is kept in.
func (s *Store) Path() string { return s.path }

// Close closes the database.
func (s *Store) Close() error { return s.db.Close() }

// Update runs fn in a read-write transaction, committed only if fn returns nil.
func (s *Store) Update(fn func(*Tx) error) error {
	if err := s.writeFault(); err != nil {
		return fmt.Errorf("store: write: %w", err)
	}
	return s.db.Update(func(tx *bolt.Tx) error { return fn(&Tx{tx: tx}) })
}

// View runs fn in a read-only transaction.
func (s *Store) View(fn func(*Tx) error) error {
	return s.db.View(func(tx *bolt.Tx) error { return fn(&Tx{tx: tx}) })
}

// Tx is a store transaction.
type Tx struct {
	tx *bolt.Tx
}

func put(b *bolt.Bucket, key []byte, v any) error {
	data, err := json.Marshal(v)
	if err != nil {
		return err
	}
	return b.Put(key, data)
}

func get(b *bolt.Bucket, key []byte, v any) (bool, error) {
	data := b.Get(key)
	if data == nil {
		return false, nil
	}
	return true, json.Unmarshal(data, v)
}

func seqKey(n uint64) []byte {
	k := make([]byte, 8)
	binary.BigEndian.PutUint64(k, n)
	return k
}

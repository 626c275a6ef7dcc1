// Package store owns torpor's persistent state: apps, machines, their config
// versions, events, snapshot records and API tokens (hashed), kept in one
// embedded bbolt database.
// Every change happens in a transaction (Store.Update), so a record set that
// must change together — a snapshot claim and the machine's state, say — is
// committed atomically and survives a daemon crash as a whole or not at all.
package store

import (
	"encoding/binary"
	"encoding/json"
	"fmt"
	"time"

	bolt "go.etcd.io/bbolt"
)

// Bucket names.
var (
	bucketApps      = []byte("apps")
	bucketMachines  = []byte("machines")
	bucketConfigs   = []byte("configs")   // machine id → bucket of version → config
	bucketEvents    = []byte("events")    // machine id → bucket of seq → event
	bucketSnapshots = []byte("snapshots") // machine id → current snapshot record
	bucketTokens    = []byte("tokens")    // token id → token and the hash of its secret
	topBuckets      = [][]byte{bucketApps, bucketMachines, bucketConfigs, bucketEvents, bucketSnapshots, bucketTokens}
)

// Store is the embedded database.
type Store struct {
	db *bolt.DB
}

// Open opens (creating if needed) the database at path.
func Open(path string) (*Store, error) {
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: 2 * time.Second})
	if err != nil {
		return nil, fmt.Errorf("open store %s: %w", path, err)
	}
	err = db.Update(func(tx *bolt.Tx) error {
		for _, b := range topBuckets {
			if _, err := tx.CreateBucketIfNotExists(b); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		db.Close()
		return nil, fmt.Errorf("init store %s: %w", path, err)
	}
	return &Store{db: db}, nil
}

// Close closes the database.
func (s *Store) Close() error { return s.db.Close() }

// Update runs fn in a read-write transaction, committed only if fn returns nil.
func (s *Store) Update(fn func(*Tx) error) error {
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

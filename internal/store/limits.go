package store

import (
	"bytes"
	"sort"

	bolt "go.etcd.io/bbolt"

	"github.com/torpor-dev/torpor/internal/model"
)

// What the store keeps of each machine, so that a tenant cannot grow it
// without bound by updating or by creating and destroying machines (issue
// 17, F12). The sizes of what each record holds are bounded where the
// records are made (package machine's limits).
const (
	// MaxConfigVersions is how many config versions a machine keeps, the
	// newest; older ones are forgotten as new ones are recorded.
	MaxConfigVersions = 20
	// MaxDestroyedPerApp is how many destroyed machines an app's records
	// keep (for GET with include_deleted and their events), the most
	// recently destroyed; older ones are deleted.
	MaxDestroyedPerApp = 100
	// DestroyedEventsKept is how many events a destroyed machine keeps.
	DestroyedEventsKept = 50
)

// pruneConfigs keeps the newest MaxConfigVersions versions of the
// machine's configs (versions sort in creation order), and never keep.
func pruneConfigs(b *bolt.Bucket, keep []byte, most int) error {
	var keys [][]byte
	c := b.Cursor()
	for k, _ := c.First(); k != nil; k, _ = c.Next() {
		if !bytes.Equal(k, keep) {
			keys = append(keys, bytes.Clone(k))
		}
	}
	// keep counts against max whether or not it is there yet.
	for _, k := range keys[:max(0, len(keys)+1-most)] {
		if err := b.Delete(k); err != nil {
			return err
		}
	}
	return nil
}

// pruneDestroyed trims what a destroyed machine keeps (its current config
// version, its last DestroyedEventsKept events) and deletes the app's
// destroyed machines beyond the MaxDestroyedPerApp most recent.
func (t *Tx) pruneDestroyed(m model.Machine) error {
	if b := t.tx.Bucket(bucketConfigs).Bucket([]byte(m.ID)); b != nil {
		if err := pruneConfigs(b, []byte(m.Version), 1); err != nil {
			return err
		}
	}
	if b := t.tx.Bucket(bucketEvents).Bucket([]byte(m.ID)); b != nil {
		var drop [][]byte
		c := b.Cursor()
		k, _ := c.Last()
		for i := 0; k != nil; k, _ = c.Prev() {
			if i++; i > DestroyedEventsKept {
				drop = append(drop, bytes.Clone(k))
			}
		}
		for _, k := range drop {
			if err := b.Delete(k); err != nil {
				return err
			}
		}
	}
	ms, err := t.Machines(m.App)
	if err != nil {
		return err
	}
	var destroyed []model.Machine
	for _, o := range ms {
		if o.State == model.StateDestroyed {
			destroyed = append(destroyed, o)
		}
	}
	if len(destroyed) <= MaxDestroyedPerApp {
		return nil
	}
	sort.Slice(destroyed, func(i, j int) bool {
		if !destroyed[i].UpdatedAt.Equal(destroyed[j].UpdatedAt) {
			return destroyed[i].UpdatedAt.Before(destroyed[j].UpdatedAt)
		}
		return destroyed[i].ID < destroyed[j].ID
	})
	for _, o := range destroyed[:len(destroyed)-MaxDestroyedPerApp] {
		if o.ID == m.ID {
			continue
		}
		if err := t.DeleteMachine(o.ID); err != nil {
			return err
		}
	}
	return nil
}

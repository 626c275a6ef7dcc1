package store

import (
	"bytes"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/torpor-dev/torpor/internal/model"
)

// fill gives a store some hundreds of pages of ordinary records: apps,
// machines with config versions, events.
func fill(t testing.TB, s *Store, machines int) {
	t.Helper()
	err := s.Update(func(tx *Tx) error {
		for a := 0; a < 4; a++ {
			if err := tx.CreateApp(model.App{Name: fmt.Sprintf("app%d", a), CreatedAt: time.Now()}); err != nil {
				return err
			}
		}
		for i := 0; i < machines; i++ {
			id := fmt.Sprintf("m%04d", i)
			if err := tx.PutMachine(model.Machine{ID: id, App: fmt.Sprintf("app%d", i%4), State: model.StateStopped}); err != nil {
				return err
			}
			cfg := model.MachineConfig{Image: "img", Env: map[string]string{"K": strings.Repeat("v", 300)}}
			if err := tx.PutConfig(id, "v1", cfg, model.ImageRef{}); err != nil {
				return err
			}
			for e := 0; e < 10; e++ {
				if _, err := tx.AppendEvent(id, model.Event{Type: "start", Status: "started", Source: "user"}); err != nil {
					return err
				}
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	// Two commits that change nothing: both meta pages then describe the
	// whole data, and a damaged one loses nothing.
	for range 2 {
		if err := s.Update(func(*Tx) error { return nil }); err != nil {
			t.Fatal(err)
		}
	}
}

// dump is every record of the store, by bucket path and key.
func dump(t testing.TB, s *Store) map[string]string {
	t.Helper()
	out := map[string]string{}
	var walk func(prefix string, b *bolt.Bucket) error
	walk = func(prefix string, b *bolt.Bucket) error {
		return b.ForEach(func(k, v []byte) error {
			if v == nil {
				return walk(prefix+"/"+string(k), b.Bucket(k))
			}
			out[prefix+"/"+string(k)] = string(v)
			return nil
		})
	}
	err := s.db.View(func(tx *bolt.Tx) error {
		return tx.ForEach(func(name []byte, b *bolt.Bucket) error { return walk(string(name), b) })
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func filledStore(t testing.TB, machines int) (string, map[string]string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "torpor.db")
	s, err := OpenWith(path, Options{NoCompact: true})
	if err != nil {
		t.Fatal(err)
	}
	fill(t, s, machines)
	want := dump(t, s)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	return path, want
}

// Issue 17, F13: a store file cut short (a full disk, a bad copy) crashed
// the daemon with SIGBUS when bbolt touched the pages past the end. It
// must be refused with ErrDamaged instead, whatever the cut.
func TestOpenRefusesTruncatedStore(t *testing.T) {
	path, _ := filledStore(t, 300)
	orig, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	meta, err := readMeta(f, 0)
	f.Close()
	if err != nil {
		t.Fatal(err)
	}
	// bbolt grows a file ahead of use: what lies past the high-water mark
	// holds nothing yet, and cuts are made below it.
	page, used := int(meta.pageSize), int(meta.pgid*uint64(meta.pageSize))
	sizes := []int{1, 100, page, 2 * page, 3*page + 7, used / 4, used / 2, used - page, used - 1}
	for _, n := range sizes {
		cut := filepath.Join(t.TempDir(), "torpor.db")
		if err := os.WriteFile(cut, orig[:n], 0o600); err != nil {
			t.Fatal(err)
		}
		s, err := Open(cut)
		if err == nil {
			s.Close()
			t.Errorf("a store truncated to %d of %d bytes in use opened", n, used)
			continue
		}
		if !errors.Is(err, ErrDamaged) {
			t.Errorf("truncated to %d bytes: %v, want ErrDamaged", n, err)
		}
		t.Logf("truncated to %7d bytes: %v", n, err)
	}
}

// Issue 17, F13: a page overwritten with random bytes went undetected.
// Each page of a store is overwritten in turn: the store must either be
// refused (ErrDamaged), or open with every record as written (the page
// was free, or a meta page bbolt has a twin of); never open with records
// changed or missing.
func TestOpenDetectsRandomPage(t *testing.T) {
	path, want := filledStore(t, 150)
	orig, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	page := os.Getpagesize()
	pages := len(orig) / page
	rng := rand.New(rand.NewPCG(17, 13))
	var refused, unused, noted, undetected int
	for p := 0; p < pages; p++ {
		data := bytes.Clone(orig)
		for i := p * page; i < (p+1)*page; i++ {
			data[i] = byte(rng.Uint32())
		}
		file := filepath.Join(t.TempDir(), "torpor.db")
		if err := os.WriteFile(file, data, 0o600); err != nil {
			t.Fatal(err)
		}
		s, err := OpenWith(file, Options{NoCompact: true})
		if err != nil {
			if !errors.Is(err, ErrDamaged) {
				t.Errorf("page %d: %v, want ErrDamaged", p, err)
			}
			refused++
			continue
		}
		got := dump(t, s)
		if len(s.Notes) > 0 {
			noted++
		}
		s.Close()
		if !sameRecords(got, want) {
			undetected++
			t.Errorf("page %d overwritten: the store opened with changed records", p)
			continue
		}
		unused++
	}
	t.Logf("%d pages overwritten one at a time: %d refused, %d harmless (free, or a meta page with a whole twin; %d of them noted), %d undetected",
		pages, refused, unused, noted, undetected)
	if refused == 0 {
		t.Error("no damaged page was refused")
	}
}

// sameRecords compares two dumps, ignoring the buckets Open creates.
func sameRecords(got, want map[string]string) bool {
	if len(got) != len(want) {
		return false
	}
	for k, v := range want {
		if got[k] != v {
			return false
		}
	}
	return true
}

// Issue 17, F13: a zero-length store started as an empty one and orphaned
// every machine. With ExpectData (the daemon sets it when the data
// directory holds machines or a backup) a missing or empty file is
// refused.
func TestEmptyStoreRefusedWhenDataIsExpected(t *testing.T) {
	dir := t.TempDir()
	empty := filepath.Join(dir, "empty.db")
	if err := os.WriteFile(empty, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	for _, path := range []string{empty, filepath.Join(dir, "absent.db")} {
		if s, err := OpenWith(path, Options{ExpectData: true}); !errors.Is(err, ErrMissing) {
			if s != nil {
				s.Close()
			}
			t.Errorf("%s: %v, want ErrMissing", filepath.Base(path), err)
		}
	}
	// Without it, an empty file is a new store.
	s, err := Open(empty)
	if err != nil {
		t.Fatal(err)
	}
	s.Close()
}

// Issue 17, F12: bbolt never shrinks a file, so a store a tenant once
// grew (8 → 168 MiB) stayed that size. Open compacts a file of at least
// compactMinBytes that is at least half free, and keeps every record.
func TestOpenCompactsAMostlyFreeStore(t *testing.T) {
	path := filepath.Join(t.TempDir(), "torpor.db")
	s, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	fill(t, s, 20)
	big := strings.Repeat("x", 100<<10)
	for i := 0; i < 120; i++ {
		err := s.Update(func(tx *Tx) error {
			return tx.PutConfig(fmt.Sprintf("big%03d", i), "v1", model.MachineConfig{Image: "img", Env: map[string]string{"K": big}}, model.ImageRef{})
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Update(func(tx *Tx) error {
		for i := 0; i < 120; i++ {
			if err := tx.DeleteMachine(fmt.Sprintf("big%03d", i)); err != nil {
				return err
			}
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	want := dump(t, s)
	s.Close()
	before, _ := os.Stat(path)
	if before.Size() < compactMinBytes {
		t.Fatalf("the store is only %d bytes", before.Size())
	}
	s, err = Open(path)
	if err != nil {
		t.Fatal(err)
	}
	after, _ := os.Stat(path)
	t.Logf("store of %.1f MiB, mostly free, compacted at open to %.2f MiB: %v", float64(before.Size())/(1<<20), float64(after.Size())/(1<<20), s.Notes)
	if after.Size() > before.Size()/4 {
		t.Errorf("store is %d bytes after open, was %d", after.Size(), before.Size())
	}
	if got := dump(t, s); !sameRecords(got, want) {
		t.Errorf("compaction changed the records: %d, want %d", len(got), len(want))
	}
	// A store that is mostly in use is left as it is.
	s.Close()
	s, err = Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if len(s.Notes) != 0 {
		t.Errorf("a small store was compacted again: %v", s.Notes)
	}
}

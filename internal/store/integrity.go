package store

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"hash/fnv"
	"io"
	"os"
	"runtime/debug"

	bolt "go.etcd.io/bbolt"
)

// ErrDamaged marks a store file that is truncated, whose pages do not
// hold together or whose records do not parse (issue 17, F13). The daemon
// refuses to start on it rather than run on part of its state: the
// operator restores the verified backup (RestoreBackup).
var ErrDamaged = errors.New("the store is damaged")

// ErrMissing marks a store that is absent or empty while the data
// directory holds state that only a store can explain (Options.ExpectData).
var ErrMissing = errors.New("the store is missing or empty")

// bbolt's on-disk meta page (go.etcd.io/bbolt/internal/common.Meta), read
// before bbolt maps the file: a page header of 16 bytes, then magic,
// version, page size, flags, root bucket (root page, sequence), freelist
// page, high-water mark (pages in use), transaction id and an FNV-64a
// checksum of everything before it, in host (little-endian) byte order.
const (
	pageHeaderSize = 16
	metaSize       = 64
	boltMagic      = 0xED0CDAED
	boltVersion    = 2
	noFreelist     = 0xffffffffffffffff
)

type metaPage struct {
	pageSize uint32
	root     uint64
	freelist uint64
	pgid     uint64 // high-water mark: pages the file must hold
	txid     uint64
}

// readMeta parses the meta page at off; an error says why it is not one.
func readMeta(f *os.File, off int64) (metaPage, error) {
	buf := make([]byte, pageHeaderSize+metaSize)
	if _, err := f.ReadAt(buf, off); err != nil {
		return metaPage{}, fmt.Errorf("meta page at byte %d unreadable: %w", off, err)
	}
	m := buf[pageHeaderSize:]
	le := binary.LittleEndian
	if le.Uint32(m[0:]) != boltMagic {
		return metaPage{}, fmt.Errorf("meta page at byte %d: no bbolt magic", off)
	}
	if v := le.Uint32(m[4:]); v != boltVersion {
		return metaPage{}, fmt.Errorf("meta page at byte %d: format version %d, not %d", off, v, boltVersion)
	}
	h := fnv.New64a()
	h.Write(m[:56])
	if h.Sum64() != le.Uint64(m[56:]) {
		return metaPage{}, fmt.Errorf("meta page at byte %d: checksum mismatch", off)
	}
	mp := metaPage{pageSize: le.Uint32(m[8:]), root: le.Uint64(m[16:]), freelist: le.Uint64(m[32:]),
		pgid: le.Uint64(m[40:]), txid: le.Uint64(m[48:])}
	switch {
	case mp.pageSize < 512 || mp.pageSize > 1<<20 || mp.pageSize&(mp.pageSize-1) != 0:
		return metaPage{}, fmt.Errorf("meta page at byte %d: page size %d", off, mp.pageSize)
	case mp.pgid < 4 || mp.root >= mp.pgid || (mp.freelist != noFreelist && mp.freelist >= mp.pgid):
		return metaPage{}, fmt.Errorf("meta page at byte %d: root page %d or freelist page %d beyond the %d pages in use", off, mp.root, mp.freelist, mp.pgid)
	}
	return mp, nil
}

// checkFile looks at the file before bbolt maps it, for what bbolt would
// crash on (a file shorter than its meta page says is touched past its
// end, SIGBUS) or silently roll back. It returns the file's size (0: a
// file bbolt will initialise) and a note when one meta page is damaged
// but the other is whole (bbolt then uses the whole one: the state of the
// transaction before, which is what a torn meta write at a power cut
// leaves).
func checkFile(path string) (size int64, note string, err error) {
	f, err := os.Open(path)
	if errors.Is(err, os.ErrNotExist) {
		return 0, "", nil
	}
	if err != nil {
		return 0, "", err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return 0, "", err
	}
	if fi.Size() == 0 {
		return 0, "", nil
	}
	m0, err0 := readMeta(f, 0)
	// The second meta page sits one page further; its page size is the
	// first one's, or the OS default when the first is unreadable.
	off1 := int64(os.Getpagesize())
	if err0 == nil {
		off1 = int64(m0.pageSize)
	}
	m1, err1 := readMeta(f, off1)
	if err0 != nil && err1 != nil {
		if fi.Size() < int64(2*os.Getpagesize()) {
			return 0, "", fmt.Errorf("%w: the file is %d bytes, shorter than its two meta pages (truncated?)", ErrDamaged, fi.Size())
		}
		return 0, "", fmt.Errorf("%w: both meta pages are invalid (%v; %v)", ErrDamaged, err0, err1)
	}
	use, other := m0, err1
	if err0 != nil || (err1 == nil && m1.txid > m0.txid) {
		use, other = m1, err0
	}
	if err0 == nil && err1 == nil && m0.pageSize != m1.pageSize {
		return 0, "", fmt.Errorf("%w: the meta pages disagree on the page size (%d, %d)", ErrDamaged, m0.pageSize, m1.pageSize)
	}
	if want := int64(use.pgid) * int64(use.pageSize); fi.Size() < want {
		return 0, "", fmt.Errorf("%w: the file is %d bytes but its meta page (transaction %d) says %d pages of %d bytes (%d bytes): it was truncated",
			ErrDamaged, fi.Size(), use.txid, use.pgid, use.pageSize, want)
	}
	if other != nil {
		note = fmt.Sprintf("one meta page is damaged (%v); the store opens at transaction %d from the other one", other, use.txid)
	}
	return fi.Size(), note, nil
}

// guard runs fn, turning a panic or a memory fault inside it (bbolt
// asserts on a page it does not recognise, and follows a damaged page's
// pointers anywhere in the mapping) into an ErrDamaged error.
func guard(what string, fn func() error) (err error) {
	defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("%w: %s: %v", ErrDamaged, what, r)
		}
	}()
	return fn()
}

// checkRecords reads every record of every bucket, each of which must be
// JSON (every record is written by put), then has bbolt check its pages:
// each reachable once, each either reachable or free. Its own walk comes
// first, in a goroutine that turns faults into errors, since bbolt's
// check runs in one of its own that would crash on a wild page pointer.
func checkRecords(db *bolt.DB) error {
	err := guard("reading every record", func() error {
		return db.View(func(tx *bolt.Tx) error {
			return tx.ForEach(func(name []byte, b *bolt.Bucket) error {
				return walkBucket(string(name), b)
			})
		})
	})
	if err != nil {
		return err
	}
	return guard("checking the pages", func() error {
		return db.View(func(tx *bolt.Tx) error {
			var errs []error
			for e := range tx.Check() {
				if len(errs) < 5 {
					errs = append(errs, e)
				}
			}
			if len(errs) > 0 {
				return fmt.Errorf("%w: %v", ErrDamaged, errors.Join(errs...))
			}
			return nil
		})
	})
}

func walkBucket(path string, b *bolt.Bucket) error {
	return b.ForEach(func(k, v []byte) error {
		if v == nil {
			if nb := b.Bucket(k); nb != nil {
				return walkBucket(path+"/"+printableKey(k), nb)
			}
			return fmt.Errorf("%w: %s/%s: neither a record nor a bucket", ErrDamaged, path, printableKey(k))
		}
		if !json.Valid(v) {
			return fmt.Errorf("%w: %s/%s: the record is not valid JSON", ErrDamaged, path, printableKey(k))
		}
		return nil
	})
}

// printableKey shows a key: as text when it is, else in hex.
func printableKey(k []byte) string {
	for _, c := range k {
		if c < 0x20 || c >= 0x7f {
			return fmt.Sprintf("%x", k)
		}
	}
	return string(k)
}

// VerifyFile opens the store file at path read-only and checks it whole
// (checkFile, checkRecords); nil means every record reads.
func VerifyFile(path string) error {
	size, _, err := checkFile(path)
	if err != nil {
		return err
	}
	if size == 0 {
		return fmt.Errorf("%w: %s is absent or empty", ErrMissing, path)
	}
	var db *bolt.DB
	err = guard("opening", func() error {
		var err error
		db, err = bolt.Open(path, 0o600, &bolt.Options{ReadOnly: true, Timeout: lockTimeout})
		return err
	})
	if err != nil {
		return openError(path, err)
	}
	defer db.Close()
	return checkRecords(db)
}

// copyFile copies src to dst (created, or truncated) and syncs it.
func copyFile(dst, src string) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	if err := out.Sync(); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}

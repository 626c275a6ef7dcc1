// Package snapshot owns snapshot images on disk: where a machine's snapshots
// live, sealing a freshly written image (per-file CRC-32C checksums, runtime
// version, boot generation, host), verifying a seal before restore, and the
// rename that marks an image as claimed so it can never be restored twice.
//
// The rules about when a snapshot may be taken, restored or must be thrown
// away are the machine package's; this package only guarantees that what it
// verifies is exactly what was sealed.
package snapshot

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"hash/crc32"
	"io"
	"os"
	"path/filepath"
	goruntime "runtime"
	"sort"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// SealFile is the name of the seal inside a snapshot directory.
const SealFile = "seal.json"

// claimedSuffix marks a directory whose snapshot has been claimed for restore.
const claimedSuffix = ".claimed"

// Seal describes a complete snapshot image. It is written last, so an image
// without a seal is incomplete.
type Seal struct {
	SnapshotID     string `json:"snapshot_id"`
	MachineID      string `json:"machine_id"`
	BootGeneration uint64 `json:"boot_generation"`
	Runtime        string `json:"runtime"`
	RuntimeVersion string `json:"runtime_version"`
	Host           string `json:"host"`
	// Image identifies the root filesystem the sandbox ran on ("oci:" and
	// the manifest digest, or "dir:" and the directory); a snapshot only
	// restores onto the same one. Seals written before images had none.
	Image     string            `json:"image,omitempty"`
	CreatedAt time.Time         `json:"created_at"`
	Files     map[string]string `json:"files"` // name → digest (see fileDigest)
	SizeBytes int64             `json:"size_bytes"`
}

// Checksum is a digest over every file's digest: one value naming the image.
func (s Seal) Checksum() string {
	names := make([]string, 0, len(s.Files))
	for n := range s.Files {
		names = append(names, n)
	}
	sort.Strings(names)
	h := sha256.New()
	for _, n := range names {
		fmt.Fprintf(h, "%s %s\n", s.Files[n], n)
	}
	return hex.EncodeToString(h.Sum(nil))
}

// Reasons a snapshot cannot be restored. Verify wraps one of these.
var (
	ErrMissing      = errors.New("snapshot missing")
	ErrCorrupt      = errors.New("snapshot corrupt")
	ErrWrongRuntime = errors.New("snapshot from another runtime version")
	ErrWrongHost    = errors.New("snapshot from an incompatible host")
	ErrStale        = errors.New("snapshot from an older boot generation")
	// ErrImageChanged: the machine's root filesystem is not the one the
	// snapshot was taken on.
	ErrImageChanged = errors.New("image changed")
)

// HostID identifies what a snapshot's CPU state depends on: the architecture
// and the CPU feature flags. A snapshot only restores on a matching host.
func HostID() string {
	flags := ""
	if data, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, line := range strings.Split(string(data), "\n") {
			if strings.HasPrefix(line, "flags") {
				flags = line
				break
			}
		}
	}
	sum := sha256.Sum256([]byte(flags))
	return goruntime.GOARCH + "-" + hex.EncodeToString(sum[:8])
}

// Write seals the image in dir: it checksums every file and writes the seal.
// The seal's Files and SizeBytes are filled in here. Write does not flush
// anything to disk (see Flush): a crash of the daemon loses nothing, since
// the page cache outlives it, and what a crash of the host tears or loses,
// Verify rejects.
func Write(dir string, seal Seal) (Seal, error) {
	files, size, err := checksumDir(dir, nil)
	if err != nil {
		return seal, fmt.Errorf("seal %s: %w", dir, err)
	}
	seal.Files, seal.SizeBytes = files, size
	data, err := json.MarshalIndent(seal, "", "  ")
	if err != nil {
		return seal, err
	}
	if err := writeFileAtomic(filepath.Join(dir, SealFile), data); err != nil {
		return seal, fmt.Errorf("seal %s: %w", dir, err)
	}
	return seal, nil
}

// Flush makes the image in dir durable: it writes every file in it to
// disk, then fsyncs it, then the directory itself. Until Flush returns, a
// crash of the host may lose or tear the image (never undetected: Verify
// then fails and the machine cold starts instead of resuming).
//
// The files are written out FlushChunk bytes at a time, and Flush stops
// between two chunks once ctx has ended, returning its error: a flush
// nobody needs any more (the image was claimed for a restore, or
// discarded) stops within a chunk's write. The chunks also keep the
// journal commits of other writers on the file system (the store's, during
// a resume) from queueing behind the whole image: one fsync of a freshly
// written 1 GiB image holds every commit until all of it is on disk.
func Flush(ctx context.Context, dir string) error {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return err
	}
	for _, e := range entries {
		if !e.Type().IsRegular() {
			continue
		}
		if err := flushFile(ctx, filepath.Join(dir, e.Name())); err != nil {
			return err
		}
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	return syncFile(dir)
}

// FlushChunk is how much of a file Flush writes to disk before it checks
// whether it should go on.
const FlushChunk = 4 << 20

// flushFile writes the file at path to disk a chunk at a time, then
// fsyncs it (its metadata, and the disk's cache).
func flushFile(ctx context.Context, path string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return err
	}
	const wait = unix.SYNC_FILE_RANGE_WAIT_BEFORE | unix.SYNC_FILE_RANGE_WRITE | unix.SYNC_FILE_RANGE_WAIT_AFTER
	for off := int64(0); off < fi.Size(); off += FlushChunk {
		if err := ctx.Err(); err != nil {
			return err
		}
		if err := unix.SyncFileRange(int(f.Fd()), off, FlushChunk, wait); err != nil {
			break // not supported here: the fsync below writes it all
		}
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	return f.Sync()
}

// Verify checks that dir holds a complete, unmodified image sealed with want's
// identity (machine, generation, runtime version, host, image) and checksum.
// The error wraps ErrMissing, ErrCorrupt, ErrWrongRuntime, ErrWrongHost,
// ErrStale or ErrImageChanged.
// It is VerifySeal then VerifyFiles.
func Verify(dir string, want Seal, checksum string) error {
	seal, err := VerifySeal(dir, want, checksum)
	if err != nil {
		return err
	}
	return VerifyFiles(dir, seal)
}

// VerifySeal checks the seal of the image in dir, without reading the image
// files: it has want's identity and matches checksum (so its per-file
// digests are the ones sealed). It returns the seal for VerifyFiles.
func VerifySeal(dir string, want Seal, checksum string) (Seal, error) {
	got, err := ReadSeal(dir)
	if err != nil {
		return got, err
	}
	if err := compareIdentity(got, want); err != nil {
		return got, err
	}
	if got.Checksum() != checksum {
		return got, fmt.Errorf("%w: seal does not match the recorded checksum", ErrCorrupt)
	}
	return got, nil
}

// VerifyFiles checks that the files in dir are exactly those of seal, with
// their sealed digests. The error wraps ErrCorrupt.
func VerifyFiles(dir string, seal Seal) error {
	return verifyFiles(dir, seal.Files)
}

// ReadSeal reads the seal of the image in dir. The error wraps ErrMissing
// when dir does not exist and ErrCorrupt when the seal is absent or unreadable.
func ReadSeal(dir string) (Seal, error) {
	var seal Seal
	data, err := os.ReadFile(filepath.Join(dir, SealFile))
	if errors.Is(err, os.ErrNotExist) {
		if _, statErr := os.Stat(dir); statErr != nil {
			return seal, fmt.Errorf("%w: %s does not exist", ErrMissing, dir)
		}
		return seal, fmt.Errorf("%w: no seal in %s", ErrCorrupt, dir)
	}
	if err != nil {
		return seal, fmt.Errorf("%w: %v", ErrCorrupt, err)
	}
	if err := json.Unmarshal(data, &seal); err != nil {
		return seal, fmt.Errorf("%w: unreadable seal: %v", ErrCorrupt, err)
	}
	return seal, nil
}

func compareIdentity(got, want Seal) error {
	switch {
	case got.MachineID != want.MachineID:
		return fmt.Errorf("%w: seal names machine %s", ErrCorrupt, got.MachineID)
	case got.BootGeneration != want.BootGeneration:
		return fmt.Errorf("%w: taken in generation %d, machine is in %d", ErrStale, got.BootGeneration, want.BootGeneration)
	case got.SnapshotID != want.SnapshotID:
		return fmt.Errorf("%w: seal names snapshot %s, not %s", ErrCorrupt, got.SnapshotID, want.SnapshotID)
	case got.Runtime != want.Runtime || got.RuntimeVersion != want.RuntimeVersion:
		return fmt.Errorf("%w: taken by %s %q, running %s %q", ErrWrongRuntime, got.Runtime, got.RuntimeVersion, want.Runtime, want.RuntimeVersion)
	case got.Host != want.Host:
		return fmt.Errorf("%w: taken on host %s, this is %s", ErrWrongHost, got.Host, want.Host)
	case got.Image != "" && got.Image != want.Image:
		return fmt.Errorf("%w: the snapshot was taken on %s, the machine now runs %s", ErrImageChanged, got.Image, want.Image)
	}
	return nil
}

func verifyFiles(dir string, want map[string]string) error {
	got, _, err := checksumDir(dir, want)
	if err != nil {
		return fmt.Errorf("%w: %v", ErrCorrupt, err)
	}
	for name, sum := range want {
		switch g, ok := got[name]; {
		case !ok:
			return fmt.Errorf("%w: file %s is missing", ErrCorrupt, name)
		case g != sum:
			return fmt.Errorf("%w: file %s does not match its checksum", ErrCorrupt, name)
		}
	}
	for name := range got {
		if _, ok := want[name]; !ok {
			return fmt.Errorf("%w: unexpected file %s", ErrCorrupt, name)
		}
	}
	return nil
}

// checksumDir returns the digest of every regular file in dir except the
// seal, made like the digest of the same name in like. With no like (a new
// seal) the digests are CRC-32C, large files checksummed in parallel
// (crc32cFile); else sequentially, like the digest they are checked against.
func checksumDir(dir string, like map[string]string) (map[string]string, int64, error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, 0, err
	}
	sums := map[string]string{}
	var total int64
	for _, e := range entries {
		if e.Name() == SealFile || !e.Type().IsRegular() {
			continue
		}
		path := filepath.Join(dir, e.Name())
		sum, n, err := "", int64(0), error(nil)
		if like == nil {
			sum, n, err = crc32cFile(path)
		} else {
			sum, n, err = checksumFile(path, like[e.Name()])
		}
		if err != nil {
			return nil, 0, err
		}
		sums[e.Name()], total = sum, total+n
	}
	return sums, total, nil
}

// Per-file digests are CRC-32C ("crc32c:" and 8 hex digits). A checksum
// here detects corruption on disk (bit flips, torn or truncated writes), not
// tampering: whoever can write a snapshot directory is root and could as well
// rewrite the seal. CRC-32C is made for exactly that (ext4, btrfs and iSCSI
// use it), is computed by the CPU's crc32 instruction at several GB/s, and
// so keeps sealing and verifying off the suspend and resume critical paths:
// SHA-256, used before, took 55 ms of a 64 MiB app's resume. Seals written
// with SHA-256 (64 hex digits, no prefix) are still verified.
const crc32cPrefix = "crc32c:"

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// newDigest returns the hash a digest like want was made with (CRC-32C for
// new digests, when want is empty) and how to format its sum.
func newDigest(want string) (hash.Hash, func([]byte) string) {
	if want != "" && !strings.HasPrefix(want, crc32cPrefix) {
		return sha256.New(), hex.EncodeToString
	}
	return crc32.New(castagnoli), func(b []byte) string { return crc32cPrefix + hex.EncodeToString(b) }
}

// checksumFile digests the file at path the way want was digested (see
// newDigest).
func checksumFile(path, want string) (string, int64, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", 0, err
	}
	defer f.Close()
	h, format := newDigest(want)
	n, err := io.Copy(h, f)
	if err != nil {
		return "", 0, err
	}
	return format(h.Sum(nil)), n, nil
}

// ClaimedDir is where Claim moves the image in dir.
func ClaimedDir(dir string) string { return dir + claimedSuffix }

// Claim marks the image in dir as claimed by renaming it, and returns the new
// path. The rename is atomic: of two claims of one directory, one fails. It
// is not flushed: the claim that counts across a crash of the host is the
// one the caller committed to its store before calling Claim.
func Claim(dir string) (string, error) {
	claimed := ClaimedDir(dir)
	if err := os.Rename(dir, claimed); err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return "", fmt.Errorf("%w: %s", ErrMissing, dir)
		}
		return "", fmt.Errorf("claim %s: %w", dir, err)
	}
	return claimed, nil
}

// Remove deletes a snapshot directory, claimed or not. Missing is not an error.
func Remove(dir string) error {
	if err := os.RemoveAll(dir + claimedSuffix); err != nil {
		return err
	}
	return os.RemoveAll(dir)
}

// writeFileAtomic writes data to path through a temporary file and a
// rename, so that path is either absent or whole (as far as this host stays
// up; see Flush).
func writeFileAtomic(path string, data []byte) error {
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, data, 0o600); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

// syncFile fsyncs the file or directory at path.
func syncFile(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	return f.Sync()
}

// RemoveExcept deletes every image under parent except keep (when keepOK).
// A claimed image (keep's renamed twin) is always deleted.
func RemoveExcept(parent, keep string, keepOK bool) error {
	entries, err := os.ReadDir(parent)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	for _, e := range entries {
		path := filepath.Join(parent, e.Name())
		if keepOK && path == filepath.Clean(keep) {
			continue
		}
		if err := os.RemoveAll(path); err != nil {
			return err
		}
	}
	return nil
}

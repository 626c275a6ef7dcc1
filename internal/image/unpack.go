package image

import (
	"archive/tar"
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"sort"
	"strings"

	"github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/zstd"
	"golang.org/x/sys/unix"
)

// Limits bound what unpacking one image may take. Zero fields take the
// defaults (DefaultLimits).
type Limits struct {
	// MaxLayers is the most layers an image may have.
	MaxLayers int
	// MaxBytes bounds the uncompressed size of an image: the bytes of every
	// layer's tar stream, added up (what the daemon writes to disk is less,
	// since upper layers replace files of lower ones).
	MaxBytes int64
	// MaxEntries bounds the tar entries of all layers together (files,
	// directories, links, whiteouts): a guard against inode exhaustion.
	MaxEntries int
}

// DefaultLimits are the limits when the daemon's flags say nothing.
var DefaultLimits = Limits{MaxLayers: 128, MaxBytes: 16 << 30, MaxEntries: 1_000_000}

func (l Limits) withDefaults() Limits {
	if l.MaxLayers <= 0 {
		l.MaxLayers = DefaultLimits.MaxLayers
	}
	if l.MaxBytes <= 0 {
		l.MaxBytes = DefaultLimits.MaxBytes
	}
	if l.MaxEntries <= 0 {
		l.MaxEntries = DefaultLimits.MaxEntries
	}
	return l
}

// Errors of unpacking. Every error Unpack returns wraps one of them.
var (
	// ErrUnsafeLayer: an entry that would land outside the image root, or
	// an entry the policy refuses (see the package documentation).
	ErrUnsafeLayer = errors.New("unsafe layer")
	// ErrTooLarge: a limit of Limits was passed.
	ErrTooLarge = errors.New("image too large")
	// ErrCorruptLayer: the layer is not a readable tar stream, or its
	// uncompressed digest is not the one the image config names.
	ErrCorruptLayer = errors.New("corrupt layer")
)

// Whiteout markers (the OCI image layer spec, as overlayfs-style images write them).
const (
	whiteoutPrefix = ".wh."
	whiteoutOpaque = ".wh..wh..opq"
	maxPathBytes   = 4096
)

// resolveFlags resolve every path inside the image root as if it were "/":
// ".." at the root stays at the root and absolute symlinks are taken
// relative to it, so no symlink, whatever a layer put where, leads out of
// it. Magic links (/proc/self/fd/...) and other mounts are refused outright.
const resolveFlags = unix.RESOLVE_IN_ROOT | unix.RESOLVE_NO_MAGICLINKS | unix.RESOLVE_NO_XDEV

// UnpackStats tells what unpacking did beyond writing the files.
type UnpackStats struct {
	Entries int   `json:"entries"`
	Bytes   int64 `json:"bytes"` // uncompressed bytes read
	// SkippedDevices counts character and block device nodes not created
	// (the policy: a machine's /dev is its sandbox's own).
	SkippedDevices int `json:"skipped_devices,omitempty"`
}

// unpacker applies layers, lowest first, to one root directory.
type unpacker struct {
	root   int // descriptor of the image root directory
	limits Limits
	stats  UnpackStats
	layer  int             // index of the layer being applied, for errors
	wrote  map[string]bool // paths the current layer created or changed
	// dirTimes holds each directory's times, set once all layers are in
	// (writing into a directory changes its mtime).
	dirTimes map[string][2]unix.Timespec
}

// newUnpacker opens dir, an empty directory that becomes the image root.
func newUnpacker(dir string, limits Limits) (*unpacker, error) {
	fd, err := unix.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC|unix.O_NOFOLLOW, 0)
	if err != nil {
		return nil, fmt.Errorf("open image root %s: %w", dir, err)
	}
	return &unpacker{root: fd, limits: limits.withDefaults(), dirTimes: map[string][2]unix.Timespec{}}, nil
}

func (u *unpacker) close() { unix.Close(u.root) }

// unsafe returns an ErrUnsafeLayer error about the entry name.
func (u *unpacker) unsafe(name, format string, args ...any) error {
	return fmt.Errorf("%w: layer %d: entry %q: %s", ErrUnsafeLayer, u.layer+1, name, fmt.Sprintf(format, args...))
}

// applyLayer applies one layer's (possibly compressed) tar stream. When
// diffID is set ("sha256:..."), the uncompressed stream must have it.
func (u *unpacker) applyLayer(r io.Reader, diffID string) error {
	u.wrote = map[string]bool{}
	stream, closeStream, err := decompress(r)
	if err != nil {
		return fmt.Errorf("%w: layer %d: %v", ErrCorruptLayer, u.layer+1, err)
	}
	// Decompressing and hashing run beside the writes (about half of an
	// unpack's CPU time each).
	h := sha256.New()
	pr, pw := io.Pipe()
	done := make(chan struct{})
	go func() {
		defer close(done)
		_, err := io.Copy(pw, io.TeeReader(stream, h))
		pw.CloseWithError(err)
	}()
	defer func() {
		pr.CloseWithError(errors.New("unpack ended"))
		<-done
		closeStream()
	}()
	counted := &countingReader{r: bufio.NewReaderSize(pr, 1<<20), u: u}
	tr := tar.NewReader(counted)
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			if counted.err != nil {
				return counted.err
			}
			return fmt.Errorf("%w: layer %d: %v", ErrCorruptLayer, u.layer+1, err)
		}
		u.stats.Entries++
		if u.stats.Entries > u.limits.MaxEntries {
			return fmt.Errorf("%w: more than %d files in the image's layers (the daemon's --image-max-entries)", ErrTooLarge, u.limits.MaxEntries)
		}
		if err := u.apply(hdr, tr); err != nil {
			if counted.err != nil {
				return counted.err
			}
			return err
		}
	}
	// The digest covers the whole stream, padding after the tar's end included.
	if _, err := io.Copy(io.Discard, counted); err != nil {
		if counted.err != nil {
			return counted.err
		}
		return fmt.Errorf("%w: layer %d: %v", ErrCorruptLayer, u.layer+1, err)
	}
	if got := "sha256:" + hex.EncodeToString(h.Sum(nil)); diffID != "" && got != diffID {
		return fmt.Errorf("%w: layer %d: uncompressed digest %s, the image config says %s", ErrCorruptLayer, u.layer+1, got, diffID)
	}
	return nil
}

// finish sets the directories' times, now that nothing writes into them.
func (u *unpacker) finish() error {
	names := make([]string, 0, len(u.dirTimes))
	for name := range u.dirTimes {
		names = append(names, name)
	}
	sort.Sort(sort.Reverse(sort.StringSlice(names))) // children first
	for _, name := range names {
		fd, err := u.openDir(name)
		if err != nil {
			continue // replaced or removed by a later layer
		}
		ts := u.dirTimes[name]
		err = unix.UtimesNanoAt(fd, "", ts[:], unix.AT_EMPTY_PATH)
		unix.Close(fd)
		if err != nil {
			return fmt.Errorf("set times of /%s: %w", name, err)
		}
	}
	return nil
}

// countingReader enforces MaxBytes on the uncompressed stream.
type countingReader struct {
	r   io.Reader
	u   *unpacker
	err error
}

func (c *countingReader) Read(p []byte) (int, error) {
	if c.err != nil {
		return 0, c.err
	}
	n, err := c.r.Read(p)
	c.u.stats.Bytes += int64(n)
	if c.u.stats.Bytes > c.u.limits.MaxBytes {
		c.err = fmt.Errorf("%w: the layers hold more than %d bytes uncompressed (the daemon's --image-max-size)", ErrTooLarge, c.u.limits.MaxBytes)
		return n, c.err
	}
	return n, err
}

// decompress detects gzip and zstd by their magic numbers; anything else
// is read as an uncompressed tar stream.
func decompress(r io.Reader) (io.Reader, func(), error) {
	br := bufio.NewReaderSize(r, 64<<10)
	magic, err := br.Peek(4)
	if err != nil && err != io.EOF {
		return nil, nil, err
	}
	switch {
	case bytes.HasPrefix(magic, []byte{0x1f, 0x8b}):
		zr, err := gzip.NewReader(br)
		if err != nil {
			return nil, nil, err
		}
		return zr, func() { zr.Close() }, nil
	case bytes.HasPrefix(magic, []byte{0x28, 0xb5, 0x2f, 0xfd}):
		zr, err := zstd.NewReader(br)
		if err != nil {
			return nil, nil, err
		}
		return zr, zr.Close, nil
	}
	return br, func() {}, nil
}

// cleanName turns an entry name into a path relative to the image root
// ("" for the root itself). A leading "/" or "./" is dropped (absolute
// names are taken relative to the root, as tar and Docker do); a ".." that
// would climb above the root is refused.
func cleanName(name string) (string, bool) {
	var parts []string
	for _, p := range strings.Split(name, "/") {
		switch p {
		case "", ".":
		case "..":
			if len(parts) == 0 {
				return "", false
			}
			parts = parts[:len(parts)-1]
		default:
			parts = append(parts, p)
		}
	}
	return strings.Join(parts, "/"), true
}

// apply writes one entry.
func (u *unpacker) apply(hdr *tar.Header, body io.Reader) error {
	if len(hdr.Name) > maxPathBytes || len(hdr.Linkname) > maxPathBytes || strings.ContainsRune(hdr.Name, 0) {
		return u.unsafe(truncate(hdr.Name), "name or link target longer than %d bytes", maxPathBytes)
	}
	rel, ok := cleanName(hdr.Name)
	if !ok {
		return u.unsafe(hdr.Name, "climbs out of the image root with \"..\"")
	}
	dir, base := path.Split(rel)
	dir = strings.TrimSuffix(dir, "/")
	if strings.HasPrefix(base, whiteoutPrefix) {
		return u.whiteout(hdr.Name, dir, base)
	}
	if rel == "" {
		if hdr.Typeflag != tar.TypeDir {
			return u.unsafe(hdr.Name, "the image root can only be a directory")
		}
		return u.setDirMeta(u.root, "", hdr)
	}
	switch hdr.Typeflag {
	case tar.TypeXGlobalHeader:
		return nil // PAX defaults, already applied by the reader
	case tar.TypeChar, tar.TypeBlock:
		u.stats.SkippedDevices++
		return nil
	case tar.TypeReg, tar.TypeRegA, tar.TypeGNUSparse, tar.TypeDir, tar.TypeSymlink, tar.TypeLink, tar.TypeFifo:
	default:
		return u.unsafe(hdr.Name, "entry type %q is not supported", string(hdr.Typeflag))
	}
	if hdr.Uid < 0 || hdr.Gid < 0 || hdr.Uid > 1<<32-2 || hdr.Gid > 1<<32-2 {
		return u.unsafe(hdr.Name, "owner %d:%d out of range", hdr.Uid, hdr.Gid)
	}
	parent, err := u.mkdirAll(dir)
	if err != nil {
		return u.unsafe(hdr.Name, "parent directory: %v", err)
	}
	defer unix.Close(parent)
	// In the lowest layer only what the layer itself wrote can be in the
	// way, so the check for an entry to replace is skipped; should one be
	// there after all (a path written twice through a symlink), creating
	// it fails before anything is read, and the careful way goes again.
	fresh := u.layer == 0 && !u.wrote[rel]
	err = u.write(parent, base, rel, hdr, body, fresh)
	if fresh && errors.Is(err, unix.EEXIST) {
		err = u.write(parent, base, rel, hdr, body, false)
	}
	u.wrote[rel] = true
	if err != nil {
		return fmt.Errorf("layer %d: entry %q: %w", u.layer+1, hdr.Name, err)
	}
	return nil
}

func truncate(s string) string {
	if len(s) > 80 {
		return s[:80] + "..."
	}
	return s
}

// write creates the entry base in the directory parent (fresh: knowing
// that nothing is there), replacing what a lower layer had there (a directory replaced by anything else goes with
// its contents; a directory over a directory only takes the new metadata).
func (u *unpacker) write(parent int, base, rel string, hdr *tar.Header, body io.Reader, fresh bool) error {
	var st unix.Stat_t
	exists := !fresh && unix.Fstatat(parent, base, &st, unix.AT_SYMLINK_NOFOLLOW) == nil
	if exists && !(hdr.Typeflag == tar.TypeDir && st.Mode&unix.S_IFMT == unix.S_IFDIR) {
		if err := removeAll(parent, base); err != nil {
			return fmt.Errorf("replace: %w", err)
		}
	}
	mode := uint32(hdr.Mode) & 0o7777
	switch hdr.Typeflag {
	case tar.TypeDir:
		if err := unix.Mkdirat(parent, base, 0o700); err != nil && !errors.Is(err, unix.EEXIST) {
			return err
		}
		fd, err := unix.Openat(parent, base, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
		if err != nil {
			return err
		}
		defer unix.Close(fd)
		return u.setDirMeta(fd, rel, hdr)
	case tar.TypeReg, tar.TypeRegA, tar.TypeGNUSparse:
		fd, err := unix.Openat(parent, base, unix.O_WRONLY|unix.O_CREAT|unix.O_EXCL|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0o600)
		if err != nil {
			return err
		}
		f := os.NewFile(uintptr(fd), base)
		defer f.Close()
		if _, err := io.Copy(f, body); err != nil {
			return err
		}
		return setMeta(fd, hdr, mode)
	case tar.TypeSymlink:
		if hdr.Linkname == "" {
			return fmt.Errorf("%w: empty symlink target", ErrUnsafeLayer)
		}
		if err := unix.Symlinkat(hdr.Linkname, parent, base); err != nil {
			return err
		}
		return setLinkMeta(parent, base, hdr)
	case tar.TypeLink:
		return u.hardlink(parent, base, hdr)
	case tar.TypeFifo:
		if err := unix.Mknodat(parent, base, unix.S_IFIFO|0o600, 0); err != nil {
			return err
		}
		fd, err := unix.Openat(parent, base, unix.O_PATH|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
		if err != nil {
			return err
		}
		defer unix.Close(fd)
		if err := unix.Fchownat(fd, "", hdr.Uid, hdr.Gid, unix.AT_EMPTY_PATH|unix.AT_SYMLINK_NOFOLLOW); err != nil {
			return err
		}
		if err := unix.Fchmodat(parent, base, mode, 0); err != nil {
			return err
		}
		return setTimes(fd, hdr)
	}
	return nil
}

// hardlink links base to the entry hdr.Linkname names, which must be in
// the image (it is resolved inside the root like every path) and not a
// directory.
func (u *unpacker) hardlink(parent int, base string, hdr *tar.Header) error {
	target, ok := cleanName(hdr.Linkname)
	if !ok || target == "" {
		return fmt.Errorf("%w: hard link target %q is outside the image root", ErrUnsafeLayer, hdr.Linkname)
	}
	fd, err := unix.Openat2(u.root, target, &unix.OpenHow{
		Flags: unix.O_PATH | unix.O_NOFOLLOW | unix.O_CLOEXEC, Resolve: resolveFlags})
	if err != nil {
		return fmt.Errorf("hard link target %q: %w", hdr.Linkname, err)
	}
	defer unix.Close(fd)
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return err
	}
	if st.Mode&unix.S_IFMT == unix.S_IFDIR {
		return fmt.Errorf("%w: hard link to the directory %q", ErrUnsafeLayer, hdr.Linkname)
	}
	return unix.Linkat(fd, "", parent, base, unix.AT_EMPTY_PATH)
}

// setMeta gives an open regular file its owner, mode and times. The owner
// comes first: chown clears the setuid and setgid bits that the mode sets.
func setMeta(fd int, hdr *tar.Header, mode uint32) error {
	if err := unix.Fchown(fd, hdr.Uid, hdr.Gid); err != nil {
		return err
	}
	if err := unix.Fchmod(fd, mode); err != nil {
		return err
	}
	return setTimes(fd, hdr)
}

// setDirMeta gives an open directory its owner and mode; its times are set
// by finish.
func (u *unpacker) setDirMeta(fd int, rel string, hdr *tar.Header) error {
	if hdr.Uid < 0 || hdr.Gid < 0 {
		return u.unsafe(hdr.Name, "negative owner")
	}
	err := unix.Fchown(fd, hdr.Uid, hdr.Gid)
	if err == nil {
		err = unix.Fchmod(fd, uint32(hdr.Mode)&0o7777)
	}
	if err != nil {
		return fmt.Errorf("layer %d: directory %q: %w", u.layer+1, hdr.Name, err)
	}
	u.dirTimes[rel] = times(hdr)
	return nil
}

// setLinkMeta gives a symlink its owner and times (a symlink has no mode).
func setLinkMeta(parent int, base string, hdr *tar.Header) error {
	if err := unix.Fchownat(parent, base, hdr.Uid, hdr.Gid, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return err
	}
	ts := times(hdr)
	return unix.UtimesNanoAt(parent, base, ts[:], unix.AT_SYMLINK_NOFOLLOW)
}

func setTimes(fd int, hdr *tar.Header) error {
	ts := times(hdr)
	return unix.UtimesNanoAt(fd, "", ts[:], unix.AT_EMPTY_PATH)
}

func times(hdr *tar.Header) [2]unix.Timespec {
	atime := hdr.AccessTime
	if atime.IsZero() {
		atime = hdr.ModTime
	}
	return [2]unix.Timespec{unix.NsecToTimespec(atime.UnixNano()), unix.NsecToTimespec(hdr.ModTime.UnixNano())}
}

// openDir opens the directory rel (relative to the root, resolved inside it).
func (u *unpacker) openDir(rel string) (int, error) {
	if rel == "" {
		rel = "."
	}
	return unix.Openat2(u.root, rel, &unix.OpenHow{
		Flags: unix.O_PATH | unix.O_DIRECTORY | unix.O_CLOEXEC, Resolve: resolveFlags})
}

// mkdirAll opens the directory rel, creating what is missing of it (0755,
// root-owned, as Docker does for parents a layer leaves out). Each
// component is resolved inside the root: a symlink a lower layer put in
// the way leads somewhere inside the image, never out of it, and a
// dangling one gets its target created there.
func (u *unpacker) mkdirAll(rel string) (int, error) {
	for hops := 0; ; hops++ {
		fd, err := u.openDir(rel)
		if err == nil || !errors.Is(err, unix.ENOENT) {
			return fd, err
		}
		if hops > 40 {
			return -1, fmt.Errorf("/%s: %w", rel, unix.ELOOP)
		}
		next, err := u.mkdirStep(rel)
		if err != nil {
			return -1, err
		}
		if next == rel {
			return u.openDir(rel)
		}
		rel = next
	}
}

// mkdirStep creates the missing components of rel. When it meets a
// dangling symlink it returns the path rel names through it (the link's
// target joined with the rest, resolved as in the root), for mkdirAll to
// go on from; otherwise it returns rel.
func (u *unpacker) mkdirStep(rel string) (string, error) {
	parts := strings.Split(rel, "/")
	cur := ""
	for i, p := range parts {
		next := path.Join(cur, p)
		fd, err := u.openDir(next)
		if err == nil {
			unix.Close(fd)
			cur = next
			continue
		}
		if !errors.Is(err, unix.ENOENT) {
			return "", fmt.Errorf("/%s: %w", next, err)
		}
		parent, err := u.openDir(cur)
		if err != nil {
			return "", fmt.Errorf("/%s: %w", cur, err)
		}
		err = unix.Mkdirat(parent, p, 0o755)
		if errors.Is(err, unix.EEXIST) {
			target, lerr := readlinkat(parent, p)
			unix.Close(parent)
			if lerr != nil {
				return "", fmt.Errorf("create /%s: %w", next, err)
			}
			base := cur
			if strings.HasPrefix(target, "/") {
				base = ""
			}
			joined := path.Clean("/" + path.Join(append([]string{base, target}, parts[i+1:]...)...))
			return strings.TrimPrefix(joined, "/"), nil
		}
		unix.Close(parent)
		if err != nil {
			return "", fmt.Errorf("create /%s: %w", next, err)
		}
		u.wrote[next] = true
		cur = next
	}
	return rel, nil
}

// readlinkat reads the symlink name in the directory dirfd.
func readlinkat(dirfd int, name string) (string, error) {
	buf := make([]byte, maxPathBytes+1)
	n, err := unix.Readlinkat(dirfd, name, buf)
	if err != nil {
		return "", err
	}
	return string(buf[:n]), nil
}

// whiteout applies a whiteout entry: ".wh.NAME" removes NAME of the lower
// layers; ".wh..wh..opq" makes its directory opaque: everything the lower
// layers put in it goes, what this layer puts there stays.
func (u *unpacker) whiteout(name, dir, base string) error {
	parent, err := u.openDir(dir)
	if errors.Is(err, unix.ENOENT) || errors.Is(err, unix.ENOTDIR) {
		return nil // nothing below to hide
	}
	if err != nil {
		return u.unsafe(name, "whiteout's directory: %v", err)
	}
	defer unix.Close(parent)
	if base == whiteoutOpaque {
		return u.clearExcept(parent, dir)
	}
	target := strings.TrimPrefix(base, whiteoutPrefix)
	if target == "" || target == "." || target == ".." || strings.HasPrefix(target, whiteoutPrefix) {
		return u.unsafe(name, "malformed whiteout")
	}
	if err := removeAll(parent, target); err != nil && !errors.Is(err, unix.ENOENT) {
		return fmt.Errorf("layer %d: whiteout %q: %w", u.layer+1, name, err)
	}
	return nil
}

// clearExcept removes every entry of the directory fd (at rel) that the
// current layer did not write, keeping in the directories it did write
// only what it wrote.
func (u *unpacker) clearExcept(fd int, rel string) error {
	names, err := readDirNames(fd)
	if err != nil {
		return err
	}
	for _, n := range names {
		p := path.Join(rel, n)
		if !u.wrote[p] {
			if err := removeAll(fd, n); err != nil {
				return fmt.Errorf("layer %d: opaque directory /%s: %w", u.layer+1, rel, err)
			}
			continue
		}
		sub, err := unix.Openat(fd, n, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
		if err != nil {
			continue // not a directory: kept as written
		}
		err = u.clearExcept(sub, p)
		unix.Close(sub)
		if err != nil {
			return err
		}
	}
	return nil
}

// readDirNames lists the directory fd without moving a shared offset.
func readDirNames(fd int) ([]string, error) {
	dfd, err := unix.Openat(fd, ".", unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, err
	}
	f := os.NewFile(uintptr(dfd), ".")
	defer f.Close()
	return f.Readdirnames(-1)
}

// removeAll removes name in the directory parent and, for a directory,
// everything in it, never following a symlink.
func removeAll(parent int, name string) error {
	err := unix.Unlinkat(parent, name, 0)
	if err == nil || errors.Is(err, unix.ENOENT) {
		return err
	}
	if !errors.Is(err, unix.EISDIR) && !errors.Is(err, unix.EPERM) {
		return err
	}
	fd, oerr := unix.Openat(parent, name, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if oerr != nil {
		return err
	}
	names, rerr := readDirNames(fd)
	for _, n := range names {
		if rerr == nil {
			rerr = removeAll(fd, n)
		}
	}
	unix.Close(fd)
	if rerr != nil {
		return rerr
	}
	return unix.Unlinkat(parent, name, unix.AT_REMOVEDIR)
}

// Layer is one layer to unpack: how to open its blob (compressed or not)
// and, when known, the digest of its uncompressed tar stream.
type Layer struct {
	Open   func() (io.ReadCloser, error)
	DiffID string
}

// Unpack applies layers, lowest first, to dir, an existing empty directory
// that becomes the image's root filesystem. Nothing is written outside dir,
// whatever the layers hold (see the package documentation for the policy).
// On error dir holds a partial tree, which the caller deletes.
func Unpack(dir string, layers []Layer, limits Limits) (UnpackStats, error) {
	u, err := newUnpacker(dir, limits)
	if err != nil {
		return UnpackStats{}, err
	}
	defer u.close()
	if len(layers) > u.limits.MaxLayers {
		return u.stats, fmt.Errorf("%w: %d layers, more than %d (the daemon's --image-max-layers)", ErrTooLarge, len(layers), u.limits.MaxLayers)
	}
	for i, l := range layers {
		u.layer = i
		rc, err := l.Open()
		if err != nil {
			return u.stats, fmt.Errorf("layer %d: %w", i+1, err)
		}
		err = u.applyLayer(rc, l.DiffID)
		rc.Close()
		if err != nil {
			return u.stats, err
		}
	}
	return u.stats, u.finish()
}

package image

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/klauspost/compress/zstd"
)

// entry is one tar entry of a hand-made layer.
type entry struct {
	name, link string
	typ        byte
	mode       int64
	uid, gid   int
	body       string
}

func file(name, body string) entry {
	return entry{name: name, typ: tar.TypeReg, mode: 0o644, body: body}
}
func dir(name string) entry { return entry{name: name, typ: tar.TypeDir, mode: 0o755} }
func symlink(name, target string) entry {
	return entry{name: name, link: target, typ: tar.TypeSymlink, mode: 0o777}
}
func hardlink(name, target string) entry {
	return entry{name: name, link: target, typ: tar.TypeLink, mode: 0o644}
}

// layer makes an uncompressed tar stream of entries.
func layer(t *testing.T, entries ...entry) []byte {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, e := range entries {
		hdr := &tar.Header{Name: e.name, Linkname: e.link, Typeflag: e.typ, Mode: e.mode, Uid: e.uid, Gid: e.gid,
			Size: int64(len(e.body)), ModTime: time.Unix(1700000000, 0), Format: tar.FormatPAX}
		if e.typ != tar.TypeReg {
			hdr.Size = 0
		}
		if err := tw.WriteHeader(hdr); err != nil {
			t.Fatal(err)
		}
		if hdr.Size > 0 {
			io.WriteString(tw, e.body)
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func gzipped(t *testing.T, b []byte) []byte {
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	zw.Write(b)
	zw.Close()
	return buf.Bytes()
}

func layersOf(blobs ...[]byte) []Layer {
	var out []Layer
	for _, b := range blobs {
		out = append(out, Layer{Open: func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(b)), nil }})
	}
	return out
}

// sandbox is a scratch directory holding the image root and, beside it,
// an "outside" directory with a sentinel file that no layer may touch.
type sandbox struct {
	t             *testing.T
	base, root    string
	outside       string
	outsideBefore []string
}

func newSandbox(t *testing.T) *sandbox {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("unpacking preserves ownership, which needs root")
	}
	base := t.TempDir()
	s := &sandbox{t: t, base: base, root: filepath.Join(base, "root"), outside: filepath.Join(base, "outside")}
	for _, d := range []string{s.root, s.outside} {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(s.outside, "sentinel"), []byte("untouched"), 0o644); err != nil {
		t.Fatal(err)
	}
	s.outsideBefore = s.listOutside()
	t.Cleanup(s.checkOutside)
	return s
}

// listOutside lists everything under base that is not under root.
func (s *sandbox) listOutside() []string {
	var out []string
	filepath.WalkDir(s.base, func(p string, d fs.DirEntry, err error) error {
		if p == s.root {
			return filepath.SkipDir
		}
		info, _ := os.Lstat(p)
		out = append(out, p+" "+info.Mode().String())
		return nil
	})
	sort.Strings(out)
	return out
}

func (s *sandbox) checkOutside() {
	if got := s.listOutside(); strings.Join(got, "\n") != strings.Join(s.outsideBefore, "\n") {
		s.t.Errorf("files outside the image root changed:\nbefore %v\nafter  %v", s.outsideBefore, got)
	}
	if data, err := os.ReadFile(filepath.Join(s.outside, "sentinel")); err != nil || string(data) != "untouched" {
		s.t.Errorf("sentinel outside the root: %q, %v", data, err)
	}
}

func (s *sandbox) unpack(limits Limits, blobs ...[]byte) (UnpackStats, error) {
	return Unpack(s.root, layersOf(blobs...), limits)
}

func (s *sandbox) mustUnpack(blobs ...[]byte) UnpackStats {
	s.t.Helper()
	st, err := s.unpack(Limits{}, blobs...)
	if err != nil {
		s.t.Fatalf("Unpack: %v", err)
	}
	return st
}

func (s *sandbox) read(rel string) string {
	s.t.Helper()
	data, err := os.ReadFile(filepath.Join(s.root, rel))
	if err != nil {
		s.t.Fatalf("read %s: %v", rel, err)
	}
	return string(data)
}

func (s *sandbox) missing(rel string) {
	s.t.Helper()
	if _, err := os.Lstat(filepath.Join(s.root, rel)); !errors.Is(err, os.ErrNotExist) {
		s.t.Errorf("%s exists (%v), want it gone", rel, err)
	}
}

func wantErr(t *testing.T, err, kind error, contains string) {
	t.Helper()
	if !errors.Is(err, kind) || !strings.Contains(err.Error(), contains) {
		t.Fatalf("error = %v, want %v mentioning %q", err, kind, contains)
	}
}

// Each malicious layer below is refused, or neutralised so that it writes
// only inside the image root; the sandbox checks after every test that
// nothing outside the root changed.

func TestUnpackRefusesDotDotEscapes(t *testing.T) {
	for _, name := range []string{"../escape", "a/../../escape", "./../outside/sentinel", "a/b/../../../x"} {
		t.Run(name, func(t *testing.T) {
			s := newSandbox(t)
			_, err := s.unpack(Limits{}, layer(t, file(name, "pwned")))
			wantErr(t, err, ErrUnsafeLayer, "climbs out of the image root")
		})
	}
}

func TestUnpackHarmlessDotDotStaysInside(t *testing.T) {
	s := newSandbox(t)
	s.mustUnpack(layer(t, file("a/../b", "ok")))
	if s.read("b") != "ok" {
		t.Fatal("a/../b not written as b")
	}
}

func TestUnpackAbsoluteNamesLandInsideRoot(t *testing.T) {
	s := newSandbox(t)
	outside := filepath.Join(s.outside, "sentinel")
	s.mustUnpack(layer(t, file("/etc/abs", "inside"), file(outside, "pwned")))
	if s.read("etc/abs") != "inside" || s.read(outside) != "pwned" {
		t.Fatal("absolute names not taken relative to the root")
	}
}

func TestUnpackSymlinkEscapes(t *testing.T) {
	for _, target := range []string{"/", "../../../../../..", "/../..", "PLACEHOLDER"} {
		t.Run(target, func(t *testing.T) {
			s := newSandbox(t)
			if target == "PLACEHOLDER" {
				target = s.outside // an absolute host path
			}
			s.mustUnpack(layer(t, symlink("link", target), file("link/pwned", "x"), file("link/sentinel", "overwritten?")))
			// The writes went through the link resolved inside the root.
			resolved := filepath.Join(s.root, strings.TrimPrefix(filepath.Clean("/"+target), "/"))
			if target == s.outside {
				resolved = filepath.Join(s.root, s.outside)
			}
			if data, err := os.ReadFile(filepath.Join(resolved, "pwned")); err != nil || string(data) != "x" {
				t.Fatalf("write through the link: %q, %v (want it inside the root at %s)", data, err, resolved)
			}
			if fi, err := os.Lstat(filepath.Join(s.root, "link")); err != nil || fi.Mode()&fs.ModeSymlink == 0 {
				t.Fatalf("the symlink itself must stay as the image has it: %v %v", fi, err)
			}
		})
	}
}

func TestUnpackSymlinkSwappedBetweenLayers(t *testing.T) {
	s := newSandbox(t)
	s.mustUnpack(
		layer(t, dir("d"), file("d/keep", "1")),
		layer(t, symlink("d", s.outside)),                           // the directory becomes a link out
		layer(t, file("d/sentinel", "pwned"), file("d/new", "new")), // and is written through
	)
	if s.read(filepath.Join(s.outside, "sentinel")) != "pwned" || s.read(filepath.Join(s.outside, "new")) != "new" {
		t.Fatal("writes through the swapped link must land inside the root")
	}
	s.missing("d/keep")
}

func TestUnpackSymlinkChainInParents(t *testing.T) {
	s := newSandbox(t)
	// a -> b/c, b -> /..: a chain of links whose end is above the root.
	s.mustUnpack(layer(t, symlink("b", "/.."), symlink("a", "b/"+strings.TrimPrefix(s.base, "/")), file("a/outside/sentinel", "pwned")))
	if s.read(filepath.Join(s.base, "outside/sentinel")) != "pwned" {
		t.Fatal("chained links not resolved inside the root")
	}
}

func TestUnpackFileOverSymlinkReplacesTheLink(t *testing.T) {
	s := newSandbox(t)
	target := filepath.Join(s.outside, "sentinel")
	s.mustUnpack(layer(t, symlink("f", target)), layer(t, file("f", "mine")))
	if fi, _ := os.Lstat(filepath.Join(s.root, "f")); !fi.Mode().IsRegular() || s.read("f") != "mine" {
		t.Fatal("a file over a symlink must replace the link, not write through it")
	}
}

func TestUnpackHardlinkEscapes(t *testing.T) {
	t.Run("dotdot", func(t *testing.T) {
		s := newSandbox(t)
		_, err := s.unpack(Limits{}, layer(t, hardlink("h", "../outside/sentinel")))
		wantErr(t, err, ErrUnsafeLayer, "outside the image root")
	})
	t.Run("absolute", func(t *testing.T) {
		s := newSandbox(t)
		_, err := s.unpack(Limits{}, layer(t, hardlink("h", filepath.Join(s.outside, "sentinel"))))
		if err == nil || !errors.Is(err, syscall.ENOENT) {
			t.Fatalf("error = %v, want ENOENT: the host path is looked up inside the root", err)
		}
	})
	t.Run("through symlink", func(t *testing.T) {
		s := newSandbox(t)
		_, err := s.unpack(Limits{}, layer(t, symlink("s", s.outside), hardlink("h", "s/sentinel")))
		if err == nil || !errors.Is(err, syscall.ENOENT) {
			t.Fatalf("error = %v, want ENOENT", err)
		}
		var st syscall.Stat_t
		syscall.Stat(filepath.Join(s.outside, "sentinel"), &st)
		if st.Nlink != 1 {
			t.Fatalf("the host file got %d links", st.Nlink)
		}
	})
	t.Run("symlink swapped in a later layer", func(t *testing.T) {
		s := newSandbox(t)
		_, err := s.unpack(Limits{}, layer(t, dir("s"), file("s/sentinel", "img")), layer(t, symlink("s", s.outside)),
			layer(t, hardlink("h", "s/sentinel")))
		if err == nil || !errors.Is(err, syscall.ENOENT) {
			t.Fatalf("error = %v, want ENOENT", err)
		}
	})
	t.Run("directory", func(t *testing.T) {
		s := newSandbox(t)
		_, err := s.unpack(Limits{}, layer(t, dir("d"), hardlink("h", "d")))
		wantErr(t, err, ErrUnsafeLayer, "hard link to the directory")
	})
	t.Run("inside is fine", func(t *testing.T) {
		s := newSandbox(t)
		s.mustUnpack(layer(t, file("a", "same"), hardlink("b", "/a")))
		var a, b syscall.Stat_t
		syscall.Stat(filepath.Join(s.root, "a"), &a)
		syscall.Stat(filepath.Join(s.root, "b"), &b)
		if a.Ino != b.Ino || a.Nlink != 2 {
			t.Fatal("b is not a hard link of a")
		}
	})
}

func TestUnpackWhiteouts(t *testing.T) {
	s := newSandbox(t)
	s.mustUnpack(
		layer(t, dir("a"), file("a/gone", "1"), file("a/kept", "2"), dir("a/sub"), file("a/sub/deep", "3"),
			dir("o"), file("o/old", "4"), dir("o/olddir"), file("o/olddir/x", "5"), dir("o/both"), file("o/both/lower", "6")),
		layer(t, file("a/.wh.gone", ""), file("a/.wh.sub", ""),
			dir("o"), file("o/new1", "7"), dir("o/both"), file("o/both/upper", "8"), file("o/.wh..wh..opq", ""), file("o/new2", "9")),
	)
	s.missing("a/gone")
	s.missing("a/sub")
	s.missing("a/.wh.gone")
	s.missing("o/old")
	s.missing("o/olddir")
	s.missing("o/both/lower") // an opaque directory hides every lower entry, at any depth
	s.missing("o/.wh..wh..opq")
	if s.read("a/kept") != "2" || s.read("o/new1") != "7" || s.read("o/new2") != "9" || s.read("o/both/upper") != "8" {
		t.Fatal("entries of the upper layer lost")
	}
}

func TestUnpackMaliciousWhiteouts(t *testing.T) {
	t.Run("through a symlink", func(t *testing.T) {
		s := newSandbox(t)
		s.mustUnpack(layer(t, symlink("s", s.outside), file("s/.wh.sentinel", "")))
	})
	t.Run("opaque through a symlink", func(t *testing.T) {
		s := newSandbox(t)
		s.mustUnpack(layer(t, symlink("s", s.base)), layer(t, file("s/.wh..wh..opq", "")))
	})
	t.Run("dotdot", func(t *testing.T) {
		s := newSandbox(t)
		_, err := s.unpack(Limits{}, layer(t, file("../outside/.wh.sentinel", "")))
		wantErr(t, err, ErrUnsafeLayer, "climbs out")
	})
	t.Run("whiteout of dot", func(t *testing.T) {
		s := newSandbox(t)
		_, err := s.unpack(Limits{}, layer(t, dir("d"), file("d/.wh..", "")))
		wantErr(t, err, ErrUnsafeLayer, "malformed whiteout")
	})
}

func TestUnpackSpecialFiles(t *testing.T) {
	s := newSandbox(t)
	st := s.mustUnpack(layer(t,
		entry{name: "dev/sda", typ: tar.TypeBlock, mode: 0o660},
		entry{name: "dev/mem", typ: tar.TypeChar, mode: 0o640},
		entry{name: "run/fifo", typ: tar.TypeFifo, mode: 0o620, uid: 7, gid: 8},
	))
	s.missing("dev/sda")
	s.missing("dev/mem")
	if st.SkippedDevices != 2 {
		t.Errorf("SkippedDevices = %d, want 2", st.SkippedDevices)
	}
	fi, err := os.Lstat(filepath.Join(s.root, "run/fifo"))
	if err != nil || fi.Mode()&fs.ModeNamedPipe == 0 || fi.Mode().Perm() != 0o620 || fi.Sys().(*syscall.Stat_t).Uid != 7 {
		t.Fatalf("fifo: %v %v", fi, err)
	}
	t.Run("unknown type", func(t *testing.T) {
		s := newSandbox(t)
		_, err := s.unpack(Limits{}, layer(t, entry{name: "x", typ: 'Z'}))
		wantErr(t, err, ErrUnsafeLayer, "not supported")
	})
	t.Run("root as symlink", func(t *testing.T) {
		s := newSandbox(t)
		_, err := s.unpack(Limits{}, layer(t, symlink("./", s.outside)))
		wantErr(t, err, ErrUnsafeLayer, "image root can only be a directory")
	})
}

func TestUnpackKeepsOwnershipModesAndSetuid(t *testing.T) {
	s := newSandbox(t)
	s.mustUnpack(layer(t,
		entry{name: "bin/su", typ: tar.TypeReg, mode: 0o4755, body: "elf"},
		entry{name: "home/app", typ: tar.TypeDir, mode: 0o2750, uid: 1000, gid: 1000},
		entry{name: "home/app/f", typ: tar.TypeReg, mode: 0o600, uid: 1000, gid: 1001, body: "x"},
		entry{name: "home/app/l", typ: tar.TypeSymlink, link: "f", uid: 1000, gid: 1002},
		entry{name: "tmp", typ: tar.TypeDir, mode: 0o1777},
	))
	check := func(rel string, perm fs.FileMode, uid, gid uint32) {
		t.Helper()
		fi, err := os.Lstat(filepath.Join(s.root, rel))
		if err != nil {
			t.Fatal(err)
		}
		st := fi.Sys().(*syscall.Stat_t)
		if got := fs.FileMode(st.Mode & 0o7777); (perm != 0 && got != perm) || st.Uid != uid || st.Gid != gid {
			t.Errorf("%s: mode %o owner %d:%d, want %o %d:%d", rel, got, st.Uid, st.Gid, perm, uid, gid)
		}
	}
	check("bin/su", 0o4755, 0, 0)
	check("home/app", 0o2750, 1000, 1000)
	check("home/app/f", 0o600, 1000, 1001)
	check("home/app/l", 0, 1000, 1002)
	check("tmp", 0o1777, 0, 0)
	if fi, _ := os.Stat(filepath.Join(s.root, "bin/su")); fi.ModTime().Unix() != 1700000000 {
		t.Errorf("mtime %v", fi.ModTime())
	}
	if fi, _ := os.Stat(filepath.Join(s.root, "home/app")); fi.ModTime().Unix() != 1700000000 {
		t.Errorf("directory mtime %v, want the layer's", fi.ModTime())
	}
}

func TestUnpackReplacesAcrossLayers(t *testing.T) {
	s := newSandbox(t)
	s.mustUnpack(
		layer(t, dir("d"), file("d/f", "1"), file("x", "old")),
		layer(t, file("d", "now a file"), dir("x"), file("x/y", "now a dir")),
	)
	if s.read("d") != "now a file" || s.read("x/y") != "now a dir" {
		t.Fatal("types not replaced")
	}
	t.Run("through a file", func(t *testing.T) {
		s := newSandbox(t)
		_, err := s.unpack(Limits{}, layer(t, file("f", "1"), file("f/x", "2")))
		wantErr(t, err, ErrUnsafeLayer, "not a directory")
	})
}

func TestUnpackLimits(t *testing.T) {
	t.Run("layers", func(t *testing.T) {
		s := newSandbox(t)
		one := layer(t, file("a", "1"))
		_, err := s.unpack(Limits{MaxLayers: 2}, one, one, one)
		wantErr(t, err, ErrTooLarge, "3 layers, more than 2")
	})
	t.Run("bytes: a gzip bomb", func(t *testing.T) {
		s := newSandbox(t)
		big := layer(t, file("zeros", string(make([]byte, 64<<20))))
		bomb := gzipped(t, big)
		if len(bomb) > 1<<20 {
			t.Fatalf("bomb is %d bytes", len(bomb))
		}
		_, err := s.unpack(Limits{MaxBytes: 8 << 20}, bomb)
		wantErr(t, err, ErrTooLarge, "more than 8388608 bytes")
		if fi, err := os.Stat(filepath.Join(s.root, "zeros")); err == nil && fi.Size() > 9<<20 {
			t.Fatalf("wrote %d bytes past the limit", fi.Size())
		}
	})
	t.Run("entries", func(t *testing.T) {
		s := newSandbox(t)
		var es []entry
		for i := range 20 {
			es = append(es, file(strings.Repeat("f", i+1), ""))
		}
		_, err := s.unpack(Limits{MaxEntries: 10}, layer(t, es...))
		wantErr(t, err, ErrTooLarge, "more than 10 files")
	})
	t.Run("long name", func(t *testing.T) {
		s := newSandbox(t)
		_, err := s.unpack(Limits{}, layer(t, file(strings.Repeat("a/", 2100)+"x", "x")))
		wantErr(t, err, ErrUnsafeLayer, "longer than 4096")
	})
}

func TestUnpackCompressionAndDigests(t *testing.T) {
	raw := layer(t, file("hello", "world"))
	sum := sha256.Sum256(raw)
	diffID := "sha256:" + hex.EncodeToString(sum[:])
	var zbuf bytes.Buffer
	zw, _ := zstd.NewWriter(&zbuf)
	zw.Write(raw)
	zw.Close()
	for name, blob := range map[string][]byte{"plain": raw, "gzip": gzipped(t, raw), "zstd": zbuf.Bytes()} {
		t.Run(name, func(t *testing.T) {
			s := newSandbox(t)
			if _, err := Unpack(s.root, []Layer{{Open: layersOf(blob)[0].Open, DiffID: diffID}}, Limits{}); err != nil {
				t.Fatal(err)
			}
			if s.read("hello") != "world" {
				t.Fatal("content")
			}
		})
	}
	t.Run("wrong diff id", func(t *testing.T) {
		s := newSandbox(t)
		_, err := Unpack(s.root, []Layer{{Open: layersOf(raw)[0].Open, DiffID: "sha256:" + strings.Repeat("0", 64)}}, Limits{})
		wantErr(t, err, ErrCorruptLayer, "uncompressed digest")
	})
	t.Run("truncated", func(t *testing.T) {
		s := newSandbox(t)
		gz := gzipped(t, raw)
		_, err := s.unpack(Limits{}, gz[:len(gz)/2])
		wantErr(t, err, ErrCorruptLayer, "layer 1")
	})
}

func TestUnpackSamePathTwiceInOneLayer(t *testing.T) {
	s := newSandbox(t)
	s.mustUnpack(layer(t, dir("d"), symlink("l", "d"), file("l/x", "through the link"), file("d/x", "direct"),
		file("f", "first"), file("f", "second")))
	if s.read("d/x") != "direct" || s.read("f") != "second" {
		t.Fatalf("d/x %q, f %q: the later entry must win", s.read("d/x"), s.read("f"))
	}
}

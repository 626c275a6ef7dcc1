package logs

import (
	"bufio"
	"cmp"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
)

// segment is one segment file: the sequence number it starts at and its size.
type segment struct {
	first uint64
	size  int64
}

const segSuffix = ".seg"

// segName is the file name of the segment starting at first.
func segName(first uint64) string { return fmt.Sprintf("%020d%s", first, segSuffix) }

// segPath is the path of the segment starting at first.
func segPath(dir string, first uint64) string { return filepath.Join(dir, segName(first)) }

// listSegments returns dir's segments, oldest first. Other files are ignored.
func listSegments(dir string) ([]segment, error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	var segs []segment
	for _, e := range entries {
		num, ok := strings.CutSuffix(e.Name(), segSuffix)
		if !ok || !e.Type().IsRegular() {
			continue
		}
		first, err := strconv.ParseUint(num, 10, 64)
		if err != nil || first == 0 || segName(first) != e.Name() {
			continue
		}
		info, err := e.Info()
		if err != nil {
			return nil, err
		}
		segs = append(segs, segment{first: first, size: info.Size()})
	}
	slices.SortFunc(segs, func(a, b segment) int { return cmp.Compare(a.first, b.first) })
	return segs, nil
}

// createSegment creates the segment starting at first, with its magic
// written, and returns it open for writing.
func createSegment(dir string, first uint64) (*os.File, error) {
	f, err := os.OpenFile(segPath(dir, first), os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return nil, err
	}
	if _, err := f.WriteAt([]byte(magic), 0); err != nil {
		f.Close()
		os.Remove(f.Name())
		return nil, err
	}
	return f, nil
}

// tail is what recovering the active segment found.
type tail struct {
	end       int64  // size of the valid prefix
	last      uint64 // seq of the last line record, 0 if none
	pend      []byte // the held partial line (pending records after the last line)
	pendNanos int64
}

// scanSegment reads f (a segment starting at first) up to the first record
// that is torn, corrupt or out of sequence, and reports the valid prefix.
// A file too short to hold the magic counts as empty.
func scanSegment(f *os.File, first uint64) (tail, error) {
	var t tail
	var m [len(magic)]byte
	if _, err := io.ReadFull(f, m[:]); err != nil {
		if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
			return t, nil
		}
		return t, err
	}
	if m == [len(magic)]byte{} {
		return t, nil // zero-filled by a crash while it was being created
	}
	if string(m[:]) != magic {
		return t, fmt.Errorf("logs: %s is not a log segment", f.Name())
	}
	t.end = int64(len(magic))
	fr := frameReader{br: bufio.NewReaderSize(f, 64<<10)}
	pending := false // whether t.pend holds a line begun by a start chunk
	for {
		fr0, n, err := fr.next()
		if err == io.EOF || err == errTorn {
			return t, nil
		}
		if err != nil {
			return t, err
		}
		switch fr0.kind {
		case kindLine:
			if fr0.seq < first || fr0.seq <= t.last {
				return t, nil // out of sequence: treat as the end
			}
			t.last, t.pend, pending = fr0.seq, nil, false
		case kindPending:
			if fr0.flags&flagStart != 0 {
				t.pend, t.pendNanos, pending = append([]byte(nil), fr0.text...), fr0.nanos, true
			} else if pending {
				t.pend = append(t.pend, fr0.text...)
			}
		}
		t.end += int64(n)
	}
}

// syncDir fsyncs a directory, making entries created or removed in it durable.
func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

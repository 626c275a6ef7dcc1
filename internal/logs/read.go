package logs

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math"
	"os"
	"time"
)

// followBatch is the most records Follow hands to its callback at once.
const followBatch = 512

// view is a consistent picture of the log for readers: the segments, how
// much of the active one is written, and the channel closed at the next
// commit (or Close).
type view struct {
	firsts     []uint64 // first seq of each segment, oldest first
	activeSize int64
	closed     bool
	notify     <-chan struct{}
}

// view takes a view of the log.
func (l *Log) view() view {
	l.mu.Lock()
	defer l.mu.Unlock()
	v := view{firsts: make([]uint64, len(l.segs)), activeSize: l.activeSize(),
		closed: l.closed, notify: l.notify}
	for i, s := range l.segs {
		v.firsts[i] = s.first
	}
	return v
}

// Read returns up to limit records (all when limit <= 0) from sequence number
// fromSeq on (0 means from the oldest retained). When records from fromSeq
// on were deleted by rotation, it starts at the oldest retained one and sets
// that record's Dropped to the number missing.
func (l *Log) Read(fromSeq uint64, limit int) ([]Record, error) {
	c := newCursor(l.dir, fromSeq)
	defer c.close()
	v := l.view()
	return c.read(&v, limit)
}

// ReadDir reads the log in dir as Read does, without opening it: no lock,
// no repair. It is for other processes (tests, debugging tools) and works
// while a Log has the directory open or after its process died; a torn or
// unfinished record at the end of the newest segment is taken as the end,
// and a directory that does not exist holds no records.
func ReadDir(dir string, fromSeq uint64, limit int) ([]Record, error) {
	segs, err := listSegments(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil || len(segs) == 0 {
		return nil, err
	}
	v := view{firsts: make([]uint64, len(segs)), activeSize: segs[len(segs)-1].size, closed: true}
	for i, s := range segs {
		v.firsts[i] = s.first
	}
	c := newCursor(dir, fromSeq)
	c.lenient = true
	defer c.close()
	return c.read(&v, limit)
}

// ReadSince is Read from the first record stamped at or after t (see
// SeqSince).
func (l *Log) ReadSince(t time.Time, limit int) ([]Record, error) {
	seq, err := l.SeqSince(t)
	if err != nil {
		return nil, err
	}
	return l.Read(seq, limit)
}

// SeqSince returns the sequence number of the first record stamped at or
// after t, to pass to Read or Follow: 0 when that is the oldest retained
// record (so a reader learns, through Dropped, about older records deleted
// by rotation), the next sequence number when there is none yet. Timestamps
// are assumed not to go backwards; if the host clock did, the answer is some
// record at or after t, not necessarily the first.
func (l *Log) SeqSince(t time.Time) (uint64, error) {
	v := l.view()
	start := v.firsts[0]
	for _, first := range v.firsts[1:] {
		rec, ok, err := l.firstRecord(first)
		if err != nil {
			return 0, err
		}
		if ok && !rec.Time.Before(t) {
			break
		}
		if ok {
			start = first
		}
	}
	c := newCursor(l.dir, start)
	defer c.close()
	for examined := false; ; examined = true {
		r, ok, err := c.next(&v)
		if err != nil {
			return 0, err
		}
		if !ok {
			return l.LastSeq() + 1, nil
		}
		if !r.Time.Before(t) {
			if !examined && start == v.firsts[0] {
				return 0, nil
			}
			return r.Seq, nil
		}
	}
}

// firstRecord returns the first line record of the segment starting at
// first; ok is false when it has none (yet) or is gone.
func (l *Log) firstRecord(first uint64) (rec Record, ok bool, err error) {
	f, err := openSegment(l.dir, first)
	if errors.Is(err, fs.ErrNotExist) {
		return Record{}, false, nil
	}
	if err != nil {
		return Record{}, false, err
	}
	defer f.Close()
	fr := frameReader{br: bufio.NewReaderSize(f, 4096)}
	for {
		fm, _, err := fr.next()
		if err == io.EOF || err == errTorn {
			return Record{}, false, nil
		}
		if err != nil {
			return Record{}, false, err
		}
		if fm.kind == kindLine {
			return fm.record(), true, nil
		}
	}
}

// Follow calls fn with every record from fromSeq on (as Read), in order, in
// batches of those available at once, then waits for new ones, woken by each
// write: it never polls. fn must not keep the slice. Follow returns ctx's
// error when ctx ends, fn's error if it fails, and ErrClosed after the last
// record of a closed Log.
func (l *Log) Follow(ctx context.Context, fromSeq uint64, fn func([]Record) error) error {
	c := newCursor(l.dir, fromSeq)
	defer c.close()
	batch := make([]Record, 0, followBatch)
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		v := l.view()
		batch = batch[:0]
		for len(batch) < followBatch {
			r, ok, err := c.next(&v)
			if err != nil {
				return err
			}
			if !ok {
				break
			}
			batch = append(batch, r)
		}
		if len(batch) > 0 {
			if err := fn(batch); err != nil {
				return err
			}
			continue
		}
		if v.closed {
			return ErrClosed
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-v.notify:
		}
	}
}

// cursor reads line records in sequence order across segments, with its own
// file descriptors: a segment deleted under it stays readable to its end.
type cursor struct {
	dir  string
	want uint64 // the next sequence number the reader wants
	seg  uint64 // first seq of the open segment (or the last one), 0 before any
	f    *os.File
	sr   segReader
	fr   frameReader
	// lenient takes a torn record at the end of the active segment as its
	// end (for readers that do not hold the log).
	lenient bool
}

func newCursor(dir string, fromSeq uint64) *cursor {
	c := &cursor{dir: dir, want: max(fromSeq, 1)}
	c.fr.br = bufio.NewReaderSize(&c.sr, 64<<10)
	return c
}

// next returns the next line record with a sequence number >= want that is
// written as of v; ok is false when there is none.
func (c *cursor) next(v *view) (rec Record, ok bool, err error) {
	for {
		if c.f == nil {
			more, err := c.open(v)
			if err != nil || !more {
				return Record{}, false, err
			}
			if c.f == nil {
				continue
			}
		}
		active := c.seg == v.firsts[len(v.firsts)-1]
		c.sr.end = math.MaxInt64
		if active {
			c.sr.end = v.activeSize
		}
		fm, _, err := c.fr.next()
		switch {
		case err == nil:
			if fm.kind != kindLine || fm.seq < c.want {
				continue
			}
			rec := fm.record()
			if fm.seq > c.want {
				rec.Dropped = fm.seq - c.want
			}
			c.want = fm.seq + 1
			return rec, true, nil
		case err == io.EOF && active, err == errTorn && active && c.lenient:
			return Record{}, false, nil
		case err == io.EOF, err == errTorn && !active:
			c.close() // on to the next segment
		default:
			return Record{}, false, fmt.Errorf("logs: reading %s: %w", segPath(c.dir, c.seg), err)
		}
	}
}

// open opens the segment to read next: the one holding want at first, then
// the one after the last read. It returns false when there is no such
// segment, and leaves c.f nil when it was deleted before it could be opened
// (its records count as dropped).
func (c *cursor) open(v *view) (bool, error) {
	first, found := c.pick(v)
	if !found {
		return false, nil
	}
	f, err := openSegment(c.dir, first)
	if errors.Is(err, fs.ErrNotExist) {
		c.seg = first
		return true, nil
	}
	if err != nil {
		return false, err
	}
	c.seg, c.f = first, f
	c.sr = segReader{f: f, off: int64(len(magic))}
	c.fr.br.Reset(&c.sr)
	return true, nil
}

// pick chooses the segment to read next; see open.
func (c *cursor) pick(v *view) (uint64, bool) {
	if len(v.firsts) == 0 {
		return 0, false
	}
	if c.seg == 0 {
		first := v.firsts[0]
		for _, s := range v.firsts {
			if s <= c.want {
				first = s
			}
		}
		return first, true
	}
	for _, s := range v.firsts {
		if s > c.seg {
			return s, true
		}
	}
	return 0, false
}

// read returns up to limit records (all when limit <= 0) written as of v.
func (c *cursor) read(v *view, limit int) ([]Record, error) {
	out := make([]Record, 0, min(max(limit, 64), 1024))
	for limit <= 0 || len(out) < limit {
		r, ok, err := c.next(v)
		if err != nil {
			return out, err
		}
		if !ok {
			break
		}
		out = append(out, r)
	}
	return out, nil
}

// close closes the open segment.
func (c *cursor) close() {
	if c.f != nil {
		c.f.Close()
		c.f = nil
	}
}

// openSegment opens a segment for reading and checks its magic. The reader
// is left after the magic.
func openSegment(dir string, first uint64) (*os.File, error) {
	f, err := os.Open(segPath(dir, first))
	if err != nil {
		return nil, err
	}
	var m [len(magic)]byte
	if _, err := io.ReadFull(f, m[:]); err != nil || string(m[:]) != magic {
		f.Close()
		return nil, fmt.Errorf("logs: %s is not a log segment", f.Name())
	}
	return f, nil
}

// segReader reads a segment from off up to end, which a reader of the active
// segment moves forward as records are committed.
type segReader struct {
	f        *os.File
	off, end int64
}

func (s *segReader) Read(p []byte) (int, error) {
	if s.off >= s.end {
		return 0, io.EOF
	}
	if int64(len(p)) > s.end-s.off {
		p = p[:s.end-s.off]
	}
	n, err := s.f.ReadAt(p, s.off)
	s.off += int64(n)
	if err == io.EOF && n > 0 {
		err = nil
	}
	return n, err
}

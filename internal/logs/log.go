package logs

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"time"
	"unicode/utf8"
)

var (
	// ErrClosed is returned by writes to a closed Log, and by Follow once it
	// has delivered every record of a closed Log.
	ErrClosed = errors.New("logs: log closed")
	// ErrLocked is returned by Open when another Log has the directory open.
	ErrLocked = errors.New("logs: log directory is in use")
)

// drainBufSize is Drain's read size: a pipe's default capacity, so one read
// usually takes all the pipe holds.
const drainBufSize = 64 << 10

// Log is one machine's persistent console log. All its methods are safe for
// concurrent use; there should be one Drain (or Write) stream at a time.
type Log struct {
	dir  string
	cfg  Config
	lock *os.File // holds the directory's flock

	mu        sync.Mutex
	closed    bool
	f         *os.File  // the active segment
	segs      []segment // oldest first; the last is the active segment
	next      uint64    // seq of the next line record
	pend      []byte    // held partial line, on disk as pending records
	pendNanos int64     // when the held line's first bytes were read
	pendGen   uint64    // incremented whenever the held line is committed or lost
	pendTimer *time.Timer
	syncTimer *time.Timer // pending background fsync, nil when none
	notify    chan struct{}
	wbuf      []byte
}

// Open opens (creating if needed) the log in dir. It takes an exclusive lock
// on the directory, recovers the newest segment (truncating a torn tail and
// taking back a partial line that was waiting for its newline) and applies
// cfg's size cap.
func Open(dir string, cfg Config) (*Log, error) {
	cfg = cfg.withDefaults()
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	lock, err := lockDir(dir)
	if err != nil {
		return nil, err
	}
	l := &Log{dir: dir, cfg: cfg, lock: lock, notify: make(chan struct{})}
	if err := l.recover(); err != nil {
		lock.Close()
		return nil, err
	}
	return l, nil
}

// lockDir takes an exclusive flock on dir/LOCK, so that one process (and one
// Log in it) writes a log at a time. A killed holder's lock goes with it.
func lockDir(dir string) (*os.File, error) {
	f, err := os.OpenFile(filepath.Join(dir, "LOCK"), os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, err
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		f.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			return nil, fmt.Errorf("%w: %s", ErrLocked, dir)
		}
		return nil, err
	}
	return f, nil
}

// recover opens the active segment, creating the first one in an empty log.
func (l *Log) recover() error {
	segs, err := listSegments(l.dir)
	if err != nil {
		return err
	}
	if len(segs) == 0 {
		f, err := createSegment(l.dir, 1)
		if err != nil {
			return err
		}
		l.f, l.segs, l.next = f, []segment{{first: 1, size: int64(len(magic))}}, 1
		return syncDir(l.dir)
	}
	active := &segs[len(segs)-1]
	f, err := os.OpenFile(segPath(l.dir, active.first), os.O_RDWR, 0)
	if err != nil {
		return err
	}
	if err := l.repair(f, active); err != nil {
		f.Close()
		return err
	}
	l.f, l.segs = f, segs
	l.retain()
	if len(l.pend) > 0 {
		l.armFlush()
	}
	return nil
}

// repair scans the active segment, truncates whatever follows its last
// whole record and sets the sequence and held partial line from it.
func (l *Log) repair(f *os.File, active *segment) error {
	t, err := scanSegment(f, active.first)
	if err != nil {
		return err
	}
	if t.end < int64(len(magic)) { // crashed while creating it
		if _, err := f.WriteAt([]byte(magic), 0); err != nil {
			return err
		}
		t.end = int64(len(magic))
	}
	if t.end != active.size {
		l.cfg.Logger.Warn("log: truncating torn tail", "segment", f.Name(),
			"size", active.size, "valid", t.end)
		if err := f.Truncate(t.end); err != nil {
			return err
		}
		if err := f.Sync(); err != nil {
			return err
		}
	}
	active.size = t.end
	l.next = max(t.last+1, active.first)
	l.pend, l.pendNanos = t.pend, t.pendNanos
	return nil
}

// Dir is the log's directory.
func (l *Log) Dir() string { return l.dir }

// LastSeq is the sequence number of the last record written (or lost), 0 in
// an empty log.
func (l *Log) LastSeq() uint64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.next - 1
}

// FirstSeq is the sequence number the oldest retained segment starts at:
// records before it were dropped by rotation.
func (l *Log) FirstSeq() uint64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.segs[0].first
}

// Append records line, without one trailing newline if it has it, as read at
// t, and returns the sequence number of its (last) record. It first commits
// a partial line held from Drain or Write. A line longer than MaxLine becomes
// several records, all but the last marked Partial.
func (l *Log) Append(line []byte, t time.Time) (uint64, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return 0, ErrClosed
	}
	if err := l.flushLocked(); err != nil {
		return 0, err
	}
	line = bytes.TrimSuffix(line, []byte("\n"))
	b := l.newBatch()
	nanos := t.UnixNano()
	for len(line) > l.cfg.MaxLine {
		cut := cutLong(0, line, l.cfg.MaxLine)
		if cut >= len(line) {
			break
		}
		b.line(nil, line[:cut], nanos, true)
		line = line[cut:]
	}
	b.line(nil, line, nanos, false)
	if err := l.writeBatch(&b); err != nil {
		return 0, err
	}
	l.maybeRotate()
	return b.next - 1, nil
}

// Write records p as a stream of output read now: complete lines become
// records, a trailing partial line is held (and written as pending) until
// its newline arrives or FlushTimeout passes. It makes Log an io.Writer.
func (l *Log) Write(p []byte) (int, error) {
	if err := l.ingest(p, time.Now()); err != nil {
		return 0, err
	}
	return len(p), nil
}

// Drain reads r (a machine's console FIFO) until it fails, writing each chunk
// read to the log before reading again; see the package documentation for
// what that guarantees. At io.EOF it commits the held partial line and
// returns nil; otherwise it returns r's error, or ErrClosed. A failed write
// (disk full) does not stop it: blocking the FIFO would freeze the machine.
// The chunk is lost, readers see the gap as Record.Dropped, and the failure
// and recovery are logged.
func (l *Log) Drain(r io.Reader) error {
	buf := make([]byte, drainBufSize)
	failing := false
	for {
		n, err := r.Read(buf)
		if n > 0 {
			werr := l.ingest(buf[:n], time.Now())
			switch {
			case errors.Is(werr, ErrClosed):
				return werr
			case werr != nil && !failing:
				failing = true
				l.cfg.Logger.Error("log: losing output", "dir", l.dir, "err", werr)
			case werr == nil && failing:
				failing = false
				l.cfg.Logger.Info("log: writing output again", "dir", l.dir)
			}
		}
		if err == io.EOF {
			return l.Flush()
		}
		if err != nil {
			return err
		}
	}
}

// Flush commits the held partial line, if any, as a Partial record now.
func (l *Log) Flush() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return ErrClosed
	}
	return l.flushLocked()
}

// Close commits the held partial line, fsyncs, wakes followers and releases
// the directory. Later writes fail with ErrClosed, so stop Drain first (close
// the FIFO, wait for Drain to return): a chunk it read after Close is lost.
func (l *Log) Close() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return nil
	}
	err := l.flushLocked()
	l.closed = true
	if l.pendTimer != nil {
		l.pendTimer.Stop()
	}
	if l.syncTimer != nil {
		l.syncTimer.Stop()
	}
	close(l.notify)
	return errors.Join(err, l.f.Sync(), l.f.Close(), l.lock.Close())
}

// ingest records p, output read at t, splitting it into records.
func (l *Log) ingest(p []byte, t time.Time) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return ErrClosed
	}
	for len(p) > 0 {
		n, err := l.ingestSome(p, t)
		if err != nil {
			l.lose(p)
			return fmt.Errorf("logs: writing %s: %w", l.dir, err)
		}
		p = p[n:]
		l.maybeRotate()
	}
	return nil
}

// ingestSome writes the records of a prefix of p, stopping early when the
// active segment fills, and returns how much of p it consumed.
func (l *Log) ingestSome(p []byte, t time.Time) (int, error) {
	b := l.newBatch()
	nanos := t.UnixNano()
	used := 0
	for used < len(p) {
		held, heldNanos := b.held(l, nanos)
		data := p[used:]
		i := bytes.IndexByte(data, '\n')
		end := i // this line's bytes in data
		if i < 0 {
			end = len(data)
		}
		cut := end // where a piece of a too-long line ends
		if len(held)+end > l.cfg.MaxLine {
			cut = cutLong(len(held), data, l.cfg.MaxLine)
		}
		switch {
		case cut < end: // too long: commit a piece
			b.line(held, data[:cut], heldNanos, true)
			used += cut
		case i >= 0:
			b.line(held, data[:i], heldNanos, false)
			used += i + 1
		default: // no newline yet: hold it, but write it now
			b.pending(held, data, heldNanos)
			used = len(p)
		}
		if b.lines > 0 && l.activeSize()+int64(len(b.buf)) >= l.cfg.SegmentSize {
			break
		}
	}
	return used, l.writeBatch(&b)
}

// lose accounts for output that could not be written: it skips one sequence
// number per line it held (so readers see a gap) and forgets the partial line.
func (l *Log) lose(p []byte) {
	l.next += uint64(bytes.Count(p, []byte("\n"))) + 1
	l.pend = l.pend[:0]
	l.pendGen++
}

// flushLocked commits the held partial line as a Partial record.
func (l *Log) flushLocked() error {
	if len(l.pend) == 0 {
		return nil
	}
	b := l.newBatch()
	b.line(l.pend, nil, l.pendNanos, true)
	if err := l.writeBatch(&b); err != nil {
		return err
	}
	l.maybeRotate()
	return nil
}

// armFlush schedules committing the held partial line after FlushTimeout,
// unless it is committed some other way first.
func (l *Log) armFlush() {
	if l.pendTimer != nil {
		l.pendTimer.Stop()
	}
	gen := l.pendGen
	l.pendTimer = time.AfterFunc(l.cfg.FlushTimeout, func() {
		l.mu.Lock()
		defer l.mu.Unlock()
		if l.closed || l.pendGen != gen {
			return
		}
		if err := l.flushLocked(); err != nil {
			l.cfg.Logger.Error("log: flushing partial line", "dir", l.dir, "err", err)
		}
	})
}

// activeSize is the size of the active segment.
func (l *Log) activeSize() int64 { return l.segs[len(l.segs)-1].size }

// batch collects the records of one write and the state they lead to.
type batch struct {
	buf       []byte
	next      uint64 // seq of the next line record
	lines     int    // line records in buf
	clearPend bool   // the held partial line was committed
	addPend   []byte // bytes to hold after the write (they are in buf as pending)
	pendNanos int64
}

func (l *Log) newBatch() batch { return batch{buf: l.wbuf[:0], next: l.next} }

// held returns the partial line still held at this point of the batch, and
// the time of its first bytes (now if there are none).
func (b *batch) held(l *Log, now int64) ([]byte, int64) {
	if b.clearPend || len(l.pend) == 0 {
		return nil, now
	}
	return l.pend, l.pendNanos
}

// line adds a line record whose text is a then c.
func (b *batch) line(a, c []byte, nanos int64, partial bool) {
	var flags byte
	if partial {
		flags = flagPartial
	}
	b.buf = appendFrame(b.buf, kindLine, flags, b.next, nanos, a, c)
	b.next++
	b.lines++
	b.clearPend = true
}

// pending adds data to the held partial line (which is held so far).
func (b *batch) pending(held, data []byte, nanos int64) {
	var flags byte
	if len(held) == 0 {
		flags = flagStart
	}
	b.buf = appendFrame(b.buf, kindPending, flags, 0, nanos, data, nil)
	b.addPend, b.pendNanos = data, nanos
}

// writeBatch writes b at the end of the active segment with one pwrite and,
// once it is written, moves the log's state to b's. A failed write leaves
// the segment and state as they were.
func (l *Log) writeBatch(b *batch) error {
	if len(b.buf) == 0 {
		return nil
	}
	active := &l.segs[len(l.segs)-1]
	if _, err := l.f.WriteAt(b.buf, active.size); err != nil {
		l.f.Truncate(active.size) // best effort: leave no torn record
		return err
	}
	active.size += int64(len(b.buf))
	l.next = b.next
	if b.clearPend {
		l.pend = l.pend[:0]
		l.pendGen++
	}
	if b.addPend != nil {
		if len(l.pend) == 0 {
			l.pendNanos = b.pendNanos
			l.armFlush()
		}
		l.pend = append(l.pend, b.addPend...)
	}
	if b.lines > 0 {
		close(l.notify)
		l.notify = make(chan struct{})
	}
	if cap(b.buf) <= 4*drainBufSize {
		l.wbuf = b.buf[:0]
	}
	return l.afterWrite()
}

// afterWrite applies the fsync policy to a write.
func (l *Log) afterWrite() error {
	switch {
	case l.cfg.SyncInterval == SyncEachWrite:
		return l.f.Sync()
	case l.cfg.SyncInterval > 0 && l.syncTimer == nil:
		l.syncTimer = time.AfterFunc(l.cfg.SyncInterval, l.backgroundSync)
	}
	return nil
}

// backgroundSync fsyncs the active segment, outside the lock so that writes
// go on meanwhile. (A segment rotated away was fsynced by the rotation.)
func (l *Log) backgroundSync() {
	l.mu.Lock()
	l.syncTimer = nil
	f, closed := l.f, l.closed
	l.mu.Unlock()
	if closed {
		return
	}
	if err := f.Sync(); err != nil && !errors.Is(err, os.ErrClosed) {
		l.cfg.Logger.Error("log: fsync", "dir", l.dir, "err", err)
	}
}

// maybeRotate starts a new segment when the active one is full and no
// partial line is held (so a held line's pending records stay in one
// segment, where recovery looks for them).
func (l *Log) maybeRotate() {
	if len(l.pend) > 0 || l.activeSize() < l.cfg.SegmentSize || l.next <= l.segs[len(l.segs)-1].first {
		return
	}
	if err := l.rotate(); err != nil {
		l.cfg.Logger.Error("log: rotating; the active segment keeps growing", "dir", l.dir, "err", err)
	}
}

// rotate fsyncs and closes the active segment, creates the next one and
// deletes the oldest segments beyond MaxSize.
func (l *Log) rotate() error {
	syncing := l.cfg.SyncInterval != SyncOnClose
	if syncing {
		if err := l.f.Sync(); err != nil {
			return err
		}
	}
	f, err := createSegment(l.dir, l.next)
	if err != nil {
		return err
	}
	l.f.Close()
	l.f = f
	l.segs = append(l.segs, segment{first: l.next, size: int64(len(magic))})
	l.retain()
	if syncing {
		return syncDir(l.dir)
	}
	return nil
}

// retain deletes the oldest segments until the total size fits MaxSize,
// always keeping the active one.
func (l *Log) retain() {
	var total int64
	for _, s := range l.segs {
		total += s.size
	}
	for len(l.segs) > 1 && total > l.cfg.MaxSize {
		if err := os.Remove(segPath(l.dir, l.segs[0].first)); err != nil && !errors.Is(err, os.ErrNotExist) {
			l.cfg.Logger.Error("log: deleting old segment", "dir", l.dir, "err", err)
			return
		}
		total -= l.segs[0].size
		l.segs = l.segs[1:]
	}
}

// cutLong returns where in data to end the next piece of a line too long
// for one record, held bytes of which precede data: after MaxLine bytes, or
// up to 3 bytes further to finish a UTF-8 sequence, so that valid text stays
// valid in every piece. It returns len(data) or more when data ends before
// that point: with a line that has not ended yet, the caller waits for the
// rest of the sequence.
func cutLong(held int, data []byte, maxLine int) int {
	cut := max(maxLine-held, 0)
	limit := min(len(data), maxLine+utf8.UTFMax-1-held)
	for cut < limit && !utf8.RuneStart(data[cut]) {
		cut++
	}
	if cut == limit && limit < maxLine+utf8.UTFMax-1-held {
		return len(data) // data ended inside the sequence
	}
	return cut
}

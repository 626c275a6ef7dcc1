package logs

import (
	"errors"
	"strings"
	"testing"
)

// openLog opens a log in dir and closes it at the end of the test.
func openLog(t testing.TB, dir string, cfg Config) *Log {
	t.Helper()
	l, err := Open(dir, cfg)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() { l.Close() })
	return l
}

// crash abandons l as a SIGKILL would: nothing flushed or committed, file
// descriptors and the lock released.
func (l *Log) crash() {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return
	}
	l.closed = true
	if l.pendTimer != nil {
		l.pendTimer.Stop()
	}
	if l.syncTimer != nil {
		l.syncTimer.Stop()
	}
	close(l.notify)
	l.f.Close()
	l.lock.Close()
}

// readAll reads every record from seq from on.
func readAll(t testing.TB, l *Log, from uint64) []Record {
	t.Helper()
	recs, err := l.Read(from, 0)
	if err != nil {
		t.Fatalf("Read(%d): %v", from, err)
	}
	return recs
}

// text rebuilds the output the records came from.
func text(recs []Record) string {
	var b strings.Builder
	for _, r := range recs {
		b.WriteString(r.Line)
		if !r.Partial {
			b.WriteByte('\n')
		}
	}
	return b.String()
}

// lines returns the records' texts.
func lines(recs []Record) []string {
	out := make([]string, len(recs))
	for i, r := range recs {
		out[i] = r.Line
	}
	return out
}

// checkSeqs fails unless the records are numbered from, from+1, ... with
// nothing dropped.
func checkSeqs(t testing.TB, recs []Record, from uint64) {
	t.Helper()
	for i, r := range recs {
		if r.Seq != from+uint64(i) || r.Dropped != 0 {
			t.Fatalf("record %d: seq %d dropped %d, want seq %d dropped 0", i, r.Seq, r.Dropped, from+uint64(i))
		}
	}
}

// stopAfter is a reader that fails with errStop after n reads, as if the
// daemon reading it had been killed. Each read takes at most max bytes (all
// if 0), so that reads end in the middle of lines.
type stopAfter struct {
	r   interface{ Read([]byte) (int, error) }
	n   int
	max int
}

var errStop = errors.New("stopped")

func (s *stopAfter) Read(p []byte) (int, error) {
	if s.n <= 0 {
		return 0, errStop
	}
	s.n--
	if s.max > 0 && len(p) > s.max {
		p = p[:s.max]
	}
	return s.r.Read(p)
}

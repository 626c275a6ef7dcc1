package logs

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
	"unicode/utf8"
)

func TestAppendReadReopen(t *testing.T) {
	dir := t.TempDir()
	l := openLog(t, dir, Config{})
	t0 := time.Date(2026, 1, 2, 3, 4, 5, 6, time.UTC)
	for i := range 10 {
		seq, err := l.Append(fmt.Appendf(nil, "line %d\n", i), t0.Add(time.Duration(i)*time.Millisecond))
		if err != nil || seq != uint64(i+1) {
			t.Fatalf("Append %d: seq %d, %v", i, seq, err)
		}
	}
	recs := readAll(t, l, 0)
	checkSeqs(t, recs, 1)
	if len(recs) != 10 || recs[3].Line != "line 3" || !recs[3].Time.Equal(t0.Add(3*time.Millisecond)) || recs[3].Partial {
		t.Fatalf("records: %+v", recs)
	}
	some, err := l.Read(5, 3)
	if err != nil || len(some) != 3 || some[0].Seq != 5 || some[2].Seq != 7 {
		t.Fatalf("Read(5, 3) = %+v, %v", some, err)
	}
	if none, err := l.Read(11, 0); err != nil || len(none) != 0 {
		t.Fatalf("Read(11) = %+v, %v", none, err)
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := l.Append([]byte("x"), t0); !errors.Is(err, ErrClosed) {
		t.Fatalf("Append after Close: %v", err)
	}

	l = openLog(t, dir, Config{})
	if got := l.LastSeq(); got != 10 {
		t.Fatalf("LastSeq after reopen = %d", got)
	}
	if seq, err := l.Append([]byte("after"), t0); err != nil || seq != 11 {
		t.Fatalf("Append after reopen: %d, %v", seq, err)
	}
	recs = readAll(t, l, 0)
	checkSeqs(t, recs, 1)
	if len(recs) != 11 || recs[10].Line != "after" {
		t.Fatalf("records after reopen: %v", lines(recs))
	}
}

func TestSyncPolicies(t *testing.T) {
	for _, sync := range []time.Duration{SyncEachWrite, SyncOnClose, time.Millisecond} {
		dir := t.TempDir()
		cfg := Config{SegmentSize: 100, SyncInterval: sync}
		l := openLog(t, dir, cfg)
		for i := range 20 {
			l.Append(fmt.Appendf(nil, "line %d", i), time.Now())
		}
		l.Close()
		l = openLog(t, dir, cfg)
		recs := readAll(t, l, 0)
		checkSeqs(t, recs, 1)
		if len(recs) != 20 {
			t.Fatalf("SyncInterval %v: %d records", sync, len(recs))
		}
	}
}

func TestRecordJSON(t *testing.T) {
	r := Record{Seq: 7, Time: time.Date(2026, 1, 2, 3, 4, 5, 600, time.UTC), Line: "hi"}
	b, err := json.Marshal(r)
	if err != nil {
		t.Fatal(err)
	}
	want := `{"seq":7,"timestamp":"2026-01-02T03:04:05.0000006Z","message":"hi"}`
	if string(b) != want {
		t.Fatalf("JSON = %s, want %s", b, want)
	}
}

func TestLocked(t *testing.T) {
	dir := t.TempDir()
	openLog(t, dir, Config{})
	if _, err := Open(dir, Config{}); !errors.Is(err, ErrLocked) {
		t.Fatalf("second Open: %v, want ErrLocked", err)
	}
}

// activeSegment returns the path of dir's newest segment.
func activeSegment(t *testing.T, dir string) string {
	t.Helper()
	segs, err := listSegments(dir)
	if err != nil || len(segs) == 0 {
		t.Fatalf("segments: %v, %v", segs, err)
	}
	return segPath(dir, segs[len(segs)-1].first)
}

func TestTornTailTruncated(t *testing.T) {
	dir := t.TempDir()
	l := openLog(t, dir, Config{})
	for i := range 5 {
		l.Append(fmt.Appendf(nil, "line %d", i), time.Now())
	}
	l.Close()
	path := activeSegment(t, dir)
	whole, _ := os.ReadFile(path)
	lastLen := headerSize + len("line 4")

	damage := map[string][]byte{
		"garbage":     append(slices.Clone(whole), "not a record at all, but long enough to be read as one"...),
		"zero filled": append(slices.Clone(whole), make([]byte, 4096)...),
		"bit flip": func() []byte {
			b := slices.Clone(whole)
			b[len(b)-1] ^= 1
			return b
		}(),
	}
	for cut := 1; cut < lastLen; cut++ {
		damage[fmt.Sprintf("cut %d", cut)] = whole[:len(whole)-cut]
	}
	for name, data := range damage {
		if err := os.WriteFile(path, data, 0o600); err != nil {
			t.Fatal(err)
		}
		l := openLog(t, dir, Config{})
		wantLast := uint64(4)
		if name == "garbage" || name == "zero filled" {
			wantLast = 5
		}
		if got := l.LastSeq(); got != wantLast {
			t.Fatalf("%s: LastSeq = %d, want %d", name, got, wantLast)
		}
		if seq, err := l.Append([]byte("new"), time.Now()); err != nil || seq != wantLast+1 {
			t.Fatalf("%s: Append = %d, %v", name, seq, err)
		}
		recs := readAll(t, l, 0)
		checkSeqs(t, recs, 1)
		if got := recs[len(recs)-1].Line; got != "new" || len(recs) != int(wantLast)+1 {
			t.Fatalf("%s: records %v", name, lines(recs))
		}
		l.Close()
	}
}

func TestTornHeaderRepaired(t *testing.T) {
	for name, header := range map[string][]byte{"short": []byte("TOR"), "zeros": make([]byte, 64)} {
		dir := t.TempDir()
		l := openLog(t, dir, Config{SegmentSize: 1})
		l.Append([]byte("one"), time.Now()) // rotates: segment 2 is created empty
		l.Close()
		path := activeSegment(t, dir)
		if filepath.Base(path) != segName(2) {
			t.Fatalf("active segment %s", path)
		}
		os.WriteFile(path, header, 0o600) // crashed while creating it
		l = openLog(t, dir, Config{})
		if seq, err := l.Append([]byte("two"), time.Now()); err != nil || seq != 2 {
			t.Fatalf("%s: Append = %d, %v", name, seq, err)
		}
		if got := lines(readAll(t, l, 0)); !slices.Equal(got, []string{"one", "two"}) {
			t.Fatalf("%s: lines %v", name, got)
		}
	}
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, segName(1)), []byte("not a log segment"), 0o600)
	if _, err := Open(dir, Config{}); err == nil {
		t.Fatal("Open of a foreign file succeeded")
	}
}

func TestRotationKeepsNewest(t *testing.T) {
	dir := t.TempDir()
	cfg := Config{SegmentSize: 1024, MaxSize: 4096}
	l := openLog(t, dir, cfg)
	for i := 1; i <= 1000; i++ {
		l.Append(fmt.Appendf(nil, "line %04d", i), time.Now())
	}
	segs, _ := listSegments(dir)
	var total int64
	for _, s := range segs {
		total += s.size
	}
	if len(segs) < 3 || total > cfg.MaxSize {
		t.Fatalf("%d segments, %d bytes, want several within %d", len(segs), total, cfg.MaxSize)
	}
	recs := readAll(t, l, 0)
	first := recs[0]
	if first.Seq <= 1 || first.Seq != l.FirstSeq() || first.Dropped != first.Seq-1 {
		t.Fatalf("first record %+v, FirstSeq %d: want the oldest retained, with Dropped", first, l.FirstSeq())
	}
	checkSeqs(t, recs[1:], first.Seq+1)
	if last := recs[len(recs)-1]; last.Seq != 1000 || last.Line != "line 1000" {
		t.Fatalf("last record %+v", last)
	}
	if recs, _ := l.Read(first.Seq+1, 1); recs[0].Dropped != 0 {
		t.Fatalf("Read from a retained seq reports dropped: %+v", recs[0])
	}
	if recs, _ := l.Read(first.Seq-5, 1); recs[0].Seq != first.Seq || recs[0].Dropped != 5 {
		t.Fatalf("Read from 5 before the oldest: %+v", recs[0])
	}
	l.Close()
	l = openLog(t, dir, cfg)
	if seq, _ := l.Append([]byte("after"), time.Now()); seq != 1001 {
		t.Fatalf("Append after reopen: seq %d", seq)
	}
}

func TestLongLineSplit(t *testing.T) {
	l := openLog(t, t.TempDir(), Config{MaxLine: 100, FlushTimeout: time.Hour})
	long := strings.Repeat("a", 250)
	l.Write([]byte(long + "\n"))
	l.Append([]byte(strings.Repeat("b", 200)), time.Now())
	recs := readAll(t, l, 0)
	checkSeqs(t, recs, 1)
	var got []string
	for _, r := range recs {
		got = append(got, fmt.Sprintf("%c%d%v", r.Line[0], len(r.Line), r.Partial))
	}
	want := []string{"a100true", "a100true", "a50false", "b100true", "b100false"}
	if !slices.Equal(got, want) {
		t.Fatalf("records %v, want %v", got, want)
	}
	if text(recs) != long+"\n"+strings.Repeat("b", 200)+"\n" {
		t.Fatal("records do not rebuild the output")
	}
}

func TestLongLineSplitKeepsUTF8(t *testing.T) {
	l := openLog(t, t.TempDir(), Config{MaxLine: 101, FlushTimeout: time.Hour})
	// 2- and 3-byte runes, written byte by byte, then all at once.
	in := strings.Repeat("é", 60) + strings.Repeat("€", 50) + "\n"
	for i := range len(in) {
		l.Write([]byte(in[i : i+1]))
	}
	l.Write([]byte(in))
	recs := readAll(t, l, 0)
	for _, r := range recs {
		if !utf8.ValidString(r.Line) || len(r.Line) > 101+3 {
			t.Fatalf("record %d: %d bytes, valid UTF-8 %v", r.Seq, len(r.Line), utf8.ValidString(r.Line))
		}
	}
	if text(recs) != in+in {
		t.Fatal("records do not rebuild the output")
	}
}

func TestPartialLineHeldUntilNewline(t *testing.T) {
	dir := t.TempDir()
	l := openLog(t, dir, Config{FlushTimeout: time.Hour})
	l.Write([]byte("ab"))
	l.Write([]byte("cd"))
	if recs := readAll(t, l, 0); len(recs) != 0 {
		t.Fatalf("partial line visible: %+v", recs)
	}
	l.Write([]byte("ef\ngh"))
	if got := lines(readAll(t, l, 0)); !slices.Equal(got, []string{"abcdef"}) {
		t.Fatalf("lines %q", got)
	}
	l.Close() // commits "gh"
	recs := readAll(t, l, 0)
	if len(recs) != 2 || recs[1].Line != "gh" || !recs[1].Partial {
		t.Fatalf("after Close: %+v", recs)
	}
}

func TestPartialLineFlushedAfterTimeout(t *testing.T) {
	l := openLog(t, t.TempDir(), Config{FlushTimeout: 10 * time.Millisecond})
	l.Write([]byte("prompt> "))
	recs := follow(t, l, 1, 1)
	if recs[0].Line != "prompt> " || !recs[0].Partial || recs[0].Seq != 1 {
		t.Fatalf("flushed record %+v", recs[0])
	}
	l.Write([]byte("yes\n"))
	recs = follow(t, l, 2, 1)
	if recs[0].Line != "yes" || recs[0].Partial {
		t.Fatalf("next record %+v", recs[0])
	}
}

func TestPartialLineSurvivesCrash(t *testing.T) {
	dir := t.TempDir()
	cfg := Config{FlushTimeout: time.Hour}
	l := openLog(t, dir, cfg)
	l.Write([]byte("one\nhel"))
	l.Write([]byte("lo "))
	l.crash()
	l = openLog(t, dir, cfg)
	l.Write([]byte("world\n"))
	if got := lines(readAll(t, l, 0)); !slices.Equal(got, []string{"one", "hello world"}) {
		t.Fatalf("lines %q", got)
	}
	// A crash right after the line was committed: no stale pending bytes.
	l.Write([]byte("x"))
	l.Write([]byte("y\nz"))
	l.crash()
	l = openLog(t, dir, cfg)
	l.Write([]byte("\n"))
	if got := lines(readAll(t, l, 0)); !slices.Equal(got, []string{"one", "hello world", "xy", "z"}) {
		t.Fatalf("lines %q", got)
	}
}

func TestWriteFailureShowsAsGap(t *testing.T) {
	dir := t.TempDir()
	l := openLog(t, dir, Config{FlushTimeout: time.Hour})
	l.Write([]byte("before\n"))
	ro, err := os.Open(activeSegment(t, dir))
	if err != nil {
		t.Fatal(err)
	}
	l.mu.Lock()
	rw := l.f
	l.f = ro
	l.mu.Unlock()
	if _, err := l.Write([]byte("lost 1\nlost 2\n")); err == nil {
		t.Fatal("Write to a read-only segment succeeded")
	}
	l.mu.Lock()
	l.f = rw
	l.mu.Unlock()
	ro.Close()
	l.Write([]byte("after\n"))
	recs := readAll(t, l, 0)
	if got := lines(recs); !slices.Equal(got, []string{"before", "after"}) {
		t.Fatalf("lines %q", got)
	}
	if recs[1].Dropped == 0 {
		t.Fatalf("no gap reported: %+v", recs[1])
	}
}

func TestReadSince(t *testing.T) {
	l := openLog(t, t.TempDir(), Config{SegmentSize: 512})
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	for i := range 100 {
		l.Append(fmt.Appendf(nil, "line %d", i), t0.Add(time.Duration(i)*time.Second))
	}
	for _, c := range []struct {
		since time.Time
		want  uint64
	}{
		{t0.Add(-time.Hour), 0},
		{t0, 0},
		{t0.Add(time.Second), 2},
		{t0.Add(50*time.Second - 1), 51},
		{t0.Add(50 * time.Second), 51},
		{t0.Add(99 * time.Second), 100},
		{t0.Add(time.Hour), 101},
	} {
		if got, err := l.SeqSince(c.since); err != nil || got != c.want {
			t.Errorf("SeqSince(t0%+v) = %d, %v; want %d", c.since.Sub(t0), got, err, c.want)
		}
	}
	recs, err := l.ReadSince(t0.Add(50*time.Second), 5)
	if err != nil || len(recs) != 5 || recs[0].Line != "line 50" {
		t.Fatalf("ReadSince = %v, %v", lines(recs), err)
	}
	checkSeqs(t, recs, 51)
}

func TestReadSinceAfterRotation(t *testing.T) {
	l := openLog(t, t.TempDir(), Config{SegmentSize: 512, MaxSize: 1024})
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	for i := range 100 {
		l.Append(fmt.Appendf(nil, "line %d", i), t0.Add(time.Duration(i)*time.Second))
	}
	recs, err := l.ReadSince(t0, 1)
	if err != nil || len(recs) != 1 || recs[0].Seq != l.FirstSeq() || recs[0].Dropped != recs[0].Seq-1 {
		t.Fatalf("ReadSince before the oldest retained = %+v, %v (FirstSeq %d)", recs, err, l.FirstSeq())
	}
}

// follow follows l from seq from until it has n records.
func follow(t *testing.T, l *Log, from uint64, n int) []Record {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute) // only a hang guard
	defer cancel()
	var got []Record
	errDone := errors.New("done")
	err := l.Follow(ctx, from, func(recs []Record) error {
		got = append(got, recs...)
		if len(got) >= n {
			return errDone
		}
		return nil
	})
	if err != errDone {
		t.Fatalf("Follow: %v after %d records", err, len(got))
	}
	return got
}

func TestFollow(t *testing.T) {
	l := openLog(t, t.TempDir(), Config{SegmentSize: 1024})
	l.Append([]byte("old"), time.Now())
	ctx, cancel := context.WithCancel(context.Background())
	got := make(chan Record, 200)
	done := make(chan error, 1)
	go func() {
		done <- l.Follow(ctx, 0, func(recs []Record) error {
			for _, r := range recs {
				got <- r
			}
			return nil
		})
	}()
	go func() {
		for i := range 100 {
			l.Append(fmt.Appendf(nil, "line %d", i), time.Now())
		}
	}()
	for i := range 101 {
		r := <-got
		want := "old"
		if i > 0 {
			want = fmt.Sprintf("line %d", i-1)
		}
		if r.Seq != uint64(i+1) || r.Line != want {
			t.Fatalf("record %d: %+v, want %q", i, r, want)
		}
	}
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Fatalf("Follow ended with %v", err)
	}
	if len(got) != 0 {
		t.Fatalf("extra record %+v", <-got)
	}
}

func TestFollowEndsAtClose(t *testing.T) {
	l := openLog(t, t.TempDir(), Config{FlushTimeout: time.Hour})
	done := make(chan error, 1)
	var got []Record
	go func() {
		done <- l.Follow(context.Background(), 0, func(recs []Record) error {
			got = append(got, recs...)
			return nil
		})
	}()
	l.Write([]byte("a\nb\nunfinished"))
	l.Close()
	if err := <-done; !errors.Is(err, ErrClosed) {
		t.Fatalf("Follow ended with %v", err)
	}
	if text(got) != "a\nb\nunfinished" {
		t.Fatalf("followed %+v", got)
	}
}

func TestDrainCommitsAtEOF(t *testing.T) {
	l := openLog(t, t.TempDir(), Config{FlushTimeout: time.Hour})
	if err := l.Drain(bytes.NewReader([]byte("a\nb"))); err != nil {
		t.Fatal(err)
	}
	if got := text(readAll(t, l, 0)); got != "a\nb" {
		t.Fatalf("text %q", got)
	}
}

func TestReadDir(t *testing.T) {
	dir := t.TempDir()
	l := openLog(t, dir, Config{SegmentSize: 256, MaxSize: 1024, FlushTimeout: time.Hour})
	for i := range 50 {
		l.Append(fmt.Appendf(nil, "line %d", i), time.Now())
	}
	l.Write([]byte("held"))
	want := readAll(t, l, 0)
	got, err := ReadDir(dir, 0, 0) // while l has it open
	if err != nil || !slices.Equal(got, want) {
		t.Fatalf("ReadDir = %v, %v; want %v", lines(got), err, lines(want))
	}
	f, _ := os.OpenFile(activeSegment(t, dir), os.O_WRONLY|os.O_APPEND, 0)
	f.Write(appendFrame(nil, kindLine, 0, 51, 0, []byte("torn"), nil)[:10])
	f.Close()
	if got, err := ReadDir(dir, 0, 0); err != nil || !slices.Equal(got, want) {
		t.Fatalf("ReadDir with a torn tail = %v, %v", lines(got), err)
	}
	if got, err := ReadDir(filepath.Join(dir, "nothing"), 0, 0); err != nil || len(got) != 0 {
		t.Fatalf("ReadDir of an empty directory = %v, %v", got, err)
	}
}

// A reader in a segment that rotation deletes reads it to its end, then
// learns through Dropped what it missed.
func TestReaderOutlivesDeletedSegment(t *testing.T) {
	dir := t.TempDir()
	l := openLog(t, dir, Config{SegmentSize: 256, MaxSize: 1024})
	for i := 1; i <= 5; i++ {
		l.Append(fmt.Appendf(nil, "line %d", i), time.Now())
	}
	c := newCursor(dir, 0)
	defer c.close()
	v := l.view()
	if r, ok, err := c.next(&v); !ok || err != nil || r.Seq != 1 {
		t.Fatalf("first record %+v, %v, %v", r, ok, err)
	}
	for i := 6; i <= 200; i++ {
		l.Append(fmt.Appendf(nil, "line %d", i), time.Now())
	}
	if _, err := os.Stat(segPath(dir, 1)); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("segment 1 not deleted: %v", err)
	}
	v = l.view()
	recs, err := c.read(&v, 0)
	if err != nil {
		t.Fatal(err)
	}
	i := slices.IndexFunc(recs, func(r Record) bool { return r.Dropped > 0 })
	if i < 4 {
		t.Fatalf("gap at record %d: the rest of the deleted segment is missing", i)
	}
	checkSeqs(t, recs[:i], 2) // the rest of the deleted segment
	gap := recs[i]
	if gap.Seq != l.FirstSeq() || gap.Dropped != gap.Seq-recs[i-1].Seq-1 {
		t.Fatalf("after the deleted segment: %+v, FirstSeq %d", gap, l.FirstSeq())
	}
	checkSeqs(t, recs[i+1:], gap.Seq+1)
	if last := recs[len(recs)-1]; last.Seq != 200 {
		t.Fatalf("last record %+v", last)
	}
}

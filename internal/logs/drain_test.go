package logs

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"strings"
	"testing"
	"time"
)

// numbered returns n numbered lines.
func numbered(n int) []byte {
	var b bytes.Buffer
	for i := range n {
		fmt.Fprintf(&b, "line %d %s\n", i, strings.Repeat("x", i%50))
	}
	return b.Bytes()
}

// writeChunks writes data to w in chunks of random sizes, so that reads end
// in the middle of lines, then closes w.
func writeChunks(t *testing.T, w *os.File, data []byte, seed uint64) {
	defer w.Close()
	rng := rand.New(rand.NewPCG(seed, 1))
	for len(data) > 0 {
		n := min(len(data), 1+rng.IntN(8192))
		if _, err := w.Write(data[:n]); err != nil {
			t.Errorf("pipe write: %v", err)
			return
		}
		data = data[n:]
	}
}

// checkLines fails unless got holds exactly want's lines, in order.
func checkLines(t *testing.T, got string, want []byte) {
	t.Helper()
	if got == string(want) {
		return
	}
	g, w := strings.Split(got, "\n"), strings.Split(string(want), "\n")
	for i := range min(len(g), len(w)) {
		if g[i] != w[i] {
			t.Fatalf("line %d: got %q, want %q", i, g[i], w[i])
		}
	}
	t.Fatalf("got %d lines, want %d", len(g), len(w))
}

// TestDrainPipeWhileFollowing drains 100k lines from a pipe written in
// random chunks while a follower reads them: the follower gets every line
// exactly once, in order, with consecutive sequence numbers.
func TestDrainPipeWhileFollowing(t *testing.T) {
	const n = 100_000
	want := numbered(n)
	// Small segments, so the follower crosses many; a short flush timeout,
	// so that some lines are committed in pieces; background fsyncs going on.
	l := openLog(t, t.TempDir(), Config{SegmentSize: 256 << 10, MaxSize: 1 << 30,
		FlushTimeout: time.Millisecond, SyncInterval: time.Millisecond})
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	go writeChunks(t, w, want, 1)

	followed := make(chan error, 1)
	var got []Record
	go func() {
		followed <- l.Follow(context.Background(), 0, func(recs []Record) error {
			got = append(got, recs...)
			return nil
		})
	}()
	if err := l.Drain(r); err != nil {
		t.Fatalf("Drain: %v", err)
	}
	l.Close()
	if err := <-followed; !errors.Is(err, ErrClosed) {
		t.Fatalf("Follow: %v", err)
	}
	checkSeqs(t, got, 1)
	checkLines(t, text(got), want)
	segs, _ := listSegments(l.Dir())
	t.Logf("%d records (%d partial pieces), %d segments", len(got), len(got)-n, len(segs))
}

// TestDrainAcrossCrashes kills the drainer (without any cleanup) again and
// again while it drains a pipe that outlives it, as the sandbox's FIFO
// outlives the daemon; each new Log drains on. Every line is recorded
// exactly once and whole: a line cut by a read is held as pending records
// across the crash.
func TestDrainAcrossCrashes(t *testing.T) {
	const n = 20_000
	want := numbered(n)
	dir := t.TempDir()
	cfg := Config{SegmentSize: 64 << 10, MaxSize: 1 << 30, FlushTimeout: time.Hour}
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	go writeChunks(t, w, want, 2)

	rng := rand.New(rand.NewPCG(3, 4))
	crashes := 0
	for {
		l := openLog(t, dir, cfg)
		err := l.Drain(&stopAfter{r: r, n: rng.IntN(20), max: 1 + rng.IntN(2000)})
		if err == nil {
			l.Close()
			break
		}
		if err != errStop {
			t.Fatalf("Drain: %v", err)
		}
		l.crash()
		crashes++
	}
	l := openLog(t, dir, cfg)
	recs := readAll(t, l, 0)
	checkSeqs(t, recs, 1)
	for _, r := range recs {
		if r.Partial {
			t.Fatalf("record %d is partial: a line was split by a crash", r.Seq)
		}
	}
	checkLines(t, text(recs), want)
	t.Logf("%d crashes", crashes)
}

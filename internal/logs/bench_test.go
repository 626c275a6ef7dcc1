package logs

import (
	"bytes"
	"testing"
	"time"
)

// BenchmarkAppend appends 100-byte lines one at a time.
func BenchmarkAppend(b *testing.B) {
	l := openLog(b, b.TempDir(), Config{})
	line := bytes.Repeat([]byte("x"), 100)
	now := time.Now()
	b.SetBytes(int64(len(line)))
	b.ResetTimer()
	for b.Loop() {
		if _, err := l.Append(line, now); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "lines/s")
}

// BenchmarkDrainChunks writes 64 KiB chunks of 100-byte lines, as Drain does
// with a full pipe: one pwrite per chunk.
func BenchmarkDrainChunks(b *testing.B) {
	l := openLog(b, b.TempDir(), Config{})
	line := append(bytes.Repeat([]byte("x"), 99), '\n')
	chunk := bytes.Repeat(line, drainBufSize/len(line))
	chunk = append(chunk, line[:drainBufSize-len(chunk)]...) // a partial line at the end, as in a pipe
	b.SetBytes(int64(len(chunk)))
	b.ResetTimer()
	for b.Loop() {
		if _, err := l.Write(chunk); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.N)*float64(len(chunk))/float64(len(line))/b.Elapsed().Seconds(), "lines/s")
}

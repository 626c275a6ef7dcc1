package snapshot

import (
	"hash/crc32"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"
)

// The combined CRC of two pieces is the CRC of the whole, wherever the cut.
func TestCRC32CCombine(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	data := make([]byte, 1<<16)
	for i := range data {
		data[i] = byte(r.Uint32())
	}
	for _, cut := range []int{0, 1, 7, 4096, 33333, len(data) - 1, len(data)} {
		a := crc32.Checksum(data[:cut], castagnoli)
		b := crc32.Checksum(data[cut:], castagnoli)
		if got, want := crc32cCombine(a, b, int64(len(data)-cut)), crc32.Checksum(data, castagnoli); got != want {
			t.Errorf("cut at %d: combined %08x, want %08x", cut, got, want)
		}
	}
}

// crc32cFile, in pieces or not, digests a file as checksumFile does.
func TestCRC32CFileMatchesSequential(t *testing.T) {
	dir := t.TempDir()
	r := rand.New(rand.NewPCG(3, 4))
	for _, size := range []int{0, 5, parallelMin - 1, parallelMin, 2*parallelMin + 12345} {
		data := make([]byte, size)
		for i := 0; i < size; i += 4096 {
			data[i] = byte(r.Uint32())
		}
		path := filepath.Join(dir, "f")
		if err := os.WriteFile(path, data, 0o600); err != nil {
			t.Fatal(err)
		}
		got, n, err := crc32cFile(path)
		want, wn, werr := checksumFile(path, "")
		if err != nil || werr != nil || got != want || n != wn || n != int64(size) {
			t.Errorf("size %d: parallel %s (%d, %v), sequential %s (%d, %v)", size, got, n, err, want, wn, werr)
		}
	}
}

// BenchmarkSeal256MiB times sealing a 256 MiB image from the page cache:
// the parallel CRC (Write) and the sequential one, in one run.
func BenchmarkSeal256MiB(b *testing.B) {
	dir := filepath.Join(b.TempDir(), "s")
	os.Mkdir(dir, 0o700)
	data := make([]byte, 256<<20)
	for i := range data {
		data[i] = byte(i * 7)
	}
	os.WriteFile(filepath.Join(dir, "pages.img"), data, 0o600)
	b.Run("parallel", func(b *testing.B) {
		b.SetBytes(int64(len(data)))
		for b.Loop() {
			if _, err := Write(dir, Seal{SnapshotID: "s"}); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("sequential", func(b *testing.B) {
		b.SetBytes(int64(len(data)))
		for b.Loop() {
			if _, _, err := checksumFile(filepath.Join(dir, "pages.img"), ""); err != nil {
				b.Fatal(err)
			}
		}
	})
}

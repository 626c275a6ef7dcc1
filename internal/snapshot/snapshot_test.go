package snapshot

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func sealedImage(t *testing.T) (string, Seal) {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "snap1")
	if err := os.Mkdir(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(dir, "checkpoint.img"), []byte("kernel state"), 0o600)
	os.WriteFile(filepath.Join(dir, "pages.img"), make([]byte, 1<<20), 0o600)
	seal, err := Write(dir, Seal{SnapshotID: "snap1", MachineID: "m1", BootGeneration: 2,
		Runtime: "gvisor", RuntimeVersion: "v1", Host: HostID(), Image: "oci:sha256:aaaa"})
	if err != nil {
		t.Fatal(err)
	}
	return dir, seal
}

func TestVerifyAcceptsSealedImage(t *testing.T) {
	dir, seal := sealedImage(t)
	if seal.SizeBytes != 1<<20+int64(len("kernel state")) {
		t.Errorf("size = %d", seal.SizeBytes)
	}
	if err := Verify(dir, seal, seal.Checksum()); err != nil {
		t.Fatal(err)
	}
}

func TestVerifyRejects(t *testing.T) {
	cases := []struct {
		name   string
		change func(dir string, want *Seal, sum *string)
		reason error
	}{
		{"flipped byte", func(dir string, _ *Seal, _ *string) {
			f, _ := os.OpenFile(filepath.Join(dir, "pages.img"), os.O_WRONLY, 0)
			f.WriteAt([]byte{1}, 4096)
			f.Close()
		}, ErrCorrupt},
		{"truncated file", func(dir string, _ *Seal, _ *string) {
			os.Truncate(filepath.Join(dir, "pages.img"), 10)
		}, ErrCorrupt},
		{"missing file", func(dir string, _ *Seal, _ *string) {
			os.Remove(filepath.Join(dir, "checkpoint.img"))
		}, ErrCorrupt},
		{"extra file", func(dir string, _ *Seal, _ *string) {
			os.WriteFile(filepath.Join(dir, "x"), nil, 0o600)
		}, ErrCorrupt},
		{"no seal", func(dir string, _ *Seal, _ *string) {
			os.Remove(filepath.Join(dir, SealFile))
		}, ErrCorrupt},
		{"no directory", func(dir string, _ *Seal, _ *string) { os.RemoveAll(dir) }, ErrMissing},
		{"other checksum", func(_ string, _ *Seal, sum *string) { *sum = "00" }, ErrCorrupt},
		{"older generation", func(_ string, w *Seal, _ *string) { w.BootGeneration = 3 }, ErrStale},
		{"other runtime", func(_ string, w *Seal, _ *string) { w.RuntimeVersion = "v2" }, ErrWrongRuntime},
		{"other host", func(_ string, w *Seal, _ *string) { w.Host = "arm64-x" }, ErrWrongHost},
		{"other machine", func(_ string, w *Seal, _ *string) { w.MachineID = "m2" }, ErrCorrupt},
		{"other image", func(_ string, w *Seal, _ *string) { w.Image = "oci:sha256:bbbb" }, ErrImageChanged},
		{"image now a directory", func(_ string, w *Seal, _ *string) { w.Image = "dir:/srv/rootfs" }, ErrImageChanged},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			dir, seal := sealedImage(t)
			want, sum := seal, seal.Checksum()
			c.change(dir, &want, &sum)
			if err := Verify(dir, want, sum); !errors.Is(err, c.reason) {
				t.Fatalf("Verify = %v, want %v", err, c.reason)
			}
		})
	}
}

func TestClaimOnlyOnce(t *testing.T) {
	dir, seal := sealedImage(t)
	claimed, err := Claim(dir)
	if err != nil {
		t.Fatal(err)
	}
	if err := Verify(claimed, seal, seal.Checksum()); err != nil {
		t.Fatalf("claimed image no longer verifies: %v", err)
	}
	if _, err := Claim(dir); !errors.Is(err, ErrMissing) {
		t.Fatalf("second claim = %v, want ErrMissing", err)
	}
	if err := Remove(dir); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(claimed); !os.IsNotExist(err) {
		t.Fatalf("claimed dir survives Remove: %v", err)
	}
}

func BenchmarkVerify64MiB(b *testing.B) {
	dir := filepath.Join(b.TempDir(), "s")
	os.Mkdir(dir, 0o700)
	os.WriteFile(filepath.Join(dir, "pages.img"), make([]byte, 64<<20), 0o600)
	seal, err := Write(dir, Seal{SnapshotID: "s"})
	if err != nil {
		b.Fatal(err)
	}
	b.SetBytes(64 << 20)
	for b.Loop() {
		if err := Verify(dir, seal, seal.Checksum()); err != nil {
			b.Fatal(err)
		}
	}
}

// A seal written before CRC-32C (SHA-256 digests) still verifies, and still
// catches a flipped bit.
func TestVerifySHA256Seal(t *testing.T) {
	dir, seal := sealedImage(t)
	for name := range seal.Files {
		data, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		sum := sha256.Sum256(data)
		seal.Files[name] = hex.EncodeToString(sum[:])
	}
	data, _ := json.Marshal(seal)
	os.WriteFile(filepath.Join(dir, SealFile), data, 0o600)
	if err := Verify(dir, seal, seal.Checksum()); err != nil {
		t.Fatal(err)
	}
	flipByte(t, filepath.Join(dir, "pages.img"), 4096)
	if err := Verify(dir, seal, seal.Checksum()); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("flipped bit: err = %v, want ErrCorrupt", err)
	}
}

func TestSealUsesCRC32C(t *testing.T) {
	_, seal := sealedImage(t)
	for name, sum := range seal.Files {
		if !strings.HasPrefix(sum, crc32cPrefix) || len(sum) != len(crc32cPrefix)+8 {
			t.Errorf("%s: digest %q is not CRC-32C", name, sum)
		}
	}
}

func flipByte(t *testing.T, path string, off int64) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	b := make([]byte, 1)
	if _, err := f.ReadAt(b, off); err != nil {
		t.Fatal(err)
	}
	b[0] ^= 0x10
	if _, err := f.WriteAt(b, off); err != nil {
		t.Fatal(err)
	}
}

func TestFlush(t *testing.T) {
	dir, _ := sealedImage(t)
	if err := Flush(context.Background(), dir); err != nil {
		t.Fatal(err)
	}
	if err := Flush(context.Background(), filepath.Join(dir, "missing")); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("flush of a missing dir: %v", err)
	}
	// A file of several chunks is flushed whole; an ended context stops
	// the flush and says so.
	big := filepath.Join(dir, "pages.img")
	if err := os.WriteFile(big, make([]byte, 2*FlushChunk+1), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := Flush(context.Background(), dir); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := Flush(ctx, dir); !errors.Is(err, context.Canceled) {
		t.Fatalf("flush with an ended context: %v, want context.Canceled", err)
	}
}

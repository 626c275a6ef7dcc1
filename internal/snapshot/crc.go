package snapshot

import (
	"encoding/binary"
	"encoding/hex"
	"hash/crc32"
	"io"
	"os"
	goruntime "runtime"
	"sync"
)

// Sealing a large image checksums it in parallel: the file is cut into one
// piece per CPU (pieces of at least parallelMin), each piece's CRC-32C is
// computed by its own goroutine from the page cache (pread), and the
// pieces' CRCs are combined into the CRC of the whole file, so the seal's
// format is unchanged (one CRC-32C per file). Verifying stays sequential:
// it runs beside a restore, which needs the CPUs more.
const parallelMin = 32 << 20

// crc32cCombine returns the CRC-32C of A followed by B from crcA, crcB and
// the length of B: zlib's crc32_combine (a GF(2) matrix power of the shift
// by lenB zero bytes), for the Castagnoli polynomial.
func crc32cCombine(crcA, crcB uint32, lenB int64) uint32 {
	if lenB <= 0 {
		return crcA
	}
	var even, odd [32]uint32
	odd[0] = 0x82f63b78 // the reflected Castagnoli polynomial
	row := uint32(1)
	for i := 1; i < 32; i++ {
		odd[i] = row
		row <<= 1
	}
	gf2Square(even[:], odd[:]) // the shift by two zero bits
	gf2Square(odd[:], even[:]) // by four
	for {
		gf2Square(even[:], odd[:]) // by one zero byte, then 4, 16...
		if lenB&1 != 0 {
			crcA = gf2Times(even[:], crcA)
		}
		lenB >>= 1
		if lenB == 0 {
			break
		}
		gf2Square(odd[:], even[:])
		if lenB&1 != 0 {
			crcA = gf2Times(odd[:], crcA)
		}
		lenB >>= 1
		if lenB == 0 {
			break
		}
	}
	return crcA ^ crcB
}

func gf2Times(mat []uint32, vec uint32) uint32 {
	var sum uint32
	for i := 0; vec != 0; i, vec = i+1, vec>>1 {
		if vec&1 != 0 {
			sum ^= mat[i]
		}
	}
	return sum
}

func gf2Square(square, mat []uint32) {
	for n := 0; n < 32; n++ {
		square[n] = gf2Times(mat, mat[n])
	}
}

// crc32cFile returns the file's CRC-32C in the digest format and its size,
// computed by up to GOMAXPROCS goroutines (see parallelMin).
func crc32cFile(path string) (string, int64, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", 0, err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return "", 0, err
	}
	size := st.Size()
	pieces := int(min(int64(goruntime.GOMAXPROCS(0)), max(1, size/parallelMin)))
	step := (size + int64(pieces) - 1) / int64(pieces)
	crcs, errs := make([]uint32, pieces), make([]error, pieces)
	var wg sync.WaitGroup
	for i := range pieces {
		wg.Add(1)
		go func() {
			defer wg.Done()
			off := int64(i) * step
			r := io.NewSectionReader(f, off, min(step, size-off))
			h := crc32.New(castagnoli)
			_, errs[i] = io.CopyBuffer(h, r, make([]byte, 1<<20))
			crcs[i] = h.Sum32()
		}()
	}
	wg.Wait()
	sum := crcs[0]
	for i := 1; i < pieces; i++ {
		if errs[i] != nil {
			return "", 0, errs[i]
		}
		off := int64(i) * step
		sum = crc32cCombine(sum, crcs[i], min(step, size-off))
	}
	if errs[0] != nil {
		return "", 0, errs[0]
	}
	return crc32cPrefix + hex.EncodeToString(binary.BigEndian.AppendUint32(nil, sum)), size, nil
}

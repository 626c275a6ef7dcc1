package identifiers

import (
	"crypto/rand"
	"fmt"
	"sync"
	"time"
)

// crockford is the alphabet of ULIDs (Crockford's base 32).
const crockford = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"

// versions makes NewVersion monotonic within the process.
var versions struct {
	mu   sync.Mutex
	ms   uint64
	rand [10]byte
}

// NewVersion returns a fresh machine config version (also the machine's
// instance ID while that version runs): a ULID, as Fly's versions are, 26
// characters that sort in the order they were made (by the millisecond,
// and within one millisecond of this process by increment), so that a
// machine's versions listed by key are in creation order.
func NewVersion() string { return newULID(time.Now()) }

func newULID(now time.Time) string {
	versions.mu.Lock()
	defer versions.mu.Unlock()
	ms := uint64(now.UnixMilli())
	if ms <= versions.ms {
		ms = versions.ms
		for i := len(versions.rand) - 1; i >= 0; i-- {
			versions.rand[i]++
			if versions.rand[i] != 0 {
				break
			}
		}
	} else if _, err := rand.Read(versions.rand[:]); err != nil {
		panic(fmt.Sprintf("identifiers: reading random bytes: %v", err))
	}
	versions.ms = ms
	var b [16]byte
	for i := range 6 {
		b[i] = byte(ms >> (8 * (5 - i)))
	}
	copy(b[6:], versions.rand[:])
	return encodeULID(b)
}

// encodeULID writes 128 bits as 26 base-32 digits, most significant first
// (the first digit holds the top 3 bits).
func encodeULID(b [16]byte) string {
	out := make([]byte, 26)
	// Treat b as a 130-bit number with two leading zero bits.
	bit := func(i int) byte { // i-th bit from the top of the 130
		i -= 2
		if i < 0 {
			return 0
		}
		return (b[i/8] >> (7 - uint(i%8))) & 1
	}
	for d := range 26 {
		var v byte
		for k := range 5 {
			v = v<<1 | bit(d*5+k)
		}
		out[d] = crockford[v]
	}
	return string(out)
}

// IsVersion reports whether s looks like a config version: 1-64 letters or
// digits (versions made before ULIDs were 12 hex digits).
func IsVersion(s string) bool {
	if s == "" || len(s) > MaxIDLen {
		return false
	}
	for _, c := range s {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9') {
			return false
		}
	}
	return true
}

// Version checks a config version given as field.
func Version(field, s string) error {
	return check(field, s, IsVersion(s), "must be 1-64 letters or digits")
}

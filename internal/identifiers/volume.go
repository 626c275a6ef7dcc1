package identifiers

import (
	"crypto/rand"
	"fmt"
	"strings"
)

// Volume IDs and names have Fly's shapes: "vol_" and lowercase letters and
// digits; names of lowercase letters, digits and underscores.
const (
	VolumeIDPrefix   = "vol_"
	VolumeIDRule     = "must be \"vol_\" followed by 1-64 lowercase letters or digits"
	VolumeNameRule   = "must be 1-30 lowercase letters, digits or underscores"
	maxVolumeNameLen = 30
	volumeIDChars    = 16
)

// IsVolumeID reports whether s is a valid volume ID.
func IsVolumeID(s string) bool {
	rest, ok := strings.CutPrefix(s, VolumeIDPrefix)
	return ok && IsMachineID(rest)
}

// IsVolumeName reports whether s is a valid volume name.
func IsVolumeName(s string) bool {
	if s == "" || len(s) > maxVolumeNameLen {
		return false
	}
	for _, c := range s {
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '_') {
			return false
		}
	}
	return true
}

// VolumeID checks a volume ID given as field.
func VolumeID(field, s string) error { return check(field, s, IsVolumeID(s), VolumeIDRule) }

// VolumeName checks a volume name given as field.
func VolumeName(field, s string) error { return check(field, s, IsVolumeName(s), VolumeNameRule) }

// NewVolumeID returns a fresh volume ID like Fly's: "vol_" and 16
// lowercase letters and digits.
func NewVolumeID() string {
	const alphabet = "0123456789abcdefghijklmnopqrstuvwxyz"
	b := make([]byte, volumeIDChars)
	if _, err := rand.Read(b); err != nil {
		panic(fmt.Sprintf("identifiers: reading random bytes: %v", err))
	}
	for i := range b {
		b[i] = alphabet[int(b[i])%len(alphabet)] // 256 % 36 = 4: a slight bias, harmless for IDs
	}
	return VolumeIDPrefix + string(b)
}

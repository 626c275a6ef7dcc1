// Package identifiers owns the rules for the names and IDs torpor hands out
// and accepts: app names, org slugs, machine names and IDs, regions, and the
// random IDs of machines, config versions, snapshots and instances. Every
// package that takes a name from a user or puts one in a path, a network
// namespace or a runsc container ID checks it here, so that one rule holds
// everywhere (like containerd's pkg/identifiers).
//
// It does not own what a name refers to (whether an app exists is the
// store's business) nor the rules of config fields (package machine).
//
// A failed check is a model.KindInvalid error that names the field, the
// value and the rule.
package identifiers

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"strconv"

	"github.com/torpor-dev/torpor/internal/model"
)

// Bounds.
const (
	// MaxNameLen bounds app names, machine names, org slugs and regions
	// (a DNS label).
	MaxNameLen = 63
	// MaxIDLen bounds machine IDs (and other IDs in paths).
	MaxIDLen = 64
	// machineIDBytes is how many random bytes a new machine ID has (14 hex digits).
	machineIDBytes = 7
)

// Rules, for error messages.
const (
	NameRule = "must be 1-63 lowercase letters, digits or dashes, starting with a letter or digit"
	SlugRule = "must be up to 63 lowercase letters, digits or dashes, starting with a letter or digit"
	IDRule   = "must be 1-64 lowercase letters or digits"
)

// isLabel reports whether s is 1 to MaxNameLen lowercase letters, digits
// or dashes starting with a letter or digit.
func isLabel(s string) bool {
	if s == "" || len(s) > MaxNameLen {
		return false
	}
	for i, c := range s {
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-' && i > 0) {
			return false
		}
	}
	return true
}

// IsAppName reports whether s is a valid app name.
func IsAppName(s string) bool { return isLabel(s) }

// IsMachineID reports whether s is a valid machine ID.
func IsMachineID(s string) bool {
	if s == "" || len(s) > MaxIDLen {
		return false
	}
	for _, c := range s {
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9') {
			return false
		}
	}
	return true
}

// AppName checks an app name given as field (e.g. "app_name" or "path
// parameter app").
func AppName(field, s string) error { return check(field, s, isLabel(s), NameRule) }

// MachineName checks a machine name; "" (generated or unchanged) passes.
func MachineName(field, s string) error { return check(field, s, s == "" || isLabel(s), NameRule) }

// Slug checks an optional slug such as an org slug; "" passes.
func Slug(field, s string) error { return check(field, s, s == "" || isLabel(s), SlugRule) }

// Region checks an optional region name; "" passes.
func Region(field, s string) error { return check(field, s, s == "" || isLabel(s), NameRule) }

// HostID checks a cluster host's ID (a DNS label: it names the host's
// certificate and its keys in etcd); field names it in the error.
func HostID(field, s string) error { return check(field, s, isLabel(s), NameRule) }

// MachineID checks a machine ID.
func MachineID(field, s string) error { return check(field, s, IsMachineID(s), IDRule) }

func check(field, s string, ok bool, rule string) error {
	if ok {
		return nil
	}
	return model.Errorf(model.KindInvalid, "invalid %s %s: %s", field, strconv.Quote(s), rule)
}

// Random returns n random bytes in hex: the IDs of config versions,
// snapshots and instances.
func Random(n int) string {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		panic(fmt.Sprintf("identifiers: reading random bytes: %v", err))
	}
	return hex.EncodeToString(b)
}

// NewMachineID returns a fresh machine ID.
func NewMachineID() string { return Random(machineIDBytes) }

// DefaultMachineName is the name a machine gets when it is created without one.
func DefaultMachineName(id string) string { return "machine-" + id[:min(6, len(id))] }

// SandboxID names the runtime sandbox (runsc container) backing a machine:
// one at a time.
func SandboxID(machineID string) string { return "torpor-" + machineID }

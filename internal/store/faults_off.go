//go:build !faults

package store

// FaultsEnabled reports whether this build can arm the store's fault point.
const FaultsEnabled = false

// SetWriteFault is only available in test builds (go build -tags faults).
func (s *Store) SetWriteFault(func(n int) error) {
	panic("store: fault injection needs a build with -tags faults")
}

// writeFault is the store's fault point; release builds have none.
func (*Store) writeFault() error { return nil }

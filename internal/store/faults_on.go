//go:build faults

package store

// FaultsEnabled reports whether this build can arm the store's fault point.
const FaultsEnabled = true

// SetWriteFault arms the store's fault point for crash and disk-full
// tests: every Update first calls fn with the Update's ordinal (1, 2, ...
// since arming) and, when fn returns an error, fails with it as a commit
// that could not be written would (nothing of the transaction is kept).
// nil disarms it. Test builds only (-tags faults).
func (s *Store) SetWriteFault(fn func(n int) error) {
	s.faultN.Store(0)
	if fn == nil {
		s.writeFaultFn.Store(nil)
		return
	}
	s.writeFaultFn.Store(&fn)
}

func (s *Store) writeFault() error {
	if fn := s.writeFaultFn.Load(); fn != nil {
		return (*fn)(int(s.faultN.Add(1)))
	}
	return nil
}

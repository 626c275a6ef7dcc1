//go:build faults

package image

// SetFault arms the fault points: fn is called at each of them with the
// point's name (nil disarms them). Test builds only.
func (m *Manager) SetFault(fn func(point string)) {
	if fn == nil {
		m.faultFn.Store(nil)
		return
	}
	m.faultFn.Store(&fn)
}

// fault marks a point where crash tests may kill the daemon.
func (m *Manager) fault(point string) {
	if fn := m.faultFn.Load(); fn != nil {
		(*fn)(point)
	}
}

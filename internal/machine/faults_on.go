//go:build faults

package machine

// FaultsEnabled reports whether this build can arm fault points.
const FaultsEnabled = true

// SetFault arms the fault points: fn is called at each of them with the
// point's name and the machine's ID (nil disarms them). Test builds only.
func (m *Manager) SetFault(fn func(point, machineID string)) {
	if fn == nil {
		m.faultFn.Store(nil)
		return
	}
	m.faultFn.Store(&fn)
}

// fault marks a point where crash tests may kill the daemon or the sandbox
// of machine id.
func (m *Manager) fault(point, id string) {
	if fn := m.faultFn.Load(); fn != nil {
		(*fn)(point, id)
	}
}

// SetFailure arms the fail points (FailPoints): fn is called at each of
// them with the point's name and the machine's ID, and a non-nil error it
// returns fails the store write there (nil disarms them). Test builds only.
func (m *Manager) SetFailure(fn func(point, machineID string) error) {
	if fn == nil {
		m.failFn.Store(nil)
		return
	}
	m.failFn.Store(&fn)
}

// failure is a fail point: the error an armed test build makes the store
// write there fail with.
func (m *Manager) failure(point, id string) error {
	if fn := m.failFn.Load(); fn != nil {
		return (*fn)(point, id)
	}
	return nil
}

//go:build !faults

package machine

// FaultsEnabled reports whether this build can arm fault points.
const FaultsEnabled = false

// SetFault is only available in test builds (go build -tags faults).
func (m *Manager) SetFault(func(point, machineID string)) {
	panic("machine: fault injection needs a build with -tags faults")
}

// fault is a fault point; release builds have none.
func (*Manager) fault(string, string) {}

// SetFailure is only available in test builds (go build -tags faults).
func (m *Manager) SetFailure(func(point, machineID string) error) {
	panic("machine: fault injection needs a build with -tags faults")
}

// failure is a fail point; release builds have none.
func (*Manager) failure(string, string) error { return nil }

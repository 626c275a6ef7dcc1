//go:build !faults

package image

// fault is a fault point; release builds have none.
func (m *Manager) fault(string) {}

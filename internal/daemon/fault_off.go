//go:build !faults

package daemon

import (
	"context"
	"errors"
)

// checkFaults refuses TORPOR_FAULT: fault injection is only compiled into
// test builds (go build -tags faults).
func (s *System) checkFaults(context.Context) error {
	if s.cfg.Fault != "" {
		return errors.New("TORPOR_FAULT is set, but this torpor binary was built without fault injection " +
			"(it is for crash tests: go build -tags faults)")
	}
	return nil
}

// armFaults does nothing: release builds have no fault points.
func (s *System) armFaults(context.Context) error { return nil }

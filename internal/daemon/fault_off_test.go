//go:build !faults

package daemon

import (
	"context"
	"strings"
	"testing"
)

// A release build has no fault points and refuses to pretend otherwise.
func TestReleaseBuildRefusesFaults(t *testing.T) {
	_, err := New(context.Background(), Config{DataDir: t.TempDir(), Fault: "resume/after-claim"})
	if err == nil || !strings.Contains(err.Error(), "-tags faults") {
		t.Fatalf("New with TORPOR_FAULT in a release build: %v", err)
	}
}

// Package runtime defines the driver interface torpor uses to run machines as
// sandboxes: boot, checkpoint, restore, kill, wait and state. Drivers live in
// subpackages (runtime/gvisor today; a VM driver later) and know nothing about
// machines, the store or snapshot invariants: those belong to package machine.
package runtime

import (
	"context"
	"errors"
)

// Status is what the driver knows of a sandbox.
type Status string

// Sandbox statuses.
const (
	StatusCreated Status = "created"
	StatusRunning Status = "running"
	StatusPaused  Status = "paused"
	StatusStopped Status = "stopped"
	StatusAbsent  Status = "absent" // the driver has no record of the sandbox
)

// ErrNotFound is returned when the sandbox does not exist.
var ErrNotFound = errors.New("sandbox not found")

// Spec describes a sandbox to boot or restore.
type Spec struct {
	ID       string   // sandbox (container) ID, unique on the host
	Bundle   string   // absolute directory the driver owns for this sandbox (config.json lives here)
	RootFS   string   // absolute path of the root filesystem directory (used read-only)
	Args     []string // the process to run
	Env      []string // KEY=VALUE
	Cwd      string
	Hostname string
	CPUs     int
	MemoryMB int
	// NetNS is the path of a network namespace prepared for the sandbox
	// (e.g. /run/netns/NAME); empty means no network but loopback.
	NetNS string
	// Console is the path of a FIFO (or file) that receives the process's
	// stdout and stderr. The driver opens it read-write so that writes never
	// fail for want of a reader.
	Console string
	// Mounts are host files or directories bound into the sandbox (e.g. a
	// generated /etc/hosts). Restore must be given the same mounts.
	Mounts []Mount
}

// Mount binds Source (a host path) at Destination inside the sandbox.
type Mount struct {
	Source      string
	Destination string
	ReadOnly    bool
}

// ExitStatus is how a sandbox's process ended.
type ExitStatus struct {
	Code   int
	Signal string
}

// Runtime is a sandbox driver.
type Runtime interface {
	// Name is the driver's name, e.g. "gvisor".
	Name() string
	// Version identifies the runtime build; snapshots are only restored by the
	// same version.
	Version() string
	// Boot creates and starts a sandbox from spec and returns once its process runs.
	Boot(ctx context.Context, spec Spec) error
	// Checkpoint saves the sandbox's whole state to imageDir (which must exist and
	// be empty) and returns once the sandbox has stopped and is deleted.
	Checkpoint(ctx context.Context, id, imageDir string) error
	// Restore boots a sandbox from spec with the state saved in imageDir and
	// returns once its process runs again.
	Restore(ctx context.Context, spec Spec, imageDir string) error
	// Signal sends a signal (e.g. "SIGTERM") to the sandbox's init process.
	Signal(ctx context.Context, id, signal string) error
	// SignalAll sends a signal to every process in the sandbox.
	SignalAll(ctx context.Context, id, signal string) error
	// Kill stops the sandbox at once and deletes it. Killing an absent sandbox is not an error.
	Kill(ctx context.Context, id string) error
	// Wait blocks until the sandbox's process exits (or ctx ends) and reports how.
	// It works for sandboxes booted by an earlier daemon process too.
	Wait(ctx context.Context, id string) (ExitStatus, error)
	// State reports the sandbox's status; StatusAbsent (and no error) if it does not exist.
	State(ctx context.Context, id string) (Status, error)
	// Exec runs a command inside the running sandbox and returns its combined output.
	Exec(ctx context.Context, id string, args []string) ([]byte, error)
}

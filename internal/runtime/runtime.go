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

// ErrClosed is returned by a Wait that the driver's Close ended: the
// sandbox is still running, nobody watches it any more.
var ErrClosed = errors.New("runtime closed")

// ErrUnavailable is wrapped by errors of a runtime that cannot run
// sandboxes for now (e.g. its binary is missing or not executable): the
// request may succeed later, and nothing is wrong with the sandbox's state.
var ErrUnavailable = errors.New("runtime unavailable")

// Spec describes a sandbox to boot or restore.
type Spec struct {
	ID     string   // sandbox (container) ID, unique on the host
	Bundle string   // absolute directory the driver owns for this sandbox (config.json lives here)
	RootFS string   // absolute path of the root filesystem directory (used read-only)
	Args   []string // the process to run
	Env    []string // KEY=VALUE
	Cwd    string
	// User is the identity of the process (root when zero).
	User     User
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

// User is a process identity inside the sandbox.
type User struct {
	UID, GID       uint32
	AdditionalGIDs []uint32
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
	// OOMKilled: the host killed the sandbox for exceeding its memory
	// limit (Signal is then SIGKILL).
	OOMKilled bool
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
	// Exec runs a command inside the running sandbox and returns its
	// combined output. It runs with the sandbox's environment, env's
	// KEY=VALUE entries added (a key already there takes env's value).
	Exec(ctx context.Context, id string, args []string, env ...string) ([]byte, error)
	// Run runs a command inside the running sandbox with its own stdin,
	// stdout and stderr, and reports how it ended. A command that ran and
	// exited non-zero is not an error; ctx ending kills it.
	Run(ctx context.Context, id string, cmd Command) (CommandResult, error)
	// Processes lists the processes running in the sandbox.
	Processes(ctx context.Context, id string) ([]Process, error)
	// CheckpointLive saves the sandbox's whole state to imageDir (which
	// must exist and be empty) like Checkpoint, but leaves the sandbox
	// running: the caller then kills it (the suspend goes on) or keeps it
	// (the suspend was cancelled). A failed CheckpointLive leaves the
	// sandbox running too.
	CheckpointLive(ctx context.Context, id, imageDir string) error
}

// Preparer is a driver that can check, before a restore, what the restore
// needs from the host and may lack for a while: its binary, free space
// where it writes. Package machine asks it before it claims a snapshot (a
// claimed snapshot is never restored again), so that such a failure keeps
// the snapshot instead of costing it (issue 17's F6).
type Preparer interface {
	// PrepareRestore checks that a Restore of spec can run now. Its errors
	// wrap ErrUnavailable when the runtime cannot run, syscall.ENOSPC when
	// the disk is full.
	PrepareRestore(ctx context.Context, spec Spec) error
}

// Checker is a driver that can tell whether a sandbox still runs without
// the tools its other methods need: gVisor's answers from the sandbox
// process it saw last, when runsc itself is missing or failing. Package
// machine asks it before it takes a failed Wait, or a failed operation, for
// the end of the sandbox (a sandbox recorded stopped while it runs on is
// unsupervised and unreachable: issue 17's F8).
type Checker interface {
	// Running reports whether the sandbox's process is alive; an error
	// when the driver cannot tell.
	Running(ctx context.Context, id string) (bool, error)
}

// Precreator is a driver that can create a sandbox ahead of its restore
// ("warm sandbox"): Precreate does, off the critical path, the part of a
// restore that does not depend on the image (gVisor: `runsc create`, about
// 80 ms and 54 MiB resident while it waits), and the Restore of the same
// spec then only loads the image into it. The precreated sandbox holds no
// state of the machine: it is what a boot would make before the process
// starts. Package machine decides which sandboxes to precreate and when to
// discard them (warm.go there).
type Precreator interface {
	// Precreate creates the sandbox of spec without starting its process,
	// for a later Restore of the same spec. The sandbox's ID must not be in
	// use, except by a sandbox this driver precreated (which is replaced
	// when its spec differs, kept when it is the same). A ctx that ends
	// before the create has begun makes Precreate return its error with
	// nothing made; once begun, the create may run to its end whatever
	// ctx does (cutting it short could orphan what it started), and a
	// sandbox it finished is kept and reported (nil).
	Precreate(ctx context.Context, spec Spec) error
	// Precreated reports whether a sandbox precreated for exactly spec
	// (same config, console, network namespace, mounts) waits for its
	// restore: Restore of spec then restores into it. A Restore of a spec
	// that differs deletes the precreated sandbox first and restores as
	// if there had been none.
	Precreated(spec Spec) bool
	// DiscardPrecreated deletes the sandbox precreated with that ID, if
	// any; a sandbox the driver did not precreate is left alone. Kill
	// deletes a precreated sandbox too.
	DiscardPrecreated(ctx context.Context, id string) error
}

// DiskUser is a driver that keeps files of its own on disk beside the
// snapshots it is given (gVisor: the pages file a restored sandbox's next
// checkpoint writes over, reuse.go there). Package machine counts them
// with the snapshots (SnapshotUsage, torpor_snapshot_disk_bytes); the
// driver alone knows where they are and when they go.
type DiskUser interface {
	// DiskBytes is the disk space (allocated blocks) of the driver's own
	// files.
	DiskBytes() (int64, error)
}

// Command is a command for Runtime.Run.
type Command struct {
	Args  []string
	Stdin []byte
	// MaxOutput bounds what is kept of stdout and of stderr each: their
	// last MaxOutput bytes (DefaultMaxOutput when 0).
	MaxOutput int
}

// DefaultMaxOutput is Command.MaxOutput's default.
const DefaultMaxOutput = 1 << 20

// CommandResult is how a command run by Runtime.Run ended.
type CommandResult struct {
	Stdout, Stderr []byte
	// Truncated: stdout or stderr was longer than MaxOutput.
	Truncated bool
	// ExitCode is the command's exit status, -1 when a signal ended it.
	ExitCode int
	// Signal names the signal that ended it ("SIGKILL"), if one did.
	Signal string
}

// Process is one process of a sandbox, as Runtime.Processes reports it.
// Fields the driver cannot read are zero.
type Process struct {
	PID     int
	Command string // the command line
	Cwd     string
	// CPU is the share of one CPU the process used over its life, in percent.
	CPU uint64
	// RSS is its resident memory in bytes.
	RSS uint64
	// SystemTime and CPUTime are the CPU time it spent in the kernel and
	// in all, in milliseconds.
	SystemTime, CPUTime uint64
	Listen              []Socket
}

// Socket is a socket a process listens on (TCP) or is bound to (UDP).
type Socket struct {
	Proto   string // "tcp", "tcp6", "udp", "udp6"
	Address string // host:port, as net.JoinHostPort writes it
}

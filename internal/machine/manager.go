// Package machine owns the machine lifecycle: the state machine of DESIGN.md
// (created → starting → started → suspending → suspended → ...), the snapshot
// invariants (a snapshot is restored at most once and only in the boot
// generation it was taken in; cold starts, stops, updates and destroys discard
// it), per-machine serialization of operations, machine leases (lease.go),
// the cancellation of a suspend by a start (interrupt.go), Fly's operations
// beyond the lifecycle (ops.go: restart, signal, exec, ps, metadata,
// versions, filtered lists and waits), events, supervision of running
// sandboxes and recovery after a daemon restart.
//
// It drives a runtime.Runtime for sandboxes, the store for every state change,
// package snapshot for images on disk and package volume for the volumes its
// machines mount (which machine holds which volume is committed in the
// machine's own transactions).
package machine

import (
	"context"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/torpor-dev/torpor/internal/identifiers"
	"github.com/torpor-dev/torpor/internal/logs"
	"github.com/torpor-dev/torpor/internal/model"
	"github.com/torpor-dev/torpor/internal/runtime"
	"github.com/torpor-dev/torpor/internal/snapshot"
	"github.com/torpor-dev/torpor/internal/store"
)

// Network gives machines their network; package network implements it.
type Network interface {
	// Attach prepares (or repairs) the machine's network namespace and
	// returns its path and the machine's address. It is called before every
	// boot and restore.
	Attach(ctx context.Context, app, machineID string) (nsPath string, ip netip.Addr, err error)
	// Adopt repairs the host side of a running machine's network after a
	// daemon restart, leaving its namespace as the running sandbox set it
	// up (re-applying eth0's address there cuts the machine off).
	Adopt(ctx context.Context, app, machineID string) error
	// Detach removes the machine's network.
	Detach(ctx context.Context, machineID string) error
	// DeleteApp removes what the app's machines shared (its bridge).
	DeleteApp(ctx context.Context, app string) error
}

// GuestAPI serves the in-machine API, through which a machine may read its
// own record and suspend or stop itself; package guestapi implements it.
type GuestAPI interface {
	// Listen (again) serves the machine's socket under dir and returns the
	// mounts that put it inside the machine.
	Listen(app, machineID, dir string) ([]runtime.Mount, error)
	// Close stops serving the machine.
	Close(machineID string)
}

// Config configures a Manager.
type Config struct {
	// DataDir holds one directory per machine (bundle, console, snapshots).
	DataDir string
	// ImagesDir is where image names resolve to root filesystem directories.
	ImagesDir string
	// Images, if set, resolves config.image as an OCI image reference when
	// it names no root filesystem directory; nil: directories only.
	Images Images
	// SuspendMemoryLimitMB is the largest guest memory that may be suspended (default 2048).
	SuspendMemoryLimitMB int
	// Region is reported as every machine's region (default "local").
	Region string
	// Network, if set, gives each machine its own network namespace.
	Network Network
	// GuestAPI, if set, is mounted into every machine.
	GuestAPI GuestAPI
	// Volumes, if set, mounts the volumes of config.mounts (package volume).
	Volumes Volumes
	// Checks, if set, gives machines their health check results (package checks).
	Checks CheckStatuses
	// RunDir holds short-lived files with short paths, such as the
	// in-machine API sockets (Unix socket paths are limited to 107 bytes;
	// default /run/torpor).
	RunDir string
	// StopTimeout is how long stop waits for the process to exit after the
	// stop signal before killing it, when the request and config say nothing (default 10s).
	StopTimeout time.Duration
	// SyncSnapshots makes suspend flush a snapshot to disk before it reports
	// the machine suspended. By default the flush runs right after, off the
	// suspend's critical path: a crash of the host (not of the daemon)
	// within that moment may then cost the snapshot, which the next start
	// detects (checksums) and answers with a cold start.
	SyncSnapshots bool
	// ClockGate makes every resume read the machine's wall clock in a new
	// process while the app is still frozen, and continue the app only once
	// the reading is right (or after about a second of retries). Off, the
	// app continues as soon as its generation file is written: the clock
	// is right from a restored app's first instruction on the pinned
	// gVisor (docs/app-authors.md#the-clock), and the reading cost 20–30 ms
	// of every resume.
	ClockGate bool
	// Claimer, when set, is the cluster this host is part of: the Manager
	// then only changes machines it owns, registers new ones with it and
	// takes a snapshot's cluster-wide claim before restoring it.
	Claimer Claimer
	// Logs configures each machine's persistent console log.
	Logs logs.Config
	// ReservedPorts are host ports no machine may publish, with what the
	// daemon keeps each for (e.g. "the daemon's TCP API (--listen
	// 127.0.0.1:4280)"): a config asking for one is refused (see ports.go).
	ReservedPorts map[int]string
	// MaxPortsPerApp caps the host ports one app's machines publish
	// together (default DefaultMaxPortsPerApp).
	MaxPortsPerApp int
	// HostMemoryMB and HostCPUs are what this host gives machines: no
	// machine may ask for more, and admission control keeps the memory of
	// the machines running together within HostMemoryMB (admission.go;
	// 0: no limit).
	HostMemoryMB int
	HostCPUs     int
	// AppMemoryQuotaMB and AppCPUQuota bound what one app's running
	// machines take together (0: no quota).
	AppMemoryQuotaMB int
	AppCPUQuota      int
	// RestartBackoff is how long the restart policy waits before the first
	// restart of a series; each next one waits twice as long, at most
	// RestartBackoffMax (defaults DefaultRestartBackoff,
	// DefaultRestartBackoffMax; see restart.go).
	RestartBackoff    time.Duration
	RestartBackoffMax time.Duration
	// RestartStableAfter is how long a run must last for its exit to start
	// a new restart series (default DefaultRestartStableAfter).
	RestartStableAfter time.Duration
	// WarmSandboxesMemoryMB is the memory budget of the sandboxes created
	// ahead of the resumes of suspended machines (warm.go; 0: none), and
	// WarmSandboxCostMB what each is charged (default
	// DefaultWarmSandboxCostMB). Only with a runtime.Precreator.
	WarmSandboxesMemoryMB int
	WarmSandboxCostMB     int
	Logger                *slog.Logger
}

// Manager runs machines. It is safe for concurrent use.
type Manager struct {
	cfg    Config
	store  *store.Store
	rt     runtime.Runtime
	log    *slog.Logger
	hostID string

	mu       sync.Mutex
	locks    map[string]chan struct{} // per-machine operation lock
	sources  map[string]string        // who asked for the operation holding the lock (model.SourceOf)
	changed  map[string]chan struct{} // closed and replaced on every state change
	runs     map[string]*run          // supervised sandbox per machine
	consoles map[string]*console
	logs     map[string]*logs.Log
	frozen   map[string]bool   // machines Fence froze
	flushes  map[string]*flush // background flushes of snapshots (flushLater)
	closed   bool

	subs subscribers // of committed changes (Subscribe)
	// restarts holds the restart policy's series of each machine (restart.go).
	restarts restarts
	// suspends holds the suspend in progress of each machine, which a
	// start may cancel (interrupt.go).
	suspends sync.Map // machine ID → *suspendRun
	// faultFn is the armed fault function of a test build (SetFault).
	faultFn atomic.Pointer[func(point, machineID string)]
	// failFn is the armed fail function of a test build (SetFailure).
	failFn atomic.Pointer[func(point, machineID string) error]
	// warm holds the sandboxes created ahead of resumes (warm.go).
	warm warmPool
}

// New returns a Manager. Call Recover before serving requests.
func New(cfg Config, st *store.Store, rt runtime.Runtime) (*Manager, error) {
	if cfg.SuspendMemoryLimitMB == 0 {
		cfg.SuspendMemoryLimitMB = 2048
	}
	if cfg.RunDir == "" {
		cfg.RunDir = "/run/torpor"
	}
	if cfg.Region == "" {
		cfg.Region = "local"
	}
	if cfg.StopTimeout == 0 {
		cfg.StopTimeout = 10 * time.Second
	}
	if cfg.RestartBackoff <= 0 {
		cfg.RestartBackoff = DefaultRestartBackoff
	}
	if cfg.RestartBackoffMax <= 0 {
		cfg.RestartBackoffMax = DefaultRestartBackoffMax
	}
	cfg.RestartBackoffMax = max(cfg.RestartBackoffMax, cfg.RestartBackoff)
	if cfg.RestartStableAfter <= 0 {
		cfg.RestartStableAfter = DefaultRestartStableAfter
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
		return nil, err
	}
	if cfg.WarmSandboxCostMB <= 0 {
		cfg.WarmSandboxCostMB = DefaultWarmSandboxCostMB
	}
	return &Manager{
		warm:     warmPool{budgetMB: max(cfg.WarmSandboxesMemoryMB, 0), costMB: cfg.WarmSandboxCostMB},
		cfg:      cfg,
		store:    st,
		rt:       rt,
		log:      cfg.Logger,
		hostID:   snapshot.HostID(),
		locks:    map[string]chan struct{}{},
		sources:  map[string]string{},
		changed:  map[string]chan struct{}{},
		runs:     map[string]*run{},
		consoles: map[string]*console{},
		logs:     map[string]*logs.Log{},
		flushes:  map[string]*flush{},
	}, nil
}

// Close stops supervising sandboxes and draining consoles, and deletes the
// warm sandboxes (warm.go). Sandboxes keep running; a new Manager adopts
// them with Recover.
func (m *Manager) Close() {
	m.closeWarm()
	m.mu.Lock()
	m.closed = true
	m.runs = map[string]*run{}
	m.mu.Unlock()
	m.stopRestarts()
	m.mu.Lock()
	ids := make([]string, 0, len(m.consoles))
	for id := range m.consoles {
		ids = append(ids, id)
	}
	m.mu.Unlock()
	for _, id := range ids {
		m.closeConsole(id)
	}
	m.mu.Lock()
	ids = ids[:0]
	for id := range m.logs {
		ids = append(ids, id)
	}
	m.mu.Unlock()
	for _, id := range ids {
		m.closeLog(id)
	}
}

// lock takes the machine's operation lock, waiting for the operation in
// progress (if any) to end, and records who asked for the operation
// (model.SourceOf(ctx)) as the source of the changes it commits. It fails when ctx ends first. Once it holds the
// lock, an operation runs to its end with ctx's values but without its
// cancellation (see detach): a client that goes away must not leave a
// checkpoint or restore half done.
func (m *Manager) lock(ctx context.Context, id string) (unlock func(), err error) {
	m.mu.Lock()
	l, ok := m.locks[id]
	if !ok {
		l = make(chan struct{}, 1)
		m.locks[id] = l
	}
	m.mu.Unlock()
	select {
	case l <- struct{}{}:
	default:
		// Busy: if with a warm sandbox's precreate, that gives way.
		m.preemptWarm(id)
		select {
		case l <- struct{}{}:
		case <-ctx.Done():
			return nil, model.Errorf(model.KindConflict, "machine %s is busy with another operation: %v", id, ctx.Err())
		}
	}
	m.mu.Lock()
	m.sources[id] = model.SourceOf(ctx)
	m.mu.Unlock()
	return func() {
		m.mu.Lock()
		delete(m.sources, id)
		m.mu.Unlock()
		<-l
	}, nil
}

// begin starts an operation on machine id of app: it takes the machine's
// lock, detaches the operation's context from the request's cancellation
// (see lock), loads the machine and checks that the caller may act on it
// while it is leased (lease.go). Call end when the operation is over.
func (m *Manager) begin(ctx context.Context, app, id string) (_ context.Context, _ model.Machine, end func(), _ error) {
	unlock, err := m.lock(ctx, id)
	if err != nil {
		return ctx, model.Machine{}, nil, err
	}
	ctx, cancel := detach(ctx)
	end = func() { cancel(); unlock() }
	mc, err := m.machine(app, id)
	if err == nil {
		err = m.checkLease(ctx, mc)
		if err == nil {
			err = m.own(ctx, id)
		}
	}
	if err != nil {
		end()
		return ctx, mc, nil, err
	}
	return ctx, mc, end, nil
}

// changes returns a channel closed at the machine's next state change.
func (m *Manager) changes(id string) <-chan struct{} {
	m.mu.Lock()
	defer m.mu.Unlock()
	ch, ok := m.changed[id]
	if !ok {
		ch = make(chan struct{})
		m.changed[id] = ch
	}
	return ch
}

func (m *Manager) notify(id string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if ch, ok := m.changed[id]; ok {
		close(ch)
		delete(m.changed, id)
	}
}

// machineDir is where everything of one machine lives on disk.
func (m *Manager) machineDir(id string) string { return filepath.Join(m.cfg.DataDir, "machines", id) }
func (m *Manager) bundleDir(id string) string  { return filepath.Join(m.machineDir(id), "bundle") }
func (m *Manager) trashDir() string            { return filepath.Join(m.cfg.DataDir, "trash") }
func (m *Manager) snapshotsDir(id string) string {
	return filepath.Join(m.machineDir(id), "snapshots")
}

// sandboxID names the runtime sandbox backing a machine: one at a time.
func sandboxID(machineID string) string { return identifiers.SandboxID(machineID) }

// newID returns n random bytes in hex.
func newID(n int) string { return identifiers.Random(n) }

// detach returns a context for the work of an operation that holds its
// machine's lock: not cancelled with the request, bounded by opTimeout.
func detach(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.WithoutCancel(ctx), opTimeout)
}

// opTimeout bounds one operation's runtime work (boot, checkpoint, restore).
const opTimeout = 5 * time.Minute

func nowMillis() int64 { return time.Now().UnixMilli() }

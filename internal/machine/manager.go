// Package machine owns the machine lifecycle: the state machine of DESIGN.md
// (created → starting → started → suspending → suspended → ...), the snapshot
// invariants (a snapshot is restored at most once and only in the boot
// generation it was taken in; cold starts, stops, updates and destroys discard
// it), per-machine serialization of operations, events, supervision of
// running sandboxes and recovery after a daemon restart.
//
// It drives a runtime.Runtime for sandboxes, the store for every state change
// and package snapshot for images on disk.
package machine

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"sync"
	"time"

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
	// SuspendMemoryLimitMB is the largest guest memory that may be suspended (default 2048).
	SuspendMemoryLimitMB int
	// Region is reported as every machine's region (default "local").
	Region string
	// Network, if set, gives each machine its own network namespace.
	Network Network
	// GuestAPI, if set, is mounted into every machine.
	GuestAPI GuestAPI
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
	// Logs configures each machine's persistent console log.
	Logs   logs.Config
	Logger *slog.Logger
	// OnChange, if set, is called after every committed change of a machine
	// (the proxy uses it to see new machines and states at once).
	OnChange func()
	// Fault, if set, is called at every point of FaultPoints with the
	// point's name and the machine's ID; crash tests use it to kill the
	// daemon or the machine's sandbox exactly there. Nil in production.
	Fault func(point, machineID string)
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
	changed  map[string]chan struct{} // closed and replaced on every state change
	runs     map[string]*run          // supervised sandbox per machine
	consoles map[string]*console
	logs     map[string]*logs.Log
	closed   bool
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
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
		return nil, err
	}
	return &Manager{
		cfg:      cfg,
		store:    st,
		rt:       rt,
		log:      cfg.Logger,
		hostID:   snapshot.HostID(),
		locks:    map[string]chan struct{}{},
		changed:  map[string]chan struct{}{},
		runs:     map[string]*run{},
		consoles: map[string]*console{},
		logs:     map[string]*logs.Log{},
	}, nil
}

// Close stops supervising sandboxes and draining consoles. Sandboxes keep
// running; a new Manager adopts them with Recover.
func (m *Manager) Close() {
	m.mu.Lock()
	m.closed = true
	m.runs = map[string]*run{}
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
// progress (if any) to end. It fails when ctx ends first. Once it holds the
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
		return func() { <-l }, nil
	case <-ctx.Done():
		return nil, model.Errorf(model.KindConflict, "machine %s is busy with another operation: %v", id, ctx.Err())
	}
}

// begin starts an operation on machine id of app: it takes the machine's
// lock, detaches the operation's context from the request's cancellation
// (see lock) and loads the machine. Call end when the operation is over.
func (m *Manager) begin(ctx context.Context, app, id string) (_ context.Context, _ model.Machine, end func(), _ error) {
	unlock, err := m.lock(ctx, id)
	if err != nil {
		return ctx, model.Machine{}, nil, err
	}
	ctx, cancel := detach(ctx)
	end = func() { cancel(); unlock() }
	mc, err := m.machine(app, id)
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
func sandboxID(machineID string) string { return "torpor-" + machineID }

// newID returns n random bytes in hex.
func newID(n int) string {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		panic(err)
	}
	return hex.EncodeToString(b)
}

// detach returns a context for the work of an operation that holds its
// machine's lock: not cancelled with the request, bounded by opTimeout.
func detach(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.WithoutCancel(ctx), opTimeout)
}

// opTimeout bounds one operation's runtime work (boot, checkpoint, restore).
const opTimeout = 5 * time.Minute

func nowMillis() int64 { return time.Now().UnixMilli() }

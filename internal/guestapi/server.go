package guestapi

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/torpor-dev/torpor/internal/connlimit"
	"github.com/torpor-dev/torpor/internal/model"
	"github.com/torpor-dev/torpor/internal/runtime"
)

// Where the API appears inside a machine, and how runsc must run for it.
const (
	// MountDir is where the machine's socket directory is mounted; the
	// socket is MountDir/SocketName.
	MountDir   = "/.torpor"
	SocketName = "api.sock"
	// FlyMountDir/FlySocketName put a second socket at /.fly/api, where
	// Fly.io machines find their API.
	FlyMountDir   = "/.fly"
	FlySocketName = "api"
	// RunscFlag lets gVisor connect to host Unix sockets found in the
	// sandbox's mounts. Without it connect(2) fails with EPERM.
	RunscFlag = "--host-uds=open"
)

// Host-side layout of the directory given to Listen.
const (
	torporSubdir = "torpor"
	flySubdir    = "fly"
)

// maxSocketPath is the longest socket path bind(2) accepts (sun_path is 108
// bytes, NUL included).
const maxSocketPath = 107

// Source is the event source of operations a machine asks for itself.
const Source = model.SourceMachine

// Timing of an accepted operation (see the package documentation).
const (
	// deliveryTimeout bounds the wait for the machine to read the 202.
	deliveryTimeout = 2 * time.Second
	// settleDelay is the pause between delivery and the operation.
	settleDelay = 50 * time.Millisecond
	// opTimeout bounds the operation itself.
	opTimeout = 5 * time.Minute
)

// Limits on what a machine can make the daemon hold through its socket
// (issue 17, F4: two machines holding ~20,000 idle connections exhausted the
// daemon's descriptors).
const (
	// DefaultMaxConnsPerMachine caps the connections one machine holds open
	// to its API (both paths together); past it a connection gets a 503.
	DefaultMaxConnsPerMachine = 16
	// idleTimeout closes a kept-alive connection with no request for that long.
	idleTimeout = 30 * time.Second
	// readHeaderTimeout bounds the reading of a request's headers.
	readHeaderTimeout = 10 * time.Second
)

// Machines is what the in-machine API needs from the machine lifecycle
// (package machine's Manager implements it). Errors should be *model.Error
// values; their Kind picks the HTTP status.
type Machines interface {
	Get(ctx context.Context, app, id string) (model.Machine, error)
	Suspend(ctx context.Context, app, id string) error
	Stop(ctx context.Context, app, id string, req model.StopRequest) error
}

// Server serves the in-machine API: one Unix socket (two paths) per
// machine, each bound to that machine alone.
type Server struct {
	machines Machines
	log      *slog.Logger

	// Timing, variables so that tests can shorten them.
	deliveryTimeout time.Duration
	settleDelay     time.Duration
	opTimeout       time.Duration
	idleTimeout     time.Duration
	headerTimeout   time.Duration

	// ctx ends with CloseAll; operations not yet begun are then dropped.
	ctx    context.Context
	cancel context.CancelFunc
	ops    sync.WaitGroup

	mu         sync.Mutex
	endpoints  map[string]*endpoint // by machine ID
	budget     *connlimit.Budget    // descriptors all machines' connections share
	perMachine int
}

// endpoint is one machine's socket pair and HTTP server.
type endpoint struct {
	s         *Server
	app, id   string
	dir       string
	srv       *http.Server
	listeners []net.Listener
	limits    connlimit.Limits // one group for both sockets
	// busy is set from the 202 of an operation until the operation returns,
	// so that a machine cannot queue up operations on itself.
	busy atomic.Bool
}

// New returns a Server that acts through m and logs to logger
// (slog.Default() if nil).
func New(m Machines, logger *slog.Logger) *Server {
	if logger == nil {
		logger = slog.Default()
	}
	ctx, cancel := context.WithCancel(context.Background())
	return &Server{
		machines:        m,
		log:             logger.With("component", "guestapi"),
		deliveryTimeout: deliveryTimeout,
		settleDelay:     settleDelay,
		opTimeout:       opTimeout,
		idleTimeout:     idleTimeout,
		headerTimeout:   readHeaderTimeout,
		ctx:             ctx,
		cancel:          cancel,
		endpoints:       make(map[string]*endpoint),
		perMachine:      DefaultMaxConnsPerMachine,
	}
}

// SetLimits makes the connections of every machine endpoint opened from now
// on draw from budget (nil: no daemon-wide budget) and caps each machine at
// perMachine open connections (0: DefaultMaxConnsPerMachine).
func (s *Server) SetLimits(budget *connlimit.Budget, perMachine int) {
	if perMachine <= 0 {
		perMachine = DefaultMaxConnsPerMachine
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.budget, s.perMachine = budget, perMachine
}

// Mounts returns the mounts that put the sockets of a machine whose socket
// directory is dir at MountDir/SocketName and FlyMountDir/FlySocketName. They
// are read-only: the machine can connect to its socket but cannot write to
// the host directory. Boot and restore must be given the same mounts.
func Mounts(dir string) []runtime.Mount {
	return []runtime.Mount{
		{Source: filepath.Join(dir, torporSubdir), Destination: MountDir, ReadOnly: true},
		{Source: filepath.Join(dir, flySubdir), Destination: FlyMountDir, ReadOnly: true},
	}
}

// Listen serves machine machineID of app on sockets in dir, a host directory
// private to the machine (created if missing), and returns Mounts(dir).
// Call it before every boot or restore and after a daemon restart; it is
// idempotent while the machine's endpoint is open with the same app and dir,
// and replaces it otherwise. dir must be absolute and lie inside a directory
// that other host users cannot enter: the sockets themselves are
// world-writable so that any user inside the machine can use them.
func (s *Server) Listen(app, machineID, dir string) ([]runtime.Mount, error) {
	if app == "" || machineID == "" {
		return nil, errors.New("guestapi: app and machine ID are required")
	}
	if !filepath.IsAbs(dir) {
		return nil, fmt.Errorf("guestapi: socket directory %q must be absolute", dir)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ctx.Err() != nil {
		return nil, errors.New("guestapi: server closed")
	}
	if e := s.endpoints[machineID]; e != nil {
		if e.app == app && e.dir == dir {
			return Mounts(dir), nil
		}
		e.close()
		delete(s.endpoints, machineID)
	}
	e := &endpoint{s: s, app: app, id: machineID, dir: dir, limits: connlimit.Limits{Budget: s.budget,
		Groups: []*connlimit.Group{connlimit.NewGroup(fmt.Sprintf("the in-machine API of machine %s", machineID), s.perMachine, 0)}}}
	if err := e.open(); err != nil {
		return nil, err
	}
	s.endpoints[machineID] = e
	return Mounts(dir), nil
}

// Close stops serving the machine and removes its sockets. The directory
// stays (it is the mount source of a sandbox that may still exist); the
// caller removes it with the machine's other files. Operations the machine
// already asked for still run. Closing an unknown machine does nothing.
func (s *Server) Close(machineID string) {
	s.mu.Lock()
	e := s.endpoints[machineID]
	delete(s.endpoints, machineID)
	s.mu.Unlock()
	if e != nil {
		e.close()
	}
}

// CloseAll closes every endpoint, drops operations still waiting for their
// delay, and waits for running operations to return.
func (s *Server) CloseAll() {
	s.mu.Lock()
	s.cancel()
	eps := s.endpoints
	s.endpoints = make(map[string]*endpoint)
	s.mu.Unlock()
	for _, e := range eps {
		e.close()
	}
	s.ops.Wait()
}

// socketPaths returns the host paths of the endpoint's two sockets.
func (e *endpoint) socketPaths() []string {
	return []string{
		filepath.Join(e.dir, torporSubdir, SocketName),
		filepath.Join(e.dir, flySubdir, FlySocketName),
	}
}

// open creates the socket directories and sockets and starts serving.
func (e *endpoint) open() error {
	for _, path := range e.socketPaths() {
		l, err := listenUnix(path)
		if err != nil {
			e.closeListeners()
			return err
		}
		e.listeners = append(e.listeners, connlimit.Listen(l, e.limits, connlimit.RefuseHTTP, e.s.log.With("machine", e.id)))
	}
	e.srv = &http.Server{
		Handler:           e,
		ReadHeaderTimeout: e.s.headerTimeout,
		IdleTimeout:       e.s.idleTimeout,
		ConnContext:       withConn,
		ErrorLog:          slog.NewLogLogger(e.s.log.Handler(), slog.LevelWarn),
	}
	for _, l := range e.listeners {
		go e.serve(l)
	}
	return nil
}

// serve serves l until the endpoint closes.
func (e *endpoint) serve(l net.Listener) {
	if err := e.srv.Serve(l); err != nil && !errors.Is(err, http.ErrServerClosed) {
		e.s.log.Warn("in-machine API stopped", "machine", e.id, "error", err)
	}
}

// close stops the server (which closes the listeners and connections) and
// removes the socket files.
func (e *endpoint) close() {
	if e.srv != nil {
		_ = e.srv.Close()
	}
	e.closeListeners()
	for _, path := range e.socketPaths() {
		_ = os.Remove(path)
	}
}

func (e *endpoint) closeListeners() {
	for _, l := range e.listeners {
		_ = l.Close()
	}
}

// listenUnix makes path's directory (0755: users inside the machine must
// be able to search it) and listens on a fresh socket at path, mode 0666.
func listenUnix(path string) (net.Listener, error) {
	if len(path) > maxSocketPath {
		return nil, fmt.Errorf("guestapi: socket path %s is longer than %d bytes", path, maxSocketPath)
	}
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("guestapi: %w", err)
	}
	if err := os.Chmod(dir, 0o755); err != nil {
		return nil, fmt.Errorf("guestapi: %w", err)
	}
	// A socket left by an earlier daemon refuses connections; replace it.
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("guestapi: %w", err)
	}
	l, err := net.Listen("unix", path)
	if err != nil {
		return nil, fmt.Errorf("guestapi: %w", err)
	}
	if err := os.Chmod(path, 0o666); err != nil {
		l.Close()
		return nil, fmt.Errorf("guestapi: %w", err)
	}
	return l, nil
}

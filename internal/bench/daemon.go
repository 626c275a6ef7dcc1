package bench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/torpor-dev/torpor/internal/client"
	"github.com/torpor-dev/torpor/internal/daemon"
	"github.com/torpor-dev/torpor/internal/machine"
)

// localDaemon is a daemon the benchmark runs in its own process, in a
// temporary directory it removes when stopped.
type localDaemon struct {
	dir     string // everything lives under it
	dataDir string
	socket  string
	logPath string
	cancel  context.CancelFunc
	done    chan error
	// machines is the daemon's machine manager, for the warm-sandbox
	// comparison (Config.Warm), which turns its budget on and off.
	machines *machine.Manager
}

// startDaemon runs a daemon in-process and waits until its API answers.
// The proxy listens on 127.0.0.1 only with cfg.ProxyWake; everything else
// talks to machines' addresses directly.
func startDaemon(ctx context.Context, cfg Config, reg *benchRegistry) (*localDaemon, error) {
	dir, err := os.MkdirTemp("", "torpor-bench-")
	if err != nil {
		return nil, err
	}
	d := &localDaemon{dir: dir, dataDir: filepath.Join(dir, "data"), socket: filepath.Join(dir, "api.sock"),
		logPath: filepath.Join(dir, "daemon.log"), done: make(chan error, 1)}
	logf, err := os.Create(d.logPath)
	if err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	dctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	d.cancel = cancel
	dcfg := daemon.Config{
		DataDir: d.dataDir, Socket: d.socket, RunDir: filepath.Join(dir, "run"),
		RunscPath: cfg.RunscPath, NetworkRange: cfg.NetworkRange, SuspendMemoryLimitMB: 2048, NoProxy: !cfg.ProxyWake, SyncSnapshots: cfg.SyncSnapshots, ClockGate: cfg.ClockGate,
		HostHugePages: !cfg.KeepHugePagePolicies, NoPagesReuse: cfg.NoPagesReuse,
		Logger: slog.New(slog.NewTextHandler(logf, nil)),
	}
	if reg != nil {
		dcfg.Images.InsecureRegistries = []string{reg.reg.Host}
	}
	sys, err := daemon.New(dctx, dcfg)
	if err != nil {
		cancel()
		logf.Close()
		os.RemoveAll(dir)
		return nil, err
	}
	d.machines = sys.Machines
	go func() {
		err := sys.Run(dctx)
		sys.Close()
		d.done <- err
		logf.Close()
	}()
	progress(cfg, "in-process daemon in %s (network %s)", dir, cfg.NetworkRange)
	if err := d.waitReady(); err != nil {
		cancel()
		<-d.done
		os.RemoveAll(dir)
		return nil, err
	}
	return d, nil
}

// waitReady waits up to 30 s for the daemon's API.
func (d *localDaemon) waitReady() error {
	c, err := client.New("unix://"+d.socket, "")
	if err != nil {
		return err
	}
	deadline := time.Now().Add(30 * time.Second)
	for c.Health(context.Background()) != nil {
		select {
		case err := <-d.done:
			d.done <- err
			return fmt.Errorf("in-process daemon exited: %v\n%s", err, d.logTail())
		default:
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("in-process daemon not ready after 30 s\n%s", d.logTail())
		}
		time.Sleep(20 * time.Millisecond)
	}
	return nil
}

// stop stops the daemon and removes its directory. Machines must have been
// destroyed before: sandboxes outlive their daemon. If some are left, the
// directory is kept and the error says so.
func (d *localDaemon) stop(progressOut io.Writer) error {
	d.cancel()
	err := <-d.done
	left, _ := os.ReadDir(filepath.Join(d.dataDir, "machines"))
	if len(left) > 0 {
		return errors.Join(err, fmt.Errorf("machines left in %s; not removing it (daemon log: %s)", d.dataDir, d.logPath))
	}
	if err != nil {
		return fmt.Errorf("in-process daemon: %w\n%s", err, d.logTail())
	}
	// runsc bind-mounts an empty network namespace at <root>/null-netns.
	if err := unix.Unmount(filepath.Join(d.dataDir, "runsc", "null-netns"), unix.MNT_DETACH); err != nil && !errors.Is(err, unix.ENOENT) && !errors.Is(err, unix.EINVAL) {
		return fmt.Errorf("unmount runsc's null-netns: %w", err)
	}
	if err := os.RemoveAll(d.dir); err != nil {
		return err
	}
	fmt.Fprintf(progressOut, "stopped the in-process daemon, removed %s\n", d.dir)
	return nil
}

// logTail is the end of the daemon's log, for error messages.
func (d *localDaemon) logTail() string {
	data, _ := os.ReadFile(d.logPath)
	lines := strings.Split(strings.TrimSpace(string(data)), "\n")
	return "daemon log (" + d.logPath + "):\n" + strings.Join(lines[max(0, len(lines)-20):], "\n")
}

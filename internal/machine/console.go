package machine

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"syscall"

	"github.com/torpor-dev/torpor/internal/logs"
	"github.com/torpor-dev/torpor/internal/model"
)

// A console drains a machine's stdout/stderr FIFO into its persistent log.
// The sandbox holds the FIFO open read-write, so its writes never fail while
// no daemon is reading; they wait in the pipe until a drainer returns.
type console struct {
	fifo *os.File
	done chan struct{}
}

func (m *Manager) consolePath(id string) string {
	return filepath.Join(m.machineDir(id), "console.fifo")
}
func (m *Manager) logDir(id string) string { return filepath.Join(m.machineDir(id), "logs") }

// machineLog returns the machine's open log, opening it on first use. A log
// lives as long as the machine does in this daemon, across suspend and resume.
func (m *Manager) machineLog(id string) (*logs.Log, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if l, ok := m.logs[id]; ok {
		return l, nil
	}
	if m.closed {
		return nil, errManagerClosed
	}
	cfg := m.cfg.Logs
	cfg.Logger = m.log.With("machine", id)
	l, err := logs.Open(m.logDir(id), cfg)
	if err != nil {
		return nil, err
	}
	m.logs[id] = l
	return l, nil
}

// Logs returns a machine's log, whatever the machine's state.
func (m *Manager) Logs(ctx context.Context, app, id string) (*logs.Log, error) {
	mc, err := m.machine(app, id)
	if err != nil {
		return nil, err
	}
	if mc.State == model.StateDestroyed {
		return nil, model.Errorf(model.KindNotFound, "machine %s is destroyed; its logs are gone", id)
	}
	return m.machineLog(id)
}

// ensureConsole makes the machine's console FIFO and starts draining it into
// the machine's log, once.
func (m *Manager) ensureConsole(id string) error {
	lg, err := m.machineLog(id)
	if err != nil {
		return err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if _, ok := m.consoles[id]; ok {
		return nil
	}
	if m.closed {
		return errManagerClosed
	}
	path := m.consolePath(id)
	if err := syscall.Mkfifo(path, 0o600); err != nil && !errors.Is(err, os.ErrExist) {
		return err
	}
	// Read-write: opening never blocks and reads never see EOF when the
	// sandbox goes away and comes back (suspend/resume).
	fifo, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		return err
	}
	c := &console{fifo: fifo, done: make(chan struct{})}
	m.consoles[id] = c
	go func() {
		defer close(c.done)
		if err := lg.Drain(fifo); err != nil && !errors.Is(err, os.ErrClosed) && !errors.Is(err, logs.ErrClosed) {
			m.log.Warn("console drain ended", "machine", id, "err", err)
		}
	}()
	return nil
}

// errManagerClosed refuses to open a console or log once Close has closed
// them all: an operation still running at Close (a restart policy's cold
// start) would otherwise leave them open, and the log's lock held.
var errManagerClosed = errors.New("the machine manager is shutting down")

// closeConsole stops draining the machine's console.
func (m *Manager) closeConsole(id string) {
	m.mu.Lock()
	c, ok := m.consoles[id]
	delete(m.consoles, id)
	m.mu.Unlock()
	if ok {
		c.fifo.Close()
		<-c.done
	}
}

// closeLog closes the machine's log; call it after closeConsole.
func (m *Manager) closeLog(id string) {
	m.mu.Lock()
	l, ok := m.logs[id]
	delete(m.logs, id)
	m.mu.Unlock()
	if ok {
		if err := l.Close(); err != nil {
			m.log.Warn("close log", "machine", id, "err", err)
		}
	}
}

package machine

import (
	"errors"
	"io"
	"os"
	"path/filepath"
	"syscall"
)

// A console drains a machine's stdout/stderr FIFO into its append-only log
// file. The sandbox holds the FIFO open read-write, so its writes never fail
// while no daemon is reading; they wait in the pipe until a drainer returns.
type console struct {
	fifo *os.File
	done chan struct{}
}

func (m *Manager) consolePath(id string) string {
	return filepath.Join(m.machineDir(id), "console.fifo")
}

// LogPath is the file that collects a machine's console output.
func (m *Manager) LogPath(id string) string { return filepath.Join(m.machineDir(id), "console.log") }

// ensureConsole makes the machine's console FIFO and starts draining it, once.
func (m *Manager) ensureConsole(id string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if _, ok := m.consoles[id]; ok {
		return nil
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
	out, err := os.OpenFile(m.LogPath(id), os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		fifo.Close()
		return err
	}
	c := &console{fifo: fifo, done: make(chan struct{})}
	m.consoles[id] = c
	go func() {
		defer close(c.done)
		defer out.Close()
		io.Copy(out, fifo)
	}()
	return nil
}

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

package fence

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// Subcommand is the hidden `torpor` subcommand that runs the watchdog.
const Subcommand = "fence-watch"

// Watchdog is the daemon's side of its watchdog process.
type Watchdog struct {
	mu   sync.Mutex
	w    *os.File // the pipe; nil once stopped
	cmd  *exec.Cmd
	done chan struct{}
}

// Start starts the watchdog of dataDir: exe Subcommand args..., in its own
// session (not killed with the daemon's process group or terminal), with
// the pipe as its fd 3 and its output appended to LogFile. A watchdog an
// earlier daemon left must be stopped first (StopPrevious).
func Start(dataDir, exe string, args ...string) (*Watchdog, error) {
	logf, err := os.OpenFile(filepath.Join(dataDir, LogFile), os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		return nil, err
	}
	defer logf.Close()
	r, w, err := os.Pipe()
	if err != nil {
		return nil, err
	}
	defer r.Close()
	cmd := exec.Command(exe, append([]string{Subcommand}, args...)...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.ExtraFiles = []*os.File{r}
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		w.Close()
		return nil, fmt.Errorf("start the fencing watchdog: %w", err)
	}
	wd := &Watchdog{w: w, cmd: cmd, done: make(chan struct{})}
	go func() { cmd.Wait(); close(wd.done) }()
	if err := os.WriteFile(filepath.Join(dataDir, PIDFile), []byte(strconv.Itoa(cmd.Process.Pid)+"\n"), 0o600); err != nil {
		wd.kill()
		return nil, err
	}
	return wd, nil
}

// PID is the watchdog's pid.
func (wd *Watchdog) PID() int { return wd.cmd.Process.Pid }

// Renewed tells the watchdog when the last successful lease renewal was
// sent. It never blocks the caller for long: a watchdog that does not read
// misses the line.
func (wd *Watchdog) Renewed(sent time.Time) {
	wd.send(fmt.Sprintf("renewed %d\n", sent.UnixNano()))
}

func (wd *Watchdog) send(line string) {
	wd.mu.Lock()
	defer wd.mu.Unlock()
	if wd.w == nil {
		return
	}
	wd.w.SetWriteDeadline(time.Now().Add(100 * time.Millisecond))
	wd.w.WriteString(line)
}

// Stop ends the watchdog on a clean shutdown (the daemon froze its
// machines itself): it says "stop" and waits for it to exit.
func (wd *Watchdog) Stop() {
	wd.send("stop\n")
	wd.mu.Lock()
	if wd.w != nil {
		wd.w.Close()
		wd.w = nil
	}
	wd.mu.Unlock()
	select {
	case <-wd.done:
	case <-time.After(5 * time.Second):
		wd.kill()
	}
}

func (wd *Watchdog) kill() {
	wd.cmd.Process.Kill()
	<-wd.done
}

// StopPrevious kills the watchdog an earlier daemon of dataDir left, if it
// still runs, and waits until it is gone: the new daemon guards the data
// directory from now on. It returns the pid it killed (0: none).
func StopPrevious(dataDir string) (int, error) {
	data, err := os.ReadFile(filepath.Join(dataDir, PIDFile))
	if errors.Is(err, os.ErrNotExist) {
		return 0, nil
	}
	if err != nil {
		return 0, err
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(data)))
	if err != nil || pid <= 0 {
		return 0, nil
	}
	fd, err := unix.PidfdOpen(pid, 0)
	if err != nil {
		return 0, nil // gone
	}
	defer unix.Close(fd)
	// The pid may have been reused since: kill only a watchdog of dataDir.
	if !isWatchdogOf(pid, dataDir) {
		return 0, nil
	}
	if err := unix.PidfdSendSignal(fd, unix.SIGKILL, nil, 0); err != nil && !errors.Is(err, unix.ESRCH) {
		return 0, fmt.Errorf("kill the previous fencing watchdog (pid %d): %w", pid, err)
	}
	fds := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
	if n, err := unix.Poll(fds, 5000); err != nil || n == 0 {
		return pid, fmt.Errorf("the previous fencing watchdog (pid %d) did not exit: %v", pid, err)
	}
	return pid, nil
}

// isWatchdogOf reports whether pid runs `... fence-watch ... --data-dir dataDir`.
func isWatchdogOf(pid int, dataDir string) bool {
	cmdline, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	if err != nil {
		return false
	}
	args := bytes.Split(bytes.TrimRight(cmdline, "\x00"), []byte{0})
	sub, dir := false, false
	for i, a := range args {
		if string(a) == Subcommand {
			sub = true
		}
		if string(a) == "--data-dir" && i+1 < len(args) && sameDir(string(args[i+1]), dataDir) {
			dir = true
		}
	}
	return sub && dir
}

func sameDir(a, b string) bool {
	a, _ = filepath.Abs(a)
	b, _ = filepath.Abs(b)
	return filepath.Clean(a) == filepath.Clean(b)
}

package gvisor

import (
	"context"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
)

// A Wait learns how a sandbox ended from `runsc wait`, which asks the
// sandbox over its control socket. If the sandbox ends before that process
// has connected (it takes ~10 ms to start, more on a loaded host), runsc can
// no longer tell how (it is not the sandbox's parent), and Wait reports
// exit code -1. A signal sent right after a start (Fly's signal or restart
// API, a stop) hit that window once the start had got fast: CI saw
// "exit_code -1" where SIGKILL's 137 was due. So Signal first waits, for
// waitConnectMax at most, until every Wait in progress on the sandbox has
// its `runsc wait` connected. Connected is not yet asked, though: a SIGKILL
// can still end the sandbox before the request is read, so a Wait also
// learns of a SIGKILL this driver delivered during it (markKilled) and
// reports that, where runsc lost the status (CI, once more: -1 after the
// first fix).

// waitConnectMax bounds how long Signal waits for the sandbox's Waits.
const waitConnectMax = 2 * time.Second

// waitReg is one Wait in progress: the pid of its `runsc wait`, once
// started, and whether Signal has since delivered SIGKILL to the sandbox's
// init.
type waitReg struct {
	mu     sync.Mutex
	pid    int
	killed bool
}

func (w *waitReg) started(pid int) {
	w.mu.Lock()
	w.pid = pid
	w.mu.Unlock()
}

func (w *waitReg) process() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.pid
}

func (w *waitReg) sigkilled() bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.killed
}

// markKilled records on every Wait in progress on sandbox id that its init
// was sent SIGKILL, which it cannot catch: if such a Wait's `runsc wait`
// still loses the status (the sandbox ended before its request was read:
// holding the socket, which awaitWaits checks, is not having asked), the
// Wait reports that death instead of -1 (waitFailed). Only Waits begun
// before the signal are marked, so a later incarnation of the same ID
// never inherits it.
func (r *Runtime) markKilled(id string) {
	r.mu.Lock()
	regs := slices.Clone(r.waits[id])
	r.mu.Unlock()
	for _, w := range regs {
		w.mu.Lock()
		w.killed = true
		w.mu.Unlock()
	}
}

func (r *Runtime) registerWait(id string) *waitReg {
	w := &waitReg{}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.waits == nil {
		r.waits = map[string][]*waitReg{}
	}
	r.waits[id] = append(r.waits[id], w)
	return w
}

func (r *Runtime) unregisterWait(id string, w *waitReg) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.waits[id] = slices.DeleteFunc(r.waits[id], func(x *waitReg) bool { return x == w })
	if len(r.waits[id]) == 0 {
		delete(r.waits, id)
	}
}

// awaitWaits returns once every Wait in progress on sandbox id has its
// `runsc wait` connected to the sandbox (or has ended), after max, or when
// ctx ends. With no Wait in progress it returns at once.
func (r *Runtime) awaitWaits(ctx context.Context, id string, max time.Duration) {
	deadline := time.Now().Add(max)
	for {
		r.mu.Lock()
		regs := slices.Clone(r.waits[id])
		r.mu.Unlock()
		ready := true
		for _, w := range regs {
			if pid := w.process(); pid == 0 || (!holdsSocket(pid) && !processExited(pid)) {
				ready = false
				break
			}
		}
		if ready || time.Now().After(deadline) || ctx.Err() != nil {
			return
		}
		time.Sleep(time.Millisecond)
	}
}

// holdsSocket reports whether process pid has a socket open. `runsc wait`
// opens none but its connection to the sandbox's control socket (its logs
// are files).
func holdsSocket(pid int) bool {
	dir := "/proc/" + strconv.Itoa(pid) + "/fd"
	fds, _ := os.ReadDir(dir)
	for _, fd := range fds {
		if target, err := os.Readlink(dir + "/" + fd.Name()); err == nil && strings.HasPrefix(target, "socket:") {
			return true
		}
	}
	return false
}

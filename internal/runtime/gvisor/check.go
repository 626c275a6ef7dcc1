package gvisor

import (
	"bytes"
	"context"
	"os"
	"strconv"
	"strings"

	"github.com/torpor-dev/torpor/internal/runtime"
)

var _ runtime.Checker = (*Runtime)(nil)

// sandboxProc is a sandbox's host process as `runsc state` last showed it:
// its pid and the start time the kernel gives it, which tells it apart
// from a later process with the same pid.
type sandboxProc struct {
	pid   int
	start string
}

// remember records the process of sandbox id that `runsc state` reported.
func (r *Runtime) remember(id string, pid int) {
	start, ok := procStart(pid)
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.procs == nil {
		r.procs = map[string]sandboxProc{}
	}
	if ok {
		r.procs[id] = sandboxProc{pid: pid, start: start}
	}
}

// Running implements runtime.Checker. It asks runsc when runsc answers,
// else looks at the sandbox process `runsc state` last showed (in /proc):
// so it can tell while runsc is missing or failing, as long as runsc has
// once reported the sandbox to this Runtime (Wait does, first thing).
func (r *Runtime) Running(ctx context.Context, id string) (bool, error) {
	st, err := r.state(ctx, id)
	if err == nil {
		return st != nil && st.Status != string(runtime.StatusStopped), nil
	}
	r.mu.Lock()
	p, ok := r.procs[id]
	r.mu.Unlock()
	if !ok {
		return false, err
	}
	start, alive := procStart(p.pid)
	return alive && start == p.start && !processExited(p.pid), nil
}

// procStart returns the start time (in clock ticks since boot) of process
// pid, and false if there is no such process.
func procStart(pid int) (string, bool) {
	if pid <= 0 {
		return "", false
	}
	data, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return "", false
	}
	// Fields after the command name (in parentheses): state is field 3,
	// starttime field 22.
	i := bytes.LastIndexByte(data, ')')
	if i < 0 {
		return "", false
	}
	fields := strings.Fields(string(data[i+1:]))
	if len(fields) < 20 {
		return "", false
	}
	return fields[19], true
}

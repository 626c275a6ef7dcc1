package gvisor

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"

	"github.com/torpor-dev/torpor/internal/runtime"
)

// The sandbox's control socket (issue 16: no runsc spawn on the resume
// path).
//
// Every runsc command about a running sandbox (exec, kill, wait) is a
// client of one server inside the sandbox: gVisor's uRPC, JSON calls over
// a Unix stream socket (runsc-<id>.sock in the runsc root directory) with
// file descriptors passed alongside (SCM_RIGHTS). Spawning runsc for a
// call costs 7-10 ms of runsc's own start (a Go binary, its config, the
// container's state file and lock) before the call itself, which takes
// about a millisecond. Exec and SignalAll therefore talk to the socket
// directly, with what runsc would send, and fall back to spawning runsc
// when the socket cannot be used (the fallback is logged once per
// sandbox).
//
// What this file owns: the wire format (one call per connection), reading
// the container's state file for the spec and the socket's path, and the
// three calls torpor makes: containerManager.ExecuteAsync, WaitPID and
// Signal. What it does not own: anything runsc does around a call that
// torpor does not need (pty handling, the --internal-pid-file, chown of
// stdio to a non-root user: torpor's stdio are pipes, which need no owner).

// Methods of runsc's control server (runsc/boot/controller.go).
const (
	ctlExecuteAsync = "containerManager.ExecuteAsync"
	ctlWaitPID      = "containerManager.WaitPID"
	ctlSignal       = "containerManager.Signal"
)

// Signal delivery modes of containerManager.Signal.
const (
	deliverToProcess      = 0
	deliverToAllProcesses = 1
	deliverToProcessGroup = 3
)

// ctlCall is a call as the server reads it.
type ctlCall struct {
	Method string `json:"method"`
	Arg    any    `json:"arg"`
}

// ctlResult is the server's answer.
type ctlResult struct {
	Success bool            `json:"success"`
	Err     string          `json:"err"`
	Result  json.RawMessage `json:"result"`
}

// ctlExecArgs is what containerManager.ExecuteAsync reads (gVisor's
// control.ExecArgs; the fields torpor sets). Files go as SCM_RIGHTS, in
// the order of GuestFDs.
type ctlExecArgs struct {
	Argv             []string `json:"argv"`
	Envv             []string `json:"envv"`
	WorkingDirectory string   `json:"wd"`
	KUID             uint32
	KGID             uint32
	ExtraKGIDs       []uint32
	NoNewPrivileges  bool
	Capabilities     *ctlCaps
	StdioIsPty       bool
	SupportTTYs      bool
	GuestFDs         []int
	ContainerID      string
}

// ctlCaps is gVisor's auth.TaskCapabilities: one bit per capability.
type ctlCaps struct {
	PermittedCaps   uint64
	InheritableCaps uint64
	EffectiveCaps   uint64
	BoundingCaps    uint64
	AmbientCaps     uint64
}

type ctlWaitPIDArgs struct {
	PID int32
	CID string
}

type ctlSignalArgs struct {
	CID   string
	Signo int32
	PID   int32
	Mode  int
}

// ctlState is what torpor reads of runsc's state file of a container.
type ctlState struct {
	Status    string      `json:"status"`
	Spec      *specs.Spec `json:"spec"`
	BundleDir string      `json:"bundleDir"`
	Sandbox   struct {
		ID                string `json:"id"`
		Pid               int    `json:"pid"`
		ControlSocketPath string `json:"controlSocketPath"`
	} `json:"sandbox"`
}

// errNoControl marks a call the control socket could not carry: the caller
// falls back to spawning runsc.
var errNoControl = errors.New("control socket unusable")

// controlState reads the state file of container id (a sandbox's root
// container: the sandbox ID is the same). A missing file is
// runtime.ErrNotFound.
func (r *Runtime) controlState(id string) (*ctlState, error) {
	if !idPattern.MatchString(id) {
		return nil, fmt.Errorf("%w: invalid sandbox ID %q", errNoControl, id)
	}
	data, err := os.ReadFile(filepath.Join(r.cfg.RootDir, id+"_sandbox:"+id+".state"))
	if errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("gvisor: sandbox %s: %w", id, runtime.ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("%w: %v", errNoControl, err)
	}
	var st ctlState
	if err := json.Unmarshal(data, &st); err != nil {
		return nil, fmt.Errorf("%w: state file of %s: %v", errNoControl, id, err)
	}
	if st.Spec == nil || st.Spec.Process == nil || st.Sandbox.ControlSocketPath == "" {
		return nil, fmt.Errorf("%w: state file of %s has no spec or control socket", errNoControl, id)
	}
	return &st, nil
}

// controlCall makes one call on the control socket at path: arg (with
// files passed alongside) in, the result decoded into result (if not nil).
// A server that answers with an error gives a *controlError; a socket that
// cannot be reached or that fails mid-call, errNoControl (wrapped).
func controlCall(ctx context.Context, path, method string, arg any, files []*os.File, result any) error {
	conn, err := dialControl(ctx, path)
	if err != nil {
		return err
	}
	defer conn.Close()
	// Only once ctx has ended (not at its deadline, which the socket could
	// reach a moment before ctx reports it), so that a call cut short
	// always reports ctx's error.
	stop := context.AfterFunc(ctx, func() { _ = conn.SetDeadline(time.Unix(1, 0)) })
	defer stop()

	data, err := json.Marshal(ctlCall{Method: method, Arg: arg})
	if err != nil {
		return fmt.Errorf("gvisor: control call %s: %w", method, err)
	}
	var oob []byte
	if len(files) > 0 {
		fds := make([]int, len(files))
		for i, f := range files {
			fds[i] = int(f.Fd())
		}
		oob = unix.UnixRights(fds...)
	}
	for len(data) > 0 {
		n, _, err := conn.WriteMsgUnix(data, oob, nil)
		if err != nil {
			return controlIOError(ctx, method, err)
		}
		data, oob = data[n:], nil // the files go with the first bytes only
	}
	var res ctlResult
	if err := json.NewDecoder(conn).Decode(&res); err != nil {
		// The call was sent: it may have been made, so this is no reason
		// to make it again another way.
		if ctx.Err() != nil {
			return fmt.Errorf("gvisor: control call %s: %w", method, ctx.Err())
		}
		return fmt.Errorf("gvisor: control call %s: no answer: %v", method, err)
	}
	if !res.Success {
		return &controlError{Method: method, Msg: res.Err}
	}
	if result != nil && len(res.Result) > 0 {
		if err := json.Unmarshal(res.Result, result); err != nil {
			return fmt.Errorf("gvisor: control call %s: result: %w", method, err)
		}
	}
	return nil
}

// controlIOError is the error of a call that could not be sent: the
// context's if it ended, else errNoControl.
func controlIOError(ctx context.Context, method string, err error) error {
	if ctx.Err() != nil {
		return fmt.Errorf("gvisor: control call %s: %w", method, ctx.Err())
	}
	return fmt.Errorf("%w: %s: %v", errNoControl, method, err)
}

// dialControl connects to the control socket at path. A path longer than
// a socket address can hold is reached through /proc/self/fd (as runsc
// does).
func dialControl(ctx context.Context, path string) (*net.UnixConn, error) {
	addr := path
	if len(path) >= len(unix.RawSockaddrUnix{}.Path) {
		fd, err := unix.Open(path, unix.O_PATH|unix.O_CLOEXEC, 0)
		if err != nil {
			return nil, fmt.Errorf("%w: %v", errNoControl, err)
		}
		defer unix.Close(fd)
		addr = "/proc/self/fd/" + strconv.Itoa(fd)
	}
	var d net.Dialer
	c, err := d.DialContext(ctx, "unix", addr)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", errNoControl, err)
	}
	return c.(*net.UnixConn), nil
}

// controlError is an error the control server answered with.
type controlError struct {
	Method string
	Msg    string
}

func (e *controlError) Error() string {
	return fmt.Sprintf("gvisor: %s: %s", e.Method, e.Msg)
}

// execExit is an exec'd process's wait status, as an error when it is
// not a zero exit: it has ExitCode, like *exec.ExitError.
type execExit struct{ ws syscall.WaitStatus }

func (e *execExit) Error() string {
	if e.ws.Signaled() {
		return "signal: " + e.ws.Signal().String()
	}
	return "exit status " + strconv.Itoa(e.ws.ExitStatus())
}

// ExitCode is the exit code, -1 if the process was killed by a signal.
func (e *execExit) ExitCode() int {
	if e.ws.Signaled() {
		return -1
	}
	return e.ws.ExitStatus()
}

// execArgs is what `runsc exec <id> argv...` would send for container st:
// the container's user, environment, working directory and capabilities
// (CAP_NET_RAW filtered out unless runsc runs with --net-raw).
func (r *Runtime) execArgs(st *ctlState, id string, argv []string) (*ctlExecArgs, error) {
	p := st.Spec.Process
	args := &ctlExecArgs{
		Argv: argv, Envv: p.Env, WorkingDirectory: p.Cwd,
		KUID: p.User.UID, KGID: p.User.GID, ExtraKGIDs: append([]uint32{}, p.User.AdditionalGids...),
		NoNewPrivileges: p.NoNewPrivileges, SupportTTYs: true, GuestFDs: []int{0, 1, 2}, ContainerID: id,
	}
	caps, err := capSets(p.Capabilities, slices.Contains(r.globalFlags(), "--net-raw"))
	if err != nil {
		return nil, err
	}
	args.Capabilities = caps
	return args, nil
}

// capSets converts a spec's capability names to bit sets.
func capSets(c *specs.LinuxCapabilities, netRaw bool) (*ctlCaps, error) {
	var caps ctlCaps
	if c == nil {
		return &caps, nil
	}
	for _, set := range []struct {
		names []string
		bits  *uint64
	}{
		{c.Bounding, &caps.BoundingCaps}, {c.Effective, &caps.EffectiveCaps},
		{c.Inheritable, &caps.InheritableCaps}, {c.Permitted, &caps.PermittedCaps},
		{c.Ambient, &caps.AmbientCaps},
	} {
		for _, n := range set.names {
			bit, ok := capBits[n]
			if !ok {
				return nil, fmt.Errorf("%w: unknown capability %q", errNoControl, n)
			}
			if bit == unix.CAP_NET_RAW && !netRaw {
				continue
			}
			*set.bits |= 1 << bit
		}
	}
	return &caps, nil
}

// capBits maps capability names to their numbers.
var capBits = map[string]uint{
	"CAP_CHOWN": unix.CAP_CHOWN, "CAP_DAC_OVERRIDE": unix.CAP_DAC_OVERRIDE, "CAP_DAC_READ_SEARCH": unix.CAP_DAC_READ_SEARCH,
	"CAP_FOWNER": unix.CAP_FOWNER, "CAP_FSETID": unix.CAP_FSETID, "CAP_KILL": unix.CAP_KILL, "CAP_SETGID": unix.CAP_SETGID,
	"CAP_SETUID": unix.CAP_SETUID, "CAP_SETPCAP": unix.CAP_SETPCAP, "CAP_LINUX_IMMUTABLE": unix.CAP_LINUX_IMMUTABLE,
	"CAP_NET_BIND_SERVICE": unix.CAP_NET_BIND_SERVICE, "CAP_NET_BROADCAST": unix.CAP_NET_BROADCAST,
	"CAP_NET_ADMIN": unix.CAP_NET_ADMIN, "CAP_NET_RAW": unix.CAP_NET_RAW, "CAP_IPC_LOCK": unix.CAP_IPC_LOCK,
	"CAP_IPC_OWNER": unix.CAP_IPC_OWNER, "CAP_SYS_MODULE": unix.CAP_SYS_MODULE, "CAP_SYS_RAWIO": unix.CAP_SYS_RAWIO,
	"CAP_SYS_CHROOT": unix.CAP_SYS_CHROOT, "CAP_SYS_PTRACE": unix.CAP_SYS_PTRACE, "CAP_SYS_PACCT": unix.CAP_SYS_PACCT,
	"CAP_SYS_ADMIN": unix.CAP_SYS_ADMIN, "CAP_SYS_BOOT": unix.CAP_SYS_BOOT, "CAP_SYS_NICE": unix.CAP_SYS_NICE,
	"CAP_SYS_RESOURCE": unix.CAP_SYS_RESOURCE, "CAP_SYS_TIME": unix.CAP_SYS_TIME, "CAP_SYS_TTY_CONFIG": unix.CAP_SYS_TTY_CONFIG,
	"CAP_MKNOD": unix.CAP_MKNOD, "CAP_LEASE": unix.CAP_LEASE, "CAP_AUDIT_WRITE": unix.CAP_AUDIT_WRITE,
	"CAP_AUDIT_CONTROL": unix.CAP_AUDIT_CONTROL, "CAP_SETFCAP": unix.CAP_SETFCAP, "CAP_MAC_OVERRIDE": unix.CAP_MAC_OVERRIDE,
	"CAP_MAC_ADMIN": unix.CAP_MAC_ADMIN, "CAP_SYSLOG": unix.CAP_SYSLOG, "CAP_WAKE_ALARM": unix.CAP_WAKE_ALARM,
	"CAP_BLOCK_SUSPEND": unix.CAP_BLOCK_SUSPEND, "CAP_AUDIT_READ": unix.CAP_AUDIT_READ, "CAP_PERFMON": unix.CAP_PERFMON,
	"CAP_BPF": unix.CAP_BPF, "CAP_CHECKPOINT_RESTORE": unix.CAP_CHECKPOINT_RESTORE,
}

// execOutputDrain bounds how long controlExec reads output after the
// process exited: a child it left behind may hold the pipe open.
const execOutputDrain = 100 * time.Millisecond

// execStartTimeout bounds the call that starts an exec'd process.
const execStartTimeout = 10 * time.Second

// controlExec runs argv in sandbox id through the control socket and
// returns its combined output, as Exec does. errNoControl (wrapped) means
// nothing was started: the caller may spawn runsc instead.
func (r *Runtime) controlExec(ctx context.Context, id string, argv, env []string) ([]byte, error) {
	st, err := r.controlState(id)
	if err != nil {
		return nil, err
	}
	if st.Status != "running" {
		return nil, fmt.Errorf("%w: sandbox %s is %s", errNoControl, id, st.Status)
	}
	args, err := r.execArgs(st, id, argv)
	if err != nil {
		return nil, err
	}
	args.Envv = mergeEnv(args.Envv, env)
	devnull, err := os.Open(os.DevNull)
	if err != nil {
		return nil, fmt.Errorf("gvisor: %w", err)
	}
	defer devnull.Close()
	pr, pw, err := os.Pipe()
	if err != nil {
		return nil, fmt.Errorf("gvisor: %w", err)
	}
	defer pr.Close()
	sock := st.Sandbox.ControlSocketPath
	// The start is not cut short by ctx: a call cut off after the server
	// got it may have started the process, and then only its pid (the
	// answer) lets Exec kill it. ctx is honoured once the pid is known.
	sctx, scancel := context.WithTimeout(context.WithoutCancel(ctx), execStartTimeout)
	var pid int32
	err = controlCall(sctx, sock, ctlExecuteAsync, args, []*os.File{devnull, pw, pw}, &pid)
	scancel()
	pw.Close() // the process has its own copy
	if err != nil {
		var ce *controlError
		if errors.As(err, &ce) {
			// As runsc exec, which prints why on its stderr: the output
			// says why nothing ran (a missing binary, say).
			return []byte(ce.Msg + "\n"), err
		}
		return nil, err
	}
	out := &tailBuffer{max: maxExecOutput}
	copied := make(chan struct{})
	go func() {
		defer close(copied)
		_, _ = io.Copy(out, pr)
	}()
	var ws uint32
	werr := ctx.Err()
	if werr == nil {
		werr = controlCall(ctx, sock, ctlWaitPID, ctlWaitPIDArgs{PID: pid, CID: id}, nil, &ws)
	}
	switch {
	case werr != nil && ctx.Err() != nil:
		werr = fmt.Errorf("gvisor: exec'd pid %d: %w", pid, ctx.Err())
	case errors.Is(werr, errNoControl):
		// The process runs: the caller must not start it again (%v drops
		// the errNoControl class).
		werr = fmt.Errorf("gvisor: waiting for exec'd pid %d: %v", pid, werr)
	}
	if werr != nil {
		// Cancelled, or no longer watched: kill the process's group inside
		// the sandbox (it leads one: an exec'd process has no parent
		// there), as Exec does.
		kctx, cancel := context.WithTimeout(context.Background(), execKillTimeout)
		kerr := controlCall(kctx, sock, ctlSignal, ctlSignalArgs{CID: id, Signo: int32(unix.SIGKILL), PID: pid, Mode: deliverToProcessGroup}, nil, nil)
		if kerr != nil {
			kerr = controlCall(kctx, sock, ctlSignal, ctlSignalArgs{CID: id, Signo: int32(unix.SIGKILL), PID: pid, Mode: deliverToProcess}, nil, nil)
		}
		cancel()
		werr = errors.Join(werr, kerr)
	}
	_ = pr.SetReadDeadline(time.Now().Add(execOutputDrain))
	<-copied
	e := &Error{Subcommand: "exec", Args: argv}
	switch {
	case werr != nil:
		e.Err = werr
		if _, serr := r.controlState(id); errors.Is(serr, runtime.ErrNotFound) {
			return out.Bytes(), fmt.Errorf("%w: %w", runtime.ErrNotFound, e)
		}
		return out.Bytes(), e
	case syscall.WaitStatus(ws) != 0:
		e.Err, e.Detail = &execExit{ws: syscall.WaitStatus(ws)}, tail(out.Bytes(), 512)
		return out.Bytes(), e
	}
	return out.Bytes(), nil
}

// controlSignalAll sends signal to every process of sandbox id, as `runsc
// kill --all` does.
func (r *Runtime) controlSignalAll(ctx context.Context, id string, signal string) error {
	sig, ok := signalNumber(signal)
	if !ok {
		return fmt.Errorf("%w: signal %q", errNoControl, signal)
	}
	st, err := r.controlState(id)
	if err != nil {
		return err
	}
	return controlCall(ctx, st.Sandbox.ControlSocketPath, ctlSignal, ctlSignalArgs{CID: id, Signo: int32(sig), Mode: deliverToAllProcesses}, nil, nil)
}

// signalNumber parses "SIGCONT", "CONT" or "18".
func signalNumber(s string) (unix.Signal, bool) {
	if n, err := strconv.Atoi(s); err == nil && n > 0 && n < 65 {
		return unix.Signal(n), true
	}
	name := strings.ToUpper(s)
	if !strings.HasPrefix(name, "SIG") {
		name = "SIG" + name
	}
	sig := unix.SignalNum(name)
	return sig, sig != 0
}

// controlFallback logs, once per sandbox, that a call (what) spawns runsc
// because the control socket could not be used (why).
func (r *Runtime) controlFallback(id, what string, why error) {
	r.mu.Lock()
	logged := r.fellBack[id]
	if r.fellBack == nil {
		r.fellBack = map[string]bool{}
	}
	r.fellBack[id] = true
	r.mu.Unlock()
	if logged || errors.Is(why, runtime.ErrNotFound) {
		return
	}
	log := r.cfg.Log
	if log == nil {
		log = slog.Default()
	}
	log.Warn("gvisor: spawning runsc: the sandbox's control socket cannot be used", "sandbox", id, "call", what, "err", why)
}

// mergeEnv is base with env's KEY=VALUE entries added, an entry of env
// replacing base's of the same key (runsc exec --env does the same).
func mergeEnv(base, env []string) []string {
	if len(env) == 0 {
		return base
	}
	out := make([]string, 0, len(base)+len(env))
	for _, kv := range base {
		k, _, _ := strings.Cut(kv, "=")
		if !slices.ContainsFunc(env, func(e string) bool { return strings.HasPrefix(e, k+"=") }) {
			out = append(out, kv)
		}
	}
	return append(out, env...)
}

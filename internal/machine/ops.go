package machine

import (
	"context"
	"errors"
	"fmt"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/torpor-dev/torpor/internal/model"
	"github.com/torpor-dev/torpor/internal/runtime"
	"github.com/torpor-dev/torpor/internal/shellwords"
	"github.com/torpor-dev/torpor/internal/store"
)

// Operations of Fly's Machines API beyond the lifecycle: restart, signal,
// exec, ps, metadata, versions, filtered lists and waits.

// Restart stops a started machine as a stop would (req.ForceStop: kills it
// at once) and cold-starts it; a suspended machine's snapshot is discarded
// and it is cold-started (a restart gives a fresh process).
func (m *Manager) Restart(ctx context.Context, app, id string, req model.RestartRequest) error {
	stop := model.StopRequest{Signal: req.Signal, Timeout: req.Timeout}
	if req.ForceStop {
		stop = model.StopRequest{Signal: "SIGKILL", Timeout: model.Duration{Duration: time.Second}}
	}
	if err := checkStopRequest(&stop); err != nil {
		return err
	}
	ctx, mc, end, err := m.begin(ctx, app, id)
	if err != nil {
		return err
	}
	defer end()
	m.endRestarts(id) // the user's word overrides the restart policy's
	details := &model.RestartDetails{Requested: true, Signal: stop.Signal, ForceStop: req.ForceStop}
	switch mc.State {
	case model.StateStarted:
		if _, err := m.commit(id, nil, event(model.EventRestart, "restarting", model.SourceOf(ctx), details)); err != nil {
			return err
		}
		if err := m.stopRunning(ctx, mc, stop); err != nil {
			return err
		}
	case model.StateSuspended:
		if _, err := m.commit(id, nil, event(model.EventRestart, "restarting", model.SourceOf(ctx), details)); err != nil {
			return err
		}
		if err := m.discardSuspended(ctx, mc, model.EventStop); err != nil {
			return err
		}
	default:
		return model.Errorf(model.KindConflict, "machine %s is %s; only a started or suspended machine can be restarted (start it instead)", id, mc.State)
	}
	mc, err = m.machine(app, id)
	if err != nil {
		return err
	}
	_, err = m.coldStart(ctx, mc, nil)
	return err
}

// Signal sends a signal (a name such as "SIGTERM" or "term", or a number)
// to a started machine's init process. It is not an operation a lease
// guards: Fly's clients send no nonce with it.
func (m *Manager) Signal(ctx context.Context, app, id, signal string) error {
	name, err := signalOf(signal)
	if err != nil {
		return err
	}
	mc, unlock, err := m.lockMachine(ctx, app, id)
	if err != nil {
		return err
	}
	defer unlock()
	if mc.State != model.StateStarted {
		return model.Errorf(model.KindConflict, "machine %s is %s; only a started machine can be signalled", id, mc.State)
	}
	ctx, cancel := detach(ctx)
	defer cancel()
	if err := m.rt.Signal(ctx, sandboxID(id), name); err != nil {
		if errors.Is(err, runtime.ErrNotFound) {
			return model.Errorf(model.KindConflict, "machine %s has no running sandbox", id)
		}
		return model.Wrap(model.KindInternal, err, "signal")
	}
	return nil
}

// lockMachine takes the machine's operation lock and loads the machine, for
// operations no lease guards (begin is for those it does).
func (m *Manager) lockMachine(ctx context.Context, app, id string) (model.Machine, func(), error) {
	unlock, err := m.lock(ctx, id)
	if err != nil {
		return model.Machine{}, nil, err
	}
	mc, err := m.machine(app, id)
	if err != nil {
		unlock()
		return mc, nil, err
	}
	return mc, unlock, nil
}

// signalOf returns the canonical name of a signal given by name or number.
func signalOf(s string) (string, error) {
	if s == "" {
		return "", invalid("signal is required (a name such as \"SIGTERM\" or a number)")
	}
	if n, err := strconv.Atoi(s); err == nil {
		name := unix.SignalName(unix.Signal(n))
		if name == "" {
			return "", invalid("signal: unknown signal number %d", n)
		}
		return name, nil
	}
	name, err := stopSignal(s)
	if err != nil {
		return "", invalid("signal: %v", err)
	}
	return name, nil
}

// Exec bounds.
const (
	defaultExecTimeout = 30
	maxExecTimeout     = 600
	// MaxExecOutput bounds what an exec answer keeps of stdout and of
	// stderr each (their last bytes).
	MaxExecOutput = 1 << 20
	maxExecStdin  = 256 << 10
)

// Exec runs a command in a started machine, as the machine's init runs (its
// environment, user and working directory), and returns its output and
// exit code. It takes no lock: a long command must not hold up a stop.
func (m *Manager) Exec(ctx context.Context, app, id string, req model.ExecRequest) (model.ExecResponse, error) {
	args, err := execArgs(req)
	if err != nil {
		return model.ExecResponse{}, err
	}
	timeout := req.Timeout
	switch {
	case timeout == 0:
		timeout = defaultExecTimeout
	case timeout < 0 || timeout > maxExecTimeout:
		return model.ExecResponse{}, invalid("timeout must be between 1 and %d seconds, got %d", maxExecTimeout, timeout)
	}
	if len(req.Stdin) > maxExecStdin {
		return model.ExecResponse{}, invalid("stdin must be at most %d bytes, got %d", maxExecStdin, len(req.Stdin))
	}
	mc, err := m.machine(app, id)
	if err != nil {
		return model.ExecResponse{}, err
	}
	if mc.State != model.StateStarted {
		return model.ExecResponse{}, model.Errorf(model.KindConflict, "machine %s is %s; commands run only in a started machine", id, mc.State)
	}
	rctx, cancel := context.WithTimeout(ctx, time.Duration(timeout)*time.Second)
	defer cancel()
	res, err := m.rt.Run(rctx, sandboxID(id), runtime.Command{Args: args, Stdin: []byte(req.Stdin), MaxOutput: MaxExecOutput})
	switch {
	case err == nil:
	case errors.Is(rctx.Err(), context.DeadlineExceeded) && ctx.Err() == nil:
		return model.ExecResponse{}, model.Errorf(model.KindTimeout, "command %q timed out after %ds and was killed", args[0], timeout)
	case errors.Is(err, runtime.ErrNotFound):
		return model.ExecResponse{}, model.Errorf(model.KindConflict, "machine %s has no running sandbox", id)
	case ctx.Err() != nil:
		return model.ExecResponse{}, model.Errorf(model.KindUnavailable, "exec in machine %s cancelled: %v", id, ctx.Err())
	default:
		return model.ExecResponse{}, model.Wrap(model.KindInvalid, err, fmt.Sprintf("command %q could not be run", args[0]))
	}
	return model.ExecResponse{ExitCode: res.ExitCode, ExitSignal: res.Signal, Truncated: res.Truncated,
		Stdout: strings.ToValidUTF8(string(res.Stdout), "\uFFFD"), Stderr: strings.ToValidUTF8(string(res.Stderr), "\uFFFD")}, nil
}

// execArgs is the command of an exec request: command, else cmd split into
// words.
func execArgs(req model.ExecRequest) ([]string, error) {
	args := req.Command
	field := "command"
	if len(args) == 0 && req.Cmd != "" {
		var err error
		if args, err = shellwords.Split(req.Cmd); err != nil {
			return nil, invalid("cmd: %v", err)
		}
		field = "cmd"
	}
	switch {
	case len(req.Command) > 0 && req.Cmd != "":
		return nil, invalid("give command or cmd, not both")
	case len(args) == 0 || args[0] == "":
		return nil, invalid("command is required: the program and its arguments, e.g. [\"ls\", \"-l\"]")
	}
	return args, checkArgs(field, args)
}

// processKeys are the orders model.ProcessSort.By may name.
var processKeys = map[string]func(a, b model.ProcessStat) int{
	"pid":       func(a, b model.ProcessStat) int { return a.PID - b.PID },
	"cpu":       func(a, b model.ProcessStat) int { return cmpUint(a.CPU, b.CPU) },
	"rss":       func(a, b model.ProcessStat) int { return cmpUint(a.RSS, b.RSS) },
	"stime":     func(a, b model.ProcessStat) int { return cmpUint(a.Stime, b.Stime) },
	"rtime":     func(a, b model.ProcessStat) int { return cmpUint(a.Rtime, b.Rtime) },
	"command":   func(a, b model.ProcessStat) int { return strings.Compare(a.Command, b.Command) },
	"directory": func(a, b model.ProcessStat) int { return strings.Compare(a.Directory, b.Directory) },
}

func cmpUint(a, b uint64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// CheckProcessSort checks a sort order.
func CheckProcessSort(s model.ProcessSort) error {
	if _, ok := processKeys[s.By]; !ok && s.By != "" {
		keys := make([]string, 0, len(processKeys))
		for k := range processKeys {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		return invalid("invalid query parameter sort_by %q: must be one of %s", s.By, strings.Join(keys, ", "))
	}
	return nil
}

// Processes lists a started machine's processes in Fly's shape: stime is
// the CPU time spent in the kernel and rtime all CPU time, in
// milliseconds; cpu is the percentage of one CPU used over the process's
// life; rss is in bytes.
func (m *Manager) Processes(ctx context.Context, app, id string, order model.ProcessSort) ([]model.ProcessStat, error) {
	if err := CheckProcessSort(order); err != nil {
		return nil, err
	}
	mc, err := m.machine(app, id)
	if err != nil {
		return nil, err
	}
	if mc.State != model.StateStarted {
		return nil, model.Errorf(model.KindConflict, "machine %s is %s; only a started machine has processes", id, mc.State)
	}
	procs, err := m.rt.Processes(ctx, sandboxID(id))
	if errors.Is(err, runtime.ErrNotFound) {
		return nil, model.Errorf(model.KindConflict, "machine %s has no running sandbox", id)
	}
	if err != nil {
		return nil, model.Wrap(model.KindInternal, err, "list processes")
	}
	out := make([]model.ProcessStat, len(procs))
	for i, p := range procs {
		socks := make([]model.ListenSocket, len(p.Listen))
		for j, s := range p.Listen {
			socks[j] = model.ListenSocket{Proto: s.Proto, Address: s.Address}
		}
		out[i] = model.ProcessStat{PID: p.PID, Command: p.Command, Directory: p.Cwd, CPU: p.CPU, RSS: p.RSS,
			Stime: p.SystemTime, Rtime: p.CPUTime, ListenSockets: socks}
	}
	cmp := processKeys["pid"]
	if order.By != "" {
		cmp = processKeys[order.By]
	}
	slices.SortStableFunc(out, func(a, b model.ProcessStat) int {
		if order.Desc {
			return cmp(b, a)
		}
		return cmp(a, b)
	})
	return out, nil
}

// metadataKeyRe is the rule of config.metadata keys set one by one.
var metadataKeyRe = regexp.MustCompile(`^[A-Za-z0-9_.-]{1,128}$`)

// maxMetadataValue bounds a metadata value.
const maxMetadataValue = 4096

// CheckMetadataKey checks a metadata key given as field.
func CheckMetadataKey(field, key string) error {
	if !metadataKeyRe.MatchString(key) {
		return invalid("invalid %s %q: must be 1-128 letters, digits, '_', '.' or '-'", field, key)
	}
	return nil
}

// Metadata returns the machine's config.metadata.
func (m *Manager) Metadata(ctx context.Context, app, id string) (map[string]string, error) {
	mc, err := m.machine(app, id)
	if mc.Config.Metadata == nil {
		mc.Config.Metadata = map[string]string{}
	}
	return mc.Config.Metadata, err
}

// SetMetadata sets one key of the machine's config.metadata (deletes it
// when del), in the machine's current config version, without a restart.
// Fly's clients send no lease nonce with it, so a lease does not guard it.
func (m *Manager) SetMetadata(ctx context.Context, app, id, key, value string, del bool) error {
	if err := CheckMetadataKey("key", key); err != nil {
		return err
	}
	if len(value) > maxMetadataValue || strings.ContainsRune(value, 0) {
		return invalid("value must be at most %d bytes without NUL bytes", maxMetadataValue)
	}
	mc, unlock, err := m.lockMachine(ctx, app, id)
	if err != nil {
		return err
	}
	defer unlock()
	if mc.State == model.StateDestroyed || mc.State == model.StateDestroying {
		return model.Errorf(model.KindConflict, "machine %s is %s", id, mc.State)
	}
	details := &model.MetadataDetails{Key: key, Value: value, Deleted: del}
	_, err = m.commit(id, func(tx *store.Tx, rec *model.Machine) error {
		md := map[string]string{}
		for k, v := range rec.Config.Metadata {
			md[k] = v
		}
		if del {
			delete(md, key)
		} else {
			md[key] = value
		}
		if len(md) == 0 {
			md = nil
		}
		rec.Config.Metadata = md
		if err := checkConfigBytes(&rec.Config); err != nil {
			return err
		}
		return tx.PutConfig(id, rec.Version, rec.Config, rec.ImageRef)
	}, event(model.EventMetadata, "updated", model.SourceOf(ctx), details))
	return err
}

// Versions lists the machine's config versions, newest first.
func (m *Manager) Versions(ctx context.Context, app, id string) ([]model.MachineVersion, error) {
	var out []model.MachineVersion
	err := m.store.View(func(tx *store.Tx) error {
		if _, err := machineOf(tx, app, id); err != nil {
			return err
		}
		cfgs, err := tx.Configs(id)
		for v, cfg := range cfgs {
			out = append(out, model.MachineVersion{Version: v, UserConfig: cfg})
		}
		return err
	})
	sort.Slice(out, func(i, j int) bool { return out[i].Version > out[j].Version })
	return out, err
}

// ListMachines returns the app's machines that pass opts.
func (m *Manager) ListMachines(ctx context.Context, app string, opts model.ListOptions) ([]model.Machine, error) {
	var out []model.Machine
	err := m.store.View(func(tx *store.Tx) error {
		if _, err := tx.App(app); err != nil {
			return err
		}
		ms, err := tx.Machines(app)
		if err != nil {
			return err
		}
		now := time.Now()
		for _, mc := range ms {
			if !keeps(opts, mc) {
				continue
			}
			if opts.IncludeLeases {
				l, held, err := activeLease(tx, mc.ID, now)
				if err != nil {
					return err
				}
				if held {
					mc.Lease = &l
				}
			}
			out = append(out, mc)
		}
		return nil
	})
	return out, err
}

// keeps reports whether o lets mc through.
func keeps(o model.ListOptions, mc model.Machine) bool {
	switch {
	case mc.State == model.StateDestroyed && !o.IncludeDeleted:
		return false
	case o.Region != "" && mc.Region != o.Region:
		return false
	case len(o.States) > 0 && !slices.Contains(o.States, mc.State):
		return false
	}
	for k, v := range o.Metadata {
		if got, ok := mc.Config.Metadata[k]; !ok || got != v {
			return false
		}
	}
	return true
}

// CheckWaitState checks a wait target.
func CheckWaitState(s string) error {
	if model.State(s).Valid() || s == model.WaitSettled || s == model.WaitFailed {
		return nil
	}
	return invalid("invalid query parameter state %q: must be a machine state such as started, stopped, suspended or destroyed, or settled or failed", s)
}

// WaitFor blocks until the machine is as opts say, or ctx ends (a
// KindTimeout error when its deadline passed).
func (m *Manager) WaitFor(ctx context.Context, app, id string, opts model.WaitOptions) (model.Machine, error) {
	fromSeq, err := eventSeq(id, opts.FromEventID)
	if err != nil {
		return model.Machine{}, err
	}
	if opts.Version != "" {
		if err := m.knownVersion(app, id, opts.Version); err != nil {
			return model.Machine{}, err
		}
	}
	for {
		changed := m.changes(id)
		mc, err := m.machine(app, id)
		if err != nil {
			return mc, err
		}
		if opts.Version != "" && mc.Version != opts.Version {
			return mc, model.Errorf(model.KindConflict, "machine %s is at version %s now, not %s: it was updated since", id, mc.Version, opts.Version)
		}
		ok, err := m.reached(mc, opts.States, fromSeq)
		if err != nil || ok {
			return mc, err
		}
		select {
		case <-changed:
		case <-ctx.Done():
			return mc, model.Errorf(model.KindTimeout, "timed out waiting for machine %s to be %s; it is %s", id, strings.Join(opts.States, " or "), mc.State)
		}
	}
}

// reached reports whether mc is in one of states, after the event of
// sequence fromSeq when that is not 0.
func (m *Manager) reached(mc model.Machine, states []string, fromSeq uint64) (bool, error) {
	var latest []model.Event
	if fromSeq > 0 || slices.Contains(states, model.WaitFailed) {
		var err error
		if latest, err = m.events(mc.ID, 1); err != nil {
			return false, err
		}
	}
	if fromSeq > 0 {
		if len(latest) == 0 {
			return false, nil
		}
		if seq, err := eventSeq(mc.ID, latest[0].ID); err != nil || seq <= fromSeq {
			return false, nil
		}
	}
	for _, s := range states {
		switch {
		case s == model.WaitSettled && mc.State.Settled():
			return true, nil
		case s == model.WaitFailed && mc.State == model.StateStopped && len(latest) > 0 &&
			latest[0].Type == model.EventStart && latest[0].Status == "failed":
			return true, nil
		case model.State(s) == mc.State:
			return true, nil
		}
	}
	return false, nil
}

// eventSeq is the sequence number in an event ID of machine id ("ID-SEQ");
// 0 for "".
func eventSeq(id, eventID string) (uint64, error) {
	if eventID == "" {
		return 0, nil
	}
	rest, ok := strings.CutPrefix(eventID, id+"-")
	n, err := strconv.ParseUint(rest, 10, 64)
	if !ok || err != nil || n == 0 {
		return 0, invalid("invalid query parameter from_event_id %q: not an event of machine %s (IDs are %s-N)", eventID, id, id)
	}
	return n, nil
}

// knownVersion checks that v is one of the machine's config versions.
func (m *Manager) knownVersion(app, id, v string) error {
	return m.store.View(func(tx *store.Tx) error {
		if _, err := machineOf(tx, app, id); err != nil {
			return err
		}
		cfgs, err := tx.Configs(id)
		if err != nil {
			return err
		}
		if _, ok := cfgs[v]; !ok {
			return invalid("invalid query parameter version %q: machine %s has no such version", v, id)
		}
		return nil
	})
}

package machine

import (
	"cmp"
	"context"
	"slices"
	"sync"
	"time"

	"github.com/torpor-dev/torpor/internal/model"
	"github.com/torpor-dev/torpor/internal/runtime"
	"github.com/torpor-dev/torpor/internal/store"
)

// Warm sandboxes (issue 16).
//
// A resume spends 60-80 ms creating the sandbox before the runtime loads
// the image into it. With a driver that implements runtime.Precreator,
// the Manager creates the sandboxes of the suspended machines most likely
// to wake ahead of time, and a resume that finds its machine's sandbox
// precreated for exactly the spec it would restore (same config, console,
// network namespace, mounts) restores into it. What this file owns:
//
//   - the policy: which suspended machines get a precreated sandbox. At
//     most Config.WarmSandboxesMemoryMB / Config.WarmSandboxCostMB of them
//     (the budget, charged at a configured cost per sandbox: ~54 MiB
//     resident measured for gVisor, 64 MiB by default) and within what
//     --host-memory-mb leaves free of machines (hostMemoryFree: warm
//     sandboxes yield to machines), chosen among the
//     suspended machines with a sealed snapshot: first those with a
//     service the proxy autostarts (a request wakes them), then the most
//     recently suspended (the likeliest to be woken soon), then by ID;
//   - when: a background worker (never a request's goroutine) reconciles
//     the set after every suspend, warmRetry after every change that takes
//     a machine out of suspended (a slot frees; the delay keeps the next
//     create off the CPU while a resume finishes), when the budget changes
//     and once Recover has run at daemon start. It takes a machine's lock only
//     when it is free (a busy machine is left for the next round), and an
//     operation that finds the lock held by a precreate cancels it
//     (preemptWarm; a loaded host stretched one to a minute), so a
//     request waits for the worker at most for a create that had begun
//     (the driver lets it finish), and then gets its sandbox: a resume
//     restores into it, any other operation deletes it as usual;
//   - the bookkeeping (warmPool.entries), which a change of the machine
//     out of suspended drops (write in commit.go), and which the resume
//     takes.
//
// What it does not own: the sandbox itself (the driver's: Precreate,
// Restore into it, DiscardPrecreated and Kill, which deletes it like any
// other sandbox), and the snapshot invariants. A precreated sandbox holds
// no state of the machine, so nothing about the snapshot changes: it is
// claimed, restored at most once and discarded as before. Every operation
// that takes a suspended machine elsewhere deletes the sandbox with the
// machine's sandbox ID: stop and update (discardSuspended), destroy,
// forget (move, drain), a cold start (prepare), a failed restore; a
// daemon that dies with precreated sandboxes leaves them in runsc's state
// "created", and the next daemon's Recover kills every sandbox of a
// suspended machine. A precreated sandbox never used stays until one of
// these, or until the budget shrinks or another machine takes its slot.
//
// The network: a precreated gVisor sandbox has taken the machine's
// network namespace over (eth0's address moved into its netstack), so a
// resume into it repairs only the host side (Network.Adopt) instead of
// attaching again; a resume that cannot use it deletes it first and
// attaches as before.

// DefaultWarmSandboxCostMB is what one precreated sandbox is charged
// against the budget by default: gVisor's sandbox and gofer processes of a
// created, not yet restored sandbox held ~54 MiB resident here.
const DefaultWarmSandboxCostMB = 64

// warmPool is the Manager's set of precreated sandboxes.
type warmPool struct {
	mu       sync.Mutex
	budgetMB int
	costMB   int
	entries  map[string]warmEntry // machine ID →
	kick     chan struct{}        // wakes the worker (buffered 1)
	stop     chan struct{}        // closed by Close
	stopped  chan struct{}        // closed when the worker returns
	started  bool
	closed   bool

	// The precreate in progress, if any: an operation that wants the
	// machine's lock cancels it rather than wait for it (preemptWarm).
	busyID     string
	busyCancel context.CancelFunc
}

// warmEntry is one precreated sandbox.
type warmEntry struct {
	spec       runtime.Spec // as precreated
	snapshotID string       // the snapshot it was precreated for
	at         time.Time
}

// WarmStats is what the warm sandboxes take now, for metrics.
type WarmStats struct {
	Sandboxes   int
	MemoryBytes int64 // charged: Sandboxes × the configured cost
	BudgetBytes int64
}

// WarmStats reports the precreated sandboxes now.
func (m *Manager) WarmStats() WarmStats {
	w := &m.warm
	w.mu.Lock()
	defer w.mu.Unlock()
	return WarmStats{Sandboxes: len(w.entries), MemoryBytes: int64(len(w.entries)*w.costMB) << 20, BudgetBytes: int64(w.budgetMB) << 20}
}

// SetWarmBudget changes the memory budget of the warm sandboxes (MiB; 0
// disables them and deletes those there are, in the background).
func (m *Manager) SetWarmBudget(mb int) {
	m.warm.mu.Lock()
	m.warm.budgetMB = max(mb, 0)
	m.warm.mu.Unlock()
	m.kickWarm()
}

// precreator is the runtime as a runtime.Precreator, or nil.
func (m *Manager) precreator() runtime.Precreator {
	p, _ := m.rt.(runtime.Precreator)
	return p
}

// kickWarm asks the worker to reconcile the warm sandboxes, starting it on
// first use. It never blocks.
func (m *Manager) kickWarm() {
	w := &m.warm
	if m.precreator() == nil {
		return
	}
	w.mu.Lock()
	if w.closed || (w.budgetMB <= 0 && len(w.entries) == 0) {
		w.mu.Unlock()
		return
	}
	if !w.started {
		w.started = true
		w.kick, w.stop, w.stopped = make(chan struct{}, 1), make(chan struct{}), make(chan struct{})
		go m.warmWorker(w.kick, w.stop, w.stopped)
	}
	kick := w.kick
	w.mu.Unlock()
	select {
	case kick <- struct{}{}:
	default:
	}
}

// warmWorker reconciles the warm sandboxes at every kick until stop.
func (m *Manager) warmWorker(kick, stop, stopped chan struct{}) {
	defer close(stopped)
	ctx, cancel := context.WithCancel(model.WithSource(context.Background(), model.SourceFlyd))
	go func() { <-stop; cancel() }()
	for {
		select {
		case <-stop:
			return
		case <-kick:
		}
		m.reconcileWarm(ctx)
	}
}

// closeWarm stops the worker and deletes the precreated sandboxes (a
// stopped daemon leaves none behind; one that dies leaves them to the next
// daemon's Recover).
func (m *Manager) closeWarm() {
	w := &m.warm
	w.mu.Lock()
	if w.closed {
		w.mu.Unlock()
		return
	}
	w.closed = true
	started := w.started
	w.mu.Unlock()
	if started {
		close(w.stop)
		<-w.stopped
	}
	w.mu.Lock()
	ids := make([]string, 0, len(w.entries))
	for id := range w.entries {
		ids = append(ids, id)
	}
	w.mu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for _, id := range ids {
		unlock, ok := m.tryLock(id, time.Second)
		if !ok {
			continue // an operation holds it; it deletes or uses the sandbox
		}
		m.discardWarm(ctx, id)
		unlock()
	}
}

// warmLockWait is how long the worker waits for a machine's lock before
// it tries again later (warmRetry).
const (
	warmLockWait = time.Second
	warmRetry    = 2 * time.Second
)

// kickWarmLater kicks the worker after warmRetry (if there are warm
// sandboxes at all).
func (m *Manager) kickWarmLater() {
	w := &m.warm
	w.mu.Lock()
	off := w.closed || (w.budgetMB <= 0 && len(w.entries) == 0) || m.precreator() == nil
	w.mu.Unlock()
	if !off {
		time.AfterFunc(warmRetry, m.kickWarm)
	}
}

// tryLock takes machine id's lock if it is free now or within wait.
func (m *Manager) tryLock(id string, wait time.Duration) (unlock func(), ok bool) {
	m.mu.Lock()
	l, found := m.locks[id]
	if !found {
		l = make(chan struct{}, 1)
		m.locks[id] = l
	}
	m.mu.Unlock()
	select {
	case l <- struct{}{}:
	default:
		if wait <= 0 {
			return nil, false
		}
		t := time.NewTimer(wait)
		defer t.Stop()
		select {
		case l <- struct{}{}:
		case <-t.C:
			return nil, false
		}
	}
	m.mu.Lock()
	m.sources[id] = model.SourceFlyd
	m.mu.Unlock()
	return func() {
		m.mu.Lock()
		delete(m.sources, id)
		m.mu.Unlock()
		<-l
	}, true
}

// preemptWarm cancels the precreate of machine id's sandbox if one is in
// progress: the operation that calls it (it wants the machine's lock) does
// not wait behind a runsc create that a loaded host can stretch to many
// seconds. The cancelled create deletes what it made.
func (m *Manager) preemptWarm(id string) {
	w := &m.warm
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.busyID == id && w.busyCancel != nil {
		w.busyCancel()
	}
}

// takeWarm removes and returns machine id's entry, for its resume.
func (m *Manager) takeWarm(id string) (warmEntry, bool) {
	w := &m.warm
	w.mu.Lock()
	defer w.mu.Unlock()
	e, ok := w.entries[id]
	delete(w.entries, id)
	return e, ok
}

// putWarm records a precreated sandbox of machine id.
func (m *Manager) putWarm(id string, e warmEntry) {
	w := &m.warm
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.entries == nil {
		w.entries = map[string]warmEntry{}
	}
	w.entries[id] = e
}

// forgetWarm drops machine id's entry: its sandbox is deleted, or about
// to be, by the operation that moved the machine out of suspended.
func (m *Manager) forgetWarm(id string) {
	w := &m.warm
	w.mu.Lock()
	delete(w.entries, id)
	w.mu.Unlock()
}

// discardWarm deletes machine id's precreated sandbox, if it has one. The
// caller holds the machine's lock.
func (m *Manager) discardWarm(ctx context.Context, id string) {
	if _, ok := m.takeWarm(id); !ok {
		return
	}
	if err := m.precreator().DiscardPrecreated(ctx, sandboxID(id)); err != nil {
		m.log.Warn("delete a warm sandbox", "machine", id, "err", err)
	}
}

// warmCandidate is a suspended machine that could get a warm sandbox.
type warmCandidate struct {
	mc        model.Machine
	snap      model.Snapshot
	autostart bool
}

// warmCandidates lists the suspended machines with a restorable snapshot,
// in the policy's order (see above).
func (m *Manager) warmCandidates() ([]warmCandidate, error) {
	var cs []warmCandidate
	err := m.store.View(func(tx *store.Tx) error {
		ms, err := tx.Machines("")
		if err != nil {
			return err
		}
		for _, mc := range ms {
			if mc.State != model.StateSuspended {
				continue
			}
			snap, ok, err := tx.Snapshot(mc.ID)
			if err != nil {
				return err
			}
			if !ok || snap.State != model.SnapshotSealed || snap.Reason != "" || snap.BootGeneration != mc.BootGeneration {
				continue
			}
			cs = append(cs, warmCandidate{mc: mc, snap: snap, autostart: autostarted(mc.Config)})
		}
		return nil
	})
	slices.SortFunc(cs, compareWarm)
	return cs, err
}

// compareWarm orders candidates: autostarted first, then the most
// recently suspended, then by ID.
func compareWarm(a, b warmCandidate) int {
	if a.autostart != b.autostart {
		if a.autostart {
			return -1
		}
		return 1
	}
	if c := b.snap.CreatedAt.Compare(a.snap.CreatedAt); c != 0 {
		return c
	}
	return cmp.Compare(a.mc.ID, b.mc.ID)
}

// autostarted reports whether the proxy starts the machine for a request:
// it has a service whose autostart is not off.
func autostarted(cfg model.MachineConfig) bool {
	for _, s := range cfg.Services {
		if s.Autostart == nil || *s.Autostart {
			return true
		}
	}
	return false
}

// hostMemoryFree is what --host-memory-mb leaves to warm sandboxes: the
// host's memory for machines less that of every machine holding some
// (admit's sum), in MiB; false when the host's memory is not limited.
// Warm sandboxes yield to machines: admission does not count them, and a
// start that takes their room makes the next reconcile (kicked after it)
// delete as many as no longer fit.
func (m *Manager) hostMemoryFree() (int, bool) {
	if m.cfg.HostMemoryMB <= 0 {
		return 0, false
	}
	used := 0
	err := m.store.View(func(tx *store.Tx) error {
		ms, err := tx.Machines("")
		for _, o := range ms {
			if holdsResources(o.State) {
				used += o.Config.Guest.MemoryMB
			}
		}
		return err
	})
	if err != nil {
		m.log.Warn("warm sandboxes: list the machines", "err", err)
		return 0, true
	}
	return m.cfg.HostMemoryMB - used, true
}

// reconcileWarm brings the set of warm sandboxes in line with the policy:
// it deletes those of machines out of the chosen set (or whose snapshot
// changed), then precreates those missing, one at a time.
func (m *Manager) reconcileWarm(ctx context.Context) {
	cs, err := m.warmCandidates()
	if err != nil {
		m.log.Warn("warm sandboxes: list the suspended machines", "err", err)
		return
	}
	w := &m.warm
	w.mu.Lock()
	budget, cost := w.budgetMB, w.costMB
	w.mu.Unlock()
	if free, ok := m.hostMemoryFree(); ok {
		budget = min(budget, free)
	}
	n := 0
	if cost > 0 {
		n = max(budget, 0) / cost
	}
	want := map[string]warmCandidate{}
	for _, c := range cs[:min(n, len(cs))] {
		want[c.mc.ID] = c
	}
	w.mu.Lock()
	var drop []string
	for id, e := range w.entries {
		if c, ok := want[id]; !ok || c.snap.ID != e.snapshotID {
			drop = append(drop, id)
		}
	}
	w.mu.Unlock()
	for _, id := range drop {
		if ctx.Err() != nil {
			return
		}
		if unlock, ok := m.tryLock(id, 0); ok {
			m.discardWarm(ctx, id)
			unlock()
		}
	}
	for _, c := range cs[:min(n, len(cs))] {
		if ctx.Err() != nil {
			return
		}
		w.mu.Lock()
		_, have := w.entries[c.mc.ID]
		w.mu.Unlock()
		if have {
			continue
		}
		// The operation that kicked the worker (a suspend) may still hold
		// the lock for a moment; one busy for longer (a resume?) is left
		// for a later round. The precreate is marked busy before the lock
		// is taken, so an operation that finds the lock taken by it
		// always cancels it (preemptWarm) instead of waiting.
		pctx, cancel := context.WithCancel(ctx)
		w.mu.Lock()
		w.busyID, w.busyCancel = c.mc.ID, cancel
		w.mu.Unlock()
		unlock, ok := m.tryLock(c.mc.ID, warmLockWait)
		var err error
		if ok && pctx.Err() == nil {
			err = m.precreate(pctx, c.mc.ID, c.snap.ID)
		}
		preempted := pctx.Err() != nil && ctx.Err() == nil
		w.mu.Lock()
		w.busyID, w.busyCancel = "", nil
		w.mu.Unlock()
		cancel()
		switch {
		case !ok:
			m.kickWarmLater()
			continue
		case preempted && err == nil:
			// The create had begun and ran to its end (a driver does not
			// cut one short): the operation that waited for it gets it.
			m.log.Debug("warm sandboxes: precreate finished while an operation waited; kept for it", "machine", c.mc.ID)
		case preempted:
			m.log.Debug("warm sandboxes: precreate gave way to an operation", "machine", c.mc.ID, "err", err)
		case err != nil:
			m.log.Warn("warm sandboxes: precreate", "machine", c.mc.ID, "err", err)
		}
		unlock()
	}
}

// precreate creates machine id's sandbox ahead of its resume, if the
// machine is still suspended with snapshot snapID. The caller holds the
// machine's lock.
func (m *Manager) precreate(ctx context.Context, id, snapID string) error {
	var mc model.Machine
	var snap model.Snapshot
	var ok bool
	err := m.store.View(func(tx *store.Tx) (err error) {
		if mc, err = tx.Machine(id); err != nil {
			return err
		}
		snap, ok, err = tx.Snapshot(id)
		return err
	})
	if err != nil || mc.State != model.StateSuspended || !ok || snap.ID != snapID || snap.State != model.SnapshotSealed {
		return err
	}
	if m.cfg.Claimer != nil {
		if err := m.own(ctx, id); err != nil {
			return nil // another host's to wake
		}
	}
	spec, err := m.prepare(ctx, mc, nil)
	if err != nil {
		return err
	}
	if err := m.precreator().Precreate(ctx, spec); err != nil {
		return err
	}
	m.putWarm(id, warmEntry{spec: spec, snapshotID: snapID, at: time.Now()})
	m.log.Debug("warm sandbox precreated", "machine", id)
	return nil
}

package machine

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/torpor-dev/torpor/internal/model"
	"github.com/torpor-dev/torpor/internal/snapshot"
	"github.com/torpor-dev/torpor/internal/store"
)

// Moves between hosts of a cluster: Release hands a machine over, Adopt
// takes one in, Forget drops one that another host owns now, and Fence
// freezes the running machines of a host that lost its cluster lease. Which
// host owns a machine is the cluster's to decide (package cluster); these
// only keep this host's store and files in line with it.

// Export is a machine as it leaves this host.
type Export struct {
	Machine model.Machine
	// Snapshot is the sealed snapshot of a suspended machine, nil when it
	// has none that can be restored; its files are in Snapshot.Dir.
	Snapshot *model.Snapshot
	// Events is the machine's history, oldest first.
	Events []model.Event
	// LogDir holds the machine's console log (see package logs).
	LogDir string
}

// Release hands machine id of app to another host: with the machine's lock
// held (so nothing starts it meanwhile) and the machine suspended, stopped
// or created, it calls give, which must copy what it needs and make the
// other host the owner. When give succeeds, the machine is forgotten here.
func (m *Manager) Release(ctx context.Context, app, id string, give func(context.Context, Export) error) error {
	ctx, mc, end, err := m.begin(ctx, app, id)
	if err != nil {
		return err
	}
	defer end()
	switch mc.State {
	case model.StateSuspended, model.StateStopped, model.StateCreated:
	default:
		return model.Errorf(model.KindConflict, "machine %s is %s; only a suspended, stopped or created machine can move", id, mc.State)
	}
	if len(mc.Config.Mounts) > 0 {
		return model.Errorf(model.KindPrecondition, "machine %s mounts volumes, which stay on their host: it cannot move", id)
	}
	exp := Export{Machine: mc, LogDir: m.logDir(id)}
	err = m.store.View(func(tx *store.Tx) error {
		snap, ok, err := tx.Snapshot(id)
		if err != nil {
			return err
		}
		if ok && mc.State == model.StateSuspended && snap.State == model.SnapshotSealed && snap.Reason == "" {
			exp.Snapshot = &snap
		}
		evs, err := tx.Events(id, 0)
		for i := len(evs) - 1; i >= 0; i-- {
			exp.Events = append(exp.Events, evs[i])
		}
		return err
	})
	if err != nil {
		return err
	}
	if err := give(ctx, exp); err != nil {
		return err
	}
	return m.forget(ctx, mc)
}

// Forget drops machine id from this host, whatever its state, leaving no
// trace: its sandbox is killed, its network and files removed and its
// record deleted. The cluster calls it for a machine another host owns now.
// An unknown machine is not an error.
func (m *Manager) Forget(ctx context.Context, id string) error {
	unlock, err := m.lock(ctx, id)
	if err != nil {
		return err
	}
	defer unlock()
	var mc model.Machine
	err = m.store.View(func(tx *store.Tx) (err error) {
		mc, err = tx.Machine(id)
		return err
	})
	if model.IsNotFound(err) {
		return nil
	}
	if err != nil {
		return err
	}
	return m.forget(ctx, mc)
}

func (m *Manager) forget(ctx context.Context, mc model.Machine) error {
	m.endRun(mc.ID)
	m.forgetWarm(mc.ID)     // its sandbox is killed below
	defer m.kickWarmLater() // the slot may go to another machine
	if m.isFrozen(mc.ID) {
		m.rt.SignalAll(ctx, sandboxID(mc.ID), "SIGCONT") // so that it dies at once
	}
	m.unfreeze(mc.ID)
	// The sandbox may take a moment to release its cgroup after the kill.
	err := m.rt.Kill(ctx, sandboxID(mc.ID))
	for try := 0; err != nil && try < 10 && ctx.Err() == nil; try++ {
		time.Sleep(300 * time.Millisecond)
		err = m.rt.Kill(ctx, sandboxID(mc.ID))
	}
	if err != nil {
		return err
	}
	m.closeConsole(mc.ID)
	m.closeLog(mc.ID)
	if m.cfg.GuestAPI != nil {
		m.cfg.GuestAPI.Close(mc.ID)
		os.RemoveAll(m.guestAPIDir(mc.ID))
	}
	if m.cfg.Network != nil {
		if err := m.cfg.Network.Detach(ctx, mc.ID); err != nil {
			return err
		}
	}
	if err := os.RemoveAll(m.machineDir(mc.ID)); err != nil {
		return err
	}
	if err := m.store.Update(func(tx *store.Tx) error { return tx.DeleteMachine(mc.ID) }); err != nil {
		return err
	}
	m.notify(mc.ID)
	m.log.Info("machine left this host", "machine", mc.ID, "app", mc.App, "state", mc.State)
	return nil
}

// Import is a machine as it arrives from another host.
type Import struct {
	// Machine is its record on the origin host (state and boot generation
	// included). A suspended machine stays suspended here, a created one
	// created; any other is recorded stopped (it was not running here).
	Machine model.Machine
	// Snapshot is the sealed snapshot of a suspended machine, whose files
	// WriteFiles writes; Adopt then verifies them against the seal, this
	// host's runtime version and CPU features.
	Snapshot *model.Snapshot
	// WriteFiles, if set, writes the snapshot's files into imageDir ("" when
	// the snapshot does not come along) and the console log's into logDir.
	WriteFiles func(imageDir, logDir string) error
	// SnapshotReason says why a suspended machine comes without its
	// snapshot: its next start is then a cold start that gives it.
	SnapshotReason string
	// Move describes the move; Adopt fills in what became of the snapshot.
	Move model.MoveDetails
	// Events is the machine's history, oldest first (may be empty).
	Events []model.Event
}

// Adopt records a machine that moves here from another host, with its
// snapshot if it has one this host can restore. The caller makes this host
// the machine's owner afterwards (and calls Forget if it cannot).
func (m *Manager) Adopt(ctx context.Context, in Import) (model.Machine, model.MoveDetails, error) {
	begin := time.Now()
	mc := in.Machine
	move := in.Move
	unlock, err := m.lock(ctx, mc.ID)
	if err != nil {
		return mc, move, err
	}
	defer unlock()
	var existing model.Machine
	err = m.store.View(func(tx *store.Tx) (err error) {
		existing, err = tx.Machine(mc.ID)
		return err
	})
	switch {
	case err == nil && existing.State != model.StateDestroyed:
		return mc, move, model.Errorf(model.KindConflict, "machine %s is already on this host (%s)", mc.ID, existing.State)
	case err != nil && !model.IsNotFound(err):
		return mc, move, err
	}
	switch mc.State {
	case model.StateSuspended, model.StateCreated:
	default:
		mc.State = model.StateStopped
	}
	mc.PrivateIP, mc.SandboxID, mc.Region = "", sandboxID(mc.ID), m.cfg.Region
	mc.UpdatedAt = time.Now().UTC()
	var snap *model.Snapshot
	if err := os.MkdirAll(m.logDir(mc.ID), 0o700); err != nil {
		return mc, move, err
	}
	if mc.State != model.StateSuspended && in.WriteFiles != nil {
		if err := in.WriteFiles("", m.logDir(mc.ID)); err != nil {
			os.RemoveAll(m.machineDir(mc.ID))
			return mc, move, err
		}
	}
	if mc.State == model.StateSuspended {
		snap, move.SnapshotReason = m.adoptImage(mc, in)
		if err := m.adoptGuestRunDir(mc, snap); err != nil {
			snapshot.Remove(snap.Dir)
			os.RemoveAll(m.machineDir(mc.ID))
			return mc, move, err
		}
		move.Snapshot = "left behind"
		if move.SnapshotReason == "" {
			move.Snapshot, move.SizeBytes = "carried", snap.SizeBytes
		}
	}
	move.DurationMS = time.Since(begin).Milliseconds()
	var stored []model.Event
	err = m.store.Update(func(tx *store.Tx) error {
		stored = stored[:0]
		if _, err := tx.App(mc.App); model.IsNotFound(err) {
			if err := tx.CreateApp(model.App{Name: mc.App, Org: "personal", CreatedAt: time.Now().UTC()}); err != nil {
				return err
			}
		}
		if err := tx.DeleteMachine(mc.ID); err != nil { // a destroyed record of an earlier stay
			return err
		}
		if err := tx.PutMachine(mc); err != nil {
			return err
		}
		if err := tx.PutConfig(mc.ID, mc.Version, mc.Config, mc.ImageRef); err != nil {
			return err
		}
		if snap != nil {
			if err := tx.PutSnapshot(*snap); err != nil {
				return err
			}
		}
		for _, ev := range in.Events {
			if _, err := tx.AppendEvent(mc.ID, ev); err != nil {
				return err
			}
		}
		ev, err := tx.AppendEvent(mc.ID, event(model.EventMove, string(mc.State), model.SourceFlyd, &move))
		stored = append(stored, ev)
		return err
	})
	if err != nil {
		if snap != nil {
			if snap.Dir != "" {
				snapshot.Remove(snap.Dir)
			}
		}
		return mc, move, err
	}
	m.notify(mc.ID)
	m.publish(model.Change{Machine: mc, Events: stored, At: mc.UpdatedAt, Source: model.SourceFlyd})
	return mc, move, nil
}

// adoptImage writes and checks the snapshot a suspended machine brings. It
// returns the snapshot record to keep: sealed with its image here, or
// unusable with the reason (which it also returns) when there is no image
// this host may restore.
func (m *Manager) adoptImage(mc model.Machine, in Import) (*model.Snapshot, string) {
	lost := func(id, reason string) (*model.Snapshot, string) {
		return &model.Snapshot{ID: id, MachineID: mc.ID, State: model.SnapshotDiscarded, BootGeneration: mc.BootGeneration,
			CreatedAt: time.Now().UTC(), Reason: reason}, reason
	}
	if in.Snapshot == nil || in.WriteFiles == nil {
		if in.WriteFiles != nil {
			in.WriteFiles("", m.logDir(mc.ID)) // the log, at least
		}
		reason := in.SnapshotReason
		if reason == "" {
			reason = "the snapshot did not come along when the machine moved"
		}
		return lost("", reason)
	}
	snap := *in.Snapshot
	snap.MachineID, snap.Dir, snap.Reason = mc.ID, filepath.Join(m.snapshotsDir(mc.ID), snap.ID), ""
	err := os.MkdirAll(snap.Dir, 0o700)
	if err == nil {
		err = in.WriteFiles(snap.Dir, m.logDir(mc.ID))
	}
	if err == nil {
		err = snapshot.Verify(snap.Dir, m.expectedSeal(mc, snap, snap.Image), snap.Checksum)
	}
	if err != nil {
		snapshot.Remove(snap.Dir)
		return lost(snap.ID, fmt.Sprintf("snapshot %s could not move with the machine: %v", snap.ID, err))
	}
	snap.State = model.SnapshotSealed
	return &snap, ""
}

// Fence freezes (on) the processes of every started machine, so that none
// runs on while this host cannot prove it still owns it, or thaws (off) the
// machines it froze. Machines keep their state; each freeze and thaw is an
// event. Fence(true) may be called again to catch machines that started
// meanwhile.
func (m *Manager) Fence(ctx context.Context, on bool, reason string) {
	var ms []model.Machine
	if err := m.store.View(func(tx *store.Tx) (err error) {
		ms, err = tx.Machines("")
		return err
	}); err != nil {
		m.log.Error("fence: list machines", "err", err)
		return
	}
	for _, mc := range ms {
		if on && mc.State == model.StateStarted && !m.isFrozen(mc.ID) {
			m.fenceOne(ctx, mc.ID, "SIGSTOP", "frozen", reason)
		}
		if !on && (m.isFrozen(mc.ID) || mc.State == model.StateStarted && m.frozenBefore(mc.ID)) {
			m.fenceOne(ctx, mc.ID, "SIGCONT", "thawed", reason)
		}
	}
}

// frozenBefore reports whether the machine's last fence event froze it:
// an earlier run of the daemon fenced it (see Fence) and nobody thawed it.
func (m *Manager) frozenBefore(id string) bool {
	evs, err := m.events(id, 50)
	if err != nil {
		return false
	}
	for _, ev := range evs {
		if ev.Type == model.EventFence {
			return ev.Status == "frozen"
		}
	}
	return false
}

func (m *Manager) fenceOne(ctx context.Context, id, signal, status, reason string) {
	lctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	unlock, err := m.lock(lctx, id)
	if err != nil {
		return // busy: the next Fence call tries again
	}
	defer unlock()
	if err := m.rt.SignalAll(ctx, sandboxID(id), signal); err != nil {
		m.log.Warn("fence", "machine", id, "signal", signal, "err", err)
		return
	}
	m.mu.Lock()
	if m.frozen == nil {
		m.frozen = map[string]bool{}
	}
	if signal == "SIGSTOP" {
		m.frozen[id] = true
	} else {
		delete(m.frozen, id)
	}
	m.mu.Unlock()
	m.commit(id, nil, event(model.EventFence, status, model.SourceFlyd, &model.FenceDetails{Reason: reason}))
}

// FencedOutside takes in the machines whose sandboxes the fencing watchdog
// froze while the daemon was gone (package fence): each started one among
// sandboxes is recorded frozen, with an event, so that Fence(false) thaws
// it as if the daemon had frozen it itself.
func (m *Manager) FencedOutside(ctx context.Context, sandboxes []string, reason string) {
	set := map[string]bool{}
	for _, sb := range sandboxes {
		set[sb] = true
	}
	var ms []model.Machine
	if err := m.store.View(func(tx *store.Tx) (err error) {
		ms, err = tx.Machines("")
		return err
	}); err != nil {
		m.log.Error("fenced outside: list machines", "err", err)
		return
	}
	for _, mc := range ms {
		if mc.State != model.StateStarted || !set[sandboxID(mc.ID)] || m.isFrozen(mc.ID) {
			continue
		}
		m.mu.Lock()
		if m.frozen == nil {
			m.frozen = map[string]bool{}
		}
		m.frozen[mc.ID] = true
		m.mu.Unlock()
		m.commit(mc.ID, nil, event(model.EventFence, "frozen", model.SourceFlyd, &model.FenceDetails{Reason: reason}))
	}
}

func (m *Manager) isFrozen(id string) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.frozen[id]
}

func (m *Manager) unfreeze(id string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	delete(m.frozen, id)
}

// Snapshot returns the current snapshot record of machine id, if it has one.
func (m *Manager) Snapshot(id string) (snap model.Snapshot, ok bool, err error) {
	err = m.store.View(func(tx *store.Tx) error {
		snap, ok, err = tx.Snapshot(id)
		return err
	})
	return snap, ok, err
}

// Record returns machine id's record, whatever its app.
func (m *Manager) Record(id string) (mc model.Machine, err error) {
	err = m.store.View(func(tx *store.Tx) error {
		mc, err = tx.Machine(id)
		return err
	})
	return mc, err
}

// AllMachines returns the record of every machine of every app, destroyed
// ones included.
func (m *Manager) AllMachines(ctx context.Context) (ms []model.Machine, err error) {
	err = m.store.View(func(tx *store.Tx) error {
		ms, err = tx.Machines("")
		return err
	})
	return ms, err
}

package machine

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/torpor-dev/torpor/internal/model"
)

// Repair: an operation whose store write fails half-way (a full disk makes
// bbolt's commit fail) leaves the machine recorded in the middle of it,
// e.g. suspending with its sandbox gone and a sealed image on disk (issue
// 17's F7: stop and start then answered 409 until a daemon restart). The
// operation then settles the machine at once the way recovery after a
// restart does (reconcile: adopt a running sandbox, finish a suspend whose
// image is whole, else stop), and answers with the write's failure and
// the state the machine was left in. When the store still refuses, the
// repair is retried in the background until it succeeds.

// repairKey marks a context of a repair (the events say so).
type repairKey struct{}

func withRepair(ctx context.Context) context.Context {
	return context.WithValue(ctx, repairKey{}, true)
}

// repairing reports whether ctx is a repair's.
func repairing(ctx context.Context) bool { v, _ := ctx.Value(repairKey{}).(bool); return v }

// repair settles machine id after step could not be recorded in the store
// (cause), with the machine's lock held, and returns the operation's error.
func (m *Manager) repair(ctx context.Context, id, step string, cause error) error {
	m.log.Warn("a store write failed; repairing the machine", "machine", id, "step", step, "err", cause)
	kind, msg := model.KindInternal, fmt.Sprintf("%s failed: the store could not be written: %v", step, cause)
	if diskFull(cause) {
		kind, msg = model.KindInsufficientStorage, fmt.Sprintf("%s failed: the store could not be written: disk full (ENOSPC)", step)
	}
	state, err := m.settle(ctx, id)
	if err != nil {
		go m.repairLater(id)
		return model.Errorf(kind, "%s; the machine could not be repaired yet (%v): the daemon retries in the background", msg, err)
	}
	return model.Errorf(kind, "%s; repaired: the machine is %s", msg, state)
}

// settle reconciles machine id with its sandbox unless it rests in a
// settled state already, and returns the state it is left in. The caller
// holds the machine's lock.
func (m *Manager) settle(ctx context.Context, id string) (model.State, error) {
	mc, err := m.machineByID(id)
	if err != nil || mc.State.Settled() {
		return mc.State, err
	}
	if err := m.reconcileOrStop(withRepair(ctx), mc); err != nil {
		return mc.State, err
	}
	mc, err = m.machineByID(id)
	return mc.State, err
}

// repairLater retries the repair of machine id, with backoff, until the
// machine is settled or gone or the manager closes.
func (m *Manager) repairLater(id string) {
	ctx := model.WithSource(context.Background(), model.SourceFlyd)
	for d := time.Second; ; d = min(2*d, 30*time.Second) {
		time.Sleep(d)
		if m.isClosed() {
			return
		}
		unlock, err := m.lock(ctx, id)
		if err != nil {
			continue
		}
		rctx, cancel := detach(ctx)
		_, err = m.settle(rctx, id)
		cancel()
		unlock()
		if err == nil || errors.Is(err, model.Class(model.KindNotFound)) {
			if err == nil {
				m.log.Info("repaired the machine", "machine", id)
			}
			return
		}
		m.log.Warn("repairing the machine failed; retrying", "machine", id, "err", err, "in", 2*d)
	}
}

package machine

import (
	"context"
	"sync"

	"github.com/torpor-dev/torpor/internal/model"
	"github.com/torpor-dev/torpor/internal/snapshot"
)

// A start that arrives while a machine is suspending cancels the suspend
// if the save has not begun, and the machine goes on running from memory
// without loading a snapshot (Fly behaves so too). The start does not wait
// for the suspend to end before asking: it marks the suspend cancelled,
// then waits for the machine's lock as usual. The suspend looks at the mark
// where it can still turn back: before the pre_suspend hook's end, and once
// the app is frozen, just before the checkpoint (the app is then thawed).
//
// Once the checkpoint has begun the suspend runs to its end, and the start
// then resumes the machine from the fresh snapshot. gVisor cannot abandon
// a save, and the one save that leaves the sandbox running afterwards
// ("runsc checkpoint --leave-running", which would let a late start cancel
// too) keeps the sandbox's network devices in the image: restored into a
// new sandbox, its TCP connections are gone (a kept-alive client got a RST
// at its first request after the resume, every time,
// TestKeepAliveConnectionSurvivesSuspendResume). Connections that survive
// a suspend matter more than a start that does not wait.
//
// A cancelled suspend leaves the machine started, with a "suspend" event
// of status "cancelled", and the Suspend call gets a KindConflict error.

// suspendRun is a suspend in progress that a start may cancel.
type suspendRun struct {
	cancel chan struct{}
	once   sync.Once
}

func (s *suspendRun) cancelled() bool {
	select {
	case <-s.cancel:
		return true
	default:
		return false
	}
}

// trackSuspend records machine id's suspend as in progress; call the
// returned function when it is over.
func (m *Manager) trackSuspend(id string) (*suspendRun, func()) {
	s := &suspendRun{cancel: make(chan struct{})}
	m.suspends.Store(id, s)
	return s, func() { m.suspends.CompareAndDelete(id, s) }
}

// interruptSuspend cancels the suspend in progress of machine id of app, if
// there is one and ctx's caller may act on the machine (its lease), and
// reports whether it did.
func (m *Manager) interruptSuspend(ctx context.Context, app, id string) bool {
	v, ok := m.suspends.Load(id)
	if !ok {
		return false
	}
	mc, err := m.machine(app, id)
	if err != nil || m.checkLease(ctx, mc) != nil {
		return false
	}
	s := v.(*suspendRun)
	s.once.Do(func() { close(s.cancel) })
	return true
}

// cancelSuspend brings back a machine whose suspend a start cancelled: the
// image (if any) is dropped, the app thawed and told (post_resume, when its
// pre_suspend hook ran) and the machine is started again, never having
// stopped. supervised says whether the sandbox is still supervised (the
// suspend had not yet taken its exit over).
func (m *Manager) cancelSuspend(ctx context.Context, f suspendFailure, phase string, supervised bool) error {
	mc := f.mc
	if !supervised {
		m.supervise(mc.ID)
	}
	snapshot.Remove(f.snap.Dir)
	details := &model.SuspendDetails{Cancelled: true, Phase: phase, MachineState: model.StateStarted,
		PreSuspend: f.pre.result(), AppNotice: &model.AppNotice{}}
	m.thaw(ctx, mc, details.AppNotice)
	evs := m.afterFailedSuspend(ctx, f, details.AppNotice)
	if _, err := m.enter(mc.ID, model.StateStarted, deleteSnapshot,
		append([]model.Event{event(model.EventSuspend, "cancelled", model.SourceFlyd, details)}, evs...)...); err != nil {
		return err
	}
	m.log.Info("suspend cancelled by a start", "machine", mc.ID, "phase", phase)
	return model.Errorf(model.KindConflict, "suspend of machine %s was cancelled by a start (%s): the machine is started", mc.ID, phase)
}

// Phase at which a suspend can be cancelled: the checkpoint has not begun.
const phaseBeforeCheckpoint = "before checkpoint"

package proxy

import (
	"sort"
	"time"

	"github.com/torpor-dev/torpor/internal/model"
)

// autostopAction is one machine to stop or suspend.
type autostopAction struct {
	a    *app
	b    *backend
	id   string
	mode model.Autostop
}

// reap stops or suspends every machine idle for IdleTimeout whose services
// allow it, keeping min_machines_running started per app.
func (p *Proxy) reap() {
	p.reconcileMu.Lock()
	p.reaps++
	p.reconcileMu.Unlock()
	now := time.Now()
	for _, a := range p.allApps() {
		for _, act := range a.idle(now, p.cfg.IdleTimeout, p.cfg.Remote.Local) {
			if !p.spawn(func() { p.autostop(act) }) {
				act.a.endAutostop(act, model.StateStarted)
			}
		}
	}
}

// idle picks the app's machines to auto-stop and marks them busy, so that no
// new traffic goes to them. The least recently active go first. Only local
// machines are picked (another host's proxy sees their traffic), but every
// started machine counts towards min_machines_running.
func (a *app) idle(now time.Time, idleTimeout time.Duration, local func(model.Machine) bool) []autostopAction {
	a.mu.Lock()
	defer a.mu.Unlock()
	keep, running := 0, []*backend{}
	for _, b := range a.machines {
		keep = max(keep, minRunning(b.m))
		if b.m.State == model.StateStarted && !b.busy && !b.m.Cordoned {
			running = append(running, b)
		}
	}
	sort.Slice(running, func(i, j int) bool { return running[i].lastActive.Before(running[j].lastActive) })
	var acts []autostopAction
	for _, b := range running {
		if len(running)-len(acts) <= keep {
			break
		}
		mode := autostop(b.m)
		if mode == model.AutostopOff || b.active > 0 || now.Sub(b.lastActive) < idleTimeout || !local(b.m) {
			continue
		}
		b.busy = true
		acts = append(acts, autostopAction{a: a, b: b, id: b.m.ID, mode: mode})
	}
	if len(acts) > 0 {
		a.version++
	}
	return acts
}

// autostop stops or suspends one idle machine. A suspend the machine is not
// eligible for falls back to a stop.
func (p *Proxy) autostop(act autostopAction) {
	name := act.a.name
	state, err := model.StateSuspended, error(nil)
	if act.mode == model.AutostopSuspend {
		err = p.m.Suspend(model.WithSource(p.ctx, model.SourceProxy), name, act.id)
		if model.KindOf(err) == model.KindPrecondition {
			p.log.Warn("machine cannot be suspended: stopping it instead", "app", name, "machine", act.id, "err", err)
			act.mode = model.AutostopStop
		}
	}
	if act.mode == model.AutostopStop {
		state, err = model.StateStopped, p.m.Stop(model.WithSource(p.ctx, model.SourceProxy), name, act.id, model.StopRequest{})
	}
	if err != nil {
		p.log.Warn("autostop failed: machine left running", "app", name, "machine", act.id, "mode", act.mode, "err", err)
		act.a.endAutostop(act, model.StateStarted)
		p.Refresh()
		return
	}
	p.log.Info("machine idle: autostopped", "app", name, "machine", act.id, "mode", act.mode)
	if state == model.StateSuspended {
		act.a.stats.Suspends.Add(1)
	} else {
		act.a.stats.Stops.Add(1)
	}
	act.a.endAutostop(act, state)
	p.tr.CloseIdleConnections()
}

// endAutostop records the machine's new state and lets waiting requests look
// again (they may wake it right back).
func (a *app) endAutostop(act autostopAction, state model.State) {
	a.mu.Lock()
	defer a.mu.Unlock()
	act.b.busy = false
	act.b.m.State = state
	act.b.lastActive = time.Now()
	a.version++
	a.broadcast()
}

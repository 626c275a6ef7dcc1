package machine

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/torpor-dev/torpor/internal/model"
)

// The restart policy (config.restart) restarts a machine whose process
// exited on its own: "always" after every exit, "on-failure" after a
// non-zero exit or a runtime failure. Restarts in a row form a series:
//
//   - the n-th restart of a series waits Config.RestartBackoff × 2^(n-1),
//     at most Config.RestartBackoffMax, so a process that dies at once does
//     not turn into a loop of cold starts (issue 17's F11: 167 in 30 s);
//   - a series has at most restart.max_retries restarts (on-failure: 10
//     when unset, as on Fly; always: unbounded when unset); the exit after
//     the last leaves the machine stopped, with a "restart" event of status
//     "failed" saying so;
//   - a run that lasted Config.RestartStableAfter ends the series: its exit
//     starts a new one;
//   - a restart that fails to boot counts as an attempt and waits for the
//     next;
//   - a user's start, stop, update, restart or destroy of the machine
//     cancels the waiting restart and ends the series.
//
// The series lives in the daemon's memory: a machine stopped and waiting
// for a restart when the daemon restarts stays stopped.

// Defaults of the restart policy's timing (Config).
const (
	DefaultRestartBackoff     = time.Second
	DefaultRestartBackoffMax  = time.Minute
	DefaultRestartStableAfter = time.Minute
	// defaultOnFailureRetries is restart.max_retries for on-failure when unset.
	defaultOnFailureRetries = 10
)

// restartSeries is one machine's restarts in a row.
type restartSeries struct {
	attempts int         // restarts of the series so far, the waiting one included
	timer    *time.Timer // the waiting restart, if any
}

// restarts holds every machine's restart series.
type restarts struct {
	mu     sync.Mutex
	series map[string]*restartSeries
}

// restartPlan is what the policy does after one exit.
type restartPlan struct {
	restart bool // the policy restarts after this exit
	giveUp  bool // ... but the series has used its retries: stay stopped
	attempt int
	max     int // 0: unbounded
	delay   time.Duration
}

// maxRestarts is how many restarts a series of cfg may have (0: no bound).
func maxRestarts(cfg model.MachineConfig) int {
	if cfg.Restart != nil && cfg.Restart.MaxRetries > 0 {
		return cfg.Restart.MaxRetries
	}
	if restartPolicy(cfg) == "on-failure" {
		return defaultOnFailureRetries
	}
	return 0
}

// planRestart applies the policy to exit r of machine mc and counts the
// restart it decides on in the machine's series. ranFor is how long the run
// lasted (ignored for a failed restart's boot, which has no run).
func (m *Manager) planRestart(mc model.Machine, r *run, ranFor time.Duration) restartPlan {
	if !m.shouldRestart(mc, r) {
		m.endRestarts(mc.ID)
		return restartPlan{}
	}
	return m.nextRestart(mc, ranFor >= m.cfg.RestartStableAfter)
}

// nextRestart counts one more restart in mc's series (a new series when
// fresh) and says when it runs, or that the series gave up.
func (m *Manager) nextRestart(mc model.Machine, fresh bool) restartPlan {
	rs := &m.restarts
	rs.mu.Lock()
	defer rs.mu.Unlock()
	if rs.series == nil {
		rs.series = map[string]*restartSeries{}
	}
	s := rs.series[mc.ID]
	if s == nil || fresh {
		if s != nil && s.timer != nil {
			s.timer.Stop()
		}
		s = &restartSeries{}
		rs.series[mc.ID] = s
	}
	p := restartPlan{restart: true, max: maxRestarts(mc.Config)}
	s.attempts++
	p.attempt = s.attempts
	if p.max > 0 && p.attempt > p.max {
		delete(rs.series, mc.ID)
		p.giveUp, p.attempt = true, p.max
		return p
	}
	p.delay = m.cfg.RestartBackoff
	for i := 1; i < p.attempt && p.delay < m.cfg.RestartBackoffMax; i++ {
		p.delay *= 2
	}
	p.delay = min(p.delay, m.cfg.RestartBackoffMax)
	return p
}

// scheduleRestart records plan p of machine mc in its events and, unless
// the series gave up, arms the restart.
func (m *Manager) scheduleRestart(mc model.Machine, p restartPlan) {
	details := &model.RestartDetails{Policy: restartPolicy(mc.Config), Attempt: p.attempt, MaxRetries: p.max}
	if p.giveUp {
		details.Error = fmt.Sprintf("gave up after %d restarts in a row (restart.max_retries); the machine stays stopped", p.max)
		m.commit(mc.ID, nil, event(model.EventRestart, "failed", model.SourceFlyd, details))
		m.log.Warn("restart policy gave up", "machine", mc.ID, "restarts", p.max)
		return
	}
	details.BackoffMS = p.delay.Milliseconds()
	m.commit(mc.ID, nil, event(model.EventRestart, "pending", model.SourceFlyd, details))
	rs := &m.restarts
	rs.mu.Lock()
	defer rs.mu.Unlock()
	s := rs.series[mc.ID]
	if s == nil || m.isClosed() {
		return
	}
	var t *time.Timer
	set := make(chan struct{}) // t is assigned (a short delay may fire first)
	t = time.AfterFunc(p.delay, func() { <-set; m.restartNow(mc.ID, s, t, p) })
	close(set)
	s.timer = t
}

// restartNow runs the waiting restart t of series s, unless it was
// cancelled meanwhile or the machine is no longer stopped.
func (m *Manager) restartNow(id string, s *restartSeries, t *time.Timer, p restartPlan) {
	ctx := model.WithSource(context.Background(), model.SourceFlyd)
	unlock, err := m.lock(ctx, id)
	if err != nil {
		return
	}
	defer unlock()
	rs := &m.restarts
	rs.mu.Lock()
	current := rs.series[id] == s && s.timer == t
	if current {
		s.timer = nil
	}
	rs.mu.Unlock()
	if !current || m.isClosed() {
		return
	}
	mc, err := m.machineByID(id)
	if err != nil || mc.State != model.StateStopped || m.own(ctx, id) != nil {
		m.endRestarts(id)
		return
	}
	ctx, cancel := detach(ctx)
	defer cancel()
	m.commit(id, nil, event(model.EventRestart, "starting", model.SourceFlyd,
		&model.RestartDetails{Policy: restartPolicy(mc.Config), Attempt: p.attempt, MaxRetries: p.max, BackoffMS: p.delay.Milliseconds()}))
	if _, err := m.coldStart(ctx, mc, nil); err != nil {
		m.log.Warn("restart failed", "machine", id, "attempt", p.attempt, "err", err)
		if mc, err := m.machineByID(id); err == nil && mc.State == model.StateStopped {
			m.scheduleRestart(mc, m.nextRestart(mc, false))
		}
	}
}

// endRestarts ends machine id's restart series, cancelling the waiting
// restart if there is one.
func (m *Manager) endRestarts(id string) {
	rs := &m.restarts
	rs.mu.Lock()
	defer rs.mu.Unlock()
	if s := rs.series[id]; s != nil {
		if s.timer != nil {
			s.timer.Stop()
		}
		delete(rs.series, id)
	}
}

// stopRestarts cancels every waiting restart (the manager is closing).
func (m *Manager) stopRestarts() {
	rs := &m.restarts
	rs.mu.Lock()
	defer rs.mu.Unlock()
	for id, s := range rs.series {
		if s.timer != nil {
			s.timer.Stop()
		}
		delete(rs.series, id)
	}
}

func (m *Manager) isClosed() bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.closed
}

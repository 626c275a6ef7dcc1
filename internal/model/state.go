package model

import (
	"fmt"
	"slices"
	"time"
)

// State is a machine's lifecycle state. The names mirror Fly's.
type State string

// Machine states.
const (
	StateCreated    State = "created"
	StateStarting   State = "starting"
	StateStarted    State = "started"
	StateStopping   State = "stopping"
	StateStopped    State = "stopped"
	StateSuspending State = "suspending"
	StateSuspended  State = "suspended"
	StateDestroying State = "destroying"
	StateDestroyed  State = "destroyed"
)

// States lists every state, in lifecycle order.
var States = []State{StateCreated, StateStarting, StateStarted, StateStopping, StateStopped,
	StateSuspending, StateSuspended, StateDestroying, StateDestroyed}

// transitions is the lifecycle of DESIGN.md as a table: the states each
// state may become. Staying in a state is not a transition and is always
// allowed (a record change such as a new private IP, or recovery adopting a
// started machine).
var transitions = map[State][]State{
	StateCreated: {StateStarting, StateDestroying},
	// A start either succeeds, or fails and leaves the machine stopped.
	StateStarting: {StateStarted, StateStopped, StateDestroying},
	// Stopped directly: the process exited by itself, or recovery found the
	// sandbox gone.
	StateStarted:  {StateStopping, StateSuspending, StateStopped, StateDestroying},
	StateStopping: {StateStopped, StateDestroying},
	StateStopped:  {StateStarting, StateDestroying},
	// A suspend ends suspended; a failed or cancelled one goes back to
	// started (or, when the sandbox did not survive, through a cold start:
	// starting); recovery stops a suspend it cannot finish.
	StateSuspending: {StateSuspended, StateStarted, StateStarting, StateStopped, StateDestroying},
	// A start resumes (or cold-starts); a stop or an update discards the snapshot.
	StateSuspended:  {StateStarting, StateStopped, StateDestroying},
	StateDestroying: {StateDestroyed},
	StateDestroyed:  {},
}

// Valid reports whether s is one of the known states.
func (s State) Valid() bool {
	_, ok := transitions[s]
	return ok
}

// Settled reports whether s is a state a machine rests in between operations.
func (s State) Settled() bool {
	switch s {
	case StateCreated, StateStarted, StateStopped, StateSuspended, StateDestroyed:
		return true
	}
	return false
}

// CanBecome reports whether a machine in state s may move to state to.
func (s State) CanBecome(to State) bool {
	return s == to && s.Valid() || slices.Contains(transitions[s], to)
}

// CheckTransition returns an internal error unless s may become to: an
// illegal transition is a bug in the lifecycle, never the user's doing.
func (s State) CheckTransition(machineID string, to State) error {
	if s.CanBecome(to) {
		return nil
	}
	return Errorf(KindInternal, "machine %s: illegal state transition %s → %s", machineID, s, to)
}

// Change is a committed change of one machine: its record as committed,
// the state it was in before, and the events committed with it (typed
// details, IDs assigned). Subscribers of the machine lifecycle get one per
// commit; a change is a transition when From differs from Machine.State.
type Change struct {
	Machine Machine
	From    State
	Source  string
	Events  []Event
	At      time.Time
}

// Transition reports whether the change moved the machine to another state.
func (c Change) Transition() bool { return c.From != c.Machine.State }

// String describes the change for logs.
func (c Change) String() string {
	return fmt.Sprintf("machine %s (%s): %s → %s", c.Machine.ID, c.Machine.App, c.From, c.Machine.State)
}

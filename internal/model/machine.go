package model

import (
	"context"
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

// Valid reports whether s is one of the known states.
func (s State) Valid() bool {
	switch s {
	case StateCreated, StateStarting, StateStarted, StateStopping, StateStopped,
		StateSuspending, StateSuspended, StateDestroying, StateDestroyed:
		return true
	}
	return false
}

// Settled reports whether s is a state a machine rests in between operations.
func (s State) Settled() bool {
	switch s {
	case StateCreated, StateStarted, StateStopped, StateSuspended, StateDestroyed:
		return true
	}
	return false
}

// App is a named group of machines.
type App struct {
	Name      string    `json:"name"`
	Org       string    `json:"org_slug,omitempty"`
	CreatedAt time.Time `json:"created_at"`
}

// Machine is a machine as stored and as served by the API.
type Machine struct {
	ID         string        `json:"id"`
	Name       string        `json:"name"`
	App        string        `json:"app_name"`
	State      State         `json:"state"`
	Region     string        `json:"region"`
	InstanceID string        `json:"instance_id"`
	PrivateIP  string        `json:"private_ip,omitempty"`
	Config     MachineConfig `json:"config"`
	ImageRef   ImageRef      `json:"image_ref"`
	CreatedAt  time.Time     `json:"created_at"`
	UpdatedAt  time.Time     `json:"updated_at"`
	Events     []Event       `json:"events,omitempty"`

	// BootGeneration counts cold starts; a snapshot is only valid for the
	// generation it was taken in (DESIGN.md, invariant 1).
	BootGeneration uint64 `json:"boot_generation"`
	// Cordoned machines are skipped by the proxy.
	Cordoned bool `json:"cordoned,omitempty"`
	// SandboxID names the runtime sandbox currently (or last) backing the machine.
	SandboxID string `json:"-"`
	// Version is the config version (changes on every update).
	Version string `json:"version,omitempty"`
}

// ImageRef describes what the machine runs from.
type ImageRef struct {
	Repository string `json:"repository,omitempty"`
	Tag        string `json:"tag,omitempty"`
	Digest     string `json:"digest,omitempty"`
}

// Event is one entry of a machine's history.
type Event struct {
	ID        string         `json:"id"`
	Type      string         `json:"type"`
	Status    string         `json:"status"`
	Source    string         `json:"source"`
	Timestamp int64          `json:"timestamp"` // Unix milliseconds, as Fly reports it.
	Request   map[string]any `json:"request,omitempty"`
}

// Event sources.
const (
	SourceUser  = "user"
	SourceFlyd  = "flyd" // the daemon itself, Fly's name for its host agent
	SourceProxy = "proxy"
	// SourceMachine is a machine acting on itself through the in-machine API.
	SourceMachine = "machine"
)

// CreateMachineRequest is the body of POST /v1/apps/{app}/machines.
type CreateMachineRequest struct {
	Name       string        `json:"name,omitempty"`
	Region     string        `json:"region,omitempty"`
	Config     MachineConfig `json:"config"`
	SkipLaunch bool          `json:"skip_launch,omitempty"`
}

// UpdateMachineRequest is the body of POST /v1/apps/{app}/machines/{id}.
type UpdateMachineRequest struct {
	Name       string        `json:"name,omitempty"`
	Config     MachineConfig `json:"config"`
	SkipLaunch bool          `json:"skip_launch,omitempty"`
}

// StopRequest is the optional body of POST .../stop.
type StopRequest struct {
	Signal  string   `json:"signal,omitempty"`
	Timeout Duration `json:"timeout,omitempty"`
}

// StartResponse is the body answered by POST .../start.
type StartResponse struct {
	PreviousState State  `json:"previous_state"`
	Migrated      bool   `json:"migrated"`
	NewHost       string `json:"new_host"`
	// FromSnapshot is a torpor extension: true when the start resumed a snapshot.
	FromSnapshot bool `json:"from_snapshot"`
}

type sourceKey struct{}

// WithSource returns a context saying who asks for the operations done
// with it (SourceUser, SourceProxy, ...); the machine's events record it.
func WithSource(ctx context.Context, source string) context.Context {
	return context.WithValue(ctx, sourceKey{}, source)
}

// SourceOf returns the source set by WithSource, SourceUser by default.
func SourceOf(ctx context.Context) string {
	if s, ok := ctx.Value(sourceKey{}).(string); ok {
		return s
	}
	return SourceUser
}

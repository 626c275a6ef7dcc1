package model

import (
	"context"
	"time"
)

// App is a named group of machines.
type App struct {
	Name string `json:"name"`
	Org  string `json:"org_slug,omitempty"`
	// Role is the app_role_id it was created with (Fly's app_role, e.g.
	// "postgres_cluster"); apps can be listed by it.
	Role      string    `json:"app_role,omitempty"`
	CreatedAt time.Time `json:"created_at"`
}

// CreateAppRequest is the body of POST /v1/apps. Fly's spec names the app
// app_name, fly-go sends name: either is taken.
type CreateAppRequest struct {
	AppName   string `json:"app_name,omitempty"`
	Name      string `json:"name,omitempty"`
	OrgSlug   string `json:"org_slug,omitempty"`
	AppRoleID string `json:"app_role_id,omitempty"`
	Decoded   `json:"-"`
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
	// Checks are the latest results of the machine's health checks (not
	// stored: filled in when the machine is read).
	Checks []CheckStatus `json:"checks,omitempty"`

	// BootGeneration counts cold starts; a snapshot is only valid for the
	// generation it was taken in (DESIGN.md, invariant 1).
	BootGeneration uint64 `json:"boot_generation"`
	// Cordoned machines are skipped by the proxy.
	Cordoned bool `json:"cordoned,omitempty"`
	// SandboxID names the runtime sandbox currently (or last) backing the machine.
	SandboxID string `json:"-"`
	// Version is the config version (changes on every update); it is the
	// machine's instance_id too.
	Version string `json:"version,omitempty"`
	// Host is the cluster host that owns the machine and HostStatus
	// ("ok", "unreachable") whether that host holds its cluster lease, as
	// Fly's host_status; both are empty on a single host (docs/cluster.md).
	Host       string `json:"host,omitempty"`
	HostStatus string `json:"host_status,omitempty"`

	// Answer-only fields, never stored (see store.PutMachine).

	// Nonce is the nonce of the lease a create or update with lease_ttl
	// took (Fly's "nonce").
	Nonce string `json:"nonce,omitempty"`
	// Lease is the machine's lease, in a list with include_leases.
	Lease *Lease `json:"lease,omitempty"`
	// Warnings say what of the request torpor accepted without acting on
	// it (see flyNames).
	Warnings []string `json:"warnings,omitempty"`
}

// ImageRef describes what the machine runs from (Fly's image_ref). For an
// OCI image, Digest is the pinned manifest digest that every start of the
// machine's config version runs; for a root filesystem directory only
// Repository is set, to the directory.
type ImageRef struct {
	Registry   string            `json:"registry,omitempty"`
	Repository string            `json:"repository,omitempty"`
	Tag        string            `json:"tag,omitempty"`
	Digest     string            `json:"digest,omitempty"`
	Labels     map[string]string `json:"labels,omitempty"`
}

// CreateMachineRequest is the body of POST /v1/apps/{app}/machines.
type CreateMachineRequest struct {
	Name       string        `json:"name,omitempty"`
	Region     string        `json:"region,omitempty"`
	Config     MachineConfig `json:"config"`
	SkipLaunch bool          `json:"skip_launch,omitempty"`
	// Host asks for the cluster host to create the machine on (a torpor
	// extension); empty lets the cluster place it on a host with room.
	Host string `json:"host,omitempty"`
	// SkipServiceRegistration creates the machine cordoned: the proxy sends
	// it nothing until it is uncordoned (Fly's blue-green deploys).
	SkipServiceRegistration bool `json:"skip_service_registration,omitempty"`
	// LeaseTTL, in seconds, creates the machine leased to the caller for
	// that long; the answer's nonce is the lease's.
	LeaseTTL int `json:"lease_ttl,omitempty"`
	Decoded  `json:"-"`
}

// UpdateMachineRequest is the body of POST /v1/apps/{app}/machines/{id}.
type UpdateMachineRequest struct {
	Name       string        `json:"name,omitempty"`
	Region     string        `json:"region,omitempty"`
	Config     MachineConfig `json:"config"`
	SkipLaunch bool          `json:"skip_launch,omitempty"`
	// SkipServiceRegistration cordons the machine, as on create.
	SkipServiceRegistration bool `json:"skip_service_registration,omitempty"`
	// LeaseTTL, in seconds, leaves the machine leased to the caller for
	// that long after the update (refreshing the lease it holds, if any).
	LeaseTTL int `json:"lease_ttl,omitempty"`
	// CurrentVersion, when set, must be the machine's version: the update
	// is refused (409) if another one came first.
	CurrentVersion string `json:"current_version,omitempty"`
	Decoded        `json:"-"`
}

// StopRequest is the optional body of POST .../stop.
type StopRequest struct {
	// ID is the machine's ID, as fly-go sends it; it must match the path.
	ID      string   `json:"id,omitempty"`
	Signal  string   `json:"signal,omitempty"`
	Timeout Duration `json:"timeout,omitempty"`
}

// RestartRequest asks for a restart (POST .../restart's query): stop the
// machine as a stop would (ForceStop: kill it at once) and start it again.
type RestartRequest struct {
	Signal    string
	Timeout   Duration
	ForceStop bool
}

// SignalRequest is the body of POST .../signal.
type SignalRequest struct {
	Signal Signal `json:"signal"`
}

// ExecRequest is the body of POST .../exec: run a command in the machine.
type ExecRequest struct {
	// Command is the program and its arguments.
	Command []string `json:"command,omitempty"`
	// Cmd is Fly's deprecated form: one string, split into words as a
	// shell would (quotes and backslashes), without running a shell.
	Cmd string `json:"cmd,omitempty"`
	// Timeout bounds the command, in seconds (default 30, at most 600).
	Timeout int `json:"timeout,omitempty"`
	// Stdin is written to the command's standard input.
	Stdin   string `json:"stdin,omitempty"`
	Decoded `json:"-"`
}

// ExecResponse is the answer of POST .../exec. Stdout and Stderr are each
// cut to their last bytes when the command wrote more (see docs/api.md).
type ExecResponse struct {
	ExitCode int    `json:"exit_code"`
	Stdout   string `json:"stdout"`
	Stderr   string `json:"stderr"`
	// ExitSignal is a torpor extension: the signal that ended the command.
	ExitSignal string `json:"exit_signal,omitempty"`
	// Truncated is a torpor extension: output was cut to the limit.
	Truncated bool `json:"truncated,omitempty"`
}

// ProcessStat is one process of a machine (GET .../ps), in Fly's shape.
type ProcessStat struct {
	PID           int            `json:"pid"`
	Stime         uint64         `json:"stime"`
	Rtime         uint64         `json:"rtime"`
	Command       string         `json:"command"`
	Directory     string         `json:"directory"`
	CPU           uint64         `json:"cpu"`
	RSS           uint64         `json:"rss"`
	ListenSockets []ListenSocket `json:"listen_sockets"`
}

// ListenSocket is a socket a process listens on.
type ListenSocket struct {
	Proto   string `json:"proto"`
	Address string `json:"address"`
}

// MetadataRequest is the body of POST .../metadata/{key}.
type MetadataRequest struct {
	Value string `json:"value"`
}

// MachineVersion is one config version of a machine (GET .../versions).
type MachineVersion struct {
	Version    string        `json:"version"`
	UserConfig MachineConfig `json:"user_config"`
}

// Lease is a machine's lease: while it is held, mutating calls must give
// its nonce (header fly-machine-lease-nonce).
type Lease struct {
	Nonce string `json:"nonce"`
	// ExpiresAt is in Unix seconds, as Fly reports it.
	ExpiresAt   int64  `json:"expires_at"`
	Owner       string `json:"owner"`
	Description string `json:"description,omitempty"`
	// Version is the machine's version when the lease was taken.
	Version string `json:"version"`
}

// LeaseRequest is the body of POST .../lease (fly-go sends ttl in the
// query instead).
type LeaseRequest struct {
	TTL         int    `json:"ttl,omitempty"`
	Description string `json:"description,omitempty"`
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

type leaseKey struct{}

type callerKey struct{}

// WithCaller returns a context naming who makes the requests done with it
// ("local", "token:ID"), for records such as a lease's owner.
func WithCaller(ctx context.Context, caller string) context.Context {
	return context.WithValue(ctx, callerKey{}, caller)
}

// CallerOf returns the caller set by WithCaller, "" if none.
func CallerOf(ctx context.Context) string {
	c, _ := ctx.Value(callerKey{}).(string)
	return c
}

// WithLeaseNonce returns a context carrying the lease nonce a caller gave
// (header fly-machine-lease-nonce), checked by every operation on a leased
// machine.
func WithLeaseNonce(ctx context.Context, nonce string) context.Context {
	return context.WithValue(ctx, leaseKey{}, nonce)
}

// LeaseNonceOf returns the nonce set by WithLeaseNonce, "" if none.
func LeaseNonceOf(ctx context.Context) string {
	n, _ := ctx.Value(leaseKey{}).(string)
	return n
}

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

// ProcessSort orders a process list (GET .../ps?sort_by=&order=).
type ProcessSort struct {
	By   string // "pid" (default), "cpu", "rss", "stime", "rtime", "command" or "directory"
	Desc bool
}

// ListOptions filter a list of machines (GET .../machines' query).
type ListOptions struct {
	// IncludeDeleted lists destroyed machines too.
	IncludeDeleted bool
	// Region, when set, lists only machines in that region.
	Region string
	// States, when set, lists only machines in one of them.
	States []State
	// Metadata lists only machines whose config.metadata has these values.
	Metadata map[string]string
	// IncludeLeases fills in each machine's lease, if it has one.
	IncludeLeases bool
}

// Wait targets beyond the machine states: "settled" is any state a machine
// rests in; "failed" is a machine stopped by a failed start (torpor has no
// failed state; Fly's clients wait for it).
const (
	WaitSettled = "settled"
	WaitFailed  = "failed"
)

// WaitOptions say what a wait waits for.
type WaitOptions struct {
	// States the machine must be in (or WaitSettled, WaitFailed).
	States []string
	// Version, when set, is the config version (instance_id) the machine
	// must be at; a machine updated past it fails the wait (KindConflict).
	Version string
	// FromEventID, when set, makes the wait count only a state reached
	// after that event.
	FromEventID string
}

// LeaseParams says what lease to take or refresh.
type LeaseParams struct {
	// TTL is how long the lease holds from now (DefaultLeaseTTL when 0).
	TTL         time.Duration
	Description string
	// Owner names who holds it (the API caller).
	Owner string
}

// Fly's host_status values (Machine.HostStatus): the machine's host answers,
// or it is a cluster host that is down.
const (
	HostOK          = "ok"
	HostUnreachable = "unreachable"
)

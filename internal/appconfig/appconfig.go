// Package appconfig owns fly.toml, an app's description as Fly users write
// it: parsing it (github.com/pelletier/go-toml/v2), reporting each key that
// torpor does not know or does not act on as a warning with its line,
// refusing an invalid value with an error naming the key and its line,
// turning the app's process groups into torpor machine configs (Fly's shape,
// package model), and writing a starter file for `torpor launch`.
//
// It does not talk to the daemon, and it does not decide how a deploy rolls
// out: that is package deploy's. The keys and what each becomes are listed
// in docs/deploy.md.
package appconfig

import (
	"fmt"
	"time"

	"github.com/torpor-dev/torpor/internal/model"
)

// DefaultProcessGroup is the process group of an app without [processes]
// (Fly's name).
const DefaultProcessGroup = "app"

// Deploy strategies (Fly's names).
const (
	StrategyRolling   = "rolling"
	StrategyImmediate = "immediate"
	StrategyCanary    = "canary"
	StrategyBlueGreen = "bluegreen"
)

// Strategies lists the deploy strategies, for messages and flags.
var Strategies = []string{StrategyRolling, StrategyImmediate, StrategyCanary, StrategyBlueGreen}

// Defaults of [deploy].
const (
	DefaultWaitTimeout = 5 * time.Minute
	DefaultHTTPPort    = 80
)

// App is a parsed fly.toml.
type App struct {
	Name          string
	PrimaryRegion string
	Image         string
	Env           map[string]string
	// Processes maps each process group to its command (nil: one group,
	// DefaultProcessGroup, running the image's command).
	Processes map[string][]string
	// Services are the app's services, each with the process groups it
	// applies to (none: all).
	Services []GroupService
	Checks   map[string]GroupCheck
	Mounts   []Mount
	VMs      []VM
	Restarts []Restart
	Deploy   Deploy
	// StopConfig comes from kill_signal and kill_timeout.
	StopConfig *model.StopConfig
	SwapSizeMB int
	Hooks      *model.Hooks
}

// GroupService is a service and the process groups that run it.
type GroupService struct {
	Service   model.Service
	Processes []string
}

// GroupCheck is a top-level check and the process groups it applies to.
type GroupCheck struct {
	Check     model.Check
	Processes []string
}

// Mount is a [[mounts]] entry: a volume by name, mounted at Destination.
type Mount struct {
	Source      string
	Destination string
	// InitialSizeGB is the size of a volume a deploy creates (default 1).
	InitialSizeGB int
	Processes     []string
}

// VM is a [[vm]] entry: the size of the machines of some process groups.
type VM struct {
	Size      string
	Guest     model.Guest
	Processes []string
}

// Restart is a [[restart]] entry.
type Restart struct {
	Policy    model.RestartPolicy
	Processes []string
}

// Deploy is [deploy].
type Deploy struct {
	Strategy string
	// MaxUnavailable is how many machines of a group a rolling deploy
	// updates at once: a count (>= 1) or, when below 1, a fraction of the
	// group (Fly's default 0.33).
	MaxUnavailable float64
	WaitTimeout    time.Duration
}

// Warning is something of the file that torpor accepted without acting on
// it, with where it is.
type Warning struct {
	Key  string
	Line int
	Msg  string
}

func (w Warning) String() string {
	if w.Line > 0 {
		return fmt.Sprintf("fly.toml line %d: %s: %s", w.Line, w.Key, w.Msg)
	}
	return fmt.Sprintf("fly.toml: %s: %s", w.Key, w.Msg)
}

// The file's shape, as go-toml decodes it. Keys whose TOML type varies
// (Fly accepts `auto_stop_machines = true` and `= "suspend"`, `memory =
// 512` and `= "1gb"`) are decoded as any and checked by parse.
type file struct {
	App              string               `toml:"app"`
	PrimaryRegion    string               `toml:"primary_region"`
	KillSignal       string               `toml:"kill_signal"`
	KillTimeout      any                  `toml:"kill_timeout"`
	SwapSizeMB       *int                 `toml:"swap_size_mb"`
	ConsoleCommand   string               `toml:"console_command"`
	Build            *fileBuild           `toml:"build"`
	Deploy           *fileDeploy          `toml:"deploy"`
	Env              map[string]any       `toml:"env"`
	Processes        map[string]any       `toml:"processes"`
	HTTPService      *fileHTTP            `toml:"http_service"`
	Services         []fileService        `toml:"services"`
	Checks           map[string]fileCheck `toml:"checks"`
	Mounts           any                  `toml:"mounts"`
	VM               []fileVM             `toml:"vm"`
	Restart          []fileRest           `toml:"restart"`
	Files            []fileFile           `toml:"files"`
	Hooks            *fileHooks           `toml:"hooks"`
	Metrics          any                  `toml:"metrics"`
	Statics          any                  `toml:"statics"`
	Experimental     any                  `toml:"experimental"`
	HostDedicationID string               `toml:"host_dedication_id"`
}

type fileBuild struct {
	Image      string         `toml:"image"`
	Dockerfile string         `toml:"dockerfile"`
	Builder    string         `toml:"builder"`
	Buildpacks []string       `toml:"buildpacks"`
	Args       map[string]any `toml:"args"`
	Target     string         `toml:"build-target"`
}

type fileDeploy struct {
	Strategy       string `toml:"strategy"`
	MaxUnavailable any    `toml:"max_unavailable"`
	WaitTimeout    any    `toml:"wait_timeout"`
	ReleaseCommand string `toml:"release_command"`
}

type fileConcurrency struct {
	Type      string `toml:"type"`
	SoftLimit *int   `toml:"soft_limit"`
	HardLimit *int   `toml:"hard_limit"`
}

type fileHTTP struct {
	InternalPort       *int              `toml:"internal_port"`
	ForceHTTPS         bool              `toml:"force_https"`
	AutoStopMachines   any               `toml:"auto_stop_machines"`
	AutoStartMachines  *bool             `toml:"auto_start_machines"`
	MinMachinesRunning *int              `toml:"min_machines_running"`
	Processes          []string          `toml:"processes"`
	Concurrency        *fileConcurrency  `toml:"concurrency"`
	Checks             []fileServiceHTTP `toml:"checks"`
	TLSOptions         any               `toml:"tls_options"`
	HTTPOptions        any               `toml:"http_options"`
	// Port is torpor's: the host port the proxy publishes the service on
	// (Fly's are 80 and 443; the tls handler is not implemented).
	Port *int `toml:"port"`
}

type fileService struct {
	Protocol           string            `toml:"protocol"`
	InternalPort       *int              `toml:"internal_port"`
	Ports              []filePort        `toml:"ports"`
	AutoStopMachines   any               `toml:"auto_stop_machines"`
	AutoStartMachines  *bool             `toml:"auto_start_machines"`
	MinMachinesRunning *int              `toml:"min_machines_running"`
	Processes          []string          `toml:"processes"`
	Concurrency        *fileConcurrency  `toml:"concurrency"`
	TCPChecks          []fileServiceTCP  `toml:"tcp_checks"`
	HTTPChecks         []fileServiceHTTP `toml:"http_checks"`
}

type filePort struct {
	Port       *int     `toml:"port"`
	StartPort  *int     `toml:"start_port"`
	EndPort    *int     `toml:"end_port"`
	Handlers   []string `toml:"handlers"`
	ForceHTTPS bool     `toml:"force_https"`
	TLSOptions any      `toml:"tls_options"`
	HTTPOpts   any      `toml:"http_options"`
}

type fileServiceTCP struct {
	Interval    any `toml:"interval"`
	Timeout     any `toml:"timeout"`
	GracePeriod any `toml:"grace_period"`
}

type fileServiceHTTP struct {
	Interval      any               `toml:"interval"`
	Timeout       any               `toml:"timeout"`
	GracePeriod   any               `toml:"grace_period"`
	Method        string            `toml:"method"`
	Path          string            `toml:"path"`
	Protocol      string            `toml:"protocol"`
	TLSSkipVerify bool              `toml:"tls_skip_verify"`
	TLSServerName string            `toml:"tls_server_name"`
	Headers       map[string]string `toml:"headers"`
}

type fileCheck struct {
	Type            string `toml:"type"`
	Port            *int   `toml:"port"`
	fileServiceHTTP `toml:",inline"`
	Processes       []string `toml:"processes"`
}

type fileMount struct {
	Source      string   `toml:"source"`
	Destination string   `toml:"destination"`
	InitialSize any      `toml:"initial_size"`
	Processes   []string `toml:"processes"`
}

type fileVM struct {
	Size      string   `toml:"size"`
	Memory    any      `toml:"memory"`
	MemoryMB  *int     `toml:"memory_mb"`
	CPUs      *int     `toml:"cpus"`
	CPUKind   string   `toml:"cpu_kind"`
	GPUs      *int     `toml:"gpus"`
	GPUKind   string   `toml:"gpu_kind"`
	Processes []string `toml:"processes"`
}

type fileRest struct {
	Policy    string   `toml:"policy"`
	Retries   *int     `toml:"retries"`
	Processes []string `toml:"processes"`
}

type fileFile struct {
	GuestPath  string   `toml:"guest_path"`
	LocalPath  string   `toml:"local_path"`
	RawValue   string   `toml:"raw_value"`
	SecretName string   `toml:"secret_name"`
	Processes  []string `toml:"processes"`
}

type fileHook struct {
	Cmd     []string `toml:"cmd"`
	Timeout any      `toml:"timeout"`
}

type fileHooks struct {
	PreSuspend   *fileHook `toml:"pre_suspend"`
	PostResume   *fileHook `toml:"post_resume"`
	ResumeSignal string    `toml:"resume_signal"`
}

package model

import (
	"encoding/json"
	"fmt"
	"math"
	"reflect"
	"strconv"
	"time"
)

// MachineConfig is a machine's desired configuration (Fly's "config").
//
// Fields that Fly's API does not have are tagged `torpor:"extension"`: a
// client built on Fly's types drops them when it reads a machine, so an
// update that does not give them keeps them (KeepExtensions), and they are
// always written out, null or empty included, so that torpor's own clients
// send them back. Names of Fly's API that torpor accepts without acting on
// them (flyNames) are kept in FlyOnly and written back where they were.
type MachineConfig struct {
	Image    string            `json:"image"`
	Init     InitConfig        `json:"init,omitempty"`
	Env      map[string]string `json:"env,omitempty"`
	Guest    Guest             `json:"guest,omitempty"`
	Services []Service         `json:"services,omitempty"`
	Restart  *RestartPolicy    `json:"restart,omitempty"`
	Schedule string            `json:"schedule,omitempty"`
	// SwapSizeMB is torpor's (and fly.toml's) spelling of
	// init.swap_size_mb; the config is stored with the latter.
	SwapSizeMB  int               `json:"swap_size_mb,omitempty" torpor:"extension"`
	AutoDestroy bool              `json:"auto_destroy,omitempty"`
	Metadata    map[string]string `json:"metadata,omitempty"`
	StopConfig  *StopConfig       `json:"stop_config,omitempty"`
	// Size is Fly's deprecated preset name ("shared-cpu-1x"); it fills in
	// the guest fields the config leaves unset.
	Size string `json:"size,omitempty"`
	// Mounts put volumes of the machine's app in the machine (volume.go).
	Mounts []Mount `json:"mounts,omitempty"`
	// Checks are the machine's health checks, by name (checks.go); unlike
	// services[].checks they do not decide routing.
	Checks map[string]Check `json:"checks,omitempty"`
	// Hooks is a torpor extension: commands run inside the machine around
	// suspend and resume (docs/app-authors.md).
	Hooks *Hooks `json:"hooks,omitempty" torpor:"extension"`

	// FlyOnly holds the values of names of Fly's API that torpor accepts
	// without acting on them (flyNames), by JSON pointer relative to the
	// config ("/dns", "/services/0/checks"), so that the config reads back
	// as it was given.
	FlyOnly map[string]json.RawMessage `json:"-"`
}

// InitConfig says what process the machine runs.
type InitConfig struct {
	Exec       []string `json:"exec,omitempty"`
	Entrypoint []string `json:"entrypoint,omitempty"`
	Cmd        []string `json:"cmd,omitempty"`
	// SwapSizeMB is Fly's place for the machine's swap size.
	SwapSizeMB *int `json:"swap_size_mb,omitempty"`
	// Workdir is a torpor extension; Fly takes it from the image.
	Workdir string `json:"workdir,omitempty" torpor:"extension"`
}

// Guest is the machine's size.
type Guest struct {
	CPUKind  string `json:"cpu_kind,omitempty"`
	CPUs     int    `json:"cpus,omitempty"`
	MemoryMB int    `json:"memory_mb,omitempty"`
	GPUs     int    `json:"gpus,omitempty"`
	GPUKind  string `json:"gpu_kind,omitempty"`
	// GPUSuspend is a torpor extension: how a machine with GPUs may be
	// suspended. Unset, it cannot be (GPU state is not in a snapshot);
	// "host-memory" lets it be, the app moving its device state to host
	// memory in hooks.pre_suspend and back in hooks.post_resume (docs/gpu.md).
	GPUSuspend string `json:"gpu_suspend,omitempty" torpor:"extension"`
}

// GPUSuspendHostMemory is the guest.gpu_suspend value that makes a machine
// with GPUs eligible for suspend: its hooks keep device state in host memory
// across the snapshot.
const GPUSuspendHostMemory = "host-memory"

// Service publishes a port of the machine through the proxy.
type Service struct {
	Protocol           string       `json:"protocol,omitempty"`
	InternalPort       int          `json:"internal_port"`
	Ports              []Port       `json:"ports,omitempty"`
	Autostop           *Autostop    `json:"autostop,omitempty"`
	Autostart          *bool        `json:"autostart,omitempty"`
	MinMachinesRunning *int         `json:"min_machines_running,omitempty"`
	Concurrency        *Concurrency `json:"concurrency,omitempty"`
	// Checks must pass for the proxy to route to the machine.
	Checks []Check `json:"checks,omitempty"`
}

// Port is a public port of a service.
type Port struct {
	Port     *int     `json:"port,omitempty"`
	Handlers []string `json:"handlers,omitempty"`
}

// Concurrency bounds the load the proxy sends to one machine.
type Concurrency struct {
	Type      string `json:"type,omitempty"`
	SoftLimit int    `json:"soft_limit,omitempty"`
	HardLimit int    `json:"hard_limit,omitempty"`
}

// RestartPolicy says what happens when the machine's process exits on its own.
type RestartPolicy struct {
	Policy     string `json:"policy,omitempty"` // "no", "always", "on-failure"
	MaxRetries int    `json:"max_retries,omitempty"`
}

// StopConfig sets the default stop signal and grace period.
type StopConfig struct {
	Timeout *Duration `json:"timeout,omitempty"`
	Signal  *string   `json:"signal,omitempty"`
}

// Hooks tell the app about suspend and resume. Hook commands run inside the
// machine, like "runsc exec": with the machine's environment, working
// directory and user.
type Hooks struct {
	// PreSuspend runs before the checkpoint; a non-zero exit or a timeout
	// aborts the suspend and the machine stays started.
	PreSuspend *Hook `json:"pre_suspend,omitempty"`
	// PostResume runs right after a restore; its failure is recorded in an
	// event but does not undo the resume.
	PostResume *Hook `json:"post_resume,omitempty"`
	// ResumeSignal, if set (e.g. "SIGUSR2"), is sent to the machine's init
	// process after every resume, after PostResume.
	ResumeSignal string `json:"resume_signal,omitempty"`
}

// Hook is one command run inside the machine.
type Hook struct {
	Cmd []string `json:"cmd"`
	// Timeout bounds the command (1s to 5m, default 10s); when it passes the
	// command's process group is killed.
	Timeout Duration `json:"timeout,omitzero"`
}

// Autostop is a service's idle policy: "off", "stop" or "suspend". Like Fly, it
// also accepts the JSON booleans true ("stop") and false ("off").
type Autostop string

// Autostop values.
const (
	AutostopOff     Autostop = "off"
	AutostopStop    Autostop = "stop"
	AutostopSuspend Autostop = "suspend"
)

// MarshalJSON writes "off" and "stop" as Fly answers them, false and true
// (older Fly clients read a boolean), and "suspend" as a string.
func (a Autostop) MarshalJSON() ([]byte, error) {
	switch a {
	case AutostopOff:
		return []byte("false"), nil
	case AutostopStop:
		return []byte("true"), nil
	}
	return json.Marshal(string(a))
}

// UnmarshalJSON accepts "off", "stop", "suspend", true and false.
func (a *Autostop) UnmarshalJSON(b []byte) error {
	var flag bool
	if err := json.Unmarshal(b, &flag); err == nil {
		*a = AutostopOff
		if flag {
			*a = AutostopStop
		}
		return nil
	}
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return ruleError[Autostop]("autostop must be \"off\", \"stop\", \"suspend\" or a boolean")
	}
	switch Autostop(s) {
	case AutostopOff, AutostopStop, AutostopSuspend:
		*a = Autostop(s)
		return nil
	}
	return ruleError[Autostop](fmt.Sprintf("autostop must be \"off\", \"stop\", \"suspend\" or a boolean, not %q", s))
}

// Duration is a time.Duration that reads and writes JSON as a Go duration
// string ("30s") and also accepts a number of seconds.
type Duration struct{ time.Duration }

// MarshalJSON writes the duration as a string such as "30s".
func (d Duration) MarshalJSON() ([]byte, error) { return json.Marshal(d.String()) }

// UnmarshalJSON reads "30s" or 30 (seconds). Values beyond what a
// time.Duration holds (about 292 years) are refused.
func (d *Duration) UnmarshalJSON(b []byte) error {
	var n float64
	if err := json.Unmarshal(b, &n); err == nil {
		return d.setSeconds(n, string(b))
	}
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return ruleError[Duration]("duration must be a string like \"30s\" or a number of seconds")
	}
	if secs, err := strconv.ParseFloat(s, 64); err == nil {
		return d.setSeconds(secs, strconv.Quote(s))
	}
	v, err := time.ParseDuration(s)
	if err != nil {
		return ruleError[Duration](fmt.Sprintf("invalid duration %q: must be a string like \"30s\" or a number of seconds", s))
	}
	d.Duration = v
	return nil
}

// maxSeconds is the largest number of seconds a time.Duration holds.
const maxSeconds = float64(math.MaxInt64 / int64(time.Second))

// setSeconds sets d to secs seconds, refusing what a time.Duration cannot hold.
func (d *Duration) setSeconds(secs float64, raw string) error {
	if math.IsNaN(secs) || math.Abs(secs) > maxSeconds {
		return ruleError[Duration](fmt.Sprintf("invalid duration %s: out of range", raw))
	}
	d.Duration = time.Duration(secs * float64(time.Second))
	return nil
}

// ruleError is how the custom unmarshalers of T report a value that breaks
// T's rule: as a *json.UnmarshalTypeError, which encoding/json completes
// with the field's path, so that DecodeJSON can name the field.
func ruleError[T any](rule string) error {
	return &json.UnmarshalTypeError{Value: rule, Type: reflect.TypeFor[T]()}
}

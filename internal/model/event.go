package model

import (
	"encoding/json"
	"fmt"
	"strings"
)

// Event is one entry of a machine's history, in the shape of Fly's machine
// events: {id, type, status, source, timestamp, request}. Request holds the
// event's details as one of the typed structs below, chosen by Type (JSON
// "request" object); events of a type this version does not know read back
// as RawDetails.
type Event struct {
	ID        string       `json:"id"`
	Type      string       `json:"type"`
	Status    string       `json:"status"`
	Source    string       `json:"source"`
	Timestamp int64        `json:"timestamp"` // Unix milliseconds, as Fly reports it.
	Request   EventDetails `json:"request,omitempty"`
}

// Event types.
const (
	EventLaunch     = "launch"
	EventStart      = "start"
	EventResume     = "resume" // a start of a suspended machine, from its snapshot or (fallback) cold
	EventRestart    = "restart"
	EventSuspend    = "suspend"
	EventStop       = "stop"
	EventUpdate     = "update"
	EventExit       = "exit"
	EventRecover    = "recover"
	EventDestroy    = "destroy"
	EventCordon     = "cordon"
	EventUncordon   = "uncordon"
	EventPostResume = "post_resume" // a post_resume hook that failed
	EventMetadata   = "metadata"    // a key of config.metadata set or deleted
	// EventMove: the machine moved here from another host of the cluster.
	EventMove = "move"
	// EventFence: the host lost (or regained) its cluster lease.
	EventFence = "fence"
)

// Event sources.
const (
	SourceUser  = "user"
	SourceFlyd  = "flyd" // the daemon itself, Fly's name for its host agent
	SourceProxy = "proxy"
	// SourceMachine is a machine acting on itself through the in-machine API.
	SourceMachine = "machine"
)

// EventDetails is the typed "request" of an event: one of the *...Details
// types of this package.
type EventDetails interface{ eventDetails() }

// newDetails returns an empty value of the details type of events of type typ.
func newDetails(typ string) EventDetails {
	switch typ {
	case EventStart, EventResume:
		return new(StartDetails)
	case EventRestart:
		return new(RestartDetails)
	case EventSuspend:
		return new(SuspendDetails)
	case EventStop:
		return new(StopDetails)
	case EventUpdate:
		return new(UpdateDetails)
	case EventExit:
		return new(ExitDetails)
	case EventRecover:
		return new(RecoverDetails)
	case EventPostResume:
		return new(HookResult)
	case EventLaunch:
		return new(LaunchDetails)
	case EventMetadata:
		return new(MetadataDetails)
	case EventMove:
		return new(MoveDetails)
	case EventFence:
		return new(FenceDetails)
	}
	return new(RawDetails)
}

// UnmarshalJSON reads an event, decoding its request into the details type
// of its event type.
func (e *Event) UnmarshalJSON(b []byte) error {
	type plain Event
	var raw struct {
		plain
		Request json.RawMessage `json:"request"`
	}
	if err := json.Unmarshal(b, &raw); err != nil {
		return err
	}
	*e = Event(raw.plain)
	if len(raw.Request) == 0 || string(raw.Request) == "null" {
		return nil
	}
	d := newDetails(e.Type)
	if err := json.Unmarshal(raw.Request, d); err != nil {
		return fmt.Errorf("event %s (%s): request: %w", e.ID, e.Type, err)
	}
	e.Request = d
	return nil
}

// RawDetails are the details of an event type this version does not know.
type RawDetails map[string]any

// StartDetails describe a start: a cold start (event "start", or "resume"
// with from_snapshot false and the reason the snapshot could not be used)
// or a resume from a snapshot (event "resume", from_snapshot true, with the
// resume's phases).
type StartDetails struct {
	FromSnapshot bool `json:"from_snapshot"`
	// Reason says in words why a resume fell back to a cold start
	// (DESIGN.md, invariant 5), e.g. "snapshot missing: ..."; Fallback
	// says it as one of a fixed set of codes, for metrics and tools.
	Reason         string         `json:"reason,omitempty"`
	Fallback       FallbackReason `json:"fallback,omitempty"`
	SnapshotID     string         `json:"snapshot_id,omitempty"`
	BootGeneration uint64         `json:"boot_generation"`
	// DurationMS is the whole operation, from the start call until the
	// machine was recorded started.
	DurationMS int64 `json:"duration_ms"`
	// Error says why a start failed (status "failed").
	Error    string   `json:"error,omitempty"`
	Warnings []string `json:"warnings,omitempty"`
	// WarmSandbox: the resume restored into a sandbox created ahead of it
	// (torpor serve --warm-sandboxes-memory; docs/suspend-resume.md).
	WarmSandbox bool `json:"warm_sandbox,omitempty"`
	*ResumePhases
	*AppNotice
}

// FallbackReason classifies why a resume could not use its snapshot and
// cold-started instead (DESIGN.md, invariant 5). The set is fixed, so it
// can label metrics; StartDetails.Reason has the details.
type FallbackReason string

// Fallback reasons.
const (
	FallbackMissing       FallbackReason = "snapshot_missing"  // no record, or no image on disk
	FallbackClaimed       FallbackReason = "snapshot_claimed"  // claimed before (or never sealed)
	FallbackCorrupt       FallbackReason = "snapshot_corrupt"  // seal or checksums do not match
	FallbackStale         FallbackReason = "snapshot_stale"    // from an older boot generation
	FallbackRuntime       FallbackReason = "runtime_version"   // taken by another runtime version
	FallbackHost          FallbackReason = "host_incompatible" // taken on a host with other CPU features
	FallbackRestoreFailed FallbackReason = "restore_failed"    // the runtime's restore failed
	FallbackOther         FallbackReason = "other"             // anything else (a store error)
)

// FallbackReasons lists every fallback reason.
var FallbackReasons = []FallbackReason{FallbackMissing, FallbackClaimed, FallbackCorrupt, FallbackStale,
	FallbackRuntime, FallbackHost, FallbackRestoreFailed, FallbackOther}

// ResumePhases is where a resume from a snapshot spent its time, in
// milliseconds. Claim, prepare and runtime restore follow each other; the
// image check runs beside the runtime restore (verify_ms), and the resume
// waits for it after the restore (verify_wait_ms). RestoreMS is the whole
// span up to a running, checked sandbox; what the app is told afterwards
// (AppNotice) takes the rest of StartDetails.DurationMS.
type ResumePhases struct {
	ClaimMS          int64 `json:"claim_ms"`
	PrepareMS        int64 `json:"prepare_ms"`
	RuntimeRestoreMS int64 `json:"runtime_restore_ms"`
	VerifyMS         int64 `json:"verify_ms"`
	VerifyWaitMS     int64 `json:"verify_wait_ms"`
	RestoreMS        int64 `json:"restore_ms"`
}

// AppNotice is what the app was told of a boot or resume
// (docs/app-authors.md): the generation file, the clock check, the thaw,
// the post_resume hook and the resume signal, and what failed of them.
type AppNotice struct {
	// ResumeCount is the number of resumes in this boot generation, this
	// one included (0 after a cold start).
	ResumeCount int `json:"resume_count,omitempty"`
	// NoticeMS is how long telling the app of a resume took, all on the
	// resume's critical path: the generation file and the clock check
	// (side by side, the app frozen), the thaw, post_resume and the
	// resume signal.
	NoticeMS int64 `json:"app_notice_ms,omitempty"`
	// ClockReads is how often the clock was read before it was right or
	// the check gave up (1 when the first reading was right).
	ClockReads          int         `json:"clock_reads,omitempty"`
	ClockSkewMS         *float64    `json:"clock_skew_ms,omitempty"`
	ClockUncertaintyMS  *float64    `json:"clock_uncertainty_ms,omitempty"`
	ClockOK             *bool       `json:"clock_ok,omitempty"`
	GenerationFileError string      `json:"generation_file_error,omitempty"`
	ThawError           string      `json:"thaw_error,omitempty"`
	PostResume          *HookResult `json:"post_resume,omitempty"`
	ResumeSignal        string      `json:"resume_signal,omitempty"`
	ResumeSignalError   string      `json:"resume_signal_error,omitempty"`
}

// HookResult is one run of a hook (config.hooks); as an event of its own
// (type post_resume, status failed), Error says what went wrong.
type HookResult struct {
	Status     string `json:"status"` // "ok", "failed" or "timeout"
	DurationMS int64  `json:"duration_ms"`
	ExitCode   int    `json:"exit_code"` // -1 when unknown (timeout, could not run)
	Output     string `json:"output,omitempty"`
	Error      string `json:"error,omitempty"`
}

// SuspendDetails describe a suspend: the snapshot it sealed and where its
// time went (status "suspended"), or why it failed and how the machine was
// brought back (status "failed").
type SuspendDetails struct {
	SnapshotID     string `json:"snapshot_id,omitempty"`
	SizeBytes      int64  `json:"size_bytes,omitempty"`
	BootGeneration uint64 `json:"boot_generation,omitempty"`
	CheckpointMS   int64  `json:"checkpoint_ms,omitempty"`
	SealMS         int64  `json:"seal_ms,omitempty"`
	// VolumesSyncMS is how long writing the machine's volumes to disk
	// took (beside the seal).
	VolumesSyncMS int64       `json:"volumes_sync_ms,omitempty"`
	DurationMS    int64       `json:"duration_ms,omitempty"`
	PreSuspend    *HookResult `json:"pre_suspend,omitempty"`
	// CompletedAfterRestart: a daemon restart found the sandbox stopped and
	// the image whole, and finished the suspend.
	CompletedAfterRestart bool `json:"completed_after_restart,omitempty"`
	// Repaired: the suspend's last store write failed (e.g. disk full) and
	// the daemon finished it from the sealed image, without a restart.
	Repaired bool `json:"repaired,omitempty"`

	Error string `json:"error,omitempty"`
	// MachineState is the state a failed suspend left the machine in.
	MachineState State `json:"machine_state,omitempty"`
	// Recovered says how a machine whose sandbox did not survive a failed
	// suspend came back ("restored from the unsealed image", "cold start").
	Recovered string `json:"recovered,omitempty"`
	// Cancelled: a start arrived while the machine was suspending, and the
	// machine went on running from memory (status "cancelled"); Phase
	// says how far the suspend had got ("before checkpoint", "after
	// checkpoint").
	Cancelled bool   `json:"cancelled,omitempty"`
	Phase     string `json:"phase,omitempty"`
	*AppNotice
}

// StopDetails describe a stop: of a running machine (signal, and whether it
// exited before the timeout), or of a suspended one (snapshot discarded).
type StopDetails struct {
	Signal            string   `json:"signal,omitempty"`
	ExitedAfterSignal bool     `json:"exited_after_signal,omitempty"`
	ExitCode          *int     `json:"exit_code,omitempty"`
	SnapshotDiscarded bool     `json:"snapshot_discarded,omitempty"`
	Warnings          []string `json:"warnings,omitempty"`
}

// UpdateDetails describe a config update (a deploy of one machine).
type UpdateDetails struct {
	Version           string `json:"version,omitempty"`
	PreviousState     State  `json:"previous_state,omitempty"`
	SnapshotDiscarded bool   `json:"snapshot_discarded,omitempty"`
	// ImageDigest is the OCI image digest the new config version pins;
	// ImageNote says how it was resolved when that is worth knowing (pulled,
	// or taken from the cache because the registry was unreachable).
	ImageDigest string   `json:"image_digest,omitempty"`
	ImageNote   string   `json:"image_note,omitempty"`
	Warnings    []string `json:"warnings,omitempty"`
}

// ExitDetails describe a process exit nobody asked for.
type ExitDetails struct {
	ExitCode int    `json:"exit_code"`
	Signal   string `json:"signal,omitempty"`
	// OOMKilled: the kernel killed the sandbox for exceeding its memory.
	OOMKilled bool   `json:"oom_killed,omitempty"`
	Error     string `json:"error,omitempty"`
	// ExitEvent is the exit in the shape Fly's clients read
	// (request.exit_event).
	ExitEvent *FlyExitEvent `json:"exit_event,omitempty"`
}

// FlyExitEvent is Fly's description of a process exit.
type FlyExitEvent struct {
	ExitCode      int    `json:"exit_code"`
	OOMKilled     bool   `json:"oom_killed"`
	RequestedStop bool   `json:"requested_stop"`
	Restarting    bool   `json:"restarting"`
	Signal        int    `json:"signal,omitempty"`
	ExitedAt      string `json:"exited_at"`
}

// RestartDetails describe a restart by the restart policy, or one asked for
// (POST .../restart: Requested, with how the machine was stopped).
type RestartDetails struct {
	Requested  bool   `json:"requested,omitempty"`
	Signal     string `json:"signal,omitempty"`
	ForceStop  bool   `json:"force_stop,omitempty"`
	Policy     string `json:"policy,omitempty"`
	Attempt    int    `json:"attempt,omitempty"`
	MaxRetries int    `json:"max_retries,omitempty"`
	BackoffMS  int64  `json:"backoff_ms,omitempty"`
	Error      string `json:"error,omitempty"`
}

// RecoverDetails describe what a daemon restart did with a machine.
type RecoverDetails struct {
	Adopted       bool   `json:"adopted,omitempty"`
	PreviousState State  `json:"previous_state,omitempty"`
	Reason        string `json:"reason,omitempty"`
}

// LaunchDetails describe a machine's creation.
type LaunchDetails struct {
	Version string `json:"version,omitempty"`
	// ImageDigest and ImageNote: as in UpdateDetails.
	ImageDigest string   `json:"image_digest,omitempty"`
	ImageNote   string   `json:"image_note,omitempty"`
	Warnings    []string `json:"warnings,omitempty"`
}

// MoveDetails describe a move of the machine from one host of the cluster
// to another (docs/cluster.md): why, and what became of its snapshot.
type MoveDetails struct {
	From   string `json:"from_host"`
	To     string `json:"to_host"`
	Reason string `json:"reason"`
	// Snapshot is "carried" (the sealed snapshot came along and will be
	// resumed), "left behind" (SnapshotReason says why; the next start is
	// a cold start) or "" (the machine had none).
	Snapshot       string `json:"snapshot,omitempty"`
	SnapshotReason string `json:"snapshot_reason,omitempty"`
	// SnapshotSource is where a carried snapshot was copied from: "host"
	// (the origin host) or "store" (the snapshot store).
	SnapshotSource string `json:"snapshot_source,omitempty"`
	SizeBytes      int64  `json:"size_bytes,omitempty"`
	DurationMS     int64  `json:"duration_ms,omitempty"`
}

// FenceDetails describe a fence: the host lost its cluster lease and froze
// the machine so that it cannot run on two hosts (status "frozen"), or
// regained it and let the machine go on (status "thawed").
type FenceDetails struct {
	Reason string `json:"reason"`
}

func (*MoveDetails) eventDetails()  {}
func (*FenceDetails) eventDetails() {}

// MetadataDetails describe a change of one config.metadata key.
type MetadataDetails struct {
	Key     string `json:"key"`
	Value   string `json:"value,omitempty"`
	Deleted bool   `json:"deleted,omitempty"`
}

func (*StartDetails) eventDetails()    {}
func (*SuspendDetails) eventDetails()  {}
func (*StopDetails) eventDetails()     {}
func (*UpdateDetails) eventDetails()   {}
func (*ExitDetails) eventDetails()     {}
func (*RestartDetails) eventDetails()  {}
func (*RecoverDetails) eventDetails()  {}
func (*LaunchDetails) eventDetails()   {}
func (*MetadataDetails) eventDetails() {}
func (*HookResult) eventDetails()      {}
func (*RawDetails) eventDetails()      {}

// Newest returns the latest of events (by timestamp) of type typ and
// status, and whether there is one.
func Newest(events []Event, typ, status string) (Event, bool) {
	var best Event
	found := false
	for _, ev := range events {
		if ev.Type == typ && ev.Status == status && (!found || ev.Timestamp > best.Timestamp) {
			best, found = ev, true
		}
	}
	return best, found
}

// Start returns the event's details as StartDetails, or nil if it has others.
func (e Event) Start() *StartDetails { d, _ := e.Request.(*StartDetails); return d }

// Suspend returns the event's details as SuspendDetails, or nil if it has others.
func (e Event) Suspend() *SuspendDetails { d, _ := e.Request.(*SuspendDetails); return d }

// Field returns the value at a dotted path of the event's details as they
// read in JSON (numbers are float64), e.g. "from_snapshot" or
// "post_resume.duration_ms"; nil when absent. It is for tests and tools that
// check the wire shape; code in torpor reads the typed details.
func (e Event) Field(path string) any {
	var v any = e.Fields()
	for _, key := range strings.Split(path, ".") {
		obj, ok := v.(map[string]any)
		if !ok {
			return nil
		}
		v = obj[key]
	}
	return v
}

// Fields returns the event's details as they read in JSON: an object of
// field names to values (numbers are float64), empty when there are none.
// Like Field, it is for display and tools; torpor's code reads the typed
// details.
func (e Event) Fields() map[string]any {
	out := map[string]any{}
	if e.Request == nil {
		return out
	}
	if b, err := json.Marshal(e.Request); err == nil {
		_ = json.Unmarshal(b, &out)
	}
	return out
}

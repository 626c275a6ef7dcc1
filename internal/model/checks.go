package model

import "time"

// Check is a health check of a machine (Fly's api.MachineCheck): a TCP
// connect or an HTTP request from the host to the machine's private
// address. It appears in config.checks (by name) and in
// config.services[].checks.
type Check struct {
	// Type is "tcp" or "http".
	Type string `json:"type,omitempty"`
	// Port is the machine's port to check; a service's checks default to
	// its internal_port.
	Port int `json:"port,omitempty"`
	// Interval is the time between checks (default 15s).
	Interval Duration `json:"interval,omitzero"`
	// Timeout bounds one check (default 2s).
	Timeout Duration `json:"timeout,omitzero"`
	// GracePeriod is how long after a start a failing check counts as
	// "warning" rather than "critical" (default 0).
	GracePeriod Duration `json:"grace_period,omitzero"`
	// HTTP checks only.
	Method        string       `json:"method,omitempty"`   // default GET
	Path          string       `json:"path,omitempty"`     // default /
	Protocol      string       `json:"protocol,omitempty"` // "http" (default) or "https"
	TLSSkipVerify bool         `json:"tls_skip_verify,omitempty"`
	TLSServerName string       `json:"tls_server_name,omitempty"`
	Headers       []HTTPHeader `json:"headers,omitempty"`
}

// HTTPHeader is a header an HTTP check sends (Fly's api.MachineHTTPHeader).
type HTTPHeader struct {
	Name   string   `json:"name"`
	Values []string `json:"values"`
}

// Check types and statuses.
const (
	CheckTCP  = "tcp"
	CheckHTTP = "http"

	CheckPassing  = "passing"
	CheckWarning  = "warning"
	CheckCritical = "critical"
)

// CheckStatus is the latest result of one check (Fly's CheckStatus), as
// the machine JSON shows it in "checks".
type CheckStatus struct {
	Name      string    `json:"name"`
	Status    string    `json:"status"`
	Output    string    `json:"output"`
	UpdatedAt time.Time `json:"updated_at"`
}

package model

import "time"

// DashboardLink is the answer of POST /v1/dashboard: a one-time link that
// logs a browser on this host into the web dashboard.
type DashboardLink struct {
	URL       string    `json:"url"`
	ExpiresAt time.Time `json:"expires_at"`
}

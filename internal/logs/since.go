package logs

import (
	"fmt"
	"time"
)

// ParseSince reads the "since" of a log query: an RFC 3339 time, or a
// duration back from now such as "5m".
func ParseSince(s string, now time.Time) (time.Time, error) {
	if t, err := time.Parse(time.RFC3339Nano, s); err == nil {
		return t, nil
	}
	if d, err := time.ParseDuration(s); err == nil && d >= 0 {
		return now.Add(-d), nil
	}
	return time.Time{}, fmt.Errorf("since must be an RFC 3339 time or a duration such as 5m, got %q", s)
}

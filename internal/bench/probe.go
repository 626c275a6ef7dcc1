package bench

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"time"
)

// appState is what the app answers on GET / (and /verify).
type appState struct {
	Started      float64 `json:"started"`
	PID          int     `json:"pid"`
	InitSeconds  float64 `json:"init_seconds"`
	ReadySeconds float64 `json:"ready_seconds"`
	RSSBytes     int64   `json:"rss_bytes"`
	BallastBytes int64   `json:"ballast_bytes"`
	BallastMB    int     `json:"ballast_mb"`
	BadBlocks    int     `json:"bad_blocks"`
	IndexOK      bool    `json:"index_ok"`
}

// sameProcess reports whether two answers come from one process (a resume),
// not from two (a cold start).
func (a appState) sameProcess(b appState) bool { return a.Started == b.Started && a.PID == b.PID }

// probeResult is one successful probe.
type probeResult struct {
	firstByte time.Time // when the first byte of the response arrived
	attempts  int       // connections tried, the successful one included
	state     appState
}

// probeTimeout bounds one probe: a cold start of a heavy app takes seconds.
const probeTimeout = 2 * time.Minute

// firstByte polls the app at addr (ip:port) until it answers: each attempt
// opens a TCP connection and sends GET path; a refused or failed attempt is
// retried after interval. It returns when the first byte of a response
// arrived, and the response read whole.
func firstByte(ctx context.Context, addr, path string, interval time.Duration) (probeResult, error) {
	deadline := time.Now().Add(probeTimeout)
	var last error
	for attempt := 1; ; attempt++ {
		r, err := getOnce(ctx, addr, path, deadline)
		if err == nil {
			r.attempts = attempt
			return r, nil
		}
		last = err
		if time.Now().After(deadline) || ctx.Err() != nil {
			return r, fmt.Errorf("app at %s never answered (%d attempts): %w", addr, attempt, last)
		}
		time.Sleep(interval)
	}
}

// getOnce makes one request on a fresh connection.
func getOnce(ctx context.Context, addr, path string, deadline time.Time) (probeResult, error) {
	var r probeResult
	dialer := net.Dialer{Timeout: time.Second}
	conn, err := dialer.DialContext(ctx, "tcp", addr)
	if err != nil {
		return r, err
	}
	defer conn.Close()
	conn.SetDeadline(deadline)
	if _, err := io.WriteString(conn, "GET "+path+" HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n"); err != nil {
		return r, err
	}
	tr := &timingReader{r: conn}
	resp, err := http.ReadResponse(bufio.NewReader(tr), nil)
	if err != nil {
		return r, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return r, fmt.Errorf("app answered %s", resp.Status)
	}
	if err := json.NewDecoder(resp.Body).Decode(&r.state); err != nil {
		return r, fmt.Errorf("app's answer: %w", err)
	}
	r.firstByte = tr.first
	return r, nil
}

// timingReader notes when the first byte was read through it.
type timingReader struct {
	r     io.Reader
	first time.Time
}

// Read reads from the connection and notes the time of the first byte.
func (t *timingReader) Read(p []byte) (int, error) {
	n, err := t.r.Read(p)
	if n > 0 && t.first.IsZero() {
		t.first = time.Now()
	}
	return n, err
}

// DefaultPollInterval is how often the probe retries an app that does not
// answer yet.
const DefaultPollInterval = 2 * time.Millisecond

package checks

import (
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/torpor-dev/torpor/internal/model"
)

// result is the outcome of one probe.
type result struct {
	status string // passing, warning or critical
	output string
}

// maxBody bounds how much of an HTTP check's answer goes in its output.
const maxBody = 256

// probe runs check c once against addr (host:port of the machine).
func probe(ctx context.Context, addr string, c model.Check) result {
	if addr == "" {
		return result{model.CheckCritical, "the machine has no private IP address to check"}
	}
	ctx, cancel := context.WithTimeout(ctx, c.Timeout.Duration)
	defer cancel()
	begin := time.Now()
	if c.Type == model.CheckTCP {
		var d net.Dialer
		conn, err := d.DialContext(ctx, "tcp", addr)
		if err != nil {
			return result{model.CheckCritical, fmt.Sprintf("TCP connect %s: %v", addr, cleanErr(ctx, err, c.Timeout.Duration))}
		}
		conn.Close()
		return result{model.CheckPassing, fmt.Sprintf("TCP connect %s: Success (%s)", addr, took(begin))}
	}
	return probeHTTP(ctx, addr, c, begin)
}

func probeHTTP(ctx context.Context, addr string, c model.Check, begin time.Time) result {
	url := c.Protocol + "://" + addr + c.Path
	what := fmt.Sprintf("HTTP %s %s", c.Method, url)
	req, err := http.NewRequestWithContext(ctx, c.Method, url, nil)
	if err != nil {
		return result{model.CheckCritical, fmt.Sprintf("%s: %v", what, err)}
	}
	req.Header.Set("User-Agent", "torpor-check/1")
	for _, h := range c.Headers {
		if strings.EqualFold(h.Name, "Host") && len(h.Values) > 0 {
			req.Host = h.Values[0]
			continue
		}
		for _, v := range h.Values {
			req.Header.Add(h.Name, v)
		}
	}
	resp, err := client(c).Do(req)
	if err != nil {
		return result{model.CheckCritical, fmt.Sprintf("%s: %v", what, cleanErr(ctx, err, c.Timeout.Duration))}
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, maxBody))
	out := fmt.Sprintf("%s: %s (%s)", what, resp.Status, took(begin))
	if b := strings.TrimSpace(string(body)); b != "" {
		out += " Output: " + strconv.Quote(b)
	}
	switch {
	case resp.StatusCode >= 200 && resp.StatusCode < 300:
		return result{model.CheckPassing, out}
	case resp.StatusCode == http.StatusTooManyRequests:
		return result{model.CheckWarning, out}
	}
	return result{model.CheckCritical, out}
}

// client returns the HTTP client for check c: one connection per check
// (nothing kept open across a suspend), no redirects followed (a 3xx is
// the app's answer, and fails), TLS as the check says.
func client(c model.Check) *http.Client {
	tr := &http.Transport{
		DisableKeepAlives: true,
		TLSClientConfig:   &tls.Config{InsecureSkipVerify: c.TLSSkipVerify, ServerName: c.TLSServerName}, //nolint:gosec // the user's choice, per check
		Proxy:             nil,
	}
	return &http.Client{
		Transport:     tr,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
}

// cleanErr says "timed out after 2s" for a check that hit its timeout,
// rather than Go's long wording.
func cleanErr(ctx context.Context, err error, timeout time.Duration) error {
	if ctx.Err() == context.DeadlineExceeded {
		return fmt.Errorf("timed out after %s", timeout)
	}
	return err
}

func took(begin time.Time) string {
	return time.Since(begin).Round(100 * time.Microsecond).String()
}

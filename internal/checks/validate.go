package checks

import (
	"fmt"
	"net/url"
	"regexp"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/torpor-dev/torpor/internal/model"
)

// Defaults and bounds of a check.
const (
	DefaultInterval = 15 * time.Second
	DefaultTimeout  = 2 * time.Second
	minInterval     = time.Second
	maxInterval     = time.Hour
	minTimeout      = 100 * time.Millisecond
	maxTimeout      = time.Minute
	maxGracePeriod  = time.Hour
	maxChecks       = 16
	maxHeaders      = 32
	maxPathLen      = 2048
	maxHeaderLen    = 4096
)

var (
	checkNameRe = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$`)
	tokenRe     = regexp.MustCompile("^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")
	methods     = []string{"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"}
)

// servicePrefix starts the names of service checks (Fly's naming); a
// top-level check may not take it.
const servicePrefix = "servicecheck-"

func invalid(format string, args ...any) error {
	return model.Errorf(model.KindInvalid, format, args...)
}

// Normalize checks config.checks and config.services[].checks, naming the
// field and the rule on error, and fills in their defaults (interval,
// timeout, a service check's port, an HTTP check's method, path and
// protocol), so that the stored config says what runs.
func Normalize(cfg *model.MachineConfig) error {
	n := len(cfg.Checks)
	names := make([]string, 0, len(cfg.Checks))
	for name := range cfg.Checks {
		names = append(names, name)
	}
	sort.Strings(names)
	for _, name := range names {
		field := "config.checks." + name
		if !checkNameRe.MatchString(name) || strings.HasPrefix(name, servicePrefix) {
			return invalid("config.checks: check name %q must be 1-63 letters, digits, '.', '_' or '-', starting with a letter or digit, "+
				"and not start with %q", name, servicePrefix)
		}
		c := cfg.Checks[name]
		if c.Port == 0 {
			return invalid("%s.port is required (the machine's port to check)", field)
		}
		if err := normalize(field, &c); err != nil {
			return err
		}
		cfg.Checks[name] = c
	}
	if len(cfg.Checks) == 0 {
		cfg.Checks = nil
	}
	for i := range cfg.Services {
		s := &cfg.Services[i]
		n += len(s.Checks)
		for j := range s.Checks {
			c := &s.Checks[j]
			if c.Port == 0 {
				c.Port = s.InternalPort
			}
			if err := normalize(fmt.Sprintf("config.services[%d].checks[%d]", i, j), c); err != nil {
				return err
			}
		}
		if len(s.Checks) == 0 {
			s.Checks = nil
		}
	}
	if n > maxChecks {
		return invalid("config: at most %d checks in all (config.checks and config.services[].checks), got %d", maxChecks, n)
	}
	return nil
}

// normalize checks one check and fills in its defaults.
func normalize(field string, c *model.Check) error {
	if err := checkTiming(field, c); err != nil {
		return err
	}
	switch {
	case c.Port < 1 || c.Port > 65535:
		return invalid("%s.port must be between 1 and 65535, got %d", field, c.Port)
	case c.Type == model.CheckTCP:
		return checkTCPOnly(field, c)
	case c.Type == model.CheckHTTP:
		return normalizeHTTP(field, c)
	case c.Type == "":
		return invalid("%s.type is required: \"tcp\" or \"http\"", field)
	}
	return invalid("%s.type must be \"tcp\" or \"http\", got %q", field, c.Type)
}

func checkTiming(field string, c *model.Check) error {
	if c.Interval.Duration == 0 {
		c.Interval.Duration = DefaultInterval
	}
	if c.Timeout.Duration == 0 {
		c.Timeout.Duration = min(DefaultTimeout, c.Interval.Duration)
	}
	switch i, t, g := c.Interval.Duration, c.Timeout.Duration, c.GracePeriod.Duration; {
	case i < minInterval || i > maxInterval:
		return invalid("%s.interval must be between %s and %s, got %s", field, minInterval, maxInterval, i)
	case t < minTimeout || t > maxTimeout:
		return invalid("%s.timeout must be between %s and %s, got %s", field, minTimeout, maxTimeout, t)
	case t > i:
		return invalid("%s.timeout (%s) must not exceed interval (%s)", field, t, i)
	case g < 0 || g > maxGracePeriod:
		return invalid("%s.grace_period must be between 0s and %s, got %s", field, maxGracePeriod, g)
	}
	return nil
}

// checkTCPOnly refuses the HTTP fields on a TCP check, which would say
// something that does not happen.
func checkTCPOnly(field string, c *model.Check) error {
	for _, f := range []struct {
		name string
		set  bool
	}{
		{"method", c.Method != ""}, {"path", c.Path != ""}, {"protocol", c.Protocol != ""}, {"headers", len(c.Headers) > 0},
		{"tls_skip_verify", c.TLSSkipVerify}, {"tls_server_name", c.TLSServerName != ""},
	} {
		if f.set {
			return invalid("%s.%s is only for http checks; this check's type is \"tcp\"", field, f.name)
		}
	}
	return nil
}

func normalizeHTTP(field string, c *model.Check) error {
	if c.Method == "" {
		c.Method = "GET"
	}
	c.Method = strings.ToUpper(c.Method)
	if c.Path == "" {
		c.Path = "/"
	}
	if c.Protocol == "" {
		c.Protocol = "http"
	}
	switch {
	case !slices.Contains(methods, c.Method):
		return invalid("%s.method must be one of %s, got %q", field, strings.Join(methods, ", "), c.Method)
	case c.Protocol != "http" && c.Protocol != "https":
		return invalid("%s.protocol must be \"http\" or \"https\", got %q", field, c.Protocol)
	case (c.TLSSkipVerify || c.TLSServerName != "") && c.Protocol != "https":
		return invalid("%s.tls_skip_verify and tls_server_name are only for protocol \"https\"", field)
	case len(c.TLSServerName) > 253 || !printable(c.TLSServerName):
		return invalid("%s.tls_server_name must be a host name of at most 253 characters", field)
	}
	if err := checkPath(field+".path", c.Path); err != nil {
		return err
	}
	return checkHeaders(field+".headers", c.Headers)
}

func checkPath(field, p string) error {
	if len(p) > maxPathLen || !strings.HasPrefix(p, "/") || !printable(p) || strings.ContainsAny(p, " #") {
		return invalid("%s must start with / and be at most %d printable characters without spaces or '#', got %q", field, maxPathLen, p)
	}
	if _, err := url.ParseRequestURI(p); err != nil {
		return invalid("%s %q is not a valid request path: %v", field, p, err)
	}
	return nil
}

func checkHeaders(field string, hs []model.HTTPHeader) error {
	if len(hs) > maxHeaders {
		return invalid("%s: at most %d headers, got %d", field, maxHeaders, len(hs))
	}
	for i, h := range hs {
		if !tokenRe.MatchString(h.Name) {
			return invalid("%s[%d].name %q is not a valid header name", field, i, h.Name)
		}
		for j, v := range h.Values {
			if len(v) > maxHeaderLen || strings.ContainsAny(v, "\r\n\x00") {
				return invalid("%s[%d].values[%d] must be at most %d characters without CR, LF or NUL", field, i, j, maxHeaderLen)
			}
		}
	}
	return nil
}

func printable(s string) bool {
	return !strings.ContainsFunc(s, func(c rune) bool { return c < 0x20 || c == 0x7f })
}

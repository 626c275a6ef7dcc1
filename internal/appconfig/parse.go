package appconfig

import (
	"bytes"
	"errors"
	"fmt"
	"math"
	"path"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/pelletier/go-toml/v2"

	"github.com/torpor-dev/torpor/internal/identifiers"
	"github.com/torpor-dev/torpor/internal/model"
	"github.com/torpor-dev/torpor/internal/shellwords"
)

// Parse reads a fly.toml. Keys torpor does not know, or knows but does not
// act on, come back as warnings (never dropped in silence); the first
// invalid value is a model.KindInvalid error naming the key and its line.
func Parse(doc []byte) (*App, []Warning, error) {
	p := &parser{lines: indexLines(doc)}
	var f file
	if err := toml.NewDecoder(bytes.NewReader(doc)).Decode(&f); err != nil {
		return nil, nil, p.decodeError(err)
	}
	// A second, strict decode only to name the keys torpor does not know.
	var strict file
	dec := toml.NewDecoder(bytes.NewReader(doc))
	dec.DisallowUnknownFields()
	var missing *toml.StrictMissingError
	if err := dec.Decode(&strict); errors.As(err, &missing) {
		for _, e := range missing.Errors {
			line, _ := e.Position()
			p.warn(keyName(e.Key()), line, "unknown key: torpor does not know it and ignores it")
		}
	}
	app, err := p.app(&f)
	if err != nil {
		return nil, nil, err
	}
	sort.SliceStable(p.warnings, func(i, j int) bool { return p.warnings[i].Line < p.warnings[j].Line })
	return app, p.warnings, nil
}

type parser struct {
	lines    lines
	warnings []Warning
}

// fail is an invalid value at path.
func (p *parser) fail(path, format string, args ...any) error {
	msg := fmt.Sprintf(format, args...)
	if l := p.lines.line(path); l > 0 {
		return model.Errorf(model.KindInvalid, "fly.toml line %d: %s: %s", l, path, msg)
	}
	return model.Errorf(model.KindInvalid, "fly.toml: %s: %s", path, msg)
}

func (p *parser) warn(key string, line int, msg string) {
	if line == 0 {
		line = p.lines.line(key)
	}
	p.warnings = append(p.warnings, Warning{Key: key, Line: line, Msg: msg})
}

// ignored warns that a key torpor knows is accepted without effect.
func (p *parser) ignored(key, why string) { p.warn(key, 0, "accepted, not acted on: "+why) }

var bareKey = regexp.MustCompile(`^[A-Za-z0-9_-]+$`)

// keyName spells a dotted key as TOML would: parts that are not bare keys
// quoted.
func keyName(parts []string) string {
	q := make([]string, len(parts))
	for i, k := range parts {
		q[i] = k
		if !bareKey.MatchString(k) {
			q[i] = strconv.Quote(k)
		}
	}
	return strings.Join(q, ".")
}

var goTypeError = regexp.MustCompile(`cannot decode TOML (\w+) into .* of type (\S+)$`)

// decodeError rewords go-toml's error: a syntax error with its line, or a
// value of the wrong TOML type with its key.
func (p *parser) decodeError(err error) error {
	var de *toml.DecodeError
	if !errors.As(err, &de) {
		return model.Errorf(model.KindInvalid, "fly.toml: %s", strings.TrimPrefix(err.Error(), "toml: "))
	}
	line, _ := de.Position()
	msg := strings.TrimPrefix(de.Error(), "toml: ")
	if m := goTypeError.FindStringSubmatch(msg); m != nil {
		msg = fmt.Sprintf("must be %s, not a TOML %s", typeWords(m[2]), m[1])
	}
	if key := keyName(de.Key()); key != "" {
		return model.Errorf(model.KindInvalid, "fly.toml line %d: %s: %s", line, key, msg)
	}
	return model.Errorf(model.KindInvalid, "fly.toml line %d: %s", line, msg)
}

func typeWords(goType string) string {
	switch {
	case strings.HasPrefix(goType, "*"):
		return typeWords(goType[1:])
	case goType == "string":
		return "a string"
	case goType == "bool":
		return "a boolean"
	case strings.HasPrefix(goType, "int") || strings.HasPrefix(goType, "uint"):
		return "an integer"
	case strings.HasPrefix(goType, "[]"):
		return "an array"
	case strings.HasPrefix(goType, "map["), strings.HasPrefix(goType, "appconfig."):
		return "a table"
	}
	return goType
}

var groupName = regexp.MustCompile(`^[a-z0-9][a-z0-9_-]{0,62}$`)

func (p *parser) app(f *file) (*App, error) {
	a := &App{Name: f.App, PrimaryRegion: f.PrimaryRegion}
	if a.Name != "" && !identifiers.IsAppName(a.Name) {
		return nil, p.fail("app", "%q is not an app name: %s", a.Name, identifiers.NameRule)
	}
	if err := identifiers.Region("primary_region", a.PrimaryRegion); err != nil {
		return nil, p.fail("primary_region", "%q is not a region name: %s", a.PrimaryRegion, identifiers.NameRule)
	}
	if f.ConsoleCommand != "" {
		p.ignored("console_command", "torpor has no `ssh console`")
	}
	if f.HostDedicationID != "" {
		p.ignored("host_dedication_id", "there is one kind of host")
	}
	for _, k := range []struct {
		key string
		v   any
	}{{"metrics", f.Metrics}, {"statics", f.Statics}, {"experimental", f.Experimental}} {
		if k.v != nil {
			p.ignored(k.key, "not implemented by torpor")
		}
	}
	if b := f.Build; b != nil {
		a.Image = b.Image
		if b.Dockerfile != "" || b.Builder != "" || len(b.Buildpacks) > 0 || len(b.Args) > 0 || b.Target != "" {
			p.ignored("build", "torpor does not build images: it runs [build] image (or --image)")
		}
	}
	if err := p.env(f, a); err != nil {
		return nil, err
	}
	if err := p.processes(f, a); err != nil {
		return nil, err
	}
	if err := p.deploy(f, a); err != nil {
		return nil, err
	}
	if err := p.stop(f, a); err != nil {
		return nil, err
	}
	if err := p.httpService(f, a); err != nil {
		return nil, err
	}
	for i := range f.Services {
		if err := p.service(fmt.Sprintf("services[%d]", i), &f.Services[i], a); err != nil {
			return nil, err
		}
	}
	if err := p.checks(f, a); err != nil {
		return nil, err
	}
	if err := p.mounts(f, a); err != nil {
		return nil, err
	}
	if err := p.vms(f, a); err != nil {
		return nil, err
	}
	if err := p.restarts(f, a); err != nil {
		return nil, err
	}
	for i := range f.Files {
		p.ignored(fmt.Sprintf("files[%d]", i), "torpor does not write files into machines yet")
	}
	if err := p.hooks(f, a); err != nil {
		return nil, err
	}
	return a, nil
}

func (p *parser) env(f *file, a *App) error {
	if len(f.Env) == 0 {
		return nil
	}
	a.Env = map[string]string{}
	for k, v := range f.Env {
		key := "env." + k
		if k == "" || strings.ContainsAny(k, "=\x00") {
			return p.fail(key, "an environment variable's name must be non-empty and hold no '=' or NUL")
		}
		switch v := v.(type) {
		case string:
			if strings.ContainsRune(v, 0) {
				return p.fail(key, "the value holds a NUL character")
			}
			a.Env[k] = v
		case int64:
			a.Env[k] = strconv.FormatInt(v, 10)
		case float64:
			a.Env[k] = strconv.FormatFloat(v, 'g', -1, 64)
		case bool:
			a.Env[k] = strconv.FormatBool(v)
		default:
			return p.fail(key, "must be a string, a number or a boolean")
		}
	}
	return nil
}

func (p *parser) processes(f *file, a *App) error {
	if len(f.Processes) == 0 {
		return nil
	}
	a.Processes = map[string][]string{}
	for name, v := range f.Processes {
		key := "processes." + name
		if !groupName.MatchString(name) {
			return p.fail(key, "a process group's name must be 1-63 lowercase letters, digits, '-' or '_', starting with a letter or digit")
		}
		var cmd []string
		switch v := v.(type) {
		case string:
			var err error
			if cmd, err = shellwords.Split(v); err != nil {
				return p.fail(key, "the command has an %v", err)
			}
		case []any:
			for _, s := range v {
				s, ok := s.(string)
				if !ok {
					return p.fail(key, "an array command must hold strings only")
				}
				cmd = append(cmd, s)
			}
		default:
			return p.fail(key, "must be a command line string or an array of strings")
		}
		if len(cmd) == 0 {
			return p.fail(key, "the command is empty")
		}
		a.Processes[name] = cmd
	}
	return nil
}

// Groups returns the app's process groups, sorted.
func (a *App) Groups() []string {
	if len(a.Processes) == 0 {
		return []string{DefaultProcessGroup}
	}
	gs := make([]string, 0, len(a.Processes))
	for g := range a.Processes {
		gs = append(gs, g)
	}
	sort.Strings(gs)
	return gs
}

// groupsOK checks that a processes list names groups the app has.
func (p *parser) groupsOK(key string, groups []string, a *App) error {
	for i, g := range groups {
		known := g == DefaultProcessGroup && len(a.Processes) == 0
		if _, ok := a.Processes[g]; ok {
			known = true
		}
		if !known {
			return p.fail(fmt.Sprintf("%s.processes[%d]", key, i), "process group %q is not defined in [processes] (groups: %s)", g, strings.Join(a.Groups(), ", "))
		}
	}
	return nil
}

func (p *parser) deploy(f *file, a *App) error {
	a.Deploy = Deploy{Strategy: StrategyRolling, MaxUnavailable: 0.33, WaitTimeout: DefaultWaitTimeout}
	d := f.Deploy
	if d == nil {
		return nil
	}
	if d.Strategy != "" {
		if !validStrategy(d.Strategy) {
			return p.fail("deploy.strategy", "%q is not a strategy: one of %s", d.Strategy, strings.Join(Strategies, ", "))
		}
		a.Deploy.Strategy = d.Strategy
	}
	if d.MaxUnavailable != nil {
		var n float64
		switch v := d.MaxUnavailable.(type) {
		case int64:
			n = float64(v)
		case float64:
			n = v
		default:
			return p.fail("deploy.max_unavailable", "must be a number: a count of machines (1 or more) or a fraction of them (between 0 and 1)")
		}
		if math.IsNaN(n) || n <= 0 || (n > 1 && n != math.Trunc(n)) || n > 1e6 {
			return p.fail("deploy.max_unavailable", "must be a count of machines (1 or more) or a fraction between 0 and 1, got %v", d.MaxUnavailable)
		}
		a.Deploy.MaxUnavailable = n
	}
	if d.WaitTimeout != nil {
		t, err := duration(d.WaitTimeout)
		if err != nil {
			return p.fail("deploy.wait_timeout", "%v", err)
		}
		if t <= 0 {
			return p.fail("deploy.wait_timeout", "must be more than 0")
		}
		a.Deploy.WaitTimeout = t
	}
	if d.ReleaseCommand != "" {
		p.ignored("deploy.release_command", "torpor does not run release commands")
	}
	return nil
}

func validStrategy(s string) bool {
	for _, v := range Strategies {
		if s == v {
			return true
		}
	}
	return false
}

var signalName = regexp.MustCompile(`^SIG[A-Z0-9]{1,10}$`)

func (p *parser) stop(f *file, a *App) error {
	if f.SwapSizeMB != nil {
		if *f.SwapSizeMB < 0 {
			return p.fail("swap_size_mb", "must be 0 or more, got %d", *f.SwapSizeMB)
		}
		a.SwapSizeMB = *f.SwapSizeMB
	}
	if f.KillSignal == "" && f.KillTimeout == nil {
		return nil
	}
	a.StopConfig = &model.StopConfig{}
	if f.KillSignal != "" {
		sig := strings.ToUpper(f.KillSignal)
		if !signalName.MatchString(sig) {
			return p.fail("kill_signal", "%q is not a signal name such as \"SIGINT\"", f.KillSignal)
		}
		a.StopConfig.Signal = &sig
	}
	if f.KillTimeout != nil {
		t, err := duration(f.KillTimeout)
		if err != nil {
			return p.fail("kill_timeout", "%v", err)
		}
		if t < 0 {
			return p.fail("kill_timeout", "must be 0 or more")
		}
		a.StopConfig.Timeout = &model.Duration{Duration: t}
	}
	return nil
}

// duration reads a duration given as a number of seconds or a string such
// as "30s" (Fly's forms).
func duration(v any) (time.Duration, error) {
	const max = float64(math.MaxInt64 / int64(time.Second))
	switch v := v.(type) {
	case int64:
		if math.Abs(float64(v)) > max {
			return 0, fmt.Errorf("%d seconds is out of range", v)
		}
		return time.Duration(v) * time.Second, nil
	case float64:
		if math.IsNaN(v) || math.Abs(v) > max {
			return 0, fmt.Errorf("%v seconds is out of range", v)
		}
		return time.Duration(v * float64(time.Second)), nil
	case string:
		if n, err := strconv.ParseFloat(v, 64); err == nil {
			return duration(n)
		}
		d, err := time.ParseDuration(v)
		if err != nil {
			return 0, fmt.Errorf("%q is not a duration such as \"30s\" or \"5m\"", v)
		}
		return d, nil
	}
	return 0, errors.New("must be a duration such as \"30s\" or a number of seconds")
}

// autostop reads auto_stop_machines: Fly's strings or booleans.
func (p *parser) autostop(key string, v any) (*model.Autostop, error) {
	if v == nil {
		return nil, nil
	}
	var a model.Autostop
	switch v := v.(type) {
	case bool:
		a = model.AutostopOff
		if v {
			a = model.AutostopStop
		}
	case string:
		a = model.Autostop(v)
		if a != model.AutostopOff && a != model.AutostopStop && a != model.AutostopSuspend {
			return nil, p.fail(key, "%q is not one of \"off\", \"stop\", \"suspend\" (or a boolean)", v)
		}
	default:
		return nil, p.fail(key, "must be \"off\", \"stop\", \"suspend\" or a boolean")
	}
	return &a, nil
}

func (p *parser) port(key string, v *int, required bool) (int, error) {
	if v == nil {
		if required {
			return 0, p.fail(key, "is required")
		}
		return 0, nil
	}
	if *v < 1 || *v > 65535 {
		return 0, p.fail(key, "must be a port between 1 and 65535, got %d", *v)
	}
	return *v, nil
}

func (p *parser) concurrency(key string, c *fileConcurrency) (*model.Concurrency, error) {
	if c == nil {
		return nil, nil
	}
	out := &model.Concurrency{Type: c.Type}
	switch c.Type {
	case "", "connections", "requests":
	default:
		return nil, p.fail(key+".type", "%q is not \"connections\" or \"requests\"", c.Type)
	}
	for _, l := range []struct {
		name string
		v    *int
		to   *int
	}{{"soft_limit", c.SoftLimit, &out.SoftLimit}, {"hard_limit", c.HardLimit, &out.HardLimit}} {
		if l.v == nil {
			continue
		}
		if *l.v < 0 {
			return nil, p.fail(key+"."+l.name, "must be 0 or more, got %d", *l.v)
		}
		*l.to = *l.v
	}
	if out.SoftLimit > 0 && out.HardLimit > 0 && out.SoftLimit > out.HardLimit {
		return nil, p.fail(key+".soft_limit", "must not exceed hard_limit (%d > %d)", out.SoftLimit, out.HardLimit)
	}
	return out, nil
}

func (p *parser) minRunning(key string, v *int) (*int, error) {
	if v != nil && *v < 0 {
		return nil, p.fail(key, "must be 0 or more, got %d", *v)
	}
	return v, nil
}

func (p *parser) httpService(f *file, a *App) error {
	h := f.HTTPService
	if h == nil {
		return nil
	}
	const key = "http_service"
	internal, err := p.port(key+".internal_port", h.InternalPort, true)
	if err != nil {
		return err
	}
	public := DefaultHTTPPort
	if h.Port != nil {
		if public, err = p.port(key+".port", h.Port, true); err != nil {
			return err
		}
	}
	s := model.Service{Protocol: "tcp", InternalPort: internal,
		Ports: []model.Port{{Port: &public, Handlers: []string{"http"}}}}
	if h.ForceHTTPS {
		p.ignored(key+".force_https", "the proxy serves plain HTTP (no tls handler yet)")
	}
	if h.TLSOptions != nil {
		p.ignored(key+".tls_options", "the proxy serves plain HTTP (no tls handler yet)")
	}
	if h.HTTPOptions != nil {
		p.ignored(key+".http_options", "not implemented by the proxy")
	}
	if s.Autostop, err = p.autostop(key+".auto_stop_machines", h.AutoStopMachines); err != nil {
		return err
	}
	s.Autostart = h.AutoStartMachines
	if s.MinMachinesRunning, err = p.minRunning(key+".min_machines_running", h.MinMachinesRunning); err != nil {
		return err
	}
	if s.Concurrency, err = p.concurrency(key+".concurrency", h.Concurrency); err != nil {
		return err
	}
	for i, c := range h.Checks {
		ck, err := p.httpCheck(fmt.Sprintf("%s.checks[%d]", key, i), c)
		if err != nil {
			return err
		}
		s.Checks = append(s.Checks, ck)
	}
	if err := p.groupsOK(key, h.Processes, a); err != nil {
		return err
	}
	a.Services = append(a.Services, GroupService{Service: s, Processes: h.Processes})
	return nil
}

func (p *parser) service(key string, fs *fileService, a *App) error {
	internal, err := p.port(key+".internal_port", fs.InternalPort, true)
	if err != nil {
		return err
	}
	s := model.Service{Protocol: fs.Protocol, InternalPort: internal}
	switch fs.Protocol {
	case "":
		s.Protocol = "tcp"
	case "tcp", "udp":
	default:
		return p.fail(key+".protocol", "%q is not \"tcp\" or \"udp\"", fs.Protocol)
	}
	for i, fp := range fs.Ports {
		pk := fmt.Sprintf("%s.ports[%d]", key, i)
		if fp.StartPort != nil || fp.EndPort != nil {
			p.ignored(pk, "port ranges (start_port, end_port) are not published by the proxy")
			if fp.Port == nil {
				continue
			}
		}
		n, err := p.port(pk+".port", fp.Port, true)
		if err != nil {
			return err
		}
		for j, h := range fp.Handlers {
			switch h {
			case "http", "tls", "proxy_proto", "pg_tls", "edge_http":
			default:
				return p.fail(fmt.Sprintf("%s.handlers[%d]", pk, j), "%q is not a handler: one of http, tls, proxy_proto, pg_tls, edge_http", h)
			}
		}
		if fp.ForceHTTPS {
			p.ignored(pk+".force_https", "the proxy serves plain HTTP (no tls handler yet)")
		}
		if fp.TLSOptions != nil || fp.HTTPOpts != nil {
			p.ignored(pk, "tls_options and http_options are not implemented by the proxy")
		}
		s.Ports = append(s.Ports, model.Port{Port: &n, Handlers: fp.Handlers})
	}
	if s.Autostop, err = p.autostop(key+".auto_stop_machines", fs.AutoStopMachines); err != nil {
		return err
	}
	s.Autostart = fs.AutoStartMachines
	if s.MinMachinesRunning, err = p.minRunning(key+".min_machines_running", fs.MinMachinesRunning); err != nil {
		return err
	}
	if s.Concurrency, err = p.concurrency(key+".concurrency", fs.Concurrency); err != nil {
		return err
	}
	for i, c := range fs.TCPChecks {
		ck := model.Check{Type: model.CheckTCP}
		if err := p.timing(fmt.Sprintf("%s.tcp_checks[%d]", key, i), &ck, c.Interval, c.Timeout, c.GracePeriod); err != nil {
			return err
		}
		s.Checks = append(s.Checks, ck)
	}
	for i, c := range fs.HTTPChecks {
		ck, err := p.httpCheck(fmt.Sprintf("%s.http_checks[%d]", key, i), c)
		if err != nil {
			return err
		}
		s.Checks = append(s.Checks, ck)
	}
	if err := p.groupsOK(key, fs.Processes, a); err != nil {
		return err
	}
	a.Services = append(a.Services, GroupService{Service: s, Processes: fs.Processes})
	return nil
}

// timing fills a check's interval, timeout and grace period.
func (p *parser) timing(key string, c *model.Check, interval, timeout, grace any) error {
	for _, d := range []struct {
		name string
		v    any
		to   *model.Duration
	}{{"interval", interval, &c.Interval}, {"timeout", timeout, &c.Timeout}, {"grace_period", grace, &c.GracePeriod}} {
		if d.v == nil {
			continue
		}
		t, err := duration(d.v)
		if err != nil {
			return p.fail(key+"."+d.name, "%v", err)
		}
		if t < 0 {
			return p.fail(key+"."+d.name, "must be 0 or more")
		}
		d.to.Duration = t
	}
	return nil
}

func (p *parser) httpFields(key string, c *model.Check, method, urlPath, protocol string, headers map[string]string) error {
	c.Method, c.Path, c.Protocol = strings.ToUpper(method), urlPath, protocol
	if urlPath != "" && !strings.HasPrefix(urlPath, "/") {
		return p.fail(key+".path", "must start with '/', got %q", urlPath)
	}
	switch protocol {
	case "", "http", "https":
	default:
		return p.fail(key+".protocol", "%q is not \"http\" or \"https\"", protocol)
	}
	names := make([]string, 0, len(headers))
	for n := range headers {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		c.Headers = append(c.Headers, model.HTTPHeader{Name: n, Values: []string{headers[n]}})
	}
	return nil
}

// httpCheck reads the HTTP fields of a check of a service or of [checks].
func (p *parser) httpCheck(key string, c fileServiceHTTP) (model.Check, error) {
	ck := model.Check{Type: model.CheckHTTP, TLSSkipVerify: c.TLSSkipVerify, TLSServerName: c.TLSServerName}
	if err := p.timing(key, &ck, c.Interval, c.Timeout, c.GracePeriod); err != nil {
		return ck, err
	}
	return ck, p.httpFields(key, &ck, c.Method, c.Path, c.Protocol, c.Headers)
}

func (p *parser) checks(f *file, a *App) error {
	if len(f.Checks) == 0 {
		return nil
	}
	a.Checks = map[string]GroupCheck{}
	for name, c := range f.Checks {
		key := "checks." + name
		if !groupName.MatchString(name) {
			return p.fail(key, "a check's name must be 1-63 lowercase letters, digits, '-' or '_'")
		}
		switch c.Type {
		case model.CheckTCP, model.CheckHTTP:
		case "":
			return p.fail(key+".type", "is required: \"tcp\" or \"http\"")
		default:
			return p.fail(key+".type", "%q is not \"tcp\" or \"http\"", c.Type)
		}
		port, err := p.port(key+".port", c.Port, true)
		if err != nil {
			return err
		}
		ck, err := p.httpCheck(key, c.fileServiceHTTP)
		if err != nil {
			return err
		}
		ck.Type, ck.Port = c.Type, port
		if c.Type == model.CheckTCP {
			ck.Method, ck.Path, ck.Protocol, ck.Headers, ck.TLSSkipVerify, ck.TLSServerName = "", "", "", nil, false, ""
		}
		if err := p.groupsOK(key, c.Processes, a); err != nil {
			return err
		}
		a.Checks[name] = GroupCheck{Check: ck, Processes: c.Processes}
	}
	return nil
}

// mounts reads [[mounts]] or Fly's older single [mounts] table.
func (p *parser) mounts(f *file, a *App) error {
	var tables []map[string]any
	var keys []string
	switch v := f.Mounts.(type) {
	case nil:
		return nil
	case map[string]any:
		tables, keys = []map[string]any{v}, []string{"mounts"}
	case []any:
		for i, e := range v {
			t, ok := e.(map[string]any)
			if !ok {
				return p.fail(fmt.Sprintf("mounts[%d]", i), "must be a table with source and destination")
			}
			tables, keys = append(tables, t), append(keys, fmt.Sprintf("mounts[%d]", i))
		}
	default:
		return p.fail("mounts", "must be a table ([[mounts]]) with source and destination")
	}
	seen := map[string]bool{}
	for i, t := range tables {
		key := keys[i]
		var m fileMount
		for k, v := range t {
			var ok bool
			switch k {
			case "source":
				m.Source, ok = v.(string)
			case "destination":
				m.Destination, ok = v.(string)
			case "initial_size":
				m.InitialSize, ok = v, true
			case "processes":
				var arr []any
				if arr, ok = v.([]any); ok {
					for _, s := range arr {
						s, isStr := s.(string)
						ok = ok && isStr
						m.Processes = append(m.Processes, s)
					}
				}
			default:
				p.warn(key+"."+k, 0, "unknown key: torpor does not know it and ignores it")
				ok = true
			}
			if !ok {
				return p.fail(key+"."+k, "has the wrong type (source and destination are strings, processes an array of strings)")
			}
		}
		if err := identifiers.VolumeName(key+".source", m.Source); err != nil {
			return p.fail(key+".source", "%q is not a volume name: %s", m.Source, identifiers.VolumeNameRule)
		}
		if !strings.HasPrefix(m.Destination, "/") || path.Clean(m.Destination) == "/" {
			return p.fail(key+".destination", "must be an absolute path other than /, got %q", m.Destination)
		}
		if seen[path.Clean(m.Destination)] {
			return p.fail(key+".destination", "%s is mounted twice", m.Destination)
		}
		seen[path.Clean(m.Destination)] = true
		size := 1
		if m.InitialSize != nil {
			mb, err := sizeMB(m.InitialSize, 1024)
			if err != nil {
				return p.fail(key+".initial_size", "%v", err)
			}
			if mb < 1024 || mb%1024 != 0 {
				return p.fail(key+".initial_size", "must be a whole number of GB, 1 or more")
			}
			size = mb / 1024
		}
		if err := p.groupsOK(key, m.Processes, a); err != nil {
			return err
		}
		a.Mounts = append(a.Mounts, Mount{Source: m.Source, Destination: path.Clean(m.Destination), InitialSizeGB: size, Processes: m.Processes})
	}
	return nil
}

var sizeRE = regexp.MustCompile(`^(?i)\s*([0-9]+)\s*(mb|mib|m|gb|gib|g)?\s*$`)

// sizeMB reads a size such as 512, "512mb" or "1gb" in MB; a bare number
// counts in unit MB.
func sizeMB(v any, unit int) (int, error) {
	switch v := v.(type) {
	case int64:
		if v < 0 || v > 1<<30/int64(unit) {
			return 0, fmt.Errorf("%d is out of range", v)
		}
		return int(v) * unit, nil
	case string:
		m := sizeRE.FindStringSubmatch(v)
		if m == nil {
			return 0, fmt.Errorf("%q is not a size such as \"512mb\" or \"1gb\"", v)
		}
		n, err := strconv.Atoi(m[1])
		if err != nil || n > 1<<30 {
			return 0, fmt.Errorf("%q is out of range", v)
		}
		switch strings.ToLower(m[2]) {
		case "":
			if n > 1<<30/unit {
				return 0, fmt.Errorf("%q is out of range", v)
			}
			return n * unit, nil
		case "gb", "gib", "g":
			if n > 1<<20 {
				return 0, fmt.Errorf("%q is out of range", v)
			}
			return n * 1024, nil
		}
		return n, nil
	}
	return 0, errors.New("must be a size such as 512 (MB), \"512mb\" or \"1gb\"")
}

func (p *parser) vms(f *file, a *App) error {
	for i, v := range f.VM {
		key := fmt.Sprintf("vm[%d]", i)
		vm := VM{Size: v.Size, Processes: v.Processes}
		vm.Guest.CPUKind, vm.Guest.GPUKind = v.CPUKind, v.GPUKind
		switch v.CPUKind {
		case "", "shared", "performance":
		default:
			return p.fail(key+".cpu_kind", "%q is not \"shared\" or \"performance\"", v.CPUKind)
		}
		if v.Memory != nil && v.MemoryMB != nil {
			return p.fail(key+".memory_mb", "give memory or memory_mb, not both")
		}
		if v.Memory != nil {
			mb, err := sizeMB(v.Memory, 1)
			if err != nil {
				return p.fail(key+".memory", "%v", err)
			}
			if mb < 1 {
				return p.fail(key+".memory", "must be more than 0")
			}
			vm.Guest.MemoryMB = mb
		}
		if v.MemoryMB != nil {
			if *v.MemoryMB < 1 {
				return p.fail(key+".memory_mb", "must be more than 0, got %d", *v.MemoryMB)
			}
			vm.Guest.MemoryMB = *v.MemoryMB
		}
		if v.CPUs != nil {
			if *v.CPUs < 1 || *v.CPUs > 1024 {
				return p.fail(key+".cpus", "must be between 1 and 1024, got %d", *v.CPUs)
			}
			vm.Guest.CPUs = *v.CPUs
		}
		if v.GPUs != nil {
			if *v.GPUs < 0 || *v.GPUs > 64 {
				return p.fail(key+".gpus", "must be between 0 and 64, got %d", *v.GPUs)
			}
			vm.Guest.GPUs = *v.GPUs
		}
		if err := p.groupsOK(key, v.Processes, a); err != nil {
			return err
		}
		a.VMs = append(a.VMs, vm)
	}
	return nil
}

func (p *parser) restarts(f *file, a *App) error {
	for i, r := range f.Restart {
		key := fmt.Sprintf("restart[%d]", i)
		rp := model.RestartPolicy{Policy: r.Policy}
		switch r.Policy {
		case "never", "no":
			rp.Policy = "no"
		case "always", "on-failure":
		default:
			return p.fail(key+".policy", "%q is not \"always\", \"never\" or \"on-failure\"", r.Policy)
		}
		if r.Retries != nil {
			if *r.Retries < 0 {
				return p.fail(key+".retries", "must be 0 or more, got %d", *r.Retries)
			}
			rp.MaxRetries = *r.Retries
		}
		if err := p.groupsOK(key, r.Processes, a); err != nil {
			return err
		}
		a.Restarts = append(a.Restarts, Restart{Policy: rp, Processes: r.Processes})
	}
	return nil
}

func (p *parser) hooks(f *file, a *App) error {
	h := f.Hooks
	if h == nil {
		return nil
	}
	a.Hooks = &model.Hooks{ResumeSignal: h.ResumeSignal}
	if h.ResumeSignal != "" && !signalName.MatchString(h.ResumeSignal) {
		return p.fail("hooks.resume_signal", "%q is not a signal name such as \"SIGUSR2\"", h.ResumeSignal)
	}
	for _, k := range []struct {
		name string
		h    *fileHook
		to   **model.Hook
	}{{"pre_suspend", h.PreSuspend, &a.Hooks.PreSuspend}, {"post_resume", h.PostResume, &a.Hooks.PostResume}} {
		if k.h == nil {
			continue
		}
		key := "hooks." + k.name
		if len(k.h.Cmd) == 0 || k.h.Cmd[0] == "" {
			return p.fail(key+".cmd", "is required: the command to run, as an array of strings")
		}
		hk := &model.Hook{Cmd: k.h.Cmd}
		if k.h.Timeout != nil {
			t, err := duration(k.h.Timeout)
			if err != nil {
				return p.fail(key+".timeout", "%v", err)
			}
			if t < time.Second || t > 5*time.Minute {
				return p.fail(key+".timeout", "must be between 1s and 5m, got %s", t)
			}
			hk.Timeout = model.Duration{Duration: t}
		}
		*k.to = hk
	}
	return nil
}

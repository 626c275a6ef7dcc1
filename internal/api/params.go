package api

import (
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/torpor-dev/torpor/internal/identifiers"
	"github.com/torpor-dev/torpor/internal/model"
)

// Wait timeouts, in seconds, as in the Fly API.
const (
	defaultWaitSeconds = 60
	maxWaitSeconds     = 600
)

// checkQuery refuses query parameters other than allowed (a name ending in
// "." allows every name with that prefix, such as metadata.KEY), and any of
// them given more than once (but state, which may repeat).
func checkQuery(r *http.Request, allowed ...string) error {
	for name, values := range r.URL.Query() {
		if !queryAllowed(name, allowed) {
			if len(allowed) == 0 {
				return model.Errorf(model.KindInvalid, "unknown query parameter %q: this endpoint takes none", name)
			}
			return model.Errorf(model.KindInvalid, "unknown query parameter %q: this endpoint takes %s", name, strings.Join(allowed, ", "))
		}
		if len(values) > 1 && name != "state" {
			return model.Errorf(model.KindInvalid, "query parameter %s is given %d times: give it once", name, len(values))
		}
	}
	return nil
}

// queryAllowed reports whether name is one of allowed or has a prefix
// (ending in ".") among them.
func queryAllowed(name string, allowed []string) bool {
	for _, a := range allowed {
		prefix := strings.HasSuffix(a, ".")
		if !prefix && name == a || prefix && strings.HasPrefix(name, a) && len(name) > len(a) {
			return true
		}
	}
	return false
}

// appParam returns the validated {app} path parameter.
func appParam(r *http.Request) (string, error) {
	app := r.PathValue("app")
	return app, identifiers.AppName("path parameter app", app)
}

// machineParams returns the validated {app} and {id} path parameters.
func machineParams(r *http.Request) (app, id string, err error) {
	app, err = appParam(r)
	if err != nil {
		return "", "", err
	}
	id = r.PathValue("id")
	return app, id, identifiers.MachineID("path parameter id", id)
}

// boolQuery parses an optional boolean query parameter (absent means false).
func boolQuery(r *http.Request, name string) (bool, error) {
	v := r.URL.Query().Get(name)
	if v == "" {
		return false, nil
	}
	b, err := strconv.ParseBool(v)
	if err != nil {
		return false, model.Errorf(model.KindInvalid, "invalid query parameter %s %q: must be true or false", name, v)
	}
	return b, nil
}

// waitQuery parses what wait waits for: state (which may repeat and list
// states separated by commas; default "started", and also Fly's "settled"
// and "failed"), the machine version (fly-go's version, the spec's
// instance_id: the same thing here) and from_event_id.
func waitQuery(r *http.Request) (model.WaitOptions, error) {
	var opts model.WaitOptions
	q := r.URL.Query()
	for _, v := range q["state"] {
		for _, part := range strings.Split(v, ",") {
			st := strings.TrimSpace(part)
			if !model.State(st).Valid() && st != model.WaitSettled && st != model.WaitFailed {
				return opts, model.Errorf(model.KindInvalid,
					"invalid query parameter state %q: must be a machine state such as started, stopped, suspended or destroyed, or settled or failed", part)
			}
			opts.States = append(opts.States, st)
		}
	}
	if len(opts.States) == 0 {
		opts.States = []string{string(model.StateStarted)}
	}
	version, instance := q.Get("version"), q.Get("instance_id")
	if version != "" && instance != "" && version != instance {
		return opts, model.Errorf(model.KindInvalid, "query parameters version %q and instance_id %q differ: they name the same thing here", version, instance)
	}
	opts.Version = version + instance
	if version != "" && instance != "" {
		opts.Version = version
	}
	if opts.Version != "" {
		if err := identifiers.Version("query parameter version", opts.Version); err != nil {
			return opts, err
		}
	}
	opts.FromEventID = q.Get("from_event_id")
	return opts, nil
}

// listQuery parses the filters of a machine list: include_deleted, region,
// state (repeated or comma-separated), metadata.KEY=VALUE, include_leases
// and summary.
func listQuery(r *http.Request) (opts model.ListOptions, summary bool, err error) {
	q := r.URL.Query()
	if opts.IncludeDeleted, err = boolQuery(r, "include_deleted"); err != nil {
		return
	}
	if opts.IncludeLeases, err = boolQuery(r, "include_leases"); err != nil {
		return
	}
	if summary, err = boolQuery(r, "summary"); err != nil {
		return
	}
	opts.Region = q.Get("region")
	if err = identifiers.Region("query parameter region", opts.Region); err != nil {
		return
	}
	for _, v := range q["state"] {
		for _, part := range strings.Split(v, ",") {
			st := model.State(strings.TrimSpace(part))
			if !st.Valid() {
				return opts, false, model.Errorf(model.KindInvalid, "invalid query parameter state %q: must be a machine state such as started or stopped", part)
			}
			opts.States = append(opts.States, st)
		}
	}
	for name, values := range q {
		if key, ok := strings.CutPrefix(name, "metadata."); ok {
			if opts.Metadata == nil {
				opts.Metadata = map[string]string{}
			}
			opts.Metadata[key] = values[0]
		}
	}
	return opts, summary, nil
}

// waitTimeout parses the timeout query parameter of wait: whole seconds from
// 1 to 600, 60 when absent.
func waitTimeout(r *http.Request) (time.Duration, error) {
	v := r.URL.Query().Get("timeout")
	if v == "" {
		return defaultWaitSeconds * time.Second, nil
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 1 || n > maxWaitSeconds {
		return 0, model.Errorf(model.KindInvalid,
			"invalid query parameter timeout %q: must be a whole number of seconds from 1 to %d", v, maxWaitSeconds)
	}
	return time.Duration(n) * time.Second, nil
}

// Events bounds: GET .../events?limit= takes 1 to maxEventsLimit.
const maxEventsLimit = 10000

// intQuery parses an optional integer query parameter from lo to hi; def
// when absent.
func intQuery(r *http.Request, name string, lo, hi, def int) (int, error) {
	v := r.URL.Query().Get(name)
	if v == "" {
		return def, nil
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < lo || n > hi {
		return 0, model.Errorf(model.KindInvalid, "invalid query parameter %s %q: must be a whole number from %d to %d", name, v, lo, hi)
	}
	return n, nil
}

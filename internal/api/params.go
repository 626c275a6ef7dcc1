package api

import (
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/torpor-dev/torpor/internal/model"
)

// Wait timeouts, in seconds, as in the Fly API.
const (
	defaultWaitSeconds = 60
	maxWaitSeconds     = 600
)

// maxMachineIDLen bounds machine ids in paths.
const maxMachineIDLen = 64

// maxNameLen bounds app names and org slugs.
const maxNameLen = 63

// ValidAppName reports whether name is a valid app name: 1 to 63 lowercase
// letters, digits or dashes, starting with a letter or digit.
func ValidAppName(name string) bool {
	return validSlug(name) && name != ""
}

// validSlug reports whether s is empty or up to 63 lowercase letters,
// digits or dashes starting with a letter or digit.
func validSlug(s string) bool {
	if len(s) > maxNameLen {
		return false
	}
	for i, c := range s {
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-' && i > 0) {
			return false
		}
	}
	return true
}

// validMachineID reports whether id is 1 to 64 lowercase letters or digits.
func validMachineID(id string) bool {
	if len(id) == 0 || len(id) > maxMachineIDLen {
		return false
	}
	for _, c := range id {
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9') {
			return false
		}
	}
	return true
}

// appNameRule is the rule of app names, for error messages.
const appNameRule = "must be 1-63 lowercase letters, digits or dashes, starting with a letter or digit"

// checkQuery refuses query parameters other than allowed, and any of them
// given more than once (but state, which may repeat).
func checkQuery(r *http.Request, allowed ...string) error {
	for name, values := range r.URL.Query() {
		if !slices.Contains(allowed, name) {
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

// appParam returns the validated {app} path parameter.
func appParam(r *http.Request) (string, error) {
	app := r.PathValue("app")
	if !ValidAppName(app) {
		return "", model.Errorf(model.KindInvalid,
			"invalid path parameter app %q: %s", app, appNameRule)
	}
	return app, nil
}

// machineParams returns the validated {app} and {id} path parameters.
func machineParams(r *http.Request) (app, id string, err error) {
	app, err = appParam(r)
	if err != nil {
		return "", "", err
	}
	id = r.PathValue("id")
	if !validMachineID(id) {
		return "", "", model.Errorf(model.KindInvalid,
			"invalid path parameter id %q: must be 1-%d lowercase letters or digits", id, maxMachineIDLen)
	}
	return app, id, nil
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

// waitStates parses the state query parameter of wait: it may repeat and each
// value may list states separated by commas. It defaults to "started".
func waitStates(r *http.Request) ([]model.State, error) {
	var states []model.State
	for _, v := range r.URL.Query()["state"] {
		for _, part := range strings.Split(v, ",") {
			s := model.State(strings.TrimSpace(part))
			if !s.Valid() {
				return nil, model.Errorf(model.KindInvalid,
					"invalid query parameter state %q: must be a machine state such as started, stopped, suspended or destroyed", part)
			}
			states = append(states, s)
		}
	}
	if len(states) == 0 {
		states = []model.State{model.StateStarted}
	}
	return states, nil
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

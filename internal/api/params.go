package api

import (
	"net/http"
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

// ValidAppName reports whether name is a valid app name: 1 to 63 lowercase
// letters, digits or dashes.
func ValidAppName(name string) bool {
	if len(name) == 0 || len(name) > 63 {
		return false
	}
	for _, c := range name {
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-') {
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

// appParam returns the validated {app} path parameter.
func appParam(r *http.Request) (string, error) {
	app := r.PathValue("app")
	if !ValidAppName(app) {
		return "", model.Errorf(model.KindInvalid,
			"invalid path parameter app %q: must be 1-63 lowercase letters, digits or dashes", app)
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

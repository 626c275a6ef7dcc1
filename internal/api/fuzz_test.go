package api_test

import (
	"bytes"
	"context"
	"fmt"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/torpor-dev/torpor/internal/model"
)

// handlerSeeds are realistic requests, valid and not, on every route;
// {app} and {id} stand for the fixture's app and machine.
var handlerSeeds = []struct {
	method, target, body string
}{
	{"GET", "/healthz", ""},
	{"POST", "/v1/apps", `{"app_name":"new-app","org_slug":"personal"}`},
	{"POST", "/v1/apps", `{"app_name":"-bad"}`},
	{"POST", "/v1/apps", `{"app_name":"x","extra":1}`},
	{"GET", "/v1/apps?org_slug=personal", ""},
	{"GET", "/v1/apps/{app}", ""},
	{"DELETE", "/v1/apps/{app}", ""},
	{"POST", "/v1/apps/{app}/machines", `{"name":"two","config":{"image":"base","init":{"exec":["/app"]},"guest":{"cpus":2,"memory_mb":512},` +
		`"services":[{"internal_port":8080,"ports":[{"port":80,"handlers":["http"]}],"autostop":"suspend"}]}}`},
	{"POST", "/v1/apps/{app}/machines", `{"config":{"image":"escape","init":{"exec":["/app"]}}}`},
	{"POST", "/v1/apps/{app}/machines", `{"config":{"image":"../../etc","init":{"exec":["/app"]}}}`},
	{"POST", "/v1/apps/{app}/machines", `{"config":{"image":"$DATA","init":{"exec":["/app"]}},"skip_launch":true}`},
	{"POST", "/v1/apps/{app}/machines", `{"config":{"image":"$IMAGES/base","init":{"exec":["/app"]}},"skip_launch":true}`},
	{"POST", "/v1/apps/{app}/machines", `{"config":{"image":"base","guest":{"memory_mb":"1"}}}`},
	{"POST", "/v1/apps/{app}/machines", `{"config":{"image":"base"}} {}`},
	{"POST", "/v1/apps/{app}/machines", ``},
	{"GET", "/v1/apps/{app}/machines", ""},
	{"GET", "/v1/apps/{app}/machines/{id}", ""},
	{"POST", "/v1/apps/{app}/machines/{id}", `{"name":"renamed","config":{"image":"base","init":{"exec":["/app"]},"stop_config":{"signal":"term","timeout":"2s"}}}`},
	{"POST", "/v1/apps/{app}/machines/{id}", `{"name":"Bad Name","config":{"image":"base","init":{"exec":["/app"]}}}`},
	{"DELETE", "/v1/apps/{app}/machines/{id}?force=true", ""},
	{"DELETE", "/v1/apps/{app}/machines/{id}?force=maybe", ""},
	{"POST", "/v1/apps/{app}/machines/{id}/start", ""},
	{"POST", "/v1/apps/{app}/machines/{id}/stop", `{"signal":"SIGTERM","timeout":"1s"}`},
	{"POST", "/v1/apps/{app}/machines/{id}/stop", `{"signal":"SIGNOPE"}`},
	{"POST", "/v1/apps/{app}/machines/{id}/stop", ""},
	{"POST", "/v1/apps/{app}/machines/{id}/suspend", ""},
	{"GET", "/v1/apps/{app}/machines/{id}/wait?state=started,suspended&timeout=1", ""},
	{"GET", "/v1/apps/{app}/machines/{id}/wait?state=sleeping", ""},
	{"GET", "/v1/apps/{app}/machines/{id}/wait?timeout=0", ""},
	{"GET", "/v1/apps/{app}/machines/{id}/events?limit=2", ""},
	{"GET", "/v1/apps/{app}/machines/{id}/events?limit=-1", ""},
	{"GET", "/v1/apps/{app}/machines/{id}/logs?from_seq=1&limit=10", ""},
	{"GET", "/v1/apps/{app}/machines/{id}/logs?since=5m&follow=true", ""},
	{"GET", "/v1/apps/{app}/machines/{id}/logs?since=yesterday", ""},
	{"POST", "/v1/apps/{app}/machines/{id}/cordon", ""},
	{"POST", "/v1/apps/{app}/machines/{id}/uncordon", ""},
	{"GET", "/v1/apps/{app}/machines/..%2F..%2Fetc", ""},
	{"GET", "/v1/apps/{app}/machines/{id}/../../x", ""},
	{"GET", "/v1/apps/{app}/machines/%00", ""},
	{"GET", "/v1/apps/%C3%A9t%C3%A9/machines", ""},
	{"GET", "/v1/apps/{app}/machines/" + strings.Repeat("a", 65), ""},
	{"GET", "/v1/apps/{app}/machines?bogus=1", ""},
	{"PUT", "/v1/apps/{app}", ""},
	// Fly's clients, as fly-go sends them.
	{"POST", "/v1/apps?wait=true", `{"name":"fly-app","org_slug":"personal","network":"","app_role_id":""}`},
	{"GET", "/v1/apps?org_slug=personal&app_role=postgres_cluster", ""},
	{"POST", "/v1/apps/{app}/machines", `{"config":{"image":"base","init":{"cmd":["/app"]},"dns":{"skip_registration":true},` +
		`"services":[{"internal_port":8080,"autostop":"stop","force_instance_key":null,"ports":[{"port":443,"handlers":["tls","http"],"tls_options":{"alpn":["h2"]}}]}]},` +
		`"region":"ord","skip_secrets":false,"min_secrets_version":2,"lease_ttl":30,"skip_service_registration":true}`},
	{"POST", "/v1/apps/{app}/machines/{id}", `{"config":{"image":"base","init":{"exec":["/app"]}},"current_version":"01ABC","skip_secrets":false}`},
	{"GET", "/v1/apps/{app}/machines?include_deleted=true&region=local&summary=true&state=started,stopped&metadata.k=v&include_leases=true", ""},
	{"DELETE", "/v1/apps/{app}/machines/{id}?kill=true", ""},
	{"POST", "/v1/apps/{app}/machines/{id}/stop", `{"id":"{id}","signal":"SIGTERM","timeout":"1s"}`},
	{"POST", "/v1/apps/{app}/machines/{id}/restart?force_stop=false&timeout=1s&signal=SIGTERM", ""},
	{"POST", "/v1/apps/{app}/machines/{id}/restart?timeout=soon", ""},
	{"POST", "/v1/apps/{app}/machines/{id}/signal", `{"signal":9}`},
	{"POST", "/v1/apps/{app}/machines/{id}/signal", `{"signal":"SIGUSR1"}`},
	{"POST", "/v1/apps/{app}/machines/{id}/exec", `{"cmd":"ls -l '/a b'","timeout":5}`},
	{"POST", "/v1/apps/{app}/machines/{id}/exec", `{"command":["ls"],"container":"app","stdin":"x"}`},
	{"POST", "/v1/apps/{app}/machines/{id}/exec", `{"cmd":"echo \"open"}`},
	{"GET", "/v1/apps/{app}/machines/{id}/ps?sort_by=cpu&order=desc", ""},
	{"GET", "/v1/apps/{app}/machines/{id}/ps?sort_by=size", ""},
	{"GET", "/v1/apps/{app}/machines/{id}/versions", ""},
	{"GET", "/v1/apps/{app}/machines/{id}/metadata", ""},
	{"POST", "/v1/apps/{app}/machines/{id}/metadata/fly_process_group", `{"value":"web"}`},
	{"POST", "/v1/apps/{app}/machines/{id}/metadata/bad%20key", `{"value":"web"}`},
	{"DELETE", "/v1/apps/{app}/machines/{id}/metadata/fly_process_group", ""},
	{"POST", "/v1/apps/{app}/machines/{id}/lease?ttl=30", ""},
	{"POST", "/v1/apps/{app}/machines/{id}/lease", `{"ttl":30,"description":"deploy"}`},
	{"POST", "/v1/apps/{app}/machines/{id}/lease?ttl=0", ""},
	{"GET", "/v1/apps/{app}/machines/{id}/lease", ""},
	{"DELETE", "/v1/apps/{app}/machines/{id}/lease", ""},
	{"GET", "/v1/apps/{app}/machines/{id}/wait?state=settled&version=01ABC&timeout=1", ""},
	{"GET", "/v1/apps/{app}/machines/{id}/wait?state=started&from_event_id={id}-1&timeout=1", ""},
}

// FuzzHandlers drives the real handler over the real Manager (fake runtime)
// with fuzzed method, path, query and body against a fresh app whose machine
// is in a fuzzed state. No answer may be a 5xx or a non-JSON error, and no
// handler may panic (a panic is answered 500).
func FuzzHandlers(f *testing.F) {
	for i, s := range handlerSeeds {
		f.Add(uint8(i), s.method, s.target, []byte(s.body))
	}
	e := newRealEnv(f)
	var n atomic.Int64
	f.Fuzz(func(t *testing.T, state uint8, method, target string, body []byte) {
		if skipInput(target, body) {
			return
		}
		fx := e.newFixture(t, fmt.Sprintf("fz%d", n.Add(1)), fixtureStates[int(state)%len(fixtureStates)])
		defer e.remove(t, fx)
		target = e.expand(target, fx)
		_, logStart := e.log.Since(0)
		rec, err := e.serve(method, target, e.expand(string(body), fx), 100*time.Millisecond)
		if err != nil {
			return // not a request an HTTP client can send
		}
		if err := checkAnswer(rec); err != nil {
			logged, _ := e.log.Since(logStart)
			t.Fatalf("%s %s %q: %v\nlog:\n%s", method, target, body, err, logged)
		}
		if err := e.checkStored(fx); err != nil {
			t.Fatalf("after %s %s %q: %v", method, target, body, err)
		}
	})
}

// checkStored checks that whatever a request did, every machine it left has
// a settled state and a config that passes validation again (creating a
// machine from it succeeds): bad input is never stored.
func (e *realEnv) checkStored(fx fixture) error {
	ctx := context.Background()
	ms, err := e.m.List(ctx, fx.app)
	if model.IsNotFound(err) {
		return nil // the request deleted the app
	}
	if err != nil {
		return err
	}
	for _, mc := range ms {
		if !mc.State.Settled() {
			return fmt.Errorf("machine %s left %s", mc.ID, mc.State)
		}
		if _, err := e.m.Create(ctx, fx.app, model.CreateMachineRequest{Config: mc.Config, SkipLaunch: true}); err != nil {
			return fmt.Errorf("machine %s has a stored config that no longer validates: %v", mc.ID, err)
		}
	}
	return nil
}

// skipInput leaves out stops that correctly wait as long as they ask: the
// fake app ignores some signals (fakeIgnores), so a stop sending one waits
// out its timeout, up to 24 h.
func skipInput(target string, body []byte) bool {
	if strings.Contains(target, "/restart") {
		// A restart's stop takes its signal and timeout from the query.
		for _, sig := range fakeIgnores {
			if strings.Contains(strings.ToUpper(target), sig) {
				return true
			}
		}
		return false
	}
	if !strings.Contains(target, "/stop") {
		return false
	}
	var req model.StopRequest
	if model.DecodeJSON(bytes.NewReader(body), &req) != nil || req.Timeout.Duration < 100*time.Millisecond {
		return false
	}
	sig := strings.ToUpper(strings.TrimSpace(req.Signal))
	return slices.Contains(fakeIgnores, strings.TrimPrefix(sig, "SIG"))
}

// fakeIgnores are the signals the fake runtime's app survives.
var fakeIgnores = []string{"USR1", "USR2", "HUP", "WINCH", "CONT"}

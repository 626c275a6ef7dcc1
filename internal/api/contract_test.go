package api_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"reflect"
	"sort"
	"strings"
	"testing"

	"github.com/getkin/kin-openapi/openapi3"
	"github.com/getkin/kin-openapi/openapi3filter"
	"github.com/getkin/kin-openapi/routers"
	"github.com/getkin/kin-openapi/routers/gorillamux"

	"github.com/torpor-dev/torpor/internal/api"
	"github.com/torpor-dev/torpor/internal/api/apitest"
	"github.com/torpor-dev/torpor/internal/model"
)

// Contract tests: requests shaped exactly as Fly's clients (fly-go's flaps
// package, which flyctl uses) send them, against the real machine
// lifecycle on the fake runtime, with every request and answer validated
// against Fly's spec (flyGoSpec).

// contract drives the API as a Fly client and validates each exchange.
type contract struct {
	t       *testing.T
	mgr     *apitest.Manager
	h       http.Handler
	doc     *openapi3.T
	router  routers.Router
	covered map[string]bool // spec operations exercised, as "METHOD /path"
}

func newContract(t *testing.T) *contract {
	t.Helper()
	doc := loadFlySpec(t)
	// Route requests to the daemon's /v1 as the spec's server.
	withServer := *doc
	withServer.Servers = openapi3.Servers{{URL: "http://torpor/v1"}}
	router, err := gorillamux.NewRouter(&withServer)
	if err != nil {
		t.Fatal(err)
	}
	mgr := apitest.NewManager(t, nil)
	return &contract{t: t, mgr: mgr, h: apitest.Local(api.New(mgr, api.Config{}, nil)), doc: doc, router: router, covered: map[string]bool{}}
}

// newVolumeContract is newContract with the real volume manager behind the
// volume routes (sparse ext4 files; mounting them needs root).
func newVolumeContract(t *testing.T) *contract {
	t.Helper()
	c := newContract(t)
	c.mgr = apitest.NewManagerWithVolumes(t, nil)
	c.h = apitest.Local(api.New(c.mgr, api.Config{Volumes: c.mgr.Volumes}, nil))
	return c
}

// exchange is one request as a Fly client sends it and the status it must get.
type exchange struct {
	method, target string // target: path and query
	nonce          string // fly-machine-lease-nonce
	body           string
	want           int
	// flyGoOnly: the endpoint is not in the 2024 spec (fly-go calls it).
	flyGoOnly bool
	// rawAnswer: the spec describes the answer wrongly (see docs/api.md);
	// its body is checked by the test instead.
	rawAnswer bool
}

// do sends x, checks its status, validates the request and the answer
// against the spec (errors against ErrorResponse) and returns the answer.
func (c *contract) do(x exchange) []byte {
	c.t.Helper()
	var body io.Reader
	if x.body != "" {
		body = strings.NewReader(x.body)
	}
	req := httptest.NewRequest(x.method, "http://torpor"+x.target, body)
	req.Header.Set("User-Agent", "fly-go/contract-test")
	req.Header.Set("Authorization", "Bearer fm2_not-checked-over-the-admin-socket")
	if x.body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	if x.nonce != "" {
		req.Header.Set(api.LeaseNonceHeader, x.nonce)
	}
	rec := httptest.NewRecorder()
	c.h.ServeHTTP(rec, req)
	got := rec.Body.Bytes()
	if rec.Code != x.want {
		c.t.Fatalf("%s %s: status %d, want %d: %s", x.method, x.target, rec.Code, x.want, got)
	}
	if rec.Code >= 300 {
		c.checkError(x, got)
	}
	route, params, err := c.router.FindRoute(req)
	if x.flyGoOnly {
		if err == nil {
			c.t.Errorf("%s %s is in the spec: drop flyGoOnly", x.method, x.target)
		}
		return got
	}
	if err != nil {
		c.t.Fatalf("%s %s: no such operation in Fly's spec: %v", x.method, x.target, err)
	}
	c.covered[x.method+" "+route.Path] = true
	ctx := context.Background()
	if x.body != "" {
		req.Body = io.NopCloser(strings.NewReader(x.body))
	}
	in := &openapi3filter.RequestValidationInput{Request: req, PathParams: params, Route: route,
		Options: &openapi3filter.Options{MultiError: true}}
	if err := openapi3filter.ValidateRequest(ctx, in); err != nil {
		c.t.Errorf("%s %s: the request does not follow Fly's spec: %v", x.method, x.target, err)
	}
	out := &openapi3filter.ResponseValidationInput{RequestValidationInput: in, Status: rec.Code, Header: rec.Header(),
		Body: io.NopCloser(bytes.NewReader(got)), Options: &openapi3filter.Options{MultiError: true, ExcludeResponseBody: x.rawAnswer}}
	if err := openapi3filter.ValidateResponse(ctx, out); err != nil {
		c.t.Errorf("%s %s: the answer does not follow Fly's spec: %v\n%s", x.method, x.target, err, got)
	}
	return got
}

// checkError validates an error answer against Fly's ErrorResponse and
// fly-go's reading of it: {"error", "status"}.
func (c *contract) checkError(x exchange, body []byte) {
	c.t.Helper()
	var v any
	if err := json.Unmarshal(body, &v); err != nil {
		c.t.Fatalf("%s %s: error answer %q is not JSON", x.method, x.target, body)
	}
	schema := c.doc.Components.Schemas["ErrorResponse"].Value
	if err := schema.VisitJSON(v); err != nil {
		c.t.Errorf("%s %s: error answer %s is no ErrorResponse: %v", x.method, x.target, body, err)
	}
	var e struct{ Error, Status string }
	json.Unmarshal(body, &e)
	if e.Error == "" || e.Status == "" {
		c.t.Errorf("%s %s: error answer %s lacks error or status", x.method, x.target, body)
	}
}

// decode decodes an answer.
func decode[T any](t *testing.T, b []byte) T {
	t.Helper()
	var v T
	if err := json.Unmarshal(b, &v); err != nil {
		t.Fatalf("decoding %s: %v", b, err)
	}
	return v
}

// flyLaunch is the body fly-go's Launch sends for a machine of a fly.toml
// app as flyctl deploys it (LaunchMachineInput with its config): skip_secrets
// is always there, force_instance_key always null. (Its init gives a
// command: a root filesystem directory has no image config to take one from.)
const flyLaunch = `{"config":{"env":{"PORT":"8080","PRIMARY_REGION":"ord"},"init":{"cmd":["/app"]},` +
	`"guest":{"cpu_kind":"shared","cpus":1,"memory_mb":256},` +
	`"metadata":{"fly_flyctl_version":"0.3.170","fly_platform_version":"v2","fly_process_group":"app","fly_release_id":"Zyx","fly_release_version":"4"},` +
	`"services":[{"protocol":"tcp","internal_port":8080,"autostop":"suspend","autostart":true,"min_machines_running":0,` +
	`"ports":[{"port":80,"handlers":["http"],"force_https":true},{"port":443,"handlers":["http","tls"]}],` +
	`"concurrency":{"type":"requests","hard_limit":25,"soft_limit":20},"force_instance_key":null,` +
	`"checks":[{"port":8080,"type":"http","interval":"15s","timeout":"2s","grace_period":"5s","method":"GET","path":"/healthz"}]}],` +
	`"checks":{"alive":{"port":8080,"type":"tcp","interval":"15s","timeout":"2s"}},` +
	`"image":"base","restart":{"policy":"on-failure","max_retries":10},"dns":{"skip_registration":true},` +
	`"stop_config":{"timeout":"5s","signal":"SIGINT"}},` +
	`"region":"ord","name":"web-1","skip_secrets":false,"min_secrets_version":3}`

// TestFlyClientContract drives every endpoint of Fly's spec (the volume
// endpoints excepted: TestFlyClientVolumeContract drives them, with a real
// volume edge) and the ones fly-go calls beyond it, as fly-go sends them, in
// the order a deploy does.
func TestFlyClientContract(t *testing.T) {
	t.Parallel()
	c := newContract(t)

	// Apps: fly-go's CreateApp sends name (not app_name) and ?wait=true.
	created := decode[map[string]any](t, c.do(exchange{method: "POST", target: "/v1/apps?wait=true",
		body: `{"name":"fly-app","org_slug":"personal","network":"","app_role_id":""}`, want: 201}))
	if created["name"] != "fly-app" || created["status"] != "pending" {
		t.Errorf("created app %v", created)
	}
	c.do(exchange{method: "POST", target: "/v1/apps?wait=true", body: `{"name":"fly-app","org_slug":"personal"}`, want: 409})
	taken := decode[map[string]string](t, c.do(exchange{method: "POST", target: "/v1/apps", body: `{"app_name":"fly-app"}`, want: 409}))
	if taken["status"] != "name_taken" {
		t.Errorf("a taken app name answers status %q, want name_taken (fly-go's IsNameTakenError)", taken["status"])
	}

	// Launch, as flyctl deploy does: Fly-only names are accepted and reported.
	m := decode[map[string]any](t, c.do(exchange{method: "POST", target: "/v1/apps/fly-app/machines", body: flyLaunch, want: 200}))
	id, version := m["id"].(string), m["version"].(string)
	if m["state"] != "started" || m["host_status"] != "ok" || m["instance_id"] != version || version == "" {
		t.Fatalf("launched machine %v", m)
	}
	warnings := fmt.Sprint(m["warnings"])
	for _, w := range []string{"config.dns", "config.services[0].ports[0].force_https",
		"min_secrets_version", "region: accepted, not acted on"} {
		if !strings.Contains(warnings, w) {
			t.Errorf("warnings %s lack %s", warnings, w)
		}
	}
	if strings.Contains(warnings, "skip_secrets") || strings.Contains(warnings, "force_instance_key") {
		t.Errorf("warnings %s name values that ask nothing", warnings)
	}
	if cfg := m["config"].(map[string]any); cfg["dns"] == nil || cfg["checks"] == nil {
		t.Errorf("config %v does not read back its Fly-only values and checks", cfg)
	}
	if strings.Contains(warnings, "config.checks") {
		t.Errorf("warnings %s name health checks, which torpor runs", warnings)
	}
	evs := decode[[]model.Event](t, c.do(exchange{method: "GET", target: "/v1/apps/fly-app/machines/" + id + "/events", want: 200}))
	if launch := evs[len(evs)-1]; launch.Type != "launch" || !strings.Contains(fmt.Sprint(launch.Field("warnings")), "config.dns") {
		t.Errorf("launch event %+v has no warnings", launch)
	}

	app := decode[map[string]any](t, c.do(exchange{method: "GET", target: "/v1/apps/fly-app", want: 200}))
	if app["machine_count"] != 1.0 || app["status"] != "deployed" || app["organization"].(map[string]any)["slug"] != "personal" {
		t.Errorf("app %v", app)
	}
	list := decode[map[string]any](t, c.do(exchange{method: "GET", target: "/v1/apps?org_slug=personal", want: 200}))
	if list["total_apps"] != 1.0 {
		t.Errorf("app list %v", list)
	}
	c.do(exchange{method: "GET", target: "/v1/apps?org_slug=personal&app_role=postgres_cluster", want: 200})

	// Lists: what flyctl asks for, and the spec's filters.
	base := "/v1/apps/fly-app/machines"
	for _, q := range []string{"", "?include_deleted=true&region=local", "?summary=true", "?state=started,stopped",
		"?metadata.fly_process_group=app", "?include_leases=true"} {
		ms := decode[[]map[string]any](t, c.do(exchange{method: "GET", target: base + q, want: 200}))
		if len(ms) != 1 {
			t.Errorf("list%s: %d machines", q, len(ms))
		} else if _, has := ms[0]["config"]; has == (q == "?summary=true") {
			t.Errorf("list%s: config present %v", q, has)
		}
	}
	if ms := decode[[]any](t, c.do(exchange{method: "GET", target: base + "?metadata.fly_process_group=worker", want: 200})); len(ms) != 0 {
		t.Errorf("metadata filter kept %v", ms)
	}
	mpath := base + "/" + id
	c.do(exchange{method: "GET", target: mpath, want: 200})

	// A deploy takes the machine's lease (fly-go: ?ttl, no body).
	lease := decode[leaseAnswer](t, c.do(exchange{method: "POST", target: mpath + "/lease?ttl=60", want: 200}))
	nonce := lease.Data.Nonce
	if lease.Status != "success" || nonce == "" || lease.Data.Owner != "local" || lease.Data.Version != version {
		t.Fatalf("lease %+v", lease)
	}
	c.do(exchange{method: "POST", target: mpath + "/lease?ttl=60", want: 409}) // held
	got := decode[leaseAnswer](t, c.do(exchange{method: "GET", target: mpath + "/lease", want: 200}))
	if got.Data.Nonce != nonce {
		t.Errorf("GET lease %+v", got)
	}
	refreshed := decode[leaseAnswer](t, c.do(exchange{method: "POST", target: mpath + "/lease?ttl=120", nonce: nonce, want: 200}))
	if refreshed.Data.Nonce != nonce || refreshed.Data.ExpiresAt <= lease.Data.ExpiresAt {
		t.Errorf("refreshed lease %+v after %+v", refreshed, lease)
	}
	c.do(exchange{method: "POST", target: mpath + "/lease", body: `{"ttl":30,"description":"spec shape"}`, nonce: nonce, want: 200})

	// While it holds, only the holder acts.
	update := strings.Replace(flyLaunch, `"env":{"PORT":"8080"`, `"env":{"PORT":"9090"`, 1)
	c.do(exchange{method: "POST", target: mpath, body: update, want: 409})
	updated := decode[map[string]any](t, c.do(exchange{method: "POST", target: mpath, body: update, nonce: nonce, want: 200}))
	newVersion := updated["version"].(string)
	if newVersion == version || updated["instance_id"] != newVersion {
		t.Errorf("update kept version %s (instance %v)", newVersion, updated["instance_id"])
	}
	// fly-go's Wait: version (the spec's instance_id), timeout, state.
	c.do(exchange{method: "GET", target: mpath + "/wait?state=started&timeout=60&version=" + newVersion, want: 200})
	c.do(exchange{method: "GET", target: mpath + "/wait?instance_id=" + newVersion + "&state=started&timeout=5", want: 200})
	c.do(exchange{method: "GET", target: mpath + "/wait?state=settled&timeout=5", want: 200})
	c.do(exchange{method: "GET", target: mpath + "/wait?state=started&timeout=5&version=" + version, want: 409})

	// Stop as fly-go sends it: the id in the body.
	c.do(exchange{method: "POST", target: mpath + "/stop", body: `{"id":"` + id + `","signal":"SIGTERM","timeout":"5s"}`, want: 409})
	c.do(exchange{method: "POST", target: mpath + "/stop", body: `{"id":"` + id + `","signal":"SIGTERM","timeout":"5s"}`, nonce: nonce, want: 200})
	c.do(exchange{method: "GET", target: mpath + "/wait?state=stopped&timeout=5", want: 200})
	start := decode[map[string]any](t, c.do(exchange{method: "POST", target: mpath + "/start", nonce: nonce, want: 200}))
	if start["previous_state"] != "stopped" {
		t.Errorf("start answered %v", start)
	}
	c.do(exchange{method: "POST", target: mpath + "/restart?force_stop=false&timeout=10s&signal=SIGTERM", nonce: nonce, want: 200})
	c.do(exchange{method: "POST", target: mpath + "/restart?force_stop=true", nonce: nonce, want: 200})
	c.do(exchange{method: "POST", target: mpath + "/suspend", nonce: nonce, want: 200, flyGoOnly: true})
	c.do(exchange{method: "POST", target: mpath + "/start", nonce: nonce, want: 200})
	c.do(exchange{method: "POST", target: mpath + "/cordon", nonce: nonce, want: 200})
	c.do(exchange{method: "POST", target: mpath + "/uncordon", nonce: nonce, want: 200})

	// Metadata: fly-go sends no nonce (bluegreen sets it on leased machines).
	c.do(exchange{method: "POST", target: mpath + "/metadata/fly_bluegreen_deployment_tag", body: `{"value":"safe-to-destroy"}`, want: 204})
	md := decode[map[string]string](t, c.do(exchange{method: "GET", target: mpath + "/metadata", want: 200}))
	if md["fly_bluegreen_deployment_tag"] != "safe-to-destroy" || md["fly_process_group"] != "app" {
		t.Errorf("metadata %v", md)
	}
	c.do(exchange{method: "DELETE", target: mpath + "/metadata/fly_bluegreen_deployment_tag", want: 204})

	// Exec as flyctl machine exec sends it (cmd as one string), and ps.
	c.mgr.Runtime.ExecFunc = func(ctx context.Context, id string, args []string) ([]byte, error) {
		return []byte(strings.Join(args, "|") + "\n"), nil
	}
	out := decode[map[string]any](t, c.do(exchange{method: "POST", target: mpath + "/exec", body: `{"cmd":"ls -l '/app dir'","timeout":10}`, want: 200, rawAnswer: true}))
	if out["stdout"] != "ls|-l|/app dir\n" || out["exit_code"] != 0.0 || out["stderr"] != "" {
		t.Errorf("exec answered %v (fly-go reads exit_code, stdout, stderr)", out)
	}
	c.do(exchange{method: "POST", target: mpath + "/exec", body: `{"command":["true"],"container":"app"}`, want: 200, rawAnswer: true})
	ps := decode[[]map[string]any](t, c.do(exchange{method: "GET", target: mpath + "/ps", want: 200}))
	if len(ps) != 1 || ps[0]["pid"] != 1.0 || ps[0]["listen_sockets"] == nil {
		t.Errorf("ps %v", ps)
	}
	c.do(exchange{method: "GET", target: mpath + "/ps?sort_by=cpu&order=desc", want: 200})
	vs := decode[[]model.MachineVersion](t, c.do(exchange{method: "GET", target: mpath + "/versions", want: 200}))
	if len(vs) != 2 || vs[0].Version != newVersion || vs[0].UserConfig.Env["PORT"] != "9090" {
		t.Errorf("versions %+v", vs)
	}

	// Kill (fly-go: the signal as the number 9, no nonce).
	c.do(exchange{method: "POST", target: mpath + "/signal", body: `{"signal":9}`, want: 200})
	c.do(exchange{method: "GET", target: mpath + "/wait?state=stopped&timeout=5", want: 200})

	// Release, then a destroy with kill and no lease.
	c.do(exchange{method: "DELETE", target: mpath + "/lease", want: 409})
	c.do(exchange{method: "DELETE", target: mpath + "/lease", nonce: nonce, want: 200})
	c.do(exchange{method: "GET", target: mpath + "/lease", want: 404})
	c.do(exchange{method: "DELETE", target: mpath + "?kill=true", want: 200})

	// A create with lease_ttl answers the lease's nonce.
	leased := decode[map[string]any](t, c.do(exchange{method: "POST", target: base,
		body: `{"config":{"image":"base","init":{"exec":["/app"]}},"lease_ttl":30,"skip_launch":true,"skip_service_registration":true}`, want: 200}))
	if leased["nonce"] == "" || leased["nonce"] == nil || leased["cordoned"] != true || leased["state"] != "created" {
		t.Errorf("create with lease_ttl and skip_service_registration: %v", leased)
	}
	lpath := base + "/" + leased["id"].(string)
	c.do(exchange{method: "DELETE", target: lpath, want: 409})
	c.do(exchange{method: "DELETE", target: lpath, nonce: leased["nonce"].(string), want: 200})

	c.do(exchange{method: "DELETE", target: "/v1/apps/fly-app", want: 202})

	// Every operation of the spec was exercised, volumes aside.
	var missing []string
	for path, item := range c.doc.Paths.Map() {
		for method := range item.Operations() {
			if !c.covered[method+" "+path] && !strings.HasPrefix(path, "/apps/{app_name}/volumes") {
				missing = append(missing, method+" "+path)
			}
		}
	}
	sort.Strings(missing)
	if len(missing) > 0 {
		t.Errorf("operations of Fly's spec not exercised: %s", strings.Join(missing, ", "))
	}
}

// TestFlyClientVolumeContract drives the volume endpoints of Fly's spec as
// flyctl's volume commands and a deploy with [mounts] use them, against the
// real volume manager, each exchange validated against the spec.
func TestFlyClientVolumeContract(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: a mount loop-mounts the volume")
	}
	t.Parallel()
	c := newVolumeContract(t)
	c.do(exchange{method: "POST", target: "/v1/apps?wait=true", body: `{"name":"vol-app","org_slug":"personal"}`, want: 201})
	base := "/v1/apps/vol-app/volumes"

	// fly volumes create pg_data --size 1 --region ord, as fly-go sends it
	// (CreateVolumeRequest with its pointers set, compute from --vm-*).
	create := `{"name":"pg_data","region":"ord","size_gb":1,"encrypted":true,"require_unique_zone":true,` +
		`"unique_zone_app_wide":false,"compute":{"cpu_kind":"shared","cpus":1,"memory_mb":256},` +
		`"snapshot_retention":5,"fstype":"ext4"}`
	vol := decode[map[string]any](t, c.do(exchange{method: "POST", target: base, body: create, want: 200}))
	id, _ := vol["id"].(string)
	if !strings.HasPrefix(id, "vol_") || vol["name"] != "pg_data" || vol["size_gb"] != 1.0 || vol["state"] != "created" ||
		vol["attached_machine_id"] != nil || vol["blocks"] == nil || vol["fstype"] != "ext4" {
		t.Fatalf("created volume %v", vol)
	}
	// A second of the same name is allowed on Fly (names are not unique).
	other := decode[map[string]any](t, c.do(exchange{method: "POST", target: base, body: `{"name":"pg_data","size_gb":1}`, want: 200}))
	vpath := base + "/" + id
	if vs := decode[[]map[string]any](t, c.do(exchange{method: "GET", target: base, want: 200})); len(vs) != 2 {
		t.Errorf("list: %d volumes, want 2", len(vs))
	}
	got := decode[map[string]any](t, c.do(exchange{method: "GET", target: vpath, want: 200}))
	if got["id"] != id || got["blocks_avail"] == nil {
		t.Errorf("get %v", got)
	}

	// fly volumes update --snapshot-retention / --scheduled-snapshots: the
	// spec's POST and fly-go's PUT.
	upd := decode[map[string]any](t, c.do(exchange{method: "POST", target: vpath, body: `{"snapshot_retention":7}`, want: 200}))
	if upd["snapshot_retention"] != 7.0 {
		t.Errorf("update answered %v", upd)
	}
	c.do(exchange{method: "PUT", target: vpath, body: `{"snapshot_retention":7,"auto_backup_enabled":false}`, want: 200, flyGoOnly: true})

	// A machine mounts it: the volume says where it is attached.
	mc := decode[map[string]any](t, c.do(exchange{method: "POST", target: "/v1/apps/vol-app/machines",
		body: `{"config":{"image":"base","init":{"exec":["/app"]},"mounts":[{"volume":"` + id + `","path":"/data","name":"pg_data"}]},"region":"ord"}`, want: 200}))
	mid := mc["id"].(string)
	attached := decode[map[string]any](t, c.do(exchange{method: "GET", target: vpath, want: 200}))
	if attached["attached_machine_id"] != mid || attached["state"] != "created" {
		t.Errorf("volume of a running machine %v, want attached to %s", attached, mid)
	}
	c.do(exchange{method: "DELETE", target: vpath, want: 409})

	// fly volumes extend --size 2: the spec's PUT and fly-go's POST... both ways.
	ext := decode[map[string]any](t, c.do(exchange{method: "PUT", target: vpath + "/extend", body: `{"size_gb":2}`, want: 200}))
	if v, _ := ext["volume"].(map[string]any); v == nil || v["size_gb"] != 2.0 {
		t.Errorf("extend answered %v", ext)
	}
	c.do(exchange{method: "PUT", target: vpath + "/extend", body: `{"size_gb":1}`, want: 400}) // shrinking
	c.do(exchange{method: "GET", target: vpath + "/snapshots", want: 404})

	// Destroying the machine keeps the data and frees the volume.
	c.do(exchange{method: "DELETE", target: "/v1/apps/vol-app/machines/" + mid + "?force=true", want: 200})
	freed := decode[map[string]any](t, c.do(exchange{method: "GET", target: vpath, want: 200}))
	if freed["attached_machine_id"] != nil || freed["size_gb"] != 2.0 {
		t.Errorf("volume after its machine's destroy %v", freed)
	}
	gone := decode[map[string]any](t, c.do(exchange{method: "DELETE", target: vpath, want: 200}))
	if gone["id"] != id || gone["state"] != "destroyed" {
		t.Errorf("destroy answered %v", gone)
	}
	c.do(exchange{method: "DELETE", target: base + "/" + other["id"].(string), want: 200})
	c.do(exchange{method: "GET", target: vpath, want: 404})

	var missing []string
	for path, item := range c.doc.Paths.Map() {
		for method := range item.Operations() {
			if strings.HasPrefix(path, "/apps/{app_name}/volumes") && !strings.HasSuffix(path, "/snapshots") && !c.covered[method+" "+path] {
				missing = append(missing, method+" "+path)
			}
		}
	}
	if len(missing) > 0 {
		sort.Strings(missing)
		t.Errorf("volume operations of Fly's spec not exercised: %s", strings.Join(missing, ", "))
	}
}

// TestFlyRoundTripKeepsTorporFields creates a machine using every torpor
// extension, reads it back, keeps only what a client built on Fly's types
// keeps (the spec's names and fly-go's additions: pruneToFly) and sends
// that back as an update: the machine's config must come out unchanged.
// The fixture is checked to set every extension field of
// model.MachineConfig (found by reflection), so a torpor field added later
// is covered or the test says which one to add.
func TestFlyRoundTripKeepsTorporFields(t *testing.T) {
	t.Parallel()
	c := newContract(t)
	cfg := model.MachineConfig{
		Image: "base",
		Init:  model.InitConfig{Exec: []string{"/app", "serve"}, Workdir: "/srv"},
		Env:   map[string]string{"A": "1"},
		Guest: model.Guest{CPUs: 2, MemoryMB: 512, GPUSuspend: model.GPUSuspendHostMemory},
		Services: []model.Service{{Protocol: "tcp", InternalPort: 8080,
			Ports: []model.Port{{Port: ptr(80), Handlers: []string{"http"}}}}},
		SwapSizeMB: 0,
		Metadata:   map[string]string{"fly_process_group": "app"},
		Hooks: &model.Hooks{PreSuspend: &model.Hook{Cmd: []string{"/pre"}}, PostResume: &model.Hook{Cmd: []string{"/post"}},
			ResumeSignal: "SIGUSR2"},
	}
	// Every extension must be set, so that losing it would show. A config
	// keeps its swap as init.swap_size_mb: swap_size_mb is an input only.
	inputOnly := map[string]bool{"swap_size_mb": true}
	for _, path := range unsetExtensions(reflect.ValueOf(cfg), "") {
		if !inputOnly[path] {
			t.Errorf("the fixture does not set torpor extension config.%s: set it, so that the round trip covers it", path)
		}
	}
	body, err := json.Marshal(model.CreateMachineRequest{Config: cfg, SkipLaunch: true})
	if err != nil {
		t.Fatal(err)
	}
	c.do(exchange{method: "POST", target: "/v1/apps", body: `{"app_name":"rt"}`, want: 201})
	m := decode[map[string]any](t, c.do(exchange{method: "POST", target: "/v1/apps/rt/machines", body: string(body), want: 200}))
	mpath := "/v1/apps/rt/machines/" + m["id"].(string)
	before := c.do(exchange{method: "GET", target: mpath, want: 200})

	var asFly any
	if err := json.Unmarshal(before, &asFly); err != nil {
		t.Fatal(err)
	}
	flyMachine := pruneToFly(asFly, c.doc.Components.Schemas["Machine"]).(map[string]any)
	flyCfg := flyMachine["config"].(map[string]any)
	for _, lost := range []string{"hooks", "swap_size_mb"} {
		if _, ok := flyCfg[lost]; ok {
			t.Fatalf("pruneToFly kept config.%s, which Fly's types do not have", lost)
		}
	}
	update, _ := json.Marshal(map[string]any{"config": flyCfg, "region": flyMachine["region"], "name": flyMachine["name"],
		"skip_launch": true, "skip_secrets": false})
	c.do(exchange{method: "POST", target: mpath, body: string(update), want: 200})
	after := c.do(exchange{method: "GET", target: mpath, want: 200})

	b, a := decode[model.Machine](t, before), decode[model.Machine](t, after)
	if !reflect.DeepEqual(b.Config, a.Config) {
		t.Fatalf("an update through Fly's types changed the config:\nbefore %s\nafter  %s", jsonOf(b.Config), jsonOf(a.Config))
	}
	if b.Version == a.Version {
		t.Error("the update made no new version")
	}
}

func ptr[T any](v T) *T { return &v }

// leaseAnswer is a lease answer as fly-go reads it (MachineLease).
type leaseAnswer struct {
	Status string      `json:"status"`
	Data   model.Lease `json:"data"`
}

func jsonOf(v any) string {
	b, _ := json.Marshal(v)
	return string(b)
}

// unsetExtensions lists the torpor extension fields (tag torpor:"extension")
// of v, at any depth, that are zero.
func unsetExtensions(v reflect.Value, prefix string) []string {
	for v.Kind() == reflect.Pointer {
		if v.IsNil() {
			v = reflect.New(v.Type().Elem()).Elem()
			break
		}
		v = v.Elem()
	}
	var out []string
	switch v.Kind() {
	case reflect.Struct:
		if reflect.PointerTo(v.Type()).Implements(reflect.TypeFor[json.Unmarshaler]()) && v.Type() != reflect.TypeFor[model.MachineConfig]() {
			return nil
		}
		for name, f := range jsonFields(v.Type()) {
			fv := v.FieldByIndex(f.Index)
			path := strings.TrimPrefix(prefix+"."+name, ".")
			if f.Tag.Get("torpor") == "extension" && fv.IsZero() {
				out = append(out, path)
			}
			out = append(out, unsetExtensions(fv, path)...)
		}
	case reflect.Slice:
		elem := reflect.New(v.Type().Elem()).Elem()
		if v.Len() > 0 {
			elem = v.Index(0)
		}
		out = append(out, unsetExtensions(elem, prefix+"[0]")...)
	case reflect.Map:
		if v.Type().Elem().Kind() == reflect.Struct || v.Type().Elem().Kind() == reflect.Pointer {
			elem := reflect.New(v.Type().Elem()).Elem()
			if keys := v.MapKeys(); len(keys) > 0 {
				elem = v.MapIndex(keys[0])
			}
			out = append(out, unsetExtensions(elem, prefix+".*")...)
		}
	}
	return out
}

// pruneToFly keeps of v (generic JSON) what a client built on Fly's types
// keeps when it decodes v as schema s and encodes it again: the spec's
// names and fly-go's additions (flyGoAdditions), recursively.
func pruneToFly(v any, s *openapi3.SchemaRef) any {
	sch, name := objectSchema(s)
	if sch == nil {
		return v
	}
	switch x := v.(type) {
	case map[string]any:
		if sch.AdditionalProperties.Schema != nil && len(sch.Properties) == 0 {
			out := map[string]any{}
			for k, e := range x {
				out[k] = pruneToFly(e, sch.AdditionalProperties.Schema)
			}
			return out
		}
		if len(sch.Properties) == 0 && !sch.Type.Is("object") {
			return v
		}
		if len(sch.Properties) == 0 {
			return v // a free-form object (event requests)
		}
		out := map[string]any{}
		for _, k := range flyNamesOf(sch, name) {
			e, ok := x[k]
			if !ok {
				continue
			}
			if ps, typed := sch.Properties[k]; typed {
				out[k] = pruneToFly(e, ps)
			} else {
				out[k] = e // a fly-go addition: kept as is
			}
		}
		return out
	case []any:
		if sch.Items == nil {
			return v
		}
		out := make([]any, len(x))
		for i, e := range x {
			out[i] = pruneToFly(e, sch.Items)
		}
		return out
	}
	return v
}

package api_test

import (
	"bytes"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/torpor-dev/torpor/internal/model"
)

// badInput lists, per endpoint, kinds of bad input and the answer each
// gets: the status and a substring of the JSON error. {app} and {id} are a
// fixture app and its started machine. It doubles as documentation of the
// validation rules (docs/api.md, "Input validation").
var badInput = []badCase{
	// Paths: ids, names, traversal.
	{"uppercase app", "GET", "/v1/apps/Web", "", 400, "path parameter app"},
	{"app starting with a dash", "GET", "/v1/apps/-web", "", 400, "starting with a letter or digit"},
	{"app too long", "GET", "/v1/apps/" + strings.Repeat("a", 64), "", 400, "1-63"},
	{"unicode app", "GET", "/v1/apps/%C3%A9t%C3%A9/machines", "", 400, "path parameter app"},
	{"uppercase id", "GET", "/v1/apps/{app}/machines/ABC", "", 400, "path parameter id"},
	{"id too long", "GET", "/v1/apps/{app}/machines/" + strings.Repeat("a", 65), "", 400, "1-64"},
	{"escaped slash in id", "GET", "/v1/apps/{app}/machines/a%2Fb", "", 400, "path parameter id"},
	{"escaped dot-dot id", "GET", "/v1/apps/{app}/machines/%2E%2E", "", 400, `".."`},
	{"escaped traversal in id", "GET", "/v1/apps/{app}/machines/..%2F..%2Fetc", "", 400, `".."`},
	{"dot-dot segments", "GET", "/v1/apps/{app}/machines/{id}/../../x", "", 400, `".."`},
	{"empty segment", "GET", "/v1/apps//machines", "", 400, "empty"},
	{"trailing slash", "GET", "/v1/apps/{app}/", "", 400, "trailing slash"},
	{"NUL in id", "GET", "/v1/apps/{app}/machines/a%00b", "", 400, "control characters"},
	{"invalid UTF-8 in path", "GET", "/v1/apps/%FF", "", 400, "UTF-8"},
	{"path too long", "GET", "/v1/apps/" + strings.Repeat("a", 1100), "", 414, "too long"},
	{"unknown route", "GET", "/v1/nothing", "", 404, "no such route"},
	{"wrong method", "PUT", "/v1/apps/{app}", "", 405, "not allowed"},

	// Query parameters.
	{"malformed query", "GET", "/v1/apps?%zz", "", 400, "invalid query string"},
	{"unknown query parameter", "GET", "/v1/apps/{app}/machines?bogus=1", "", 400, `unknown query parameter "bogus"`},
	{"repeated query parameter", "GET", "/v1/apps/{app}/machines/{id}/wait?timeout=1&timeout=2", "", 400, "given 2 times"},
	{"bad org_slug filter", "GET", "/v1/apps?org_slug=Bad", "", 400, "org_slug"},
	{"force not a boolean", "DELETE", "/v1/apps/{app}/machines/{id}?force=maybe", "", 400, "force"},
	{"wait state unknown", "GET", "/v1/apps/{app}/machines/{id}/wait?state=sleeping", "", 400, "state"},
	{"wait timeout zero", "GET", "/v1/apps/{app}/machines/{id}/wait?timeout=0", "", 400, "timeout"},
	{"wait timeout too long", "GET", "/v1/apps/{app}/machines/{id}/wait?timeout=601", "", 400, "1 to 600"},
	{"wait timeout with unit", "GET", "/v1/apps/{app}/machines/{id}/wait?timeout=5s", "", 400, "whole number of seconds"},
	{"events limit negative", "GET", "/v1/apps/{app}/machines/{id}/events?limit=-1", "", 400, "query parameter limit"},
	{"events limit huge", "GET", "/v1/apps/{app}/machines/{id}/events?limit=99999999999999999999", "", 400, "query parameter limit"},
	{"logs from_seq negative", "GET", "/v1/apps/{app}/machines/{id}/logs?from_seq=-1", "", 400, "from_seq"},
	{"logs since garbage", "GET", "/v1/apps/{app}/machines/{id}/logs?since=yesterday", "", 400, "since"},
	{"logs limit zero", "GET", "/v1/apps/{app}/machines/{id}/logs?limit=0", "", 400, "limit"},
	{"logs follow not a boolean", "GET", "/v1/apps/{app}/machines/{id}/logs?follow=yes", "", 400, "follow"},
	{"logs unknown parameter", "GET", "/v1/apps/{app}/machines/{id}/logs?lines=5", "", 400, `unknown query parameter "lines"`},
	{"query on a route without any", "POST", "/v1/apps/{app}/machines/{id}/start?now=1", "", 400, "takes none"},

	// JSON bodies.
	{"empty create app body", "POST", "/v1/apps", "", 400, "needs a JSON object body"},
	{"app body not an object", "POST", "/v1/apps", `[]`, 400, "expected an object, got array"},
	{"app_name of the wrong type", "POST", "/v1/apps", `{"app_name":5}`, 400, "app_name: expected a string, got number"},
	{"unknown app field", "POST", "/v1/apps", `{"app_name":"x","netwerk":"n"}`, 400, `unknown field "netwerk"`},
	{"Fly-only field of the wrong type", "POST", "/v1/apps", `{"app_name":"x","network":1}`, 400, `network: expected a string`},
	{"bad app_name", "POST", "/v1/apps", `{"app_name":"Web_1"}`, 400, "app_name"},
	{"bad org_slug", "POST", "/v1/apps", `{"app_name":"ok","org_slug":"../x"}`, 400, "org_slug"},
	{"trailing garbage", "POST", "/v1/apps", `{"app_name":"ok"} {}`, 400, "unexpected data after the JSON value"},
	{"truncated JSON", "POST", "/v1/apps", `{"app_name":`, 400, "unexpected end of input"},
	{"syntax error", "POST", "/v1/apps", `{app_name:1}`, 400, "invalid character"},
	{"empty create machine body", "POST", "/v1/apps/{app}/machines", "", 400, "needs a JSON object body"},
	{"empty update body", "POST", "/v1/apps/{app}/machines/{id}", "", 400, "needs a JSON object body"},
	{"nested type error", "POST", "/v1/apps/{app}/machines", cfg(`"guest":{"memory_mb":"512"}`), 400, "config.guest.memory_mb: expected an integer"},
	{"integer overflow", "POST", "/v1/apps/{app}/machines", cfg(`"guest":{"cpus":1e30}`), 400, "config.guest.cpus"},
	{"fraction for an integer", "POST", "/v1/apps/{app}/machines", cfg(`"services":[{"internal_port":80.5}]`), 400, "config.services.internal_port"},
	{"unknown nested field", "POST", "/v1/apps/{app}/machines", cfg(`"guest":{"memroy_mb":1}`), 400, `unknown field "config.guest.memroy_mb"`},
	{"stop body type error", "POST", "/v1/apps/{app}/machines/{id}/stop", `{"signal":15}`, 400, "signal: expected a string"},
	{"stop body trailing data", "POST", "/v1/apps/{app}/machines/{id}/stop", `{} x`, 400, "unexpected data"},

	// Machine requests and configs: names, ranges, enums, images.
	{"bad machine name", "POST", "/v1/apps/{app}/machines", `{"name":"../x",` + cfg("")[1:], 400, "name"},
	{"bad name on update", "POST", "/v1/apps/{app}/machines/{id}", `{"name":"Bad Name",` + cfg("")[1:], 400, "name"},
	{"bad region", "POST", "/v1/apps/{app}/machines", `{"region":"US East",` + cfg("")[1:], 400, "region"},
	{"no image", "POST", "/v1/apps/{app}/machines", `{"config":{"init":{"exec":["/app"]}}}`, 400, "config.image is required"},
	{"image traversal", "POST", "/v1/apps/{app}/machines", image("../../etc"), 400, "not a valid image name"},
	{"image name with dot-dot segment", "POST", "/v1/apps/{app}/machines", image("base/../../x"), 400, "not a valid image name"},
	{"image symlink escaping", "POST", "/v1/apps/{app}/machines", image("escape"), 400, "outside the images directory"},
	{"image missing", "POST", "/v1/apps/{app}/machines", image("nothing-here"), 400, "not found"},
	{"image host root", "POST", "/v1/apps/{app}/machines", image("/"), 400, "contains the daemon's directory"},
	{"image data dir", "POST", "/v1/apps/{app}/machines", image("$DATA"), 400, "daemon's directory"},
	{"image absolute with dot-dot", "POST", "/v1/apps/{app}/machines", image("$IMAGES/../data"), 400, `".."`},
	{"image with NUL", "POST", "/v1/apps/{app}/machines", image(`base\u0000`), 400, "NUL"},
	{"no command", "POST", "/v1/apps/{app}/machines", `{"config":{"image":"base"}}`, 400, "config.init"},
	{"empty program", "POST", "/v1/apps/{app}/machines", `{"config":{"image":"base","init":{"exec":[""]}}}`, 400, "must not be empty"},
	{"NUL in argument", "POST", "/v1/apps/{app}/machines", `{"config":{"image":"base","init":{"exec":["/app","a\u0000b"]}}}`, 400, "config.init.exec[1]"},
	{"relative workdir", "POST", "/v1/apps/{app}/machines", cfg(`"init":{"exec":["/app"],"workdir":"srv"}`), 400, "config.init.workdir"},
	{"cpus zero after default", "POST", "/v1/apps/{app}/machines", cfg(`"guest":{"cpus":-1}`), 400, "config.guest.cpus"},
	{"cpus too many", "POST", "/v1/apps/{app}/machines", cfg(`"guest":{"cpus":65}`), 400, "config.guest.cpus must be between 1 and 64"},
	{"memory too small", "POST", "/v1/apps/{app}/machines", cfg(`"guest":{"memory_mb":1}`), 400, "config.guest.memory_mb"},
	{"memory too large", "POST", "/v1/apps/{app}/machines", cfg(`"guest":{"memory_mb":65537}`), 400, "config.guest.memory_mb"},
	{"cpu kind", "POST", "/v1/apps/{app}/machines", cfg(`"guest":{"cpu_kind":"turbo"}`), 400, "config.guest.cpu_kind"},
	{"gpus", "POST", "/v1/apps/{app}/machines", cfg(`"guest":{"gpus":99}`), 400, "config.guest.gpus"},
	{"swap", "POST", "/v1/apps/{app}/machines", cfg(`"swap_size_mb":-1`), 400, "config.swap_size_mb"},
	{"env name", "POST", "/v1/apps/{app}/machines", cfg(`"env":{"1X":"y"}`), 400, "config.env"},
	{"env value NUL", "POST", "/v1/apps/{app}/machines", cfg(`"env":{"X":"a\u0000"}`), 400, "config.env.X"},
	{"restart policy", "POST", "/v1/apps/{app}/machines", cfg(`"restart":{"policy":"sometimes"}`), 400, "config.restart.policy"},
	{"restart retries", "POST", "/v1/apps/{app}/machines", cfg(`"restart":{"policy":"on-failure","max_retries":-1}`), 400, "config.restart.max_retries"},
	{"schedule", "POST", "/v1/apps/{app}/machines", cfg(`"schedule":"sometimes"`), 400, "config.schedule"},
	{"internal port missing", "POST", "/v1/apps/{app}/machines", cfg(`"services":[{}]`), 400, "config.services[0].internal_port"},
	{"internal port too high", "POST", "/v1/apps/{app}/machines", cfg(`"services":[{"internal_port":65536}]`), 400, "config.services[0].internal_port"},
	{"port zero", "POST", "/v1/apps/{app}/machines", cfg(`"services":[{"internal_port":80,"ports":[{"port":0}]}]`), 400, "config.services[0].ports[0].port"},
	{"protocol", "POST", "/v1/apps/{app}/machines", cfg(`"services":[{"internal_port":80,"protocol":"sctp"}]`), 400, "config.services[0].protocol"},
	{"handler", "POST", "/v1/apps/{app}/machines", cfg(`"services":[{"internal_port":80,"ports":[{"port":80,"handlers":["gopher"]}]}]`), 400, "handlers[0]"},
	{"autostop", "POST", "/v1/apps/{app}/machines", cfg(`"services":[{"internal_port":80,"autostop":"sleep"}]`), 400, "config.services.autostop: autostop must be"},
	{"soft over hard", "POST", "/v1/apps/{app}/machines", cfg(`"services":[{"internal_port":80,"concurrency":{"soft_limit":30,"hard_limit":20}}]`), 400, "soft_limit (30) must not exceed hard_limit (20)"},
	{"negative limit", "POST", "/v1/apps/{app}/machines", cfg(`"services":[{"internal_port":80,"concurrency":{"hard_limit":-1}}]`), 400, "must not be negative"},
	{"concurrency type", "POST", "/v1/apps/{app}/machines", cfg(`"services":[{"internal_port":80,"concurrency":{"type":"bytes"}}]`), 400, "concurrency.type"},
	{"min machines", "POST", "/v1/apps/{app}/machines", cfg(`"services":[{"internal_port":80,"min_machines_running":-1}]`), 400, "min_machines_running"},
	{"stop signal", "POST", "/v1/apps/{app}/machines", cfg(`"stop_config":{"signal":"SIGNOPE"}`), 400, "config.stop_config.signal"},
	{"stop timeout negative", "POST", "/v1/apps/{app}/machines", cfg(`"stop_config":{"timeout":"-1s"}`), 400, "config.stop_config.timeout"},
	{"stop timeout too long", "POST", "/v1/apps/{app}/machines", cfg(`"stop_config":{"timeout":"25h"}`), 400, "config.stop_config.timeout"},
	{"duration overflow", "POST", "/v1/apps/{app}/machines", cfg(`"stop_config":{"timeout":1e300}`), 400, "config.stop_config.timeout: invalid duration 1e300: out of range"},
	{"duration garbage", "POST", "/v1/apps/{app}/machines", cfg(`"stop_config":{"timeout":"soon"}`), 400, "config.stop_config.timeout: invalid duration"},
	{"hook without command", "POST", "/v1/apps/{app}/machines", cfg(`"hooks":{"pre_suspend":{"cmd":[]}}`), 400, "config.hooks.pre_suspend.cmd"},
	{"hook timeout", "POST", "/v1/apps/{app}/machines", cfg(`"hooks":{"post_resume":{"cmd":["x"],"timeout":"10m"}}`), 400, "config.hooks.post_resume.timeout"},
	{"resume signal", "POST", "/v1/apps/{app}/machines", cfg(`"hooks":{"resume_signal":"KILL"}`), 400, "config.hooks.resume_signal"},
	{"gpu suspend", "POST", "/v1/apps/{app}/machines", cfg(`"guest":{"gpu_suspend":"vram"}`), 400, "config.guest.gpu_suspend"},
	{"autostop suspend ineligible", "POST", "/v1/apps/{app}/machines", cfg(`"swap_size_mb":1,"services":[{"internal_port":80,"autostop":"suspend"}]`), 400, "cannot be suspended"},

	// Mounts (docs/volumes.md) and health checks (docs/checks.md).
	{"mount without volume", "POST", "/v1/apps/{app}/machines", cfg(`"mounts":[{"path":"/data"}]`), 400, "config.mounts[0].volume is required"},
	{"mount volume not an ID", "POST", "/v1/apps/{app}/machines", cfg(`"mounts":[{"volume":"data","path":"/data"}]`), 400, "config.mounts[0].volume"},
	{"mount volume unknown", "POST", "/v1/apps/{app}/machines", cfg(`"mounts":[{"volume":"vol_0123456789abcdef","path":"/data"}]`), 400, "config.mounts[0].volume: volume vol_0123456789abcdef not found"},
	{"mount path relative", "POST", "/v1/apps/{app}/machines", cfg(`"mounts":[{"volume":"vol_0123456789abcdef","path":"data"}]`), 400, "config.mounts[0].path"},
	{"mount path root", "POST", "/v1/apps/{app}/machines", cfg(`"mounts":[{"volume":"vol_0123456789abcdef","path":"/"}]`), 400, "config.mounts[0].path must not be /"},
	{"mount path proc", "POST", "/v1/apps/{app}/machines", cfg(`"mounts":[{"volume":"vol_0123456789abcdef","path":"/proc/x"}]`), 400, "config.mounts[0].path"},
	{"mount path unclean", "POST", "/v1/apps/{app}/machines", cfg(`"mounts":[{"volume":"vol_0123456789abcdef","path":"/a/../b"}]`), 400, "clean path"},
	{"mount name", "POST", "/v1/apps/{app}/machines", cfg(`"mounts":[{"volume":"vol_0123456789abcdef","path":"/d","name":"Bad"}]`), 400, "config.mounts[0].name"},
	{"mount auto-extend", "POST", "/v1/apps/{app}/machines", cfg(`"mounts":[{"volume":"vol_0123456789abcdef","path":"/d","extend_threshold_percent":80}]`), 400, "automatic extension"},
	{"mount twice", "POST", "/v1/apps/{app}/machines", cfg(`"mounts":[{"volume":"vol_0123456789abcdef","path":"/a"},{"volume":"vol_0123456789abcdef","path":"/b"}]`), 400, "config.mounts[1].volume"},
	{"mounts nested", "POST", "/v1/apps/{app}/machines", cfg(`"mounts":[{"volume":"vol_0123456789abcdef","path":"/a"},{"volume":"vol_fedcba9876543210","path":"/a/b"}]`), 400, "overlaps"},
	{"mount unknown field", "POST", "/v1/apps/{app}/machines", cfg(`"mounts":[{"volume":"vol_0123456789abcdef","path":"/a","readonly":true}]`), 400, `unknown field "config.mounts[0].readonly"`},
	{"mount update unknown volume", "POST", "/v1/apps/{app}/machines/{id}", cfg(`"mounts":[{"volume":"vol_0123456789abcdef","path":"/data"}]`), 400, "not found"},
	{"check without type", "POST", "/v1/apps/{app}/machines", cfg(`"checks":{"c":{"port":80}}`), 400, "config.checks.c.type is required"},
	{"check type", "POST", "/v1/apps/{app}/machines", cfg(`"checks":{"c":{"type":"icmp","port":80}}`), 400, "config.checks.c.type"},
	{"check without port", "POST", "/v1/apps/{app}/machines", cfg(`"checks":{"c":{"type":"tcp"}}`), 400, "config.checks.c.port is required"},
	{"check port", "POST", "/v1/apps/{app}/machines", cfg(`"checks":{"c":{"type":"tcp","port":70000}}`), 400, "config.checks.c.port"},
	{"check name", "POST", "/v1/apps/{app}/machines", cfg(`"checks":{"bad name":{"type":"tcp","port":80}}`), 400, "check name"},
	{"check interval", "POST", "/v1/apps/{app}/machines", cfg(`"checks":{"c":{"type":"tcp","port":80,"interval":"10ms"}}`), 400, "config.checks.c.interval"},
	{"check interval garbage", "POST", "/v1/apps/{app}/machines", cfg(`"checks":{"c":{"type":"tcp","port":80,"interval":"often"}}`), 400, "interval: invalid duration"},
	{"check timeout over interval", "POST", "/v1/apps/{app}/machines", cfg(`"checks":{"c":{"type":"tcp","port":80,"interval":"2s","timeout":"5s"}}`), 400, "must not exceed interval"},
	{"check grace period", "POST", "/v1/apps/{app}/machines", cfg(`"checks":{"c":{"type":"tcp","port":80,"grace_period":"-1s"}}`), 400, "config.checks.c.grace_period"},
	{"check http field on tcp", "POST", "/v1/apps/{app}/machines", cfg(`"checks":{"c":{"type":"tcp","port":80,"path":"/x"}}`), 400, "only for http checks"},
	{"check method", "POST", "/v1/apps/{app}/machines", cfg(`"services":[{"internal_port":80,"checks":[{"type":"http","method":"FETCH"}]}]`), 400, "config.services[0].checks[0].method"},
	{"check path", "POST", "/v1/apps/{app}/machines", cfg(`"services":[{"internal_port":80,"checks":[{"type":"http","path":"health"}]}]`), 400, "config.services[0].checks[0].path"},
	{"check protocol", "POST", "/v1/apps/{app}/machines", cfg(`"services":[{"internal_port":80,"checks":[{"type":"http","protocol":"gopher"}]}]`), 400, "config.services[0].checks[0].protocol"},
	{"check tls on http", "POST", "/v1/apps/{app}/machines", cfg(`"services":[{"internal_port":80,"checks":[{"type":"http","tls_skip_verify":true}]}]`), 400, `only for protocol "https"`},
	{"check header name", "POST", "/v1/apps/{app}/machines", cfg(`"services":[{"internal_port":80,"checks":[{"type":"http","headers":[{"name":"a b","values":["x"]}]}]}]`), 400, "headers[0].name"},
	{"check header value", "POST", "/v1/apps/{app}/machines", cfg(`"services":[{"internal_port":80,"checks":[{"type":"http","headers":[{"name":"X","values":["a\nb"]}]}]}]`), 400, "headers[0].values[0]"},
	{"check headers as a map", "POST", "/v1/apps/{app}/machines", cfg(`"services":[{"internal_port":80,"checks":[{"type":"http","headers":{"X":"y"}}]}]`), 400, "expected an array"},
	{"check unknown field", "POST", "/v1/apps/{app}/machines", cfg(`"checks":{"c":{"type":"tcp","port":80,"retries":3}}`), 400, `unknown field "config.checks.c.retries"`},

	// Stop requests.
	{"stop signal unknown", "POST", "/v1/apps/{app}/machines/{id}/stop", `{"signal":"SIGNOPE"}`, 400, "signal"},
	{"stop timeout negative", "POST", "/v1/apps/{app}/machines/{id}/stop", `{"timeout":"-1s"}`, 400, "timeout"},
	{"stop timeout garbage", "POST", "/v1/apps/{app}/machines/{id}/stop", `{"timeout":"soon"}`, 400, "timeout: invalid duration"},
	{"stop id of another machine", "POST", "/v1/apps/{app}/machines/{id}/stop", `{"id":"other"}`, 400, "not the machine of the path"},

	// Fly's request fields and endpoints.
	{"app names differ", "POST", "/v1/apps", `{"app_name":"a","name":"b"}`, 400, "differ"},
	{"bad app name as name", "POST", "/v1/apps", `{"name":"B"}`, 400, "invalid name"},
	{"bad app role", "POST", "/v1/apps", `{"name":"b","app_role_id":"Pg Cluster"}`, 400, "app_role_id"},
	{"wait not a boolean", "POST", "/v1/apps?wait=soon", `{"name":"b"}`, 400, "query parameter wait"},
	{"bad app_role filter", "GET", "/v1/apps?app_role=Bad!", "", 400, "app_role"},
	{"lease_ttl negative", "POST", "/v1/apps/{app}/machines", `{"lease_ttl":-1,` + cfg("")[1:], 400, "lease_ttl"},
	{"lease_ttl too long", "POST", "/v1/apps/{app}/machines", `{"lease_ttl":86401,` + cfg("")[1:], 400, "lease_ttl"},
	{"min_secrets_version not a number", "POST", "/v1/apps/{app}/machines", `{"min_secrets_version":"3",` + cfg("")[1:], 400, "min_secrets_version: expected a number"},
	{"bad current_version", "POST", "/v1/apps/{app}/machines/{id}", `{"current_version":"v-1",` + cfg("")[1:], 400, "current_version"},
	{"stale current_version", "POST", "/v1/apps/{app}/machines/{id}", `{"current_version":"01OLD",` + cfg("")[1:], 409, "updated meanwhile"},
	{"size unknown", "POST", "/v1/apps/{app}/machines", cfg(`"size":"huge"`), 400, "config.size"},
	{"swap given twice", "POST", "/v1/apps/{app}/machines", cfg(`"swap_size_mb":1,"init":{"exec":["/app"],"swap_size_mb":2}`), 400, "differ"},
	{"list include_deleted", "GET", "/v1/apps/{app}/machines?include_deleted=maybe", "", 400, "include_deleted"},
	{"list state", "GET", "/v1/apps/{app}/machines?state=sleeping", "", 400, "query parameter state"},
	{"list region", "GET", "/v1/apps/{app}/machines?region=US", "", 400, "query parameter region"},
	{"list summary", "GET", "/v1/apps/{app}/machines?summary=short", "", 400, "summary"},
	{"list metadata without key", "GET", "/v1/apps/{app}/machines?metadata.=x", "", 400, `unknown query parameter "metadata."`},
	{"destroy kill", "DELETE", "/v1/apps/{app}/machines/{id}?kill=maybe", "", 400, "kill"},
	{"restart timeout", "POST", "/v1/apps/{app}/machines/{id}/restart?timeout=soon", "", 400, "query parameter timeout"},
	{"restart force_stop", "POST", "/v1/apps/{app}/machines/{id}/restart?force_stop=sure", "", 400, "force_stop"},
	{"restart signal", "POST", "/v1/apps/{app}/machines/{id}/restart?signal=SIGNOPE", "", 400, "signal"},
	{"signal missing", "POST", "/v1/apps/{app}/machines/{id}/signal", `{}`, 400, "signal is required"},
	{"signal unknown", "POST", "/v1/apps/{app}/machines/{id}/signal", `{"signal":"SIGNOPE"}`, 400, "unknown signal"},
	{"signal number out of range", "POST", "/v1/apps/{app}/machines/{id}/signal", `{"signal":99}`, 400, "signal must be"},
	{"signal no body", "POST", "/v1/apps/{app}/machines/{id}/signal", ``, 400, "needs a JSON object body"},
	{"exec no command", "POST", "/v1/apps/{app}/machines/{id}/exec", `{}`, 400, "command is required"},
	{"exec both forms", "POST", "/v1/apps/{app}/machines/{id}/exec", `{"command":["a"],"cmd":"b"}`, 400, "not both"},
	{"exec open quote", "POST", "/v1/apps/{app}/machines/{id}/exec", `{"cmd":"echo 'x"}`, 400, "unterminated single quote"},
	{"exec timeout", "POST", "/v1/apps/{app}/machines/{id}/exec", `{"command":["a"],"timeout":601}`, 400, "timeout must be between 1 and 600"},
	{"exec NUL", "POST", "/v1/apps/{app}/machines/{id}/exec", `{"command":["a\u0000"]}`, 400, "NUL"},
	{"exec unknown field", "POST", "/v1/apps/{app}/machines/{id}/exec", `{"cmnd":"ls"}`, 400, `unknown field "cmnd"`},
	{"ps sort_by", "GET", "/v1/apps/{app}/machines/{id}/ps?sort_by=size", "", 400, "sort_by"},
	{"ps order", "GET", "/v1/apps/{app}/machines/{id}/ps?order=sideways", "", 400, "order"},
	{"metadata key", "POST", "/v1/apps/{app}/machines/{id}/metadata/a%20b", `{"value":"x"}`, 400, "invalid key"},
	{"metadata value too long", "POST", "/v1/apps/{app}/machines/{id}/metadata/k", `{"value":"` + strings.Repeat("x", 4097) + `"}`, 400, "value must be at most"},
	{"metadata body", "POST", "/v1/apps/{app}/machines/{id}/metadata/k", `{"val":"x"}`, 400, `unknown field "val"`},
	{"lease ttl zero", "POST", "/v1/apps/{app}/machines/{id}/lease?ttl=0", "", 400, "query parameter ttl"},
	{"lease ttl too long", "POST", "/v1/apps/{app}/machines/{id}/lease", `{"ttl":86401}`, 400, "ttl must be between"},
	{"lease ttls differ", "POST", "/v1/apps/{app}/machines/{id}/lease?ttl=5", `{"ttl":6}`, 400, "give one"},
	{"lease description", "POST", "/v1/apps/{app}/machines/{id}/lease", `{"description":"` + strings.Repeat("d", 300) + `"}`, 400, "description"},
	{"no lease", "GET", "/v1/apps/{app}/machines/{id}/lease", "", 404, "lease not found"},
	{"wait version", "GET", "/v1/apps/{app}/machines/{id}/wait?version=v-1", "", 400, "query parameter version"},
	{"wait unknown version", "GET", "/v1/apps/{app}/machines/{id}/wait?version=01NONE&timeout=1", "", 400, "no such version"},
	{"wait versions differ", "GET", "/v1/apps/{app}/machines/{id}/wait?version=A&instance_id=B", "", 400, "differ"},
	{"wait from_event_id", "GET", "/v1/apps/{app}/machines/{id}/wait?from_event_id=7&timeout=1", "", 400, "from_event_id"},
}

// badCase is one kind of bad input to an endpoint and the answer it gets:
// the status and a substring of the JSON error.
type badCase struct {
	name, method, target, body string
	status                     int
	want                       string
}

// runBadInput sends every case (with the fixture's names expanded) and
// checks its answer.
func (e *realEnv) runBadInput(t *testing.T, fx fixture, cases []badCase) {
	t.Helper()
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			target := e.expand(c.target, fx)
			rec, err := e.serve(c.method, target, e.expand(c.body, fx), 5*time.Second)
			if err != nil {
				t.Fatal(err)
			}
			if err := checkAnswer(rec); err != nil {
				t.Fatal(err)
			}
			var eb struct {
				Error string `json:"error"`
			}
			json.Unmarshal(rec.Body.Bytes(), &eb)
			if rec.Code != c.status || !strings.Contains(eb.Error, c.want) {
				t.Fatalf("%s %s %s: %d %q, want %d with %q", c.method, target, c.body, rec.Code, eb.Error, c.status, c.want)
			}
		})
	}
}

// cfg is a create request body whose config has a valid image and command
// and the given extra fields (which may override init).
func cfg(extra string) string {
	if extra == "" {
		return `{"config":{"image":"base","init":{"exec":["/app"]}}}`
	}
	if strings.HasPrefix(extra, `"init"`) {
		return `{"config":{"image":"base",` + extra + `}}`
	}
	return `{"config":{"image":"base","init":{"exec":["/app"]},` + extra + `}}`
}

// image is a create request body for the given image.
func image(name string) string {
	return `{"config":{"image":"` + name + `","init":{"exec":["/app"]}}}`
}

func TestBadInput(t *testing.T) {
	e := newRealEnv(t)
	fx := e.newFixture(t, "bad", model.StateStarted)
	e.runBadInput(t, fx, badInput)
	// None of it changed the machine.
	mc, err := e.m.Get(t.Context(), fx.app, fx.id)
	if err != nil || mc.State != model.StateStarted || mc.Name == "" {
		t.Fatalf("machine after bad input: %+v, %v", mc, err)
	}
}

// TestGoodInputStillAccepted checks the other side of the rules: values at
// their bounds and canonical spellings are accepted.
func TestGoodInputStillAccepted(t *testing.T) {
	e := newRealEnv(t)
	fx := e.newFixture(t, "good", model.StateStarted)
	body := `{"name":"edge-1","region":"local","skip_launch":true,"config":{"image":"$IMAGES/base","init":{"exec":["/app"]},` +
		`"guest":{"cpus":64,"memory_mb":64},"env":{"_A1":"x"},"restart":{"policy":"always","max_retries":1000},"schedule":"hourly",` +
		`"services":[{"internal_port":65535,"ports":[{"port":1,"handlers":["tls","http"]}],"concurrency":{"type":"connections","soft_limit":5,"hard_limit":5}}],` +
		`"stop_config":{"signal":"term","timeout":86400},"hooks":{"resume_signal":"usr2"}}}`
	rec, err := e.serve("POST", e.expand("/v1/apps/{app}/machines", fx), e.expand(body, fx), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if rec.Code != http.StatusOK {
		t.Fatalf("create at the bounds: %d %s", rec.Code, rec.Body)
	}
	var mc model.Machine
	if err := json.Unmarshal(rec.Body.Bytes(), &mc); err != nil {
		t.Fatal(err)
	}
	if sig := mc.Config.StopConfig.Signal; sig == nil || *sig != "SIGTERM" || mc.Config.Hooks.ResumeSignal != "SIGUSR2" {
		t.Fatalf("signals not canonical: %+v %+v", mc.Config.StopConfig, mc.Config.Hooks)
	}
	for _, target := range []string{
		"/v1/apps?org_slug=personal",
		"/v1/apps/{app}/machines/{id}/events?limit=1",
		"/v1/apps/{app}/machines/{id}/wait?state=started&state=stopped,suspended&timeout=1",
		"/v1/apps/{app}/machines/{id}/logs?from_seq=0&since=5m&limit=10000&follow=false",
	} {
		rec, err := e.serve("GET", e.expand(target, fx), "", 5*time.Second)
		if err != nil || rec.Code != http.StatusOK {
			t.Fatalf("GET %s: %v %d %s", target, err, rec.Code, rec.Body)
		}
	}
}

// TestHugeBodyOverHTTP sends a body over the limit through a real server:
// the client must read a 413 JSON error, not a reset connection.
func TestHugeBodyOverHTTP(t *testing.T) {
	e := newRealEnv(t)
	fx := e.newFixture(t, "huge", model.StateCreated)
	srv := httptest.NewServer(e.h)
	defer srv.Close()
	for _, body := range []string{
		`{"config":{"image":"base","env":{"X":"` + strings.Repeat("a", 3<<20) + `"}}}`,
		strings.Repeat(" ", 2<<20) + `{}`,
	} {
		resp, err := http.Post(srv.URL+e.expand("/v1/apps/{app}/machines", fx), "application/json", bytes.NewReader([]byte(body)))
		if err != nil {
			t.Fatalf("huge body: %v (want a 413 answer)", err)
		}
		var eb struct {
			Error string `json:"error"`
		}
		err = json.NewDecoder(resp.Body).Decode(&eb)
		resp.Body.Close()
		if resp.StatusCode != http.StatusRequestEntityTooLarge || err != nil || !strings.Contains(eb.Error, "larger than 1048576 bytes") {
			t.Fatalf("huge body: %d %q %v", resp.StatusCode, eb.Error, err)
		}
	}
}

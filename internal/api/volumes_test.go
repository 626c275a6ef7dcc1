package api_test

import (
	"strings"
	"testing"
	"time"

	"github.com/torpor-dev/torpor/internal/model"
)

// badVolumeInput is bad input for the volume routes (docs/volumes.md): the
// status and a substring of the JSON error. None of it reaches the host.
var badVolumeInput = []badCase{
	{"no body", "POST", "/v1/apps/{app}/volumes", "", 400, "needs a JSON object body"},
	{"no name", "POST", "/v1/apps/{app}/volumes", `{"size_gb":1}`, 400, "invalid name"},
	{"name with a dash", "POST", "/v1/apps/{app}/volumes", `{"name":"my-data"}`, 400, "invalid name"},
	{"name too long", "POST", "/v1/apps/{app}/volumes", `{"name":"` + strings.Repeat("a", 31) + `"}`, 400, "1-30"},
	{"size zero", "POST", "/v1/apps/{app}/volumes", `{"name":"d","size_gb":0}`, 400, "size_gb must be between 1 and 500"},
	{"size too big", "POST", "/v1/apps/{app}/volumes", `{"name":"d","size_gb":501}`, 400, "size_gb"},
	{"size not a number", "POST", "/v1/apps/{app}/volumes", `{"name":"d","size_gb":"1"}`, 400, "size_gb: expected an integer"},
	{"size fraction", "POST", "/v1/apps/{app}/volumes", `{"name":"d","size_gb":1.5}`, 400, "size_gb"},
	{"raw fstype", "POST", "/v1/apps/{app}/volumes", `{"name":"d","fstype":"raw"}`, 400, "fstype"},
	{"region", "POST", "/v1/apps/{app}/volumes", `{"name":"d","region":"Somewhere Else"}`, 400, "region"},
	{"snapshot retention", "POST", "/v1/apps/{app}/volumes", `{"name":"d","snapshot_retention":0}`, 400, "snapshot_retention"},
	{"snapshot id", "POST", "/v1/apps/{app}/volumes", `{"name":"d","snapshot_id":"vs_1"}`, 400, "snapshot_id"},
	{"source volume id", "POST", "/v1/apps/{app}/volumes", `{"name":"d","source_volume_id":"../x"}`, 400, "source_volume_id"},
	{"source volume unknown", "POST", "/v1/apps/{app}/volumes", `{"name":"d","source_volume_id":"vol_0123456789abcdef"}`, 404, "vol_0123456789abcdef"},
	{"compute negative", "POST", "/v1/apps/{app}/volumes", `{"name":"d","compute":{"cpus":-1}}`, 400, "compute"},
	{"encrypted not a bool", "POST", "/v1/apps/{app}/volumes", `{"name":"d","encrypted":"yes"}`, 400, "encrypted: expected a boolean"},
	{"unknown field", "POST", "/v1/apps/{app}/volumes", `{"name":"d","iops":3000}`, 400, `unknown field "iops"`},
	{"unknown app", "POST", "/v1/apps/nope/volumes", `{"name":"d"}`, 404, "app"},
	{"list of an unknown app", "GET", "/v1/apps/nope/volumes", "", 404, "app"},
	{"bad volume id", "GET", "/v1/apps/{app}/volumes/vol-1", "", 400, "path parameter id"},
	{"machine id as volume id", "GET", "/v1/apps/{app}/volumes/{id}", "", 400, "path parameter id"},
	{"unknown volume", "GET", "/v1/apps/{app}/volumes/vol_0123456789abcdef", "", 404, "vol_0123456789abcdef"},
	{"update no body", "PUT", "/v1/apps/{app}/volumes/vol_0123456789abcdef", "", 400, "needs a JSON object body"},
	{"update retention", "PUT", "/v1/apps/{app}/volumes/vol_0123456789abcdef", `{"snapshot_retention":61}`, 400, "snapshot_retention"},
	{"update unknown field", "PUT", "/v1/apps/{app}/volumes/vol_0123456789abcdef", `{"size_gb":2}`, 400, `unknown field "size_gb"`},
	{"update unknown volume", "PUT", "/v1/apps/{app}/volumes/vol_0123456789abcdef", `{"auto_backup_enabled":true}`, 404, "vol_0123456789abcdef"},
	{"extend no body", "PUT", "/v1/apps/{app}/volumes/vol_0123456789abcdef/extend", "", 400, "needs a JSON object body"},
	{"extend size type", "POST", "/v1/apps/{app}/volumes/vol_0123456789abcdef/extend", `{"size_gb":"2"}`, 400, "size_gb: expected an integer"},
	{"extend unknown volume", "PUT", "/v1/apps/{app}/volumes/vol_0123456789abcdef/extend", `{"size_gb":2}`, 404, "vol_0123456789abcdef"},
	{"destroy unknown volume", "DELETE", "/v1/apps/{app}/volumes/vol_0123456789abcdef", "", 404, "vol_0123456789abcdef"},
	{"destroy with a query", "DELETE", "/v1/apps/{app}/volumes/vol_0123456789abcdef?force=true", "", 400, "unknown query parameter"},
	{"wrong method", "PATCH", "/v1/apps/{app}/volumes/vol_0123456789abcdef", "", 405, "not allowed"},
	{"snapshots are not served", "GET", "/v1/apps/{app}/volumes/vol_0123456789abcdef/snapshots", "", 404, "no such route"},
}

func TestVolumeRoutesRefuseBadInput(t *testing.T) {
	e := newRealEnvWith(t, true)
	fx := e.newFixture(t, "vols", model.StateStarted)
	e.runBadInput(t, fx, badVolumeInput)
	rec, _ := e.serve("GET", e.expand("/v1/apps/{app}/volumes", fx), "", 5*time.Second)
	if rec.Code != 200 || strings.TrimSpace(rec.Body.String()) != "[]" {
		t.Fatalf("volumes after bad input: %d %s", rec.Code, rec.Body)
	}
}

// TestVolumeRoutesWithoutVolumes: a daemon without volumes says so.
func TestVolumeRoutesWithoutVolumes(t *testing.T) {
	e := newRealEnv(t)
	fx := e.newFixture(t, "novols", model.StateCreated)
	rec, _ := e.serve("POST", e.expand("/v1/apps/{app}/volumes", fx), `{"name":"d"}`, 5*time.Second)
	if rec.Code != 503 || !strings.Contains(rec.Body.String(), "without volumes") {
		t.Fatalf("create without volumes: %d %s", rec.Code, rec.Body)
	}
}

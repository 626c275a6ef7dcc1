package cli_test

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestLaunchDeployStatusScale: the app workflow from the command line, on
// the fake runtime.
func TestLaunchDeployStatusScale(t *testing.T) {
	e := newEnv(t)
	file := filepath.Join(t.TempDir(), "fly.toml")
	out := e.ok("launch", "--app", "shop", "--image", "rootfs", "--port", "18090", "-c", file)
	contains(t, "launch", out, "Created app shop", "Wrote "+file)
	contains(t, "launch again", e.fails("launch", "--app", "shop", "--image", "rootfs", "-c", file), "exists: remove it or give --force")
	// The fake runtime runs no checks, and its directory images have no
	// command of their own.
	doc, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	i, j := strings.Index(string(doc), "  [[http_service.checks]]"), strings.Index(string(doc), "[deploy]")
	if i < 0 || j < i {
		t.Fatalf("starter fly.toml:\n%s", doc)
	}
	edited := string(doc[:i]) + string(doc[j:]) + "\n[processes]\n  app = \"/app --serve\"\n\n[mystery]\n  x = 1\n"
	if err := os.WriteFile(file, []byte(edited), 0o644); err != nil {
		t.Fatal(err)
	}

	var shown struct {
		App    string
		Groups map[string]struct {
			Image string
			Init  struct{ Cmd []string }
		} `json:"process_groups"`
	}
	stdout, stderr, err := e.run("config", "show", "-c", file)
	if err != nil {
		t.Fatal(err, stderr)
	}
	if err := json.Unmarshal([]byte(stdout), &shown); err != nil || shown.App != "shop" || shown.Groups["app"].Image != "rootfs" ||
		strings.Join(shown.Groups["app"].Init.Cmd, " ") != "/app --serve" {
		t.Fatalf("config show: %v %s", err, stdout)
	}
	contains(t, "config show warnings", stderr, file+" line ", "mystery: unknown key")

	stdout, stderr, err = e.run("deploy", "-c", file, "--wait-timeout", "20s")
	if err != nil {
		t.Fatalf("deploy: %v\n%s", err, stderr)
	}
	contains(t, "deploy", stdout, "MACHINE", "created", "Deployed shop release 1")
	contains(t, "deploy progress", stderr, "creating a machine of app")

	stdout, stderr, err = e.run("--json", "deploy", "-c", file, "--strategy", "canary")
	if err != nil {
		t.Fatalf("deploy --json: %v\n%s", err, stderr)
	}
	var res struct {
		Release  int
		Strategy string
		Machines []struct{ Action, State string }
	}
	if err := json.Unmarshal([]byte(stdout), &res); err != nil || res.Release != 2 || res.Strategy != "canary" || len(res.Machines) != 1 || res.Machines[0].Action != "updated" {
		t.Fatalf("deploy --json: %v %s", err, stdout)
	}
	contains(t, "deploy --json events", stderr, `"phase":"update"`)

	out = e.ok("scale", "count", "2", "-c", file)
	contains(t, "scale", out, "Scaled shop group app to 2 machines")
	out = e.ok("status", "--app", "shop")
	contains(t, "status", out, "Release  2", "GROUP", "started")
	if n := strings.Count(out, " app "); n != 2 {
		t.Fatalf("status shows %d machines of group app, want 2:\n%s", n, out)
	}
	contains(t, "bad strategy", e.fails("deploy", "-c", file, "--strategy", "yolo"), `strategy "yolo" is not one of`)
	os.WriteFile(file, []byte("app = \"shop\"\n[http_service]\ninternal_port = \"x\"\n"), 0o644)
	contains(t, "bad fly.toml", e.fails("deploy", "-c", file), "line 3: http_service.internal_port: must be an integer")
	// Without --app, launch names the app after the image.
	other := filepath.Join(t.TempDir(), "fly.toml")
	contains(t, "launch by image", e.ok("launch", "--image", "registry.example.com:5000/team/Cart:v2", "--port", "18091", "-c", other), "Created app cart")
	contains(t, "launch bad name", e.fails("launch", "--image", "x/under_score", "-c", filepath.Join(t.TempDir(), "f.toml")), "give --app NAME")
}

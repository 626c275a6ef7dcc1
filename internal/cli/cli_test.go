package cli_test

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/spf13/cobra"

	"github.com/torpor-dev/torpor/internal/api"
	"github.com/torpor-dev/torpor/internal/api/apitest"
	"github.com/torpor-dev/torpor/internal/auth"
	"github.com/torpor-dev/torpor/internal/cli"
	"github.com/torpor-dev/torpor/internal/model"
)

// env is an API server over the real machine lifecycle on the fake runtime
// and a way to run the CLI against it.
type env struct {
	t      *testing.T
	mgr    *apitest.Manager
	url    string       // the API as if over the local admin socket
	tcpURL string       // the API as over TCP: tokens needed
	tokens *auth.Tokens // the tokens tcpURL accepts
}

func newEnv(t *testing.T) *env {
	t.Helper()
	for _, k := range []string{"TORPOR_API", "TORPOR_TOKEN", "TORPOR_APP"} {
		t.Setenv(k, "")
	}
	mgr := apitest.NewManager(t, nil)
	tokens := apitest.NewTokens(t)
	h := api.New(mgr, api.Config{Tokens: tokens}, nil)
	local := httptest.NewServer(apitest.Local(h))
	t.Cleanup(local.Close)
	tcp := httptest.NewServer(h)
	t.Cleanup(tcp.Close)
	return &env{t: t, mgr: mgr, url: local.URL, tcpURL: tcp.URL, tokens: tokens}
}

// run runs torpor with args against the server and returns stdout, stderr and
// the error Execute returned.
func (e *env) run(args ...string) (string, string, error) {
	e.t.Helper()
	root := cli.NewRoot(nil)
	var out, errOut bytes.Buffer
	root.SetOut(&out)
	root.SetErr(&errOut)
	root.SetArgs(append([]string{"--api", e.url}, args...))
	err := root.ExecuteContext(context.Background())
	return out.String(), errOut.String(), err
}

// ok runs torpor and fails the test if it fails; it returns stdout.
func (e *env) ok(args ...string) string {
	e.t.Helper()
	out, errOut, err := e.run(args...)
	if err != nil {
		e.t.Fatalf("torpor %s: %v\nstderr: %s", strings.Join(args, " "), err, errOut)
	}
	return out
}

// fails runs torpor, expects it to fail and returns stderr.
func (e *env) fails(args ...string) string {
	e.t.Helper()
	_, errOut, err := e.run(args...)
	if err == nil {
		e.t.Fatalf("torpor %s succeeded", strings.Join(args, " "))
	}
	return errOut
}

// createMachine creates app web and a machine in it (running /app unless
// extra gives a command after --), returning the machine.
func (e *env) createMachine(extra ...string) model.Machine {
	e.t.Helper()
	e.ok("app", "create", "web")
	if !slices.Contains(extra, "--") {
		extra = append(extra, "--", "/app")
	}
	out := e.ok(append([]string{"--json", "machine", "create", "--app", "web", "--image", "rootfs", "--name", "one"}, extra...)...)
	var m model.Machine
	if err := json.Unmarshal([]byte(out), &m); err != nil {
		e.t.Fatalf("create --json printed %q: %v", out, err)
	}
	return m
}

func contains(t *testing.T, what, got string, wants ...string) {
	t.Helper()
	for _, w := range wants {
		if !strings.Contains(got, w) {
			t.Errorf("%s lacks %q:\n%s", what, w, got)
		}
	}
}

func TestApps(t *testing.T) {
	e := newEnv(t)
	contains(t, "app create", e.ok("app", "create", "web", "--org", "acme"), "Created app web")
	contains(t, "app list", e.ok("app", "list"), "NAME", "ORG", "CREATED", "web", "acme", time.Now().UTC().Format("2006-01-02T"))

	var list struct {
		TotalApps int         `json:"total_apps"`
		Apps      []model.App `json:"apps"`
	}
	if err := json.Unmarshal([]byte(e.ok("app", "list", "--json")), &list); err != nil || list.TotalApps != 1 {
		t.Errorf("app list --json: %+v, %v", list, err)
	}
	contains(t, "app destroy", e.ok("app", "destroy", "web"), "Destroyed app web")
	contains(t, "app list", e.ok("app", "list"), "No apps")
}

func TestMachineCreate(t *testing.T) {
	e := newEnv(t)
	m := e.createMachine("--memory", "512", "--cpus", "2", "--env", "A=1", "-e", "B=x=y", "--", "python3", "-m", "http.server")
	if m.State != model.StateStarted || m.Name != "one" {
		t.Errorf("machine %+v", m)
	}
	cfg := m.Config
	if cfg.Image != "rootfs" || cfg.Guest.MemoryMB != 512 || cfg.Guest.CPUs != 2 ||
		cfg.Env["A"] != "1" || cfg.Env["B"] != "x=y" || strings.Join(cfg.Init.Cmd, " ") != "python3 -m http.server" {
		t.Errorf("config %+v", cfg)
	}

	out := e.ok("machine", "create", "--app", "web", "--image", "rootfs", "--skip-launch", "--", "/app")
	contains(t, "create", out, "Created machine", "in app web, state created")

	contains(t, "list", e.ok("machine", "list", "--app", "web"),
		"ID", "NAME", "STATE", "IMAGE", "CREATED", m.ID, "one", "started", "rootfs", "created")
}

func TestMachineCreateRelativeImageAndConfigFile(t *testing.T) {
	e := newEnv(t)
	dir := t.TempDir()
	t.Chdir(dir)
	if err := os.Mkdir("rootfs", 0o755); err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(dir, "config.json")
	conf := `{"image":"ignored","init":{"exec":["/app"]},"dns":{"nameservers":["10.0.0.1"]},"guest":{"memory_mb":128},"env":{"FROM":"file"},"services":[{"internal_port":8080,"autostop":"suspend"}]}`
	if err := os.WriteFile(file, []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	e.ok("app", "create", "web")
	out, errOut, err := e.run("--json", "machine", "create", "--app", "web", "--config", file, "--image", "rootfs", "--env", "X=1")
	if err != nil {
		t.Fatal(err)
	}
	contains(t, "create's warnings", errOut, "Warning: config.dns: accepted, not acted on")
	var m model.Machine
	if err := json.Unmarshal([]byte(out), &m); err != nil {
		t.Fatal(err)
	}
	if m.Config.Image != filepath.Join(dir, "rootfs") || m.Config.Guest.MemoryMB != 128 ||
		m.Config.Env["FROM"] != "file" || m.Config.Env["X"] != "1" || len(m.Config.Services) != 1 {
		t.Errorf("config %+v", m.Config)
	}

	if err := os.WriteFile(file, []byte(`{"image":"x","guest":{"memroy_mb":1}}`), 0o644); err != nil {
		t.Fatal(err)
	}
	contains(t, "bad config", e.fails("machine", "create", "--app", "web", "--config", file), `unknown field "guest.memroy_mb"`)
}

func TestMachineStatusAndEvents(t *testing.T) {
	e := newEnv(t)
	m := e.createMachine("--memory", "256", "--env", "SECRET=hunter2", "--", "sleep", "1 h")
	e.ok("machine", "suspend", "--app", "web", m.ID)
	out := e.ok("machine", "status", "--app", "web", m.ID)
	contains(t, "status", out, "State:", "suspended", "Boot generation:", "1", "Image:", "rootfs",
		"Command:", `sleep "1 h"`, "256 MB", "Env:", "SECRET", "Recent events:", "suspend")
	if strings.Contains(out, "hunter2") {
		t.Errorf("status shows env values:\n%s", out)
	}

	var got model.Machine
	if err := json.Unmarshal([]byte(e.ok("machine", "status", "--app", "web", m.ID, "--json")), &got); err != nil || got.State != model.StateSuspended {
		t.Errorf("status --json: %+v, %v", got, err)
	}

	e.ok("machine", "start", "--app", "web", m.ID)
	out = e.ok("machine", "events", "--app", "web", m.ID)
	contains(t, "events", out, "TIME", "TYPE", "STATUS", "SOURCE", "DETAILS", "resume", "from_snapshot=true", "launch", "user")
	var events []model.Event
	if err := json.Unmarshal([]byte(e.ok("machine", "events", "--app", "web", m.ID, "--json")), &events); err != nil || len(events) < 4 {
		t.Errorf("events --json: %+v, %v", events, err)
	}
}

func TestMachineStartStop(t *testing.T) {
	e := newEnv(t)
	t.Setenv("TORPOR_APP", "web")
	m := e.createMachine()
	contains(t, "suspend", e.ok("machine", "suspend", m.ID), "suspend ok, state suspended")
	contains(t, "start", e.ok("machine", "start", m.ID), "resumed from snapshot (was suspended) in ")
	contains(t, "stop", e.ok("machine", "stop", m.ID, "--signal", "SIGTERM", "--timeout", "3s"), "stop ok, state stopped")
	contains(t, "start", e.ok("machine", "start", m.ID), "cold-started (was stopped) in ")

	var start model.StartResponse
	e.ok("machine", "suspend", m.ID)
	if err := json.Unmarshal([]byte(e.ok("--json", "machine", "start", m.ID)), &start); err != nil || !start.FromSnapshot {
		t.Errorf("start --json: %+v, %v", start, err)
	}
	contains(t, "wait", e.ok("machine", "wait", m.ID, "--state", "stopped,started", "--timeout", "2s"), "is started")
	contains(t, "wait --json", e.ok("machine", "wait", m.ID, "--json"), `"state": "started"`)
	contains(t, "cordon", e.ok("machine", "cordon", m.ID), "cordon ok")

	contains(t, "destroy", e.fails("machine", "destroy", m.ID), "Error: machine "+m.ID+" is started; stop it first or destroy with force=true")
	contains(t, "destroy", e.ok("machine", "destroy", m.ID, "--force"), "destroy ok")
	contains(t, "list", e.ok("machine", "list"), "No machines in app web")
}

func TestMachineUpdate(t *testing.T) {
	e := newEnv(t)
	m := e.createMachine("--memory", "256", "--env", "A=1", "--", "sleep", "10")
	out := e.ok("--json", "machine", "update", "--app", "web", m.ID, "--env", "B=2", "--image", "new", "--skip-launch")
	var got model.Machine
	if err := json.Unmarshal([]byte(out), &got); err != nil {
		t.Fatal(err)
	}
	c := got.Config
	if c.Image != "new" || c.Env["A"] != "1" || c.Env["B"] != "2" || c.Guest.MemoryMB != 256 || strings.Join(c.Init.Cmd, " ") != "sleep 10" {
		t.Errorf("updated config %+v", c)
	}
	contains(t, "update", e.fails("machine", "update", "--app", "web", m.ID), "nothing to update")
	contains(t, "update", e.ok("machine", "update", "--app", "web", m.ID, "--", "sleep", "20"), "Updated machine "+m.ID)
}

func TestErrors(t *testing.T) {
	e := newEnv(t)
	e.ok("app", "create", "web")
	contains(t, "status", e.fails("machine", "status", "--app", "web", "nope"), "Error: machine \"nope\" not found")
	contains(t, "no app", e.fails("machine", "list"), "Error: no app given")
	contains(t, "bad env", e.fails("machine", "create", "--app", "web", "--image", "x", "--env", "NOPE"), `Error: invalid --env "NOPE": want KEY=VALUE`)
	contains(t, "no image", e.fails("machine", "create", "--app", "web"), "Error: no image given")
	contains(t, "args", e.fails("machine", "start", "--app", "web"), "takes exactly one machine ID")
	contains(t, "flag", e.fails("machine", "start", "--app", "web", "x", "--bogus"), "unknown flag: --bogus", "--help")
	contains(t, "wait", e.fails("machine", "wait", "--app", "web", "x", "--state", "asleep"), "Error: invalid query parameter state")

	h := api.New(failingApps{e.mgr, model.Errorf(model.KindUnavailable, "daemon is shutting down")}, api.Config{}, nil)
	srv := httptest.NewServer(apitest.Local(h))
	t.Cleanup(srv.Close)
	e.url = srv.URL
	contains(t, "unavailable", e.fails("app", "list"), "Error: daemon is shutting down")
}

// failingApps is the lifecycle with ListApps failing with err.
type failingApps struct {
	api.Machines
	err error
}

func (f failingApps) ListApps(context.Context) ([]model.App, error) { return nil, f.err }

func TestUnreachable(t *testing.T) {
	newEnv(t)
	root := cli.NewRoot(nil)
	var errOut bytes.Buffer
	root.SetOut(&bytes.Buffer{})
	root.SetErr(&errOut)
	sock := filepath.Join(t.TempDir(), "none.sock")
	root.SetArgs([]string{"--api", "unix://" + sock, "app", "list"})
	if err := root.Execute(); err == nil {
		t.Fatal("app list against a missing socket succeeded")
	}
	contains(t, "unreachable", errOut.String(), "Error: cannot reach the torpor API at unix://"+sock)
}

func TestTokenFromEnv(t *testing.T) {
	e := newEnv(t)
	e.url = e.tcpURL
	contains(t, "no token", e.fails("app", "list"), "Error: missing bearer token")
	t.Setenv("TORPOR_TOKEN", apitest.MustToken(t, e.tokens, model.CreateTokenRequest{Admin: true}).Secret)
	e.ok("app", "list")
	contains(t, "wrong token", e.fails("--token", "wrong", "app", "list"), "Error: invalid bearer token")
}

func TestTokenCommands(t *testing.T) {
	e := newEnv(t)
	contains(t, "no scope", e.fails("token", "create"), "Error: give either --admin or at least one --app")
	contains(t, "both scopes", e.fails("token", "create", "--admin", "--app", "a"), "Error: give either --admin or at least one --app")
	root := cli.NewRoot(nil)
	var out, errOut bytes.Buffer
	root.SetOut(&out)
	root.SetErr(&errOut)
	root.SetArgs([]string{"--api", e.url, "token", "create", "--app", "a", "--app", "b", "--name", "ci", "--expires", "720h"})
	if err := root.Execute(); err != nil {
		t.Fatal(err)
	}
	secret := strings.TrimSpace(out.String())
	if !strings.HasPrefix(secret, "torpor_") || strings.Contains(secret, "\n") {
		t.Fatalf("token create printed %q on stdout", out.String())
	}
	contains(t, "create note", errOut.String(), "apps: a,b, expires ")
	list := e.ok("token", "list")
	id := strings.Split(strings.TrimPrefix(secret, "torpor_"), "_")[0]
	for _, want := range []string{"ID", "SCOPE", id, "ci", "apps: a,b"} {
		contains(t, "token list", list, want)
	}

	// The new token works over TCP for its apps only.
	e2 := *e
	e2.url = e.tcpURL
	e2.ok("--token", secret, "app", "create", "a")
	contains(t, "other app", e2.fails("--token", secret, "app", "create", "c"), "may only create the apps it is scoped to")
	contains(t, "token admin", e2.fails("--token", secret, "token", "list"), "needs an admin token")

	contains(t, "revoke", e.ok("token", "revoke", id), "Revoked token "+id)
	contains(t, "revoked", e2.fails("--token", secret, "app", "list"), "Error: invalid bearer token")
	contains(t, "list after revoke", e.ok("token", "list"), "No tokens")
}

func TestAPIFromEnv(t *testing.T) {
	e := newEnv(t)
	t.Setenv("TORPOR_API", e.url)
	root := cli.NewRoot(nil)
	var out bytes.Buffer
	root.SetOut(&out)
	root.SetArgs([]string{"app", "list"})
	if err := root.Execute(); err != nil {
		t.Fatal(err)
	}
	contains(t, "app list", out.String(), "No apps")
}

func TestStartSummary(t *testing.T) {
	cases := []struct {
		resp model.StartResponse
		took time.Duration
		want string
	}{
		{model.StartResponse{PreviousState: model.StateSuspended, FromSnapshot: true}, 183400 * time.Microsecond,
			"Machine m1 resumed from snapshot (was suspended) in 183ms"},
		{model.StartResponse{PreviousState: model.StateStopped}, 1234 * time.Millisecond,
			"Machine m1 cold-started (was stopped) in 1.23s"},
		{model.StartResponse{PreviousState: model.StateSuspended}, 10 * time.Microsecond,
			"Machine m1 cold-started (was suspended) in <1ms: its snapshot could not be used (see `torpor machine events m1`)"},
	}
	for _, c := range cases {
		if got := cli.StartSummary("m1", c.resp, c.took); got != c.want {
			t.Errorf("StartSummary(%+v, %s) = %q, want %q", c.resp, c.took, got, c.want)
		}
	}
}

func TestServeCommandIsAdded(t *testing.T) {
	var token string
	ran := false
	serve := &cobra.Command{
		Use:  "serve",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error { ran = true; return nil },
	}
	serve.Flags().StringVar(&token, "token", "", "the daemon's own --token flag")
	root := cli.NewRoot(serve)
	root.SetArgs([]string{"serve", "--token", "abc"})
	if err := root.Execute(); err != nil || !ran || token != "abc" {
		t.Fatalf("serve: err %v, ran %v, token %q", err, ran, token)
	}
}

func TestServeRefusesStaticToken(t *testing.T) {
	root := cli.NewRoot(cli.NewServe())
	var errOut bytes.Buffer
	root.SetOut(&bytes.Buffer{})
	root.SetErr(&errOut)
	root.SetArgs([]string{"serve", "--token", "abc", "--data-dir", t.TempDir()})
	if err := root.Execute(); err == nil || !strings.Contains(err.Error(), "no longer takes --token") {
		t.Fatalf("serve --token: %v", err)
	}
}

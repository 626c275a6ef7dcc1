package cli_test

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/torpor-dev/torpor/internal/api"
	"github.com/torpor-dev/torpor/internal/api/apitest"
	"github.com/torpor-dev/torpor/internal/cli"
	"github.com/torpor-dev/torpor/internal/machine/machinetest"
)

// realAPI serves the API over the real machine manager (fake runtime) as
// the admin socket does, and returns its address.
func realAPI(t *testing.T) (*machinetest.Env, string) {
	t.Helper()
	for _, k := range []string{"TORPOR_API", "TORPOR_TOKEN", "TORPOR_APP"} {
		t.Setenv(k, "")
	}
	e := machinetest.New(t)
	e.App(t, "web")
	srv := httptest.NewServer(apitest.Local(api.New(e.M, api.Config{}, nil)))
	t.Cleanup(srv.Close)
	return e, srv.URL
}

// syncBuffer is a buffer written by one goroutine and read by another.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// runCLI runs torpor against addr until ctx ends or the command returns.
func runCLI(ctx context.Context, addr string, out, errOut *syncBuffer, args ...string) error {
	root := cli.NewRoot(nil)
	root.SetOut(out)
	root.SetErr(errOut)
	root.SetArgs(append([]string{"--api", addr}, args...))
	return root.ExecuteContext(ctx)
}

// TestStatusShowsLastResumeAndSuspend checks that machine status breaks the
// last resume and suspend down into their phases, and that a piped
// command's output has no progress spinner in it.
func TestStatusShowsLastResumeAndSuspend(t *testing.T) {
	e, addr := realAPI(t)
	var out, errOut syncBuffer
	ctx := context.Background()
	if err := runCLI(ctx, addr, &out, &errOut, "machine", "create", "--app", "web", "--image", e.Image, "--", "/app"); err != nil {
		t.Fatal(err, errOut.String())
	}
	ms, _ := e.M.List(ctx, "web")
	id := ms[0].ID
	for _, op := range []string{"suspend", "start"} {
		if err := runCLI(ctx, addr, &out, &errOut, "machine", op, "--app", "web", id); err != nil {
			t.Fatal(err, errOut.String())
		}
	}
	if strings.ContainsAny(errOut.String(), "\r\033") || strings.Contains(out.String(), "\033") {
		t.Errorf("progress drawn on a pipe: stderr %q", errOut.String())
	}
	out = syncBuffer{}
	if err := runCLI(ctx, addr, &out, &errOut, "machine", "status", "--app", "web", id); err != nil {
		t.Fatal(err)
	}
	contains(t, "status", out.String(), "Last resume:", "from snapshot in", "(claim ", "runtime restore", "verify", "app told",
		"Last suspend:", "snapshot", "checkpoint", "seal")

	// A resume whose snapshot is gone: status says it fell back, and why.
	if err := e.M.Suspend(ctx, "web", id); err != nil {
		t.Fatal(err)
	}
	dirs, _ := filepath.Glob(filepath.Join(e.DataDir, "machines", id, "snapshots", "*"))
	for _, d := range dirs {
		os.RemoveAll(d)
	}
	if _, err := e.M.Start(ctx, "web", id); err != nil {
		t.Fatal(err)
	}
	out = syncBuffer{}
	if err := runCLI(ctx, addr, &out, &errOut, "machine", "status", "--app", "web", id); err != nil {
		t.Fatal(err)
	}
	contains(t, "status after a fallback", out.String(), "Last resume:", "cold start in", "snapshot_missing")
}

// TestStatusShowsChecks checks how machine status renders the checks of
// the machine JSON (filled in by the health checks).
func TestStatusShowsChecks(t *testing.T) {
	e, addr := realAPI(t)
	m := e.Machine(t, "web")
	// The API's machine JSON, with the checks the health checker adds.
	withChecks := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/v1/apps/web/machines/"+m.ID {
			proxyTo(w, r, addr)
			return
		}
		var raw map[string]any
		resp, err := http.Get(addr + r.URL.Path)
		if err != nil {
			t.Error(err)
			return
		}
		json.NewDecoder(resp.Body).Decode(&raw)
		resp.Body.Close()
		raw["checks"] = []map[string]any{
			{"name": "http", "status": "passing", "output": "200 OK", "updated_at": time.Now().Add(-3 * time.Second)},
			{"name": "db", "status": "critical", "output": "connection refused", "updated_at": time.Now()},
		}
		json.NewEncoder(w).Encode(raw)
	})
	srv := httptest.NewServer(withChecks)
	defer srv.Close()
	var out, errOut syncBuffer
	if err := runCLI(context.Background(), srv.URL, &out, &errOut, "machine", "status", "--app", "web", m.ID); err != nil {
		t.Fatal(err, errOut.String())
	}
	contains(t, "status", out.String(), "Check http:", "passing (200 OK, 3s ago)", "Check db:", "critical (connection refused")
}

// proxyTo forwards r to the server at addr.
func proxyTo(w http.ResponseWriter, r *http.Request, addr string) {
	req, _ := http.NewRequest(r.Method, addr+r.URL.RequestURI(), r.Body)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadGateway)
		return
	}
	defer resp.Body.Close()
	w.WriteHeader(resp.StatusCode)
	io.Copy(w, resp.Body)
}

// TestListWatch checks that list --watch on a pipe prints the table again
// when a machine changes, and ends with its context.
func TestListWatch(t *testing.T) {
	e, addr := realAPI(t)
	m := e.Machine(t, "web")
	ctx, cancel := context.WithCancel(context.Background())
	var out, errOut syncBuffer
	done := make(chan error, 1)
	go func() {
		done <- runCLI(ctx, addr, &out, &errOut, "machine", "list", "--app", "web", "--watch", "--interval", "100ms")
	}()
	waitFor(t, &out, "started")
	if err := e.M.Suspend(context.Background(), "web", m.ID); err != nil {
		t.Fatal(err)
	}
	waitFor(t, &out, "suspended")
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("watch ended with %v", err)
	}
	if n := strings.Count(out.String(), "--- "); n != 2 {
		t.Errorf("%d tables printed for one change, want 2:\n%s", n, out.String())
	}
	if strings.Contains(out.String(), "\033") {
		t.Error("colors on a pipe")
	}
}

func waitFor(t *testing.T, b *syncBuffer, text string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !strings.Contains(b.String(), text) {
		if time.Now().After(deadline) {
			t.Fatalf("no %q in the output:\n%s", text, b.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

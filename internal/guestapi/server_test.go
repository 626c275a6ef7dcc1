package guestapi

import (
	"bufio"
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/torpor-dev/torpor/internal/model"
	"github.com/torpor-dev/torpor/internal/runtime"
)

// testMachine returns a started machine of app "app1".
func testMachine(id string) model.Machine {
	return model.Machine{
		ID: id, Name: "name-" + id, App: "app1", State: model.StateStarted, Region: "local",
		BootGeneration: 3, PrivateIP: "10.213.0.2",
		Config: model.MachineConfig{Metadata: map[string]string{"role": "worker"}},
	}
}

// newTestServer returns a server over f with short delays and the machine
// id of app1 listening in a temp dir; it returns the torpor socket path.
func newTestServer(t *testing.T, f *fakeMachines, id string) (*Server, string) {
	t.Helper()
	s := New(f, nil)
	s.settleDelay = 20 * time.Millisecond
	s.deliveryTimeout = time.Second
	t.Cleanup(s.CloseAll)
	dir := t.TempDir()
	mounts, err := s.Listen("app1", id, dir)
	if err != nil {
		t.Fatal(err)
	}
	want := []runtime.Mount{
		{Source: filepath.Join(dir, "torpor"), Destination: "/.torpor", ReadOnly: true},
		{Source: filepath.Join(dir, "fly"), Destination: "/.fly", ReadOnly: true},
	}
	if len(mounts) != 2 || mounts[0] != want[0] || mounts[1] != want[1] {
		t.Fatalf("Listen mounts = %+v, want %+v", mounts, want)
	}
	return s, filepath.Join(dir, "torpor", SocketName)
}

// client returns an HTTP client that talks to the Unix socket at path.
func client(path string) *http.Client {
	return &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", path)
		},
	}}
}

// do sends a request and returns the status and decoded JSON body.
func do(t *testing.T, sock, method, path, body string) (int, map[string]any) {
	t.Helper()
	req, err := http.NewRequest(method, "http://torpor"+path, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	resp, err := client(sock).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
		t.Errorf("%s %s: Content-Type %q", method, path, ct)
	}
	var out map[string]any
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil {
		t.Fatalf("%s %s: decoding body: %v", method, path, err)
	}
	return resp.StatusCode, out
}

// waitOp waits for the fake to finish a Suspend or Stop.
func waitOp(t *testing.T, f *fakeMachines) error {
	t.Helper()
	select {
	case err := <-f.opDone:
		return err
	case <-time.After(10 * time.Second):
		t.Fatal("the operation did not happen")
		return nil
	}
}

func TestInfo(t *testing.T) {
	f := newFakeMachines(testMachine("m1"))
	_, sock := newTestServer(t, f, "m1")
	for _, path := range []string{sock, filepath.Join(filepath.Dir(filepath.Dir(sock)), "fly", "api")} {
		status, body := do(t, path, "GET", "/v1/machine", "")
		if status != http.StatusOK {
			t.Fatalf("GET /v1/machine on %s = %d %v", path, status, body)
		}
		want := map[string]any{
			"id": "m1", "name": "name-m1", "app": "app1", "state": "started", "region": "local",
			"boot_generation": 3.0, "private_ip": "10.213.0.2", "metadata": map[string]any{"role": "worker"},
		}
		for k, v := range want {
			if got, _ := json.Marshal(body[k]); string(got) != mustJSON(v) {
				t.Errorf("info[%s] = %s, want %s", k, got, mustJSON(v))
			}
		}
	}
	// Fly's path for the machine itself answers the Machines API shape.
	status, body := do(t, sock, "GET", "/v1/apps/app1/machines/m1", "")
	if status != http.StatusOK || body["id"] != "m1" || body["app_name"] != "app1" {
		t.Fatalf("GET Fly path = %d %v", status, body)
	}
}

func mustJSON(v any) string {
	b, _ := json.Marshal(v)
	return string(b)
}

func TestRoutingErrors(t *testing.T) {
	f := newFakeMachines(testMachine("m1"))
	_, sock := newTestServer(t, f, "m1")
	cases := []struct {
		method, path string
		status       int
		allow        string
	}{
		{"GET", "/", 404, ""},
		{"GET", "/v1/nope", 404, ""},
		{"GET", "/v1/machine/", 404, ""},
		{"GET", "/v1/apps/app1/machines/m1/nope", 404, ""},
		{"GET", "/v1/apps/app1/machines", 404, ""},
		{"GET", "/v1/suspend", 405, "POST"},
		{"DELETE", "/v1/stop", 405, "POST"},
		{"POST", "/v1/machine", 405, "GET"},
		{"POST", "/v1/apps/app1/machines/m1", 405, "GET"},
		{"GET", "/v1/apps/app1/machines/m1/suspend", 405, "POST"},
	}
	for _, c := range cases {
		req, _ := http.NewRequest(c.method, "http://torpor"+c.path, nil)
		resp, err := client(sock).Do(req)
		if err != nil {
			t.Fatal(err)
		}
		var body map[string]string
		err = json.NewDecoder(resp.Body).Decode(&body)
		resp.Body.Close()
		if resp.StatusCode != c.status || err != nil || body["error"] == "" {
			t.Errorf("%s %s = %d %v (%v), want %d with an error message", c.method, c.path, resp.StatusCode, body, err, c.status)
		}
		if got := resp.Header.Get("Allow"); got != c.allow {
			t.Errorf("%s %s: Allow %q, want %q", c.method, c.path, got, c.allow)
		}
	}
	if calls := f.callsOf("suspend"); len(calls) != 0 {
		t.Errorf("routing errors led to suspend calls: %+v", calls)
	}
}

// TestAnswerReadBeforeSuspend checks the order that matters: the machine has
// read the 202 before the suspend begins, even when it is slow to read.
func TestAnswerReadBeforeSuspend(t *testing.T) {
	f := newFakeMachines(testMachine("m1"))
	_, sock := newTestServer(t, f, "m1")
	conn, err := net.Dial("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if _, err := io.WriteString(conn, "POST /v1/suspend HTTP/1.1\r\nHost: torpor\r\nContent-Length: 0\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	time.Sleep(300 * time.Millisecond) // a slow reader
	if calls := f.callsOf("suspend"); len(calls) != 0 {
		t.Fatalf("suspend began before the machine read the answer: %+v", calls)
	}
	readAt := time.Now()
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusAccepted || strings.TrimSpace(string(body)) != `{"ok":true}` {
		t.Fatalf("POST /v1/suspend = %d %s", resp.StatusCode, body)
	}
	if !resp.Close {
		t.Error("the 202 does not close the connection")
	}
	if err := waitOp(t, f); err != nil {
		t.Fatal(err)
	}
	c := f.callsOf("suspend")[0]
	if c.at.Before(readAt) || c.app != "app1" || c.id != "m1" || c.source != Source {
		t.Fatalf("suspend call %+v (answer read at %v)", c, readAt)
	}
}

// TestSuspendWhenAnswerNotRead checks that a machine that never reads its
// answer is suspended anyway once the delivery timeout passes.
func TestSuspendWhenAnswerNotRead(t *testing.T) {
	f := newFakeMachines(testMachine("m1"))
	s, sock := newTestServer(t, f, "m1")
	s.deliveryTimeout = 100 * time.Millisecond
	conn, err := net.Dial("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if _, err := io.WriteString(conn, "POST /v1/suspend HTTP/1.1\r\nHost: torpor\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	if err := waitOp(t, f); err != nil {
		t.Fatal(err)
	}
}

// TestOnlyItself checks that no request can make the server act on, or
// read, another machine: every call the fake sees names the endpoint's own.
func TestOnlyItself(t *testing.T) {
	other := testMachine("m2")
	otherApp := testMachine("m3")
	otherApp.App = "app2"
	f := newFakeMachines(testMachine("m1"), other, otherApp)
	_, sock := newTestServer(t, f, "m1")
	for _, path := range []string{
		"/v1/apps/app1/machines/m2/suspend",
		"/v1/apps/app2/machines/m3/suspend",
		"/v1/apps/app2/machines/m1/suspend",
		"/v1/apps/app1/machines/m2/stop",
		"/v1/apps/app1/machines/m2",
	} {
		method := "POST"
		if !strings.HasSuffix(path, "suspend") && !strings.HasSuffix(path, "stop") {
			method = "GET"
		}
		if status, body := do(t, sock, method, path, ""); status != http.StatusForbidden {
			t.Errorf("%s %s = %d %v, want 403", method, path, status, body)
		}
	}
	// Names in the query or body are not read.
	if status, body := do(t, sock, "GET", "/v1/machine?id=m2&app=app2", ""); status != 200 || body["id"] != "m1" {
		t.Errorf("GET with another machine in the query = %d %v", status, body)
	}
	if status, _ := do(t, sock, "POST", "/v1/apps/app1/machines/m1/../m2/suspend", ""); status != http.StatusNotFound {
		t.Errorf("dot-dot path = %d, want 404", status)
	}
	if status, _ := do(t, sock, "POST", "/v1/suspend?id=m2", `{"id":"m2","app":"app2"}`); status != http.StatusAccepted {
		t.Errorf("POST /v1/suspend = %d", status)
	}
	if err := waitOp(t, f); err != nil {
		t.Fatal(err)
	}
	for _, c := range f.allCalls() {
		if c.app != "app1" || c.id != "m1" {
			t.Errorf("the fake was called about another machine: %+v", c)
		}
	}
}

func TestStop(t *testing.T) {
	f := newFakeMachines(testMachine("m1"))
	_, sock := newTestServer(t, f, "m1")
	if status, body := do(t, sock, "POST", "/v1/stop", `{"signal": "SIGINT"`); status != http.StatusBadRequest {
		t.Fatalf("stop with a bad body = %d %v", status, body)
	}
	status, body := do(t, sock, "POST", "/v1/apps/app1/machines/m1/stop", `{"signal":"SIGINT","timeout":"3s"}`)
	if status != http.StatusAccepted || body["ok"] != true {
		t.Fatalf("stop = %d %v", status, body)
	}
	if err := waitOp(t, f); err != nil {
		t.Fatal(err)
	}
	c := f.callsOf("stop")[0]
	if c.stop.Signal != "SIGINT" || c.stop.Timeout.Duration != 3*time.Second || c.source != Source {
		t.Fatalf("stop call %+v", c)
	}
	// The machine is stopped now: neither operation is accepted.
	for _, path := range []string{"/v1/stop", "/v1/suspend"} {
		if status, body := do(t, sock, "POST", path, ""); status != http.StatusConflict {
			t.Errorf("%s on a stopped machine = %d %v, want 409", path, status, body)
		}
	}
}

// TestOneOperationAtATime checks that a machine cannot queue operations on
// itself while one is under way.
func TestOneOperationAtATime(t *testing.T) {
	f := newFakeMachines(testMachine("m1"))
	release := make(chan struct{})
	f.onSuspend = func(context.Context, string, string) error { <-release; return nil }
	_, sock := newTestServer(t, f, "m1")
	if status, _ := do(t, sock, "POST", "/v1/suspend", ""); status != http.StatusAccepted {
		t.Fatalf("first suspend = %d", status)
	}
	waitFor(t, "suspend call", func() bool { return len(f.callsOf("suspend")) == 1 })
	if status, body := do(t, sock, "POST", "/v1/stop", ""); status != http.StatusConflict {
		t.Fatalf("stop during suspend = %d %v, want 409", status, body)
	}
	close(release)
	if err := waitOp(t, f); err != nil {
		t.Fatal(err)
	}
	if n := len(f.callsOf("stop")); n != 0 {
		t.Fatalf("%d stop calls, want none", n)
	}
}

func TestErrors(t *testing.T) {
	f := newFakeMachines() // knows no machine
	_, sock := newTestServer(t, f, "m1")
	if status, body := do(t, sock, "GET", "/v1/machine", ""); status != http.StatusNotFound || body["error"] != "machine m1 not found" {
		t.Fatalf("info of an unknown machine = %d %v", status, body)
	}
	if status, _ := do(t, sock, "POST", "/v1/suspend", ""); status != http.StatusNotFound {
		t.Fatalf("suspend of an unknown machine = %d", status)
	}
}

func TestListenClose(t *testing.T) {
	f := newFakeMachines(testMachine("m1"))
	s, sock := newTestServer(t, f, "m1")
	dir := filepath.Dir(filepath.Dir(sock))
	if _, err := s.Listen("app1", "m1", dir); err != nil {
		t.Fatalf("second Listen: %v", err)
	}
	if status, _ := do(t, sock, "GET", "/v1/machine", ""); status != 200 {
		t.Fatalf("after a second Listen: %d", status)
	}
	s.Close("m1")
	s.Close("m1") // twice is fine
	if _, err := os.Stat(sock); !os.IsNotExist(err) {
		t.Fatalf("socket still there after Close: %v", err)
	}
	// A new server (a restarted daemon) serves the same directory again.
	s2 := New(f, nil)
	defer s2.CloseAll()
	if _, err := s2.Listen("app1", "m1", dir); err != nil {
		t.Fatal(err)
	}
	if status, _ := do(t, sock, "GET", "/v1/machine", ""); status != 200 {
		t.Fatalf("after re-Listen: %d", status)
	}
	if _, err := s2.Listen("app1", "m1", "relative"); err == nil {
		t.Error("Listen accepted a relative directory")
	}
	if _, err := s2.Listen("app1", "m1", "/"+strings.Repeat("x", 120)); err == nil {
		t.Error("Listen accepted a socket path too long for bind(2)")
	}
}

// TestCloseAllDropsPending checks that an operation still in its delay is
// dropped when the server closes.
func TestCloseAllDropsPending(t *testing.T) {
	f := newFakeMachines(testMachine("m1"))
	s, sock := newTestServer(t, f, "m1")
	s.settleDelay = time.Hour
	if status, _ := do(t, sock, "POST", "/v1/suspend", ""); status != http.StatusAccepted {
		t.Fatalf("suspend = %d", status)
	}
	s.CloseAll()
	if n := len(f.callsOf("suspend")); n != 0 {
		t.Fatalf("%d suspend calls after CloseAll, want none", n)
	}
	if _, err := s.Listen("app1", "m1", t.TempDir()); err == nil {
		t.Fatal("Listen after CloseAll succeeded")
	}
}

// waitFor polls cond every 5 ms for up to 10 s.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestConnectionsPerMachineAreCapped is issue 17's F4 for the in-machine
// API: a machine cannot hold more than its cap of connections (the next one
// gets a quick 503 naming the limit), another machine's socket still
// answers, idle connections are closed after the idle timeout, and the
// places they held are free again.
func TestConnectionsPerMachineAreCapped(t *testing.T) {
	f := newFakeMachines(testMachine("m1"), testMachine("m2"))
	s := New(f, nil)
	s.idleTimeout, s.headerTimeout = 500*time.Millisecond, 500*time.Millisecond
	s.SetLimits(nil, 4)
	t.Cleanup(s.CloseAll)
	sock := func(id string) string {
		dir := t.TempDir()
		if _, err := s.Listen("app1", id, dir); err != nil {
			t.Fatal(err)
		}
		return filepath.Join(dir, "torpor", SocketName)
	}
	s1, s2 := sock("m1"), sock("m2")

	var held []net.Conn
	for range 4 {
		c, err := net.Dial("unix", s1)
		if err != nil {
			t.Fatal(err)
		}
		held = append(held, c)
	}
	defer func() {
		for _, c := range held {
			c.Close()
		}
	}()
	// The accept loop admits them one by one: wait until the fifth is refused.
	deadline := time.Now().Add(5 * time.Second)
	for {
		req, _ := http.NewRequest("GET", "http://torpor/v1/machine", nil)
		resp, err := client(s1).Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode == http.StatusServiceUnavailable {
			if !strings.Contains(string(body), "in-machine API of machine m1") {
				t.Fatalf("refusal does not name the limit: %s", body)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("a fifth connection of m1 was served: %d %s", resp.StatusCode, body)
		}
	}
	if code, _ := do(t, s2, "GET", "/v1/machine", ""); code != 200 {
		t.Fatalf("m2's API answers %d while m1 is at its cap", code)
	}
	// The held connections never sent a request: the server closes them
	// after the header timeout.
	for _, c := range held {
		c.SetReadDeadline(time.Now().Add(15 * time.Second))
		if _, err := c.Read(make([]byte, 1)); err != io.EOF {
			t.Fatalf("an idle connection was not closed by the server: %v", err)
		}
	}
	deadline = time.Now().Add(5 * time.Second)
	for {
		req, _ := http.NewRequest("GET", "http://torpor/v1/machine", nil)
		resp, err := client(s1).Do(req)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("m1 still refused after its idle connections were closed: %v", err)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

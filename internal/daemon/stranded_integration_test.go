package daemon_test

import (
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/torpor-dev/torpor/internal/client"
	"github.com/torpor-dev/torpor/internal/model"
)

// Issue 17's F9 on the real runtime: requests in flight through the proxy
// to a machine that is suspended over the API, or whose sandbox dies, and
// raw TCP connections to a machine that stops.

// slowApp answers GET /slow?s=N after N seconds and anything else at once,
// on port 8080.
const slowApp = `
import http.server, time, urllib.parse
class H(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def do_GET(self):
        q = urllib.parse.urlparse(self.path)
        if q.path == "/slow":
            time.sleep(float(urllib.parse.parse_qs(q.query).get("s", ["3"])[0]))
        body = b"done\n"
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *a):
        pass
print("listening", flush=True)
http.server.ThreadingHTTPServer(("0.0.0.0", 8080), H).serve_forever()
`

// slowConfig is slowApp published by the proxy on port (HTTP if http).
func slowConfig(port int, http bool) model.MachineConfig {
	var handlers []string
	if http {
		handlers = []string{"http"}
	}
	cfg := serviceConfig(port, handlers, model.AutostopOff, 0)
	cfg.Init.Exec = []string{"python3", "-c", slowApp}
	cfg.Guest.MemoryMB = 256
	return cfg
}

// slowMachine starts a daemon with a slowApp machine published on a free
// port (HTTP if http) and waits until the proxy serves it.
func slowMachine(t *testing.T, http bool) (*daemon, model.Machine, int) {
	t.Helper()
	d := newDaemon(t)
	port := freePort(t)
	m := d.create(slowConfig(port, http))
	waitProxy200(t, port)
	return d, m, port
}

// inFlight GETs path through the proxy on port in the background and
// returns a channel with the status (0 on error) and how long it took.
func inFlight(port int, path string) <-chan [2]int64 {
	out := make(chan [2]int64, 1)
	go func() {
		begin := time.Now()
		code := 0
		resp, err := (&http.Client{Timeout: 60 * time.Second}).Get(fmt.Sprintf("http://127.0.0.1:%d%s", port, path))
		if err == nil {
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			code = resp.StatusCode
		}
		out <- [2]int64{int64(code), int64(time.Since(begin))}
	}()
	return out
}

// TestSuspendOverTheAPIWithARequestInFlight: a machine suspended over the
// API while it has a request in flight through the proxy is woken by the
// proxy, and the request is answered (it used to stall until something
// else woke the machine). Suspends are interruptible, so which of two
// outcomes happens depends on timing, and both are right: the suspend
// completes and the proxy resumes the machine, or the proxy's start
// arrives while the checkpoint is being written and cancels the suspend
// (409, the machine never stopped running).
func TestSuspendOverTheAPIWithARequestInFlight(t *testing.T) {
	d, m, port := slowMachine(t, true)
	res := inFlight(port, "/slow?s=2")
	time.Sleep(500 * time.Millisecond) // the app is in its sleep
	err := d.c.Suspend(ctx(t), d.app, m.ID)
	cancelled := err != nil
	switch {
	case err == nil:
		if ev := d.event(m.ID, "suspend"); ev.Status != "suspended" {
			t.Fatalf("suspend event %+v", ev)
		}
	case isStatus(err, http.StatusConflict) && strings.Contains(err.Error(), "cancelled by a start"):
		t.Logf("the proxy's wake cancelled the suspend: %v", err)
	default:
		t.Fatalf("suspend: %v", err)
	}
	select {
	case r := <-res:
		if r[0] != 200 {
			t.Fatalf("the request in flight got %d after %s", r[0], time.Duration(r[1]))
		}
		t.Logf("the request in flight was answered after %s", time.Duration(r[1]).Round(time.Millisecond))
	case <-time.After(20 * time.Second):
		t.Fatal("the request in flight is still waiting 20 s after the suspend")
	}
	st, err := d.c.Wait(ctx(t), d.app, m.ID, []model.State{model.StateStarted}, 10*time.Second)
	if err != nil || st != model.StateStarted {
		t.Fatalf("the machine is %s (%v), want started again", st, err)
	}
	if cancelled {
		// The machine was never restored: no resume event at all.
		evs, err := d.c.Events(ctx(t), d.app, m.ID)
		if err != nil {
			t.Fatal(err)
		}
		for _, ev := range evs {
			if ev.Type == "resume" {
				t.Fatalf("resume event %+v after a cancelled suspend", ev)
			}
		}
		return
	}
	if ev := d.event(m.ID, "resume"); ev.Source != model.SourceProxy {
		t.Fatalf("resume event %+v, want one from the proxy", ev)
	}
}

// TestDeadSandboxFailsRequestsInFlightAtOnce: a request in flight to a
// machine whose sandbox dies gets a 502 within seconds, not after minutes.
func TestDeadSandboxFailsRequestsInFlightAtOnce(t *testing.T) {
	d, m, port := slowMachine(t, true)
	res := inFlight(port, "/slow?s=600")
	time.Sleep(500 * time.Millisecond)
	d.killSandbox(m.ID)
	select {
	case r := <-res:
		if r[0] != http.StatusBadGateway {
			t.Fatalf("the request in flight to a dead machine got %d, want 502", r[0])
		}
		t.Logf("the request in flight got a 502 after %s", time.Duration(r[1]).Round(time.Millisecond))
	case <-time.After(10 * time.Second):
		t.Fatal("the request in flight to a dead machine still waits 10 s after its death")
	}
}

// TestDeadSandboxClosesItsTCPConnections: a raw TCP connection through the
// proxy ends within seconds of its machine's sandbox dying (nothing is left
// to send a FIN or a RST: it lingered for minutes).
func TestDeadSandboxClosesItsTCPConnections(t *testing.T) {
	d, m, port := slowMachine(t, false)
	c, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", port), 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	fmt.Fprintf(c, "GET /slow?s=600 HTTP/1.1\r\nHost: x\r\n\r\n")
	time.Sleep(500 * time.Millisecond)
	begin := time.Now()
	d.killSandbox(m.ID)
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.ReadAll(c); err != nil {
		t.Fatalf("the raw TCP connection to a dead machine is still open 10 s later: %v", err)
	}
	t.Logf("the raw TCP connection ended %s after the sandbox was killed", time.Since(begin).Round(time.Millisecond))
}

// waitProxy200 waits until GET / through the proxy on port answers 200.
func waitProxy200(t *testing.T, port int) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		resp, err := proxyClient.Get(fmt.Sprintf("http://127.0.0.1:%d/", port))
		if err == nil {
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("the proxy never served port %d: %v", port, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// isStatus reports whether err is the API's answer with that HTTP status.
func isStatus(err error, status int) bool {
	var ae *client.APIError
	return errors.As(err, &ae) && ae.Status == status
}

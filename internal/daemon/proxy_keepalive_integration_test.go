package daemon_test

import (
	"fmt"
	"io"
	"net/http"
	"testing"
	"time"

	"github.com/torpor-dev/torpor/internal/model"
)

// singleThreadedApp is an HTTP/1.1 server that serves one connection at a
// time, keep-alive included, as Python's http.server.HTTPServer does: while
// a client holds an idle connection open, nobody else is answered.
const singleThreadedApp = `
import http.server, os
class H(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def do_GET(self):
        b = b'{"pid": %d}' % os.getpid()
        self.send_response(200)
        self.send_header("Content-Length", str(len(b)))
        self.end_headers()
        self.wfile.write(b)
    def log_message(self, *a):
        pass
http.server.HTTPServer(("0.0.0.0", 8080), H).serve_forever()
`

// TestProxyLeavesSingleThreadedAppFree checks that a request through the
// proxy does not leave the proxy holding the app's only connection slot:
// a direct request (and one from another client) right after it is
// answered, where the proxy's idle keep-alive connection used to block the
// app for a minute (issue 16); now for backendIdleTimeout (100 ms) at most.
func TestProxyLeavesSingleThreadedAppFree(t *testing.T) {
	d := newDaemon(t)
	port := freePort(t)
	cfg := serviceConfig(port, []string{"http"}, model.AutostopOff, 0)
	cfg.Init = model.InitConfig{Exec: []string{"python3", "-c", singleThreadedApp}}
	m := d.create(cfg)
	// The test's own clients close their connections: they would block the
	// app themselves otherwise.
	client := func() *http.Client {
		return &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	}
	get := func(c *http.Client, url string) error {
		resp, err := c.Get(url)
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		io.Copy(io.Discard, resp.Body)
		if resp.StatusCode != 200 {
			return fmt.Errorf("%s", resp.Status)
		}
		return nil
	}
	proxied := fmt.Sprintf("http://127.0.0.1:%d/", port)
	deadline := time.Now().Add(30 * time.Second)
	for err := get(client(), proxied); err != nil; err = get(client(), proxied) {
		if time.Now().After(deadline) {
			t.Fatalf("proxy never answered: %v", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	for i := 0; i < 3; i++ {
		if err := get(client(), proxied); err != nil {
			t.Fatalf("round %d: through the proxy: %v", i, err)
		}
		begin := time.Now()
		if err := get(client(), "http://"+m.PrivateIP+":8080/"); err != nil {
			t.Fatalf("round %d: a direct request after a proxied one: %v (after %s)", i, err, time.Since(begin))
		}
		t.Logf("round %d: direct request after a proxied one answered in %s", i, time.Since(begin))
	}
}

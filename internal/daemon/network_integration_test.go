package daemon_test

import (
	"fmt"
	"net"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/torpor-dev/torpor/internal/model"
)

// probeSource connects to each name=host:port in $PROBES and prints
// "probe NAME ok" or "probe NAME fail REASON".
const probeSource = `
import os, socket, time
for spec in os.environ["PROBES"].split(","):
    name, addr = spec.split("=")
    host, port = addr.rsplit(":", 1)
    s = socket.socket()
    s.settimeout(3)
    try:
        s.connect((host, int(port)))
        print(f"probe {name} ok", flush=True)
    except Exception as e:
        print(f"probe {name} fail {e}", flush=True)
    finally:
        s.close()
while True:
    time.sleep(60)
`

// TestMachineNetworkIsolation runs with IPv4 forwarding on (as on a host
// running Docker), so isolation must come from torpor's own rules.
func TestMachineNetworkIsolation(t *testing.T) {
	forwarding(t, "1")
	apiPort := freePort(t)
	d := newDaemon(t, "--listen", fmt.Sprintf("127.0.0.1:%d", apiPort))
	other := d.app + "-b"
	if _, err := d.c.CreateApp(ctx(t), other, ""); err != nil {
		t.Fatal(err)
	}
	a1 := d.create(counterConfig(nil))
	b1, err := d.c.CreateMachine(ctx(t), other, model.CreateMachineRequest{Config: counterConfig(nil)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		d.c.Destroy(ctx(t), other, b1.ID, true)
		d.c.DeleteApp(ctx(t), other)
	})
	d.httpGet(d.get(a1.ID))
	d.httpGet(b1) // both servers are up: the host reaches them

	gateway := func(ip string) string { return ip[:strings.LastIndexByte(ip, '.')] + ".1" }
	probes := []string{
		"same-app=" + a1.PrivateIP + ":8080",
		"other-app=" + b1.PrivateIP + ":8080",
		fmt.Sprintf("api-via-gateway=%s:%d", gateway(a1.PrivateIP), apiPort),
		fmt.Sprintf("api-via-other-gateway=%s:%d", gateway(b1.PrivateIP), apiPort),
		fmt.Sprintf("api-via-loopback=127.0.0.1:%d", apiPort),
	}
	cfg := counterConfig(map[string]string{"PROBES": strings.Join(probes, ",")})
	cfg.Init.Exec = []string{"python3", "-c", probeSource}
	probe := d.create(cfg)

	want := map[string]bool{"same-app": true, "other-app": false, "api-via-gateway": false,
		"api-via-other-gateway": false, "api-via-loopback": false}
	got := map[string]string{}
	deadline := time.Now().Add(60 * time.Second)
	for len(got) < len(want) {
		if time.Now().After(deadline) {
			t.Fatalf("probes did not finish: %v", d.consoleLines(probe.ID))
		}
		time.Sleep(100 * time.Millisecond)
		for _, l := range d.consoleLines(probe.ID) {
			if f := strings.Fields(l); len(f) >= 3 && f[0] == "probe" {
				got[f[1]] = l
			}
		}
	}
	for name, reachable := range want {
		ok := strings.Contains(got[name], " ok")
		if ok != reachable {
			t.Errorf("%s: %q, want reachable=%v", name, got[name], reachable)
		}
	}
	// The host itself does reach the API it listens on.
	if c, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", apiPort)); err != nil {
		t.Fatalf("API not listening on the host: %v", err)
	} else {
		c.Close()
	}
}

// forwarding sets net.ipv4.ip_forward for the test and restores it after.
func forwarding(t *testing.T, v string) {
	t.Helper()
	const path = "/proc/sys/net/ipv4/ip_forward"
	old, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(v), 0o644); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.WriteFile(path, old, 0o644) })
}

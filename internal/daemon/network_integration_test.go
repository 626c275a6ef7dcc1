package daemon_test

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/torpor-dev/torpor/internal/model"
)

// probeSource connects, all at once, to each name=host:port in $PROBES and
// prints "probe NAME ok" or "probe NAME fail REASON".
const probeSource = `
import os, socket, threading, time
def probe(name, host, port):
    s = socket.socket()
    s.settimeout(3)
    try:
        s.connect((host, int(port)))
        print(f"probe {name} ok", flush=True)
    except Exception as e:
        print(f"probe {name} fail {e}", flush=True)
    finally:
        s.close()
for spec in os.environ["PROBES"].split(","):
    name, addr = spec.split("=")
    host, port = addr.rsplit(":", 1)
    threading.Thread(target=probe, args=(name, host, port)).start()
while True:
    time.sleep(60)
`

// TestMachineNetworkIsolation runs with IPv4 forwarding on (as on a host
// running Docker), so isolation must come from torpor's own rules. A machine
// reaches machines of its own app only: not another app, not the daemon's
// API, not a host service bound to every address, whichever host address it
// tries; while the host and its proxy still reach machines.
func TestMachineNetworkIsolation(t *testing.T) {
	forwarding(t, "1")
	apiPort, proxyPort := freePort(t), freePort(t)
	hostPort := hostService(t)
	d := newDaemon(t, "--listen", fmt.Sprintf("0.0.0.0:%d", apiPort))
	other := d.app + "-b"
	if _, err := d.c.CreateApp(ctx(t), other, ""); err != nil {
		t.Fatal(err)
	}
	a1 := d.create(serviceConfig(proxyPort, nil, model.AutostopOff, 0))
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
		fmt.Sprintf("host-via-gateway=%s:%d", gateway(a1.PrivateIP), hostPort),
		fmt.Sprintf("host-via-other-gateway=%s:%d", gateway(b1.PrivateIP), hostPort),
	}
	want := map[string]bool{"same-app": true, "other-app": false, "api-via-gateway": false,
		"api-via-other-gateway": false, "api-via-loopback": false, "host-via-gateway": false,
		"host-via-other-gateway": false}
	for i, ip := range hostAddrs(t) {
		for svc, port := range map[string]int{"api": apiPort, "host": hostPort} {
			name := fmt.Sprintf("%s-via-host-addr-%d", svc, i)
			probes = append(probes, fmt.Sprintf("%s=%s:%d", name, ip, port))
			want[name] = false
		}
	}
	cfg := counterConfig(map[string]string{"PROBES": strings.Join(probes, ",")})
	cfg.Init.Exec = []string{"python3", "-c", probeSource}
	probe := d.create(cfg)

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
	// The host itself does reach the API and the service (so the probes
	// above could have succeeded), and the proxy reaches the machine.
	for _, port := range []int{apiPort, hostPort} {
		for _, ip := range append(hostAddrs(t), "127.0.0.1") {
			c, err := net.Dial("tcp", net.JoinHostPort(ip, strconv.Itoa(port)))
			if err != nil {
				t.Fatalf("port %d not reachable on the host at %s: %v", port, ip, err)
			}
			c.Close()
		}
	}
	if st := waitProxy(t, proxyPort); st.PID == 0 {
		t.Fatalf("proxy answer %+v", st)
	}
}

// hostService runs an HTTP server on every address of the host (0.0.0.0)
// for the test and returns its port.
func hostService(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp4", "0.0.0.0:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "host service\n")
	})}
	go srv.Serve(l)
	t.Cleanup(func() { srv.Close() })
	return l.Addr().(*net.TCPAddr).Port
}

// hostAddrs lists the host's own IPv4 addresses outside loopback and
// torpor's interfaces (which any daemon may add or remove meanwhile).
func hostAddrs(t *testing.T) []string {
	t.Helper()
	ifaces, err := net.Interfaces()
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, ifc := range ifaces {
		if ifc.Flags&net.FlagLoopback != 0 || strings.HasPrefix(ifc.Name, "tp") || ifc.Flags&net.FlagUp == 0 {
			continue
		}
		addrs, err := ifc.Addrs()
		if err != nil {
			t.Fatal(err)
		}
		for _, a := range addrs {
			if ipn, ok := a.(*net.IPNet); ok && ipn.IP.To4() != nil {
				out = append(out, ipn.IP.String())
			}
		}
	}
	return out
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

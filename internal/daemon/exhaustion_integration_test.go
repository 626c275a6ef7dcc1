package daemon_test

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/torpor-dev/torpor/internal/model"
)

// TestDescriptorExhaustion is issue 17's F4 on the real daemon, run with a
// descriptor limit of 1024: an unauthenticated client holding 1200 idle
// keep-alive connections to the TCP API after one GET /healthz, 75 clients
// holding 1200 raw-TCP connections to a published port, and two machines holding
// connections to their in-machine API sockets, each with more connections
// than the daemon has descriptors. Each used to hang the whole daemon, admin
// socket included. Now every attack hits a cap or the tenants' budget, the
// admin socket and the TCP API keep answering, and the descriptors come
// back when the attacker lets go.
func TestDescriptorExhaustion(t *testing.T) {
	apiPort, tcpPort := freePort(t), freePort(t)
	apiAddr := fmt.Sprintf("127.0.0.1:%d", apiPort)
	d := startDaemon(t, "", 1024, []string{"--listen", apiAddr, "--api-idle-timeout", "2s"})
	token := d.adminToken()
	web := d.create(serviceConfig(tcpPort, nil, model.AutostopOff, 0)) // raw TCP
	d.waitCount(web.ID, 1)
	d.answers(web.ID, 0, "before the attacks")
	base := d.fds()
	t.Logf("daemon holds %d descriptors before the attacks", base)
	// The TCP API: one client, one GET /healthz per connection, then idle.
	held := flood(t, apiAddr, 1, 1200, "GET /healthz HTTP/1.1\r\nHost: torpor\r\n\r\n")
	d.stillServes(t, apiAddr, token, "the TCP API flood")
	// Idle connections are closed after --api-idle-timeout.
	closedByDaemon(t, held, 10*time.Second, "TCP API")
	if code := apiGet(t, apiAddr, token, "127.0.2.1"); code != 200 {
		t.Fatalf("the TCP API after its idle connections were closed: %d", code)
	}

	// A raw-TCP published port: each client also holds a connection to the
	// machine.
	held = flood(t, fmt.Sprintf("127.0.0.1:%d", tcpPort), 75, 16, "")
	d.stillServes(t, apiAddr, token, "the raw-TCP flood")
	d.answers(web.ID, 0, "during the raw-TCP flood")
	for _, c := range held {
		c.Close()
	}
	d.fdsBackTo(base, "the raw-TCP flood")

	// Two machines, 700 connections each to their in-machine API.
	flooders := []model.Machine{d.create(guestFlooder(700)), d.create(guestFlooder(700))}
	for _, m := range flooders {
		ok, refused := d.floodResult(m.ID, func() { d.stillServes(t, apiAddr, token, "the in-machine API flood") })
		t.Logf("machine %s: %d of its connections served, %d refused", m.ID, ok, refused)
		if ok > 16 || ok == 0 || refused == 0 {
			t.Fatalf("machine %s got %d connections to its API served and %d refused, want at most 16 served", m.ID, ok, refused)
		}
	}
	d.stillServes(t, apiAddr, token, "the in-machine API flood")
	for _, m := range flooders {
		if err := d.c.Destroy(ctx(t), d.app, m.ID, true); err != nil {
			t.Fatal(err)
		}
	}
	d.fdsBackTo(base, "the in-machine API flood")
}

// adminToken makes an admin token for the TCP API.
func (d *daemon) adminToken() string {
	d.t.Helper()
	tok, err := d.c.CreateToken(ctx(d.t), model.CreateTokenRequest{Name: "exhaustion", Admin: true})
	if err != nil {
		d.t.Fatal(err)
	}
	return tok.Secret
}

// flood opens n*per connections to addr, per from each of the loopback
// addresses 127.0.1.1 to 127.0.1.n, sends payload on each and reads the
// start of whatever answer comes within 200 ms. The connections stay open.
func flood(t *testing.T, addr string, n, per int, payload string) []net.Conn {
	t.Helper()
	var out []net.Conn
	for i := 1; i <= n; i++ {
		d := net.Dialer{Timeout: time.Second, LocalAddr: &net.TCPAddr{IP: net.IPv4(127, 0, 1, byte(i))}}
		for range per {
			c, err := d.Dial("tcp", addr)
			if err != nil {
				continue // the backlog of a daemon that no longer accepts is full
			}
			t.Cleanup(func() { c.Close() })
			out = append(out, c)
			if payload != "" {
				c.Write([]byte(payload))
				c.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
				c.Read(make([]byte, 512))
			}
		}
	}
	return out
}

// stillServes fails unless the admin socket and the TCP API (for a client
// of its own address) answer within 5 s each.
func (d *daemon) stillServes(t *testing.T, apiAddr, token, during string) {
	t.Helper()
	c, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := d.c.Health(c); err != nil {
		t.Fatalf("during %s the admin socket does not answer: %v", during, err)
	}
	if _, err := d.c.ListMachines(c, d.app); err != nil {
		t.Fatalf("during %s the admin socket does not list machines: %v", during, err)
	}
	if code := apiGet(t, apiAddr, token, "127.0.2.1"); code != 200 {
		t.Fatalf("during %s the TCP API answers %d to another client", during, code)
	}
}

// apiGet lists apps on the TCP API from the loopback address src and
// returns the status (0 if there was no answer within 5 s).
func apiGet(t *testing.T, addr, token, src string) int {
	t.Helper()
	tr := &http.Transport{DialContext: (&net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}}).DialContext}
	defer tr.CloseIdleConnections()
	req, _ := http.NewRequest("GET", "http://"+addr+"/v1/apps", nil)
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := (&http.Client{Transport: tr, Timeout: 5 * time.Second}).Do(req)
	if err != nil {
		t.Logf("GET /v1/apps from %s: %v", src, err)
		return 0
	}
	resp.Body.Close()
	return resp.StatusCode
}

// closedByDaemon waits until every connection has been closed by the
// other end.
func closedByDaemon(t *testing.T, conns []net.Conn, within time.Duration, what string) {
	t.Helper()
	deadline := time.Now().Add(within)
	for i, c := range conns {
		c.SetReadDeadline(deadline)
		r := bufio.NewReader(c)
		for {
			if _, err := r.ReadByte(); err != nil {
				if ne, ok := err.(net.Error); ok && ne.Timeout() {
					t.Fatalf("%s connection %d of %d still open after %s", what, i, len(conns), within)
				}
				break
			}
		}
	}
}

// fds counts the daemon's open descriptors.
func (d *daemon) fds() int {
	return countDir(fmt.Sprintf("/proc/%d/fd", d.cmd.Process.Pid))
}

// fdsBackTo waits up to 15 s until the daemon holds at most base+32
// descriptors.
func (d *daemon) fdsBackTo(base int, after string) {
	d.t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for d.fds() > base+32 {
		if time.Now().After(deadline) {
			d.t.Fatalf("after %s the daemon holds %d descriptors, %d before", after, d.fds(), base)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// guestFlooder is a machine that opens n connections to its in-machine API,
// sends a GET on each, keeps them all and prints how many got a 200 and
// how many a 503.
func guestFlooder(n int) model.MachineConfig {
	return model.MachineConfig{
		Image: rootfs,
		Init: model.InitConfig{Exec: []string{"python3", "-c", fmt.Sprintf(`
import socket, time
ok = refused = failed = 0
held = []
for i in range(%d):
    s = socket.socket(socket.AF_UNIX)
    s.settimeout(0.5)
    try:
        s.connect("/.torpor/api.sock")
        s.sendall(b"GET /v1/machine HTTP/1.1\r\nHost: torpor\r\n\r\n")
        head = s.recv(12)
        if head.startswith(b"HTTP/1.1 200"):
            ok += 1
        elif head.startswith(b"HTTP/1.1 503"):
            refused += 1
        else:
            failed += 1
    except Exception:
        failed += 1
    held.append(s)
print(f"flood ok={ok} refused={refused} failed={failed}", flush=True)
time.sleep(3600)
`, n)}},
		Guest: model.Guest{CPUs: 1, MemoryMB: 256},
	}
}

// floodResult waits (running check every second meanwhile) for the line a
// guestFlooder prints and returns its counts.
func (d *daemon) floodResult(id string, check func()) (ok, refused int) {
	d.t.Helper()
	deadline := time.Now().Add(90 * time.Second)
	for {
		for _, l := range d.consoleLines(id) {
			if rest, found := strings.CutPrefix(l, "flood "); found {
				for _, kv := range strings.Fields(rest) {
					k, v, _ := strings.Cut(kv, "=")
					n, _ := strconv.Atoi(v)
					switch k {
					case "ok":
						ok = n
					case "refused":
						refused = n
					}
				}
				return ok, refused
			}
		}
		if time.Now().After(deadline) {
			d.t.Fatalf("machine %s never finished its flood; console: %v", id, d.consoleLines(id))
		}
		check()
		time.Sleep(time.Second)
	}
}

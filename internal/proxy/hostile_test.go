package proxy

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/torpor-dev/torpor/internal/connlimit"
	"github.com/torpor-dev/torpor/internal/model"
)

// Tests for issue 17 (F4, F9): what a hostile client or an unlucky operator
// can make the proxy hold, and how fast it lets go.

// setState changes a machine's state as the machine layer would report it,
// without touching its server: like a sandbox that is frozen (suspended over
// the API) or dead while connections to it are still open.
func (f *fleet) setState(id string, st model.State) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.ms[id].m.State = st
}

// TestSuspendWithRequestsInFlightWakesTheMachine: a machine suspended over
// the API while the proxy has requests in flight to it is resumed by the
// proxy, so that they are answered (they used to stall until an unrelated
// request woke the machine: F9).
func TestSuspendWithRequestsInFlightWakesTheMachine(t *testing.T) {
	f := newFleet(t)
	port := freePort(t)
	fm := f.add("web", "m1", model.StateStarted, false, service(port))
	p, _ := startProxy(t, f, Config{})
	done := blockInFlight(t, fm, port)
	f.setState("m1", model.StateSuspended) // suspended over the API
	p.Refresh()
	eventually(t, "the proxy to resume the machine", func() bool { return f.count(f.starts, "m1") == 1 })
	if st := f.state("m1"); st != model.StateStarted {
		t.Fatalf("machine is %s after the proxy's wake", st)
	}
	f.unblock()
	if code := <-done; code != 200 {
		t.Fatalf("the request in flight got %d", code)
	}
}

// TestSuspendWithoutAutostartFailsRequestsInFlight: with autostart off the
// proxy may not wake the machine; requests in flight fail at once with a
// 502 rather than hang.
func TestSuspendWithoutAutostartFailsRequestsInFlight(t *testing.T) {
	f := newFleet(t)
	port := freePort(t)
	fm := f.add("web", "m1", model.StateStarted, false, service(port, withAutostart(false)))
	p, _ := startProxy(t, f, Config{})
	code := inFlightWhile(t, fm, port, func() {
		f.setState("m1", model.StateSuspended)
		p.Refresh()
	})
	if code != 502 || f.count(f.starts, "m1") != 0 {
		t.Fatalf("in flight to a machine suspended with autostart off: %d, %d starts; want a 502 and none", code, f.count(f.starts, "m1"))
	}
}

// TestDeadMachineFailsRequestsInFlight: when the machine layer reports that
// a machine stopped (its sandbox died) the requests in flight to it get a
// 502 at once instead of waiting on a connection nobody will ever answer.
func TestDeadMachineFailsRequestsInFlight(t *testing.T) {
	f := newFleet(t)
	port := freePort(t)
	fm := f.add("web", "m1", model.StateStarted, false, service(port))
	p, _ := startProxy(t, f, Config{})
	code := inFlightWhile(t, fm, port, func() {
		f.setState("m1", model.StateStopped)
		p.Refresh()
	})
	if code != 502 {
		t.Fatalf("in flight to a dead machine: %d, want 502", code)
	}
}

// blockInFlight sends a /block request through the proxy on port and
// returns once the machine holds it, with where its status will come.
//
// A request that ends before it reaches the machine is sent again (twice
// at most) after logging why: in one CI run under load the proxy's fresh
// connection to a started fake machine was closed unanswered (EOF, 1 ms
// after the proxy published the service; not reproduced in 300 runs of
// that test alone and 100 of the package beside 2 others since), which is
// not what these tests are about.
func blockInFlight(t *testing.T, fm *fakeMachine, port int) <-chan int {
	t.Helper()
	c := client(t)
	deadline := time.Now().Add(30 * time.Second)
send:
	for try := 1; ; try++ {
		done := make(chan int, 1)
		go func() { done <- status(c, at(port, "/block")) }()
		for fm.inflight.Load() != 1 {
			if time.Now().After(deadline) {
				t.Fatal("a /block request through the proxy did not reach the machine in 30 s")
			}
			select {
			case code := <-done:
				if try == 3 {
					t.Fatalf("a /block request through the proxy ended (status %d) before it reached the machine, %d times", code, try)
				}
				t.Logf("a /block request through the proxy ended (status %d) before it reached the machine; sending it again", code)
				continue send
			case <-time.After(5 * time.Millisecond):
			}
		}
		return done
	}
}

// inFlightWhile sends a /block request, runs change while it is in flight
// and returns the status it got; it fails if that takes more than 5 s.
func inFlightWhile(t *testing.T, fm *fakeMachine, port int, change func()) int {
	t.Helper()
	done := blockInFlight(t, fm, port)
	change()
	select {
	case code := <-done:
		return code
	case <-time.After(5 * time.Second):
		t.Fatal("the request in flight still hangs 5 s after the change")
		return 0
	}
}

// TestTCPConnectionsOfADeadMachineAreClosed: raw TCP connections to a
// machine that stopped are closed at once (they lingered for minutes: F9).
func TestTCPConnectionsOfADeadMachineAreClosed(t *testing.T) {
	f := newFleet(t)
	port := freePort(t)
	f.add("tcp", "m1", model.StateStarted, true, tcpService(port))
	p, _ := startProxy(t, f, Config{})
	conn, r := tcpDial(t, port)
	f.setState("m1", model.StateStopped)
	p.Refresh()
	conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := r.ReadString('\n'); err == nil || isTimeout(err) {
		t.Fatalf("a connection to a stopped machine is still open after 5 s: %v", err)
	}
}

// TestTCPIdleTimeout: a raw TCP connection with no byte either way for
// TCPIdleTimeout is closed; one with traffic is not.
func TestTCPIdleTimeout(t *testing.T) {
	f := newFleet(t)
	port := freePort(t)
	f.add("tcp", "m1", model.StateStarted, true, tcpService(port))
	startProxy(t, f, Config{TCPIdleTimeout: 300 * time.Millisecond})

	busy, br := tcpDial(t, port)
	idle, ir := tcpDial(t, port)
	for i := range 8 { // 1.2 s of traffic every 150 ms
		time.Sleep(150 * time.Millisecond)
		fmt.Fprintf(busy, "ping %d\n", i)
		busy.SetReadDeadline(time.Now().Add(5 * time.Second))
		if line, err := br.ReadString('\n'); err != nil || !strings.Contains(line, "ping") {
			t.Fatalf("the busy connection broke after %d pings: %q %v", i, line, err)
		}
	}
	idle.SetReadDeadline(time.Now().Add(time.Second))
	if _, err := ir.ReadString('\n'); err == nil || isTimeout(err) {
		t.Fatalf("the idle connection is still open after 1.2 s: %v", err)
	}
}

// tcpDial connects to the proxy's raw TCP port and checks one echo.
func tcpDial(t *testing.T, port int) (net.Conn, *bufio.Reader) {
	t.Helper()
	conn, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", port), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	r := bufio.NewReader(conn)
	fmt.Fprintf(conn, "hello\n")
	conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	if line, err := r.ReadString('\n'); err != nil || !strings.HasSuffix(line, ":hello\n") {
		t.Fatalf("echo through the proxy: %q %v", line, err)
	}
	return conn, r
}

// status fetches url and returns the status code, 0 on error. Unlike get
// it may outlive the test (a request released by the fleet's cleanup).
func status(c *http.Client, url string) int {
	resp, err := c.Get(url)
	if err != nil {
		return 0
	}
	defer resp.Body.Close()
	io.Copy(io.Discard, resp.Body)
	return resp.StatusCode
}

func isTimeout(err error) bool {
	ne, ok := err.(net.Error)
	return ok && ne.Timeout()
}

// TestTCPConnectionsReleaseTheirDescriptors: once raw TCP clients leave,
// the proxy holds no descriptor for them (splice(2) used to keep a pipe pair
// per copy direction in a pool after the connection ended: F4).
func TestTCPConnectionsReleaseTheirDescriptors(t *testing.T) {
	f := newFleet(t)
	port := freePort(t)
	f.add("tcp", "m1", model.StateStarted, true, tcpService(port))
	p, _ := startProxy(t, f, Config{})
	tcpDial(t, port) // warm up: listeners, the echo server's accept loop
	base := openFDs(t)
	var conns []net.Conn
	for range 50 {
		c, _ := tcpDial(t, port)
		conns = append(conns, c)
	}
	for _, c := range conns {
		c.Close()
	}
	eventually(t, "the proxy to close its side", func() bool { return p.openConns() == 2 }) // the warm-up's
	runtime.GC()
	if n := openFDs(t); n > base+5 {
		t.Fatalf("after 50 raw TCP clients left the process holds %d descriptors, %d before they came", n, base)
	}
}

// openFDs counts the test process's open descriptors.
func openFDs(t *testing.T) int {
	t.Helper()
	entries, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	return len(entries)
}

// openConns is the number of TCP connections (both sides) the proxy tracks.
func (p *Proxy) openConns() int {
	p.connMu.Lock()
	defer p.connMu.Unlock()
	return len(p.conns)
}

// TestConnectionCaps: one client cannot hold more than MaxConnsPerClient
// connections (the next gets a 503 on an HTTP port and is closed on a TCP
// port), one app's clients cannot take more than MaxConnsPerApp, and
// another app is served meanwhile; slow headers are dropped after
// HeaderTimeout, and every place comes back when the clients leave (F4).
func TestConnectionCaps(t *testing.T) {
	f := newFleet(t)
	webPort, tcpPort, otherPort := freePort(t), freePort(t), freePort(t)
	f.add("web", "w1", model.StateStarted, false, service(webPort))
	f.add("tcp", "t1", model.StateStarted, true, tcpService(tcpPort))
	f.add("other", "o1", model.StateStarted, false, service(otherPort))
	budget := connlimit.NewBudget("test", 100)
	p, _ := startProxy(t, f, Config{MaxConnsPerClient: 3, MaxConnsPerApp: 5, HeaderTimeout: time.Second, Budget: budget})

	// Three idle connections from 127.0.0.2 to web hold that client's places.
	var held []net.Conn
	for range 3 {
		held = append(held, dialFrom(t, "127.0.0.2", webPort))
	}
	waitOpen := func(n int) {
		t.Helper()
		eventually(t, fmt.Sprintf("%d client connections", n), func() bool { return p.clients.Open() == n })
	}
	waitOpen(3)
	if code, body := getFrom(t, "127.0.0.2", webPort); code != 503 || !strings.Contains(body, "per client") {
		t.Fatalf("a fourth connection of one client: %d %s", code, body)
	}
	c := dialFrom(t, "127.0.0.2", tcpPort)
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.Read(make([]byte, 1)); err == nil || isTimeout(err) {
		t.Fatalf("a TCP connection over the client's cap was not closed: %v", err)
	}
	// Two more clients fill the app's cap of 5; a third client is refused
	// by web but served by another app.
	held = append(held, dialFrom(t, "127.0.0.3", webPort), dialFrom(t, "127.0.0.3", webPort))
	waitOpen(5)
	if code, body := getFrom(t, "127.0.0.4", webPort); code != 503 || !strings.Contains(body, `app \"web\"`) {
		t.Fatalf("over the app's cap: %d %s", code, body)
	}
	if code, body := getFrom(t, "127.0.0.4", otherPort); code != 200 {
		t.Fatalf("another app while web is at its cap: %d %s", code, body)
	}
	// None of the held connections sent its headers: they are dropped.
	for _, c := range held {
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		if _, err := io.ReadAll(c); err != nil {
			t.Fatalf("a connection that never sent its headers is still open: %v", err)
		}
	}
	waitOpen(0)
	p.tr.CloseIdleConnections() // kept-alive connections to machines count too
	eventually(t, "the budget to be given back", func() bool { return budget.Used() == 0 })
	if code, _ := getFrom(t, "127.0.0.2", webPort); code != 200 {
		t.Fatalf("the client after its connections were dropped: %d", code)
	}
}

// dialFrom opens a TCP connection to the proxy's port from the loopback
// address src.
func dialFrom(t *testing.T, src string, port int) net.Conn {
	t.Helper()
	d := net.Dialer{Timeout: 5 * time.Second, LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}}
	c, err := d.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", port))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// getFrom GETs / on the proxy's port over a new connection from src.
func getFrom(t *testing.T, src string, port int) (int, string) {
	t.Helper()
	tr := &http.Transport{DialContext: (&net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}}).DialContext}
	defer tr.CloseIdleConnections()
	return get(t, &http.Client{Transport: tr, Timeout: 10 * time.Second}, at(port, "/"))
}

// TestPortGoesToItsOwner: a host port two apps ask for is published for the
// app the machine layer records as its owner, whatever the name order and
// whoever had the listener (F2); a port the daemon keeps for itself is
// never published (F3).
func TestPortGoesToItsOwner(t *testing.T) {
	f := newFleet(t)
	hp, reserved := freePort(t), freePort(t)
	f.add("aaa", "m1", model.StateStarted, false, service(hp))
	f.add("web", "m2", model.StateStarted, false, service(hp), service(reserved, func(s *model.Service) { s.InternalPort = 8081 }))
	f.owners = map[int]string{hp: "web"}
	p, logs := startProxy(t, f, Config{RefreshInterval: time.Hour, Reserved: map[int]string{reserved: "the daemon's TCP API"}})
	c := client(t)
	if code, body := get(t, c, at(hp, "/")); code != 200 || body != "m2" {
		t.Fatalf("got %d %q, want 200 from web's m2 (the owner), not aaa's m1 (first in name order)", code, body)
	}
	if _, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", reserved), time.Second); err == nil {
		t.Fatalf("the reserved port %d is published", reserved)
	}
	if !strings.Contains(logs.String(), "keeps for itself") {
		t.Error("the reserved port is not logged")
	}
	// The owner lets go; until the machine layer records a new owner
	// nobody else gets the port.
	f.remove("m2")
	if err := p.Reconcile(context.Background()); err != nil {
		t.Fatal(err)
	}
	if _, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", hp), time.Second); err == nil {
		t.Fatalf("port %d went to another app than its owner", hp)
	}
	f.mu.Lock()
	f.owners = map[int]string{hp: "aaa"}
	f.mu.Unlock()
	if err := p.Reconcile(context.Background()); err != nil {
		t.Fatal(err)
	}
	c.CloseIdleConnections()
	if code, body := get(t, c, at(hp, "/")); code != 200 || body != "m1" {
		t.Fatalf("after aaa became the owner: %d %q", code, body)
	}
}

package connlimit

import (
	"errors"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"
)

// loopback returns a listener on 127.0.0.1 and a function that dials it from
// the loopback address src (e.g. "127.0.0.7"), so that one test can be
// several clients.
func loopback(t *testing.T) (net.Listener, func(src string) net.Conn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	return ln, func(src string) net.Conn {
		t.Helper()
		d := net.Dialer{Timeout: 5 * time.Second, LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}}
		c, err := d.Dial("tcp", ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		return c
	}
}

func TestAdmitCountsAndReleasesOnce(t *testing.T) {
	ln, dial := loopback(t)
	b := NewBudget("test", 3)
	perClient := NewGroup("listener", 0, 2)
	lim := Limits{Budget: b, Groups: []*Group{perClient}}
	accept := func() net.Conn {
		c, err := ln.Accept()
		if err != nil {
			t.Fatal(err)
		}
		return c
	}

	var admitted []net.Conn
	for range 2 {
		dial("127.0.0.2")
		c, err := lim.Admit(accept())
		if err != nil {
			t.Fatal(err)
		}
		admitted = append(admitted, c)
	}
	dial("127.0.0.2")
	third := accept()
	if _, err := lim.Admit(third); !errors.Is(err, ErrLimit) || !strings.Contains(err.Error(), "per client") {
		t.Fatalf("third connection of one client: %v, want the per-client limit", err)
	}
	third.Close()
	if b.Used() != 2 || perClient.Open() != 2 {
		t.Fatalf("a refused connection kept its place: budget %d, group %d", b.Used(), perClient.Open())
	}
	dial("127.0.0.3")
	c, err := lim.Admit(accept())
	if err != nil {
		t.Fatalf("another client: %v", err)
	}
	admitted = append(admitted, c)
	dial("127.0.0.4")
	fourth := accept()
	if _, err := lim.Admit(fourth); !errors.Is(err, ErrLimit) || !strings.Contains(err.Error(), "file descriptors") {
		t.Fatalf("over the budget: %v", err)
	}
	fourth.Close()

	for _, c := range admitted {
		c.Close()
		c.Close() // a second Close gives back nothing more
	}
	if b.Used() != 0 || perClient.Open() != 0 {
		t.Fatalf("after closing everything: budget %d, group %d", b.Used(), perClient.Open())
	}
	if _, ok := Unwrap(admitted[0]).(*net.TCPConn); !ok {
		t.Fatalf("Unwrap = %T", Unwrap(admitted[0]))
	}
}

func TestGroupMax(t *testing.T) {
	g := NewGroup(`app "web"`, 2, 0)
	if g.take("a") != nil || g.take("b") != nil {
		t.Fatal("under the cap")
	}
	if err := g.take("c"); !errors.Is(err, ErrLimit) || !strings.Contains(err.Error(), `app "web"`) {
		t.Fatalf("over the cap: %v", err)
	}
	g.release("a")
	if err := g.take("c"); err != nil {
		t.Fatal(err)
	}
	var none *Group
	if none.take("x") != nil || none.Open() != 0 {
		t.Fatal("a nil group caps nothing")
	}
}

// TestListenRefusesHTTPWith503: a connection over the limit gets a 503
// with a JSON error at once, not a silent hang, and the listener goes on
// admitting once a place is free.
func TestListenRefusesHTTPWith503(t *testing.T) {
	raw, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ln := Listen(raw, Limits{Groups: []*Group{NewGroup("the test API", 1, 0)}}, RefuseHTTP, nil)
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok") })}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	url := "http://" + raw.Addr().String() + "/"

	hold := &http.Client{Transport: &http.Transport{MaxConnsPerHost: 1}}
	resp, err := hold.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	io.ReadAll(resp.Body)
	resp.Body.Close() // kept alive: it holds the only place

	other := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{}}
	begin := time.Now()
	resp, err = other.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 503 || !strings.Contains(string(body), `"error"`) || !strings.Contains(string(body), "the test API") {
		t.Fatalf("over the limit: %s %s", resp.Status, body)
	}
	if took := time.Since(begin); took > 2*time.Second {
		t.Fatalf("the refusal took %v", took)
	}

	hold.CloseIdleConnections()
	deadline := time.Now().Add(5 * time.Second)
	for {
		resp, err = other.Get(url)
		if err == nil && resp.StatusCode == 200 {
			resp.Body.Close()
			break
		}
		if err == nil {
			resp.Body.Close()
		}
		if time.Now().After(deadline) {
			t.Fatalf("the freed place was not given again: %v", err)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestPlanFor(t *testing.T) {
	for _, limit := range []int{1024, 20000, 1 << 20} {
		p := PlanFor(limit)
		if sum := p.Tenant.Limit() + p.API + p.Admin + p.Reserve; sum != limit {
			t.Errorf("limit %d: the plan adds up to %d: %v", limit, sum, p)
		}
		if p.Reserve < MinReserve || p.Tenant.Limit() <= 0 {
			t.Errorf("limit %d: %v", limit, p)
		}
	}
	if n, err := RaiseNoFile(); err != nil || n <= 0 {
		t.Fatalf("RaiseNoFile = %d, %v", n, err)
	}
}

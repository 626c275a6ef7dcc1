package cluster

import (
	"bufio"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/torpor-dev/torpor/internal/api"
	"github.com/torpor-dev/torpor/internal/client"
	"github.com/torpor-dev/torpor/internal/model"
)

// Peer endpoints, served on the advertised address to the other hosts:
//
//	/v1/...                                  the API, for requests forwarded by another host
//	POST /cluster/v1/adopt                   a machine moving here (adopt.go)
//	/cluster/v1/proxy/{app}/{id}/{port}/...  an HTTP request for a machine of this host (proxy)
//	GET /cluster/v1/tunnel?app=&id=&port=    a TCP connection to a machine of this host (proxy)
//
// URLs of peers name the host ID (https://<host>/...); the dialer looks up
// its advertised address and checks that its certificate names it.

// Headers of forwarded requests.
const (
	hopsHeader      = "Torpor-Hops"
	forwardedHeader = "Torpor-Forwarded-By"
	maxHops         = 2
)

// peers calls the other hosts.
type peers struct {
	n  *Node
	tr *http.Transport
	hc *http.Client

	mu      sync.Mutex
	clients map[string]*client.Client
}

func newPeers(n *Node) *peers {
	p := &peers{n: n, clients: map[string]*client.Client{}}
	p.tr = &http.Transport{
		DialTLSContext:      p.dial,
		MaxIdleConnsPerHost: 64,
		IdleConnTimeout:     60 * time.Second,
	}
	p.hc = &http.Client{Transport: p.tr}
	return p
}

// dial connects to the host named by addr ("<host>:443").
func (p *peers) dial(ctx context.Context, network, addr string) (net.Conn, error) {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, err
	}
	adv := p.n.view.advertise(host)
	if adv == "" {
		return nil, fmt.Errorf("host %q is not a member of the cluster", host)
	}
	d := tls.Dialer{NetDialer: &net.Dialer{Timeout: 5 * time.Second}, Config: p.n.tls.client(host)}
	return d.DialContext(ctx, network, adv)
}

// client returns the API client of host.
func (p *peers) client(host string) *client.Client {
	p.mu.Lock()
	defer p.mu.Unlock()
	c := p.clients[host]
	if c == nil {
		c = client.NewHTTP("https://"+host, p.hc)
		p.clients[host] = c
	}
	return c
}

// peerError turns an error of a call to another host into one of this
// host's API: the peer's own answer keeps its kind; a peer that cannot be
// reached is KindUnavailable.
func peerError(host string, err error) error {
	if err == nil {
		return nil
	}
	var ae *client.APIError
	if errors.As(err, &ae) {
		return model.Errorf(kindOfStatus(ae.Status), "%s", ae.Message)
	}
	return model.Errorf(model.KindUnavailable, "host %s cannot be reached: %v", host, err)
}

// kindOfStatus maps a peer's HTTP status back to the error kind that
// produced it (the inverse of api.KindStatus).
func kindOfStatus(status int) model.Kind {
	for k := model.KindInternal; k <= model.KindQuota; k++ {
		if api.KindStatus(k) == status {
			return k
		}
	}
	return model.KindInternal
}

// Serve serves the peer endpoints on the advertised address until ctx
// ends; apiHandler is this host's API.
func (n *Node) Serve(ctx context.Context, apiHandler http.Handler) error {
	ln, err := net.Listen("tcp", n.cfg.Advertise)
	if err != nil {
		return fmt.Errorf("cluster peer listener: %w", err)
	}
	mux := http.NewServeMux()
	mux.Handle("/v1/", apiHandler)
	mux.Handle("/healthz", apiHandler)
	mux.HandleFunc("POST /cluster/v1/adopt", n.serveAdopt)
	mux.HandleFunc("/cluster/v1/proxy/", n.serveProxy)
	mux.HandleFunc("GET /cluster/v1/tunnel", n.serveTunnel)
	srv := &http.Server{
		Handler:           mux,
		ReadHeaderTimeout: 10 * time.Second,
		ConnContext:       func(ctx context.Context, _ net.Conn) context.Context { return api.WithPeer(ctx) },
		ErrorLog:          nil,
	}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(tls.NewListener(ln, n.tls.server(n.view.member))) }()
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	srv.Shutdown(sctx)
	return nil
}

// writeError answers {"error": msg} with status, like the API does.
func writeError(w http.ResponseWriter, status int, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(map[string]string{"error": msg})
}

// Route implements api.Router: a request for a machine whose owner is
// another live host is reverse-proxied there, with the caller's request as
// it is (the receiving host trusts the peer, which authorized it).
func (n *Node) Route(r *http.Request, app, id string) (http.Handler, error) {
	owner := n.ownerOf(r.Context(), id)
	if owner == "" || owner == n.id || !n.view.alive(owner) {
		return nil, nil // here; Machines answers for machines of dead hosts
	}
	hops, _ := strconv.Atoi(r.Header.Get(hopsHeader))
	if hops >= maxHops {
		return nil, model.Errorf(model.KindUnavailable, "machine %s is moving between hosts (now on %s); retry", id, owner)
	}
	rp := &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			pr.Out.URL.Scheme, pr.Out.URL.Host = "https", owner
			pr.Out.Header.Set(hopsHeader, strconv.Itoa(hops+1))
			pr.Out.Header.Set(forwardedHeader, n.id)
			pr.SetXForwarded()
		},
		Transport:     n.peer.tr,
		FlushInterval: -1, // logs stream
		ErrorHandler: func(w http.ResponseWriter, r *http.Request, err error) {
			writeError(w, http.StatusBadGateway, fmt.Sprintf("machine %s lives on host %s, which did not answer: %v", id, owner, err))
		},
	}
	return rp, nil
}

// proxyRemote is the proxy's Remote: traffic for a machine of another
// host goes to that host's proxy over the peer channel.
type proxyRemote struct{ n *Node }

// Remote returns the proxy's view of the other hosts.
func (n *Node) Remote() *proxyRemote { return &proxyRemote{n} }

func (r *proxyRemote) Local(m model.Machine) bool { return m.Host == "" || m.Host == r.n.id }

func (r *proxyRemote) ServeHTTP(w http.ResponseWriter, req *http.Request, m model.Machine, port int) {
	rp := &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			pr.Out.URL.Scheme, pr.Out.URL.Host = "https", m.Host
			pr.Out.URL.Path = fmt.Sprintf("/cluster/v1/proxy/%s/%s/%d%s", url.PathEscape(m.App), m.ID, port, pr.In.URL.Path)
			pr.Out.URL.RawPath = ""
			pr.Out.Host = pr.In.Host
			pr.SetXForwarded()
		},
		Transport: r.n.peer.tr,
		ErrorHandler: func(w http.ResponseWriter, _ *http.Request, err error) {
			writeError(w, http.StatusBadGateway, fmt.Sprintf("app %q: machine %s on host %s did not answer: %v", m.App, m.ID, m.Host, err))
		},
	}
	rp.ServeHTTP(w, req)
}

func (r *proxyRemote) Dial(ctx context.Context, m model.Machine, port int) (net.Conn, error) {
	c, err := r.n.peer.dial(ctx, "tcp", net.JoinHostPort(m.Host, "443"))
	if err != nil {
		return nil, err
	}
	q := url.Values{"app": {m.App}, "id": {m.ID}, "port": {strconv.Itoa(port)}}
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "https://"+m.Host+"/cluster/v1/tunnel?"+q.Encode(), nil)
	req.Header.Set("Connection", "Upgrade")
	req.Header.Set("Upgrade", "torpor-tunnel")
	if deadline, ok := ctx.Deadline(); ok {
		c.SetDeadline(deadline)
	}
	if err := req.Write(c); err != nil {
		c.Close()
		return nil, err
	}
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, req)
	if err != nil {
		c.Close()
		return nil, err
	}
	if resp.StatusCode != http.StatusSwitchingProtocols {
		body, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
		c.Close()
		return nil, fmt.Errorf("host %s: %s: %s", m.Host, resp.Status, strings.TrimSpace(string(body)))
	}
	c.SetDeadline(time.Time{})
	return &bufferedConn{Conn: c, r: br}, nil
}

// bufferedConn reads what its reader buffered first.
type bufferedConn struct {
	net.Conn
	r *bufio.Reader
}

func (c *bufferedConn) Read(b []byte) (int, error) { return c.r.Read(b) }

func (c *bufferedConn) CloseWrite() error {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return c.Conn.Close()
}

// serveProxy serves an HTTP request another host's proxy routed to a
// machine of this host.
func (n *Node) serveProxy(w http.ResponseWriter, r *http.Request) {
	p := n.proxy.Load()
	rest := strings.TrimPrefix(r.URL.EscapedPath(), "/cluster/v1/proxy/")
	parts := strings.SplitN(rest, "/", 4)
	if p == nil || len(parts) < 3 {
		writeError(w, http.StatusNotFound, "no proxy here, or a malformed proxy path")
		return
	}
	app, _ := url.PathUnescape(parts[0])
	port, err := strconv.Atoi(parts[2])
	if err != nil {
		writeError(w, http.StatusBadRequest, "invalid port "+parts[2])
		return
	}
	path := "/"
	if len(parts) == 4 {
		path += parts[3]
	}
	r2 := r.Clone(r.Context())
	r2.URL.RawPath = path
	r2.URL.Path, _ = url.PathUnescape(path)
	r2.RequestURI = ""
	p.ServeMachine(w, r2, app, parts[1], port)
}

// serveTunnel connects a TCP connection another host's proxy routed to a
// machine of this host.
func (n *Node) serveTunnel(w http.ResponseWriter, r *http.Request) {
	p := n.proxy.Load()
	q := r.URL.Query()
	port, err := strconv.Atoi(q.Get("port"))
	if p == nil || err != nil {
		writeError(w, http.StatusBadRequest, "no proxy here, or an invalid port")
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), time.Minute)
	m, release, err := p.DialMachine(ctx, q.Get("app"), q.Get("id"), port)
	cancel()
	if err != nil {
		writeError(w, http.StatusServiceUnavailable, err.Error())
		return
	}
	defer release()
	defer m.Close()
	hj, ok := w.(http.Hijacker)
	if !ok {
		writeError(w, http.StatusInternalServerError, "cannot hijack the connection")
		return
	}
	c, brw, err := hj.Hijack()
	if err != nil {
		return
	}
	defer c.Close()
	brw.WriteString("HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: torpor-tunnel\r\n\r\n")
	if brw.Flush() != nil {
		return
	}
	p.Splice(&bufferedConn{Conn: c, r: brw.Reader}, m)
}

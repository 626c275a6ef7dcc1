// Package connlimit owns the admission of the connections the daemon holds
// for others: how many file descriptors they may take in all (a Budget, with
// a reserve kept for the admin socket, the API and the daemon's own files),
// how many one client or one group (an app, a machine, a listener) may hold
// open (Group), and what a connection over a limit gets (closed, or a quick
// 503 for HTTP listeners). It counts descriptors precisely: an admitted
// connection returns what it took when it is closed, whoever closes it.
//
// It does not own timeouts of the servers (each server sets its own), which
// listeners exist (package daemon and the proxy open them), nor the
// descriptor limit itself: Plan reads it and splits it.
package connlimit

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// ErrLimit is the class of every refusal: errors.Is(err, ErrLimit).
var ErrLimit = errors.New("connection limit reached")

// Budget is a number of file descriptors connections may hold, shared by
// every listener and dialer given it. A nil *Budget has no limit.
type Budget struct {
	name  string
	limit int64
	used  atomic.Int64
}

// NewBudget returns a budget of limit descriptors (limit <= 0: no limit).
func NewBudget(name string, limit int) *Budget {
	return &Budget{name: name, limit: int64(limit)}
}

// take takes n descriptors if they fit.
func (b *Budget) take(n int) bool {
	if b == nil || b.limit <= 0 {
		return true
	}
	for {
		u := b.used.Load()
		if u+int64(n) > b.limit {
			return false
		}
		if b.used.CompareAndSwap(u, u+int64(n)) {
			return true
		}
	}
}

func (b *Budget) release(n int) {
	if b != nil && b.limit > 0 {
		b.used.Add(-int64(n))
	}
}

// Used returns the descriptors taken now.
func (b *Budget) Used() int {
	if b == nil {
		return 0
	}
	return int(b.used.Load())
}

// Limit returns the budget's size (0: none).
func (b *Budget) Limit() int {
	if b == nil || b.limit <= 0 {
		return 0
	}
	return int(b.limit)
}

// Group caps the connections of one kind: at most Max in all and at most
// PerClient from one client address (0: no cap). A nil *Group caps nothing.
type Group struct {
	name      string
	max       int
	perClient int

	mu      sync.Mutex
	total   int
	clients map[string]int
}

// NewGroup returns a group named name (for refusal messages, e.g. `app
// "web"`) with the given caps.
func NewGroup(name string, max, perClient int) *Group {
	return &Group{name: name, max: max, perClient: perClient, clients: map[string]int{}}
}

// Open returns the connections the group holds now.
func (g *Group) Open() int {
	if g == nil {
		return 0
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.total
}

// take counts one connection from client ("" for a client without an
// address, e.g. a Unix socket peer: only Max applies).
func (g *Group) take(client string) error {
	if g == nil {
		return nil
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.max > 0 && g.total >= g.max {
		return fmt.Errorf("%w: %s holds %d connections, its limit", ErrLimit, g.name, g.max)
	}
	if client != "" && g.perClient > 0 && g.clients[client] >= g.perClient {
		return fmt.Errorf("%w: client %s holds %d connections to %s, the limit per client", ErrLimit, client, g.perClient, g.name)
	}
	g.total++
	if client != "" {
		g.clients[client]++
	}
	return nil
}

func (g *Group) release(client string) {
	if g == nil {
		return
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	g.total--
	if client != "" {
		if g.clients[client]--; g.clients[client] <= 0 {
			delete(g.clients, client)
		}
	}
}

// Limits is what admits one connection: descriptors from Budget, one place
// in each of Groups.
type Limits struct {
	Budget *Budget
	Groups []*Group
}

// Admit counts c (one descriptor, one place per group) and returns it
// wrapped so that closing it gives them back, or an ErrLimit error (c is
// left open: the caller refuses it).
func (l Limits) Admit(c net.Conn) (net.Conn, error) {
	client := clientOf(c.RemoteAddr())
	if !l.Budget.take(1) {
		return nil, fmt.Errorf("%w: the daemon's connections hold %d file descriptors, all it gives them (%s)", ErrLimit, l.Budget.Limit(), l.Budget.name)
	}
	for i, g := range l.Groups {
		if err := g.take(client); err != nil {
			for _, taken := range l.Groups[:i] {
				taken.release(client)
			}
			l.Budget.release(1)
			return nil, err
		}
	}
	return &Conn{Conn: c, release: func() {
		for _, g := range l.Groups {
			g.release(client)
		}
		l.Budget.release(1)
	}}, nil
}

// clientOf is the client key of a remote address: its IP for TCP, "" for
// anything else.
func clientOf(a net.Addr) string {
	if ta, ok := a.(*net.TCPAddr); ok {
		return ta.IP.String()
	}
	return ""
}

// Conn is an admitted connection; Close gives back what it took, once.
type Conn struct {
	net.Conn
	once    sync.Once
	release func()
}

// Close closes the connection and releases its descriptor and places.
func (c *Conn) Close() error {
	err := c.Conn.Close()
	c.once.Do(c.release)
	return err
}

// NetConn returns the underlying connection (e.g. a *net.UnixConn, for
// peer credentials).
func (c *Conn) NetConn() net.Conn { return c.Conn }

// CloseWrite half-closes the underlying connection when it can.
func (c *Conn) CloseWrite() error {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return c.Close()
}

// Unwrap returns the connection under any *Conn wrapping.
func Unwrap(c net.Conn) net.Conn {
	for {
		w, ok := c.(interface{ NetConn() net.Conn })
		if !ok {
			return c
		}
		c = w.NetConn()
	}
}

// Refuser answers a connection over a limit before closing it.
type Refuser func(c net.Conn, reason error)

// Close refuses by closing at once (raw TCP, where there is no protocol to
// explain in).
func Close(c net.Conn, _ error) { c.Close() }

// RefuseHTTP reads the request's headers (for at most a second), answers
// 503 with {"error": reason, "status": "unknown"} (Fly's error shape),
// "Connection: close" and Retry-After, then
// closes: the client learns at once why, instead of waiting on a connection
// nobody serves. (An answer sent before the request would be taken by
// clients for a broken connection.)
func RefuseHTTP(c net.Conn, reason error) {
	body, _ := json.Marshal(map[string]string{"error": reason.Error(), "status": "unknown"})
	c.SetDeadline(time.Now().Add(refuseTimeout))
	r := bufio.NewReader(io.LimitReader(c, 1<<16))
	for {
		line, err := r.ReadSlice('\n')
		if err != nil && !errors.Is(err, bufio.ErrBufferFull) {
			c.Close()
			return
		}
		if len(bytes.TrimRight(line, "\r\n")) == 0 {
			break
		}
	}
	fmt.Fprintf(c, "HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\nContent-Length: %d\r\nConnection: close\r\nRetry-After: 1\r\n\r\n%s\n", len(body)+1, body)
	// Half-close, then read what else the client sent for a moment: closing
	// with data unread would send a RST, which can destroy the answer
	// before the client reads it.
	if cw, ok := c.(interface{ CloseWrite() error }); ok {
		cw.CloseWrite()
	}
	c.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
	io.Copy(io.Discard, io.LimitReader(r, 1<<16))
	c.Close()
}

// refuseTimeout bounds how long one refusal holds its connection.
const refuseTimeout = time.Second

// refusing bounds the refusals in progress daemon-wide (each holds a
// descriptor for up to refuseTimeout); past it connections are just closed.
var refusing = make(chan struct{}, 128)

// Listen wraps ln: Accept returns only connections that lim admits; the
// others are given to refuse (nil: Close) and never returned. log (nil:
// slog.Default) gets a warning for the first refusal of each kind every
// minute.
func Listen(ln net.Listener, lim Limits, refuse Refuser, log *slog.Logger) net.Listener {
	if refuse == nil {
		refuse = Close
	}
	if log == nil {
		log = slog.Default()
	}
	return &listener{Listener: ln, lim: lim, refuse: refuse, log: log}
}

type listener struct {
	net.Listener
	lim    Limits
	refuse Refuser
	log    *slog.Logger

	mu     sync.Mutex
	warned time.Time
	missed int
}

func (l *listener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		ac, err := l.lim.Admit(c)
		if err == nil {
			return ac, nil
		}
		l.warn(err)
		select {
		case refusing <- struct{}{}:
			go func() {
				defer func() { <-refusing }()
				l.refuse(c, err)
			}()
		default:
			c.Close()
		}
	}
}

// warn logs a refusal at most once a minute per listener, with the number
// of refusals since the last warning.
func (l *listener) warn(err error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.missed++
	if time.Since(l.warned) < time.Minute {
		return
	}
	l.log.Warn("refusing connections over a limit", "addr", l.Addr().String(), "refused", l.missed, "err", err)
	l.warned, l.missed = time.Now(), 0
}

package proxy

import (
	"bufio"
	"net"
	"net/http"
	"time"
)

// Observer is told what the proxy does, for metrics (package metrics
// implements it). Its methods are called on the request path, some with an
// app's lock held: they must be quick and must not call back into the proxy.
type Observer interface {
	// Request is an HTTP request to the service of app on internal port
	// port, answered with status code (502 and 503 included). A request
	// whose client went away before any answer is not reported.
	Request(app string, port, code int)
	// Connection is a TCP connection accepted for the service of app on
	// internal port port.
	Connection(app string, port int)
	// Waiting is called with +1 when a request or connection of app starts
	// waiting for a machine (a wake, or capacity under hard_limit), and with
	// -1 when it stops.
	Waiting(app string, delta int)
	// Waited is how long a request or connection of app waited for a
	// machine; timedOut says it gave up after Config.WakeTimeout.
	Waited(app string, d time.Duration, timedOut bool)
	// Woke is a wake of one of app's machines that ended after d: result
	// is "started", "failed" or "timeout" (not started within WakeTimeout).
	Woke(app string, d time.Duration, result string)
}

// Wake results reported to Observer.Woke.
const (
	WakeStarted = "started"
	WakeFailed  = "failed"
	WakeTimeout = "timeout"
)

// nopObserver is the Observer of a proxy configured without one.
type nopObserver struct{}

func (nopObserver) Request(string, int, int)           {}
func (nopObserver) Connection(string, int)             {}
func (nopObserver) Waiting(string, int)                {}
func (nopObserver) Waited(string, time.Duration, bool) {}
func (nopObserver) Woke(string, time.Duration, string) {}

// codeWriter remembers the status code of an HTTP answer.
type codeWriter struct {
	http.ResponseWriter
	code int
}

func (w *codeWriter) WriteHeader(code int) {
	if w.code == 0 && code >= 200 {
		w.code = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *codeWriter) Write(b []byte) (int, error) {
	if w.code == 0 {
		w.code = http.StatusOK
	}
	return w.ResponseWriter.Write(b)
}

// Unwrap lets http.ResponseController (the reverse proxy's flushes and
// protocol upgrades) reach the underlying writer.
func (w *codeWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// Hijack takes the connection over for a protocol upgrade, which the
// reverse proxy answers on it with the machine's 101.
func (w *codeWriter) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	c, rw, err := http.NewResponseController(w.ResponseWriter).Hijack()
	if err == nil && w.code == 0 {
		w.code = http.StatusSwitchingProtocols
	}
	return c, rw, err
}

package guestapi

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"time"

	"golang.org/x/sys/unix"

	"github.com/torpor-dev/torpor/internal/connlimit"
	"github.com/torpor-dev/torpor/internal/model"
)

// accept answers 202 {"ok": true} to a request for operation name, makes
// sure the machine has read the answer, and then runs op in the background
// (see the package documentation for why in this order).
func (e *endpoint) accept(w http.ResponseWriter, r *http.Request, name string, op func(context.Context) error) {
	m, err := e.s.machines.Get(r.Context(), e.app, e.id)
	if err != nil {
		e.writeErr(w, err)
		return
	}
	if m.State != model.StateStarted {
		writeError(w, http.StatusConflict, fmt.Sprintf("machine %s is %s; only a started machine can %s itself", e.id, m.State, name))
		return
	}
	if !e.busy.CompareAndSwap(false, true) {
		writeError(w, http.StatusConflict, "an operation this machine asked for is already under way")
		return
	}
	// The connection must not outlive this response: the operation may
	// freeze or kill the machine with the connection open.
	w.Header().Set("Connection", "close")
	writeJSON(w, http.StatusAccepted, map[string]bool{"ok": true})
	if err := http.NewResponseController(w).Flush(); err != nil {
		e.s.log.Warn("in-machine API: flushing the answer", "machine", e.id, "op", name, "error", err)
	}
	if !waitRead(r.Context(), e.s.deliveryTimeout) {
		e.s.log.Warn("in-machine API: the machine did not read the answer in time", "machine", e.id, "op", name)
	}
	e.s.log.Info("machine asked for an operation on itself", "machine", e.id, "app", e.app, "op", name)
	e.s.ops.Add(1)
	go e.run(name, op)
}

// run waits settleDelay, then runs op with a context that carries Source,
// and logs its failure. The endpoint is free for another operation
// afterwards.
func (e *endpoint) run(name string, op func(context.Context) error) {
	defer e.s.ops.Done()
	defer e.busy.Store(false)
	select {
	case <-time.After(e.s.settleDelay):
	case <-e.s.ctx.Done():
		e.s.log.Warn("in-machine API closed before the operation began", "machine", e.id, "op", name)
		return
	}
	ctx, cancel := context.WithTimeout(model.WithSource(e.s.ctx, Source), e.s.opTimeout)
	defer cancel()
	if err := op(ctx); err != nil {
		e.s.log.Error("operation asked for by the machine failed", "machine", e.id, "app", e.app, "op", name, "error", err)
	}
}

// connKey is the context key of a request's connection.
type connKey struct{}

// withConn is the http.Server's ConnContext: it lets handlers reach the
// connection to watch the delivery of their answer.
func withConn(ctx context.Context, c net.Conn) context.Context {
	return context.WithValue(ctx, connKey{}, c)
}

// pollInterval is how often waitRead looks at the socket.
const pollInterval = 2 * time.Millisecond

// waitRead waits until the peer of the request's Unix connection has read
// everything sent to it, the connection is gone, or timeout passes. It
// reports whether the data was read (or the connection closed).
//
// On a Unix stream socket, SIOCOUTQ counts the bytes sent that the peer has
// not read yet (they stay charged to the sender until the receiver consumes
// them). gVisor reads the host socket only when the application reads its
// own socket, so 0 means the answer is in the application's memory.
func waitRead(ctx context.Context, timeout time.Duration) bool {
	c, _ := ctx.Value(connKey{}).(net.Conn)
	conn, ok := connlimit.Unwrap(c).(*net.UnixConn)
	if !ok {
		return false
	}
	raw, err := conn.SyscallConn()
	if err != nil {
		return false
	}
	deadline := time.Now().Add(timeout)
	for {
		var unread int
		var ioErr error
		if err := raw.Control(func(fd uintptr) {
			unread, ioErr = unix.IoctlGetInt(int(fd), unix.SIOCOUTQ)
		}); err != nil || ioErr != nil {
			return true // the connection is closed: nothing more to wait for
		}
		if unread == 0 {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(pollInterval)
	}
}

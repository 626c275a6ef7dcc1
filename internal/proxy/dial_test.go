package proxy

import (
	"context"
	"errors"
	"net"
	"os"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// fullListener listens on loopback with an accept queue that holds one
// connection and fills it, so the kernel drops further SYNs: a dial times
// out, as it does to a sandbox still booting on a loaded host.
func fullListener(t *testing.T) (fd int, addr string) {
	t.Helper()
	fd, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_STREAM, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { syscall.Close(fd) })
	if err := syscall.Bind(fd, &syscall.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Listen(fd, 0); err != nil {
		t.Fatal(err)
	}
	sa, err := syscall.Getsockname(fd)
	if err != nil {
		t.Fatal(err)
	}
	addr = (&net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: sa.(*syscall.SockaddrInet4).Port}).String()
	// Fill the queue until a dial hangs.
	for i := 0; ; i++ {
		c, err := net.DialTimeout("tcp", addr, 200*time.Millisecond)
		if err != nil {
			var ne net.Error
			if !errors.As(err, &ne) || !ne.Timeout() {
				t.Fatalf("filling the accept queue: %v", err)
			}
			return fd, addr
		}
		t.Cleanup(func() { c.Close() })
		if i > 16 {
			t.Skip("the kernel does not drop SYNs on a full accept queue here")
		}
	}
}

// inService is the machine check of a dial to a machine that stays started.
func inService() error { return nil }

// TestDialStopsWhenTheMachineLeavesService: a warm machine's refused dials
// are retried only while the proxy sees it started; once it does not, the
// dial ends at once with why.
func TestDialStopsWhenTheMachineLeavesService(t *testing.T) {
	addr := freeAddr(t) // nothing listens: refused, retried while warm
	var stopped atomic.Bool
	go func() {
		time.Sleep(300 * time.Millisecond)
		stopped.Store(true)
	}()
	check := func() error {
		if stopped.Load() {
			return errors.New("machine m1 is stopped")
		}
		return nil
	}
	begin := time.Now()
	_, err := dialRetrying(context.Background(), "tcp", addr, time.Now().Add(time.Minute), check)
	took := time.Since(begin)
	if err == nil || !strings.Contains(err.Error(), "machine m1 is stopped") {
		t.Fatalf("dial to a machine that left service: %v", err)
	}
	if !strings.Contains(err.Error(), "refused") {
		t.Errorf("the error does not say what the last dial met: %v", err)
	}
	if took > 30*time.Second {
		t.Fatalf("the dial went on for %s after the machine left service", took)
	}
}

// TestDialRetriesATimeoutWhileWarm: a machine that just started and leaves
// a SYN unanswered gets another try until its warm window ends; after the
// window, the timeout is the answer.
func TestDialRetriesATimeoutWhileWarm(t *testing.T) {
	defer func(d time.Duration) { dialAttemptTimeout = d }(dialAttemptTimeout)
	dialAttemptTimeout = 150 * time.Millisecond
	fd, addr := fullListener(t)

	// Past the warm window: one attempt, and its timeout.
	begin := time.Now()
	if _, err := dialRetrying(context.Background(), "tcp", addr, time.Now(), inService); err == nil {
		t.Fatal("a dial to a full queue succeeded")
	} else if ne, ok := err.(net.Error); !ok || !ne.Timeout() {
		t.Fatalf("want a timeout, got %v", err)
	}
	if took := time.Since(begin); took > 2*time.Second {
		t.Fatalf("an unwarm dial retried: %s", took)
	}

	// Warm: the queue drains after ~0.5 s (the app got to its accept loop)
	// and a later attempt connects.
	done := make(chan struct{})
	defer close(done)
	go func() {
		time.Sleep(500 * time.Millisecond)
		syscall.SetNonblock(fd, true)
		for {
			select {
			case <-done:
				return
			case <-time.After(10 * time.Millisecond):
			}
			for {
				nfd, _, err := syscall.Accept(fd)
				if err != nil {
					break
				}
				syscall.Close(nfd)
			}
		}
	}()
	c, err := dialRetrying(context.Background(), "tcp", addr, time.Now().Add(10*time.Second), inService)
	if err != nil {
		t.Fatalf("a warm machine's dial was not retried past a timeout: %v", err)
	}
	c.Close()

	// The caller's own deadline is not retried.
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	<-ctx.Done()
	if retryableDial(ctx, context.DeadlineExceeded) {
		t.Fatal("a caller's expired context counted as retryable")
	}
}

// TestRetryableDialErrors: what a machine still booting answers a dial
// with is retried; other failures and the caller's own end are not.
func TestRetryableDialErrors(t *testing.T) {
	op := func(errno error) error {
		return &net.OpError{Op: "dial", Net: "tcp", Err: &os.SyscallError{Syscall: "connect", Err: errno}}
	}
	ctx := context.Background()
	for _, tc := range []struct {
		err  error
		want bool
	}{
		{op(syscall.ECONNREFUSED), true},
		{op(syscall.EHOSTUNREACH), false},
		{op(syscall.ENETUNREACH), false},
		{op(syscall.EACCES), false},
		{errors.New("no address"), false},
	} {
		if got := retryableDial(ctx, tc.err); got != tc.want {
			t.Errorf("retryableDial(%v) = %v, want %v", tc.err, got, tc.want)
		}
	}
	done, cancel := context.WithCancel(ctx)
	cancel()
	if retryableDial(done, op(syscall.ECONNREFUSED)) {
		t.Error("retried after the caller's context ended")
	}
}

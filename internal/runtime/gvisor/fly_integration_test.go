package gvisor

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/torpor-dev/torpor/internal/runtime"
)

// listenerApp is counterApp that also listens on TCP 8080 (all addresses),
// TCP 127.0.0.1:9090 and UDP 5353, from the working directory /tmp.
const listenerApp = `
import os, socket, sys, time
os.chdir('/tmp')
t = socket.socket(); t.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); t.bind(('0.0.0.0', 8080)); t.listen(5)
l = socket.socket(); l.bind(('127.0.0.1', 9090)); l.listen(5)
u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); u.bind(('0.0.0.0', 5353))
heap = bytearray(16 << 20)
for j in range(0, len(heap), 4096):
    heap[j] = 1
i = 0
while True:
    print(i, flush=True)
    i += 1
    time.sleep(0.05)
`

// TestRunProcessesAndLiveCheckpoint checks Run (stdout and stderr apart,
// stdin, exit codes, signals, output bounds, programs that do not exist, a
// context that ends), Processes (command line, directory, memory,
// listening sockets) and CheckpointLive (the sandbox runs on from memory,
// and the image restores).
func TestRunProcessesAndLiveCheckpoint(t *testing.T) {
	t.Parallel()
	rt := newTestRuntime(t)
	ctx, con, spec := bootApp(t, rt, "flyops", listenerApp)
	waitFor(t, 30*time.Second, "counter output", func() bool { return len(numbers(con.snapshot())) >= 3 })

	t.Run("Run", func(t *testing.T) {
		res, err := rt.Run(ctx, spec.ID, runtime.Command{Args: []string{"python3", "-c",
			"import sys; print('to out'); print('to err', file=sys.stderr); sys.exit(3)"}})
		if err != nil || string(res.Stdout) != "to out\n" || string(res.Stderr) != "to err\n" || res.ExitCode != 3 || res.Signal != "" {
			t.Errorf("Run = %+v (stdout %q, stderr %q), %v", res, res.Stdout, res.Stderr, err)
		}
		res, err = rt.Run(ctx, spec.ID, runtime.Command{Args: []string{"cat"}, Stdin: []byte("from stdin")})
		if err != nil || string(res.Stdout) != "from stdin" || res.ExitCode != 0 {
			t.Errorf("Run cat = %+v, %v", res, err)
		}
		res, err = rt.Run(ctx, spec.ID, runtime.Command{Args: []string{"sh", "-c", "kill -TERM $$"}})
		if err != nil || res.ExitCode != -1 || res.Signal != "SIGTERM" {
			t.Errorf("Run of a command killed by SIGTERM = %+v, %v", res, err)
		}
		res, err = rt.Run(ctx, spec.ID, runtime.Command{Args: []string{"python3", "-c", "print('x' * 100)"}, MaxOutput: 10})
		if err != nil || !res.Truncated || string(res.Stdout) != "xxxxxxxxx\n" {
			t.Errorf("Run with MaxOutput 10 = %+v (%q), %v", res, res.Stdout, err)
		}
		res, err = rt.Run(ctx, spec.ID, runtime.Command{Args: []string{"/no/such/program"}})
		var re *Error
		if !errors.As(err, &re) || res.ExitCode != 0 {
			t.Errorf("Run of a missing program = %+v, %v; want an *Error", res, err)
		} else {
			t.Logf("missing program: %v", err)
		}
		short, stop := context.WithTimeout(ctx, 500*time.Millisecond)
		defer stop()
		begin := time.Now()
		if _, err := rt.Run(short, spec.ID, runtime.Command{Args: []string{"sleep", "60"}}); err == nil || time.Since(begin) > 20*time.Second {
			t.Errorf("Run of sleep 60 with a 500 ms context: %v after %s", err, time.Since(begin))
		}
		procs, err := rt.Processes(ctx, spec.ID)
		if err != nil {
			t.Fatal(err)
		}
		for _, p := range procs {
			if strings.HasPrefix(p.Command, "sleep") {
				t.Errorf("the timed-out sleep still runs: %+v", p)
			}
		}
		if _, err := rt.Run(ctx, "torpor-no-such-sandbox", runtime.Command{Args: []string{"true"}}); !errors.Is(err, runtime.ErrNotFound) {
			t.Errorf("Run in a missing sandbox = %v, want ErrNotFound", err)
		}
	})

	t.Run("Processes", func(t *testing.T) {
		procs, err := rt.Processes(ctx, spec.ID)
		if err != nil {
			t.Fatal(err)
		}
		var app *runtime.Process
		for i := range procs {
			if procs[i].PID == 1 {
				app = &procs[i]
			}
		}
		if app == nil {
			t.Fatalf("no PID 1 in %+v", procs)
		}
		t.Logf("PID 1: %+v", *app)
		if !strings.HasPrefix(app.Command, "/usr/bin/python3 -u -c") || app.Cwd != "/tmp" || app.RSS < 16<<20 || app.CPUTime == 0 {
			t.Errorf("PID 1 = %+v: want python3's command line, cwd /tmp, RSS over 16 MiB, some CPU time", *app)
		}
		want := map[runtime.Socket]bool{
			{Proto: "tcp", Address: "0.0.0.0:8080"}:   false,
			{Proto: "tcp", Address: "127.0.0.1:9090"}: false,
			{Proto: "udp", Address: "0.0.0.0:5353"}:   false,
		}
		for _, s := range app.Listen {
			if _, ok := want[s]; ok {
				want[s] = true
			}
		}
		for s, found := range want {
			if !found {
				t.Errorf("socket %+v not among %+v", s, app.Listen)
			}
		}
		if _, err := rt.Processes(ctx, "torpor-no-such-sandbox"); !errors.Is(err, runtime.ErrNotFound) {
			t.Errorf("Processes of a missing sandbox = %v, want ErrNotFound", err)
		}
	})

	t.Run("CheckpointLive", func(t *testing.T) {
		if err := rt.SignalAll(ctx, spec.ID, "SIGSTOP"); err != nil {
			t.Fatal(err)
		}
		frozen := numbers(con.settle(200 * time.Millisecond))
		image := t.TempDir()
		begin := time.Now()
		if err := rt.CheckpointLive(ctx, spec.ID, image); err != nil {
			t.Fatal(err)
		}
		t.Logf("CheckpointLive took %s, image %d bytes", time.Since(begin), dirSize(t, image))
		mustState(t, rt, spec.ID, runtime.StatusRunning)
		if err := rt.SignalAll(ctx, spec.ID, "SIGCONT"); err != nil {
			t.Fatal(err)
		}
		last := frozen[len(frozen)-1]
		waitFor(t, 20*time.Second, "counter output after the live checkpoint", func() bool {
			return len(numbers(con.snapshot())) >= len(frozen)+3
		})
		if after := numbers(con.snapshot())[len(frozen)]; after != last+1 {
			t.Fatalf("after the live checkpoint the counter went on at %d, want %d: the sandbox did not run on from memory", after, last+1)
		}
		// The image is a whole one: another sandbox restores from it.
		con2 := newConsole(t)
		spec2 := newSpec(t, rt, "flyops-restored", con2.path, listenerApp)
		spec2.Bundle = t.TempDir()
		if err := rt.Kill(ctx, spec.ID); err != nil { // the ports are the same
			t.Fatal(err)
		}
		if err := rt.Restore(ctx, spec2, image); err != nil {
			t.Fatal(err)
		}
		if err := rt.SignalAll(ctx, spec2.ID, "SIGCONT"); err != nil {
			t.Fatal(err)
		}
		waitFor(t, 20*time.Second, "counter output of the restored sandbox", func() bool { return len(numbers(con2.snapshot())) >= 1 })
		if got := numbers(con2.snapshot())[0]; got != last+1 {
			t.Fatalf("restored sandbox counts from %d, want %d", got, last+1)
		}
		if _, err := os.Stat(filepath.Join(image, "checkpoint.img")); err != nil {
			t.Fatal(err)
		}
	})
}

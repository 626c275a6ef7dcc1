package daemon_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/torpor-dev/torpor/internal/model"
)

// TestAdoptedMachinesAnswerAfterRestart is issue 17's F1: a daemon restart,
// clean (SIGTERM) or not (kill -9), must leave every adopted machine
// answering its app, directly on its private address and through the proxy.
// Adoption used to put the machine's address back on the kernel side of its
// namespace's eth0, which runsc --network=sandbox had moved into gVisor's
// netstack: the namespace's kernel then answered every SYN with a RST.
func TestAdoptedMachinesAnswerAfterRestart(t *testing.T) {
	d := newDaemon(t)
	port := freePort(t)
	m := d.create(serviceConfig(port, []string{"http"}, model.AutostopOff, 0))
	first := d.httpGet(d.get(m.ID))
	waitProxy(t, port)

	for _, restart := range []struct {
		name string
		stop func()
	}{{"SIGTERM", d.stop}, {"kill -9", d.crash}} {
		restart.stop()
		d.run()
		d.wantState(m.ID, model.StateStarted)
		d.answers(m.ID, port, restart.name)
		if st := d.httpGet(d.get(m.ID)); st.Started != first.Started {
			t.Fatalf("after a %s restart the app was restarted (started %v, then %v), not adopted", restart.name, first.Started, st.Started)
		}
	}
}

// answers checks that a started machine answers its app on port 8080,
// directly on its private address and, when port is not 0, through the
// proxy on that host port. It gives a machine that has just been
// cold-started 20 s to open its socket; an adopted machine cut off from its
// network (F1) refuses for good.
func (d *daemon) answers(id string, port int, label string) {
	d.t.Helper()
	m := d.get(id)
	if m.State != model.StateStarted {
		d.t.Fatalf("%s: machine %s is %s, want started", label, id, m.State)
	}
	deadline := time.Now().Add(20 * time.Second)
	for {
		_, err := directGet(m)
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			d.t.Fatalf("%s: started machine %s does not answer on %s:8080: %v", label, id, m.PrivateIP, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if port == 0 {
		return
	}
	if _, err := proxyGet(port); err != nil {
		d.t.Fatalf("%s: started machine %s does not answer through the proxy on port %d: %v", label, id, port, err)
	}
}

// directGet asks the machine's app once, on its private address.
func directGet(m model.Machine) (appState, error) {
	var st appState
	cl := http.Client{Timeout: 5 * time.Second}
	resp, err := cl.Get("http://" + net.JoinHostPort(m.PrivateIP, "8080") + "/")
	if err != nil {
		return st, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return st, fmt.Errorf("%s", resp.Status)
	}
	return st, json.NewDecoder(resp.Body).Decode(&st)
}

// proxyGet asks the app through the proxy on host port port. Only a refused
// connection to the proxy itself is retried (for up to 10 s: a restarted
// daemon publishes its ports a moment after its API answers); any answer but
// a 200 is an error.
func proxyGet(port int) (appState, error) {
	var st appState
	deadline := time.Now().Add(10 * time.Second)
	for {
		resp, err := proxyClient.Get(fmt.Sprintf("http://127.0.0.1:%d/", port))
		if err != nil {
			if errors.Is(err, syscall.ECONNREFUSED) && time.Now().Before(deadline) {
				time.Sleep(20 * time.Millisecond)
				continue
			}
			return st, err
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != http.StatusOK {
			return st, fmt.Errorf("%s: %s", resp.Status, body)
		}
		return st, json.Unmarshal(body, &st)
	}
}

// TestRestartLeavesNoOrphanedRunscWait is issue 17's F10: each daemon
// supervises a running machine with a `runsc wait`, which used to outlive
// the daemon (~22 MiB each), so every restart left one more per machine.
// After a clean and a kill -9 restart each machine has exactly one.
func TestRestartLeavesNoOrphanedRunscWait(t *testing.T) {
	d := newDaemon(t)
	ms := []model.Machine{d.create(counterConfig(nil)), d.create(counterConfig(nil))}
	for _, restart := range []struct {
		name string
		stop func()
	}{{"SIGTERM", d.stop}, {"kill -9", d.crash}, {"SIGTERM again", d.stop}} {
		restart.stop()
		d.run()
		for _, m := range ms {
			d.wantState(m.ID, model.StateStarted)
			// A killed daemon's waits get SIGKILL from the kernel, which
			// takes a moment to land.
			deadline := time.Now().Add(10 * time.Second)
			for n := len(d.runscWaits(m.ID)); n != 1; n = len(d.runscWaits(m.ID)) {
				if time.Now().After(deadline) {
					t.Fatalf("after a %s restart machine %s has %d `runsc wait` processes, want 1: %v", restart.name, m.ID, n, d.runscWaits(m.ID))
				}
				time.Sleep(50 * time.Millisecond)
			}
		}
	}
}

// runscWaits returns the pids of the live `runsc wait` processes of the
// daemon's data directory for machine id.
func (d *daemon) runscWaits(id string) []int {
	root := []byte("--root=" + filepath.Join(d.dataDir, "runsc") + "\x00")
	var out []int
	for _, pid := range runscProcs(d.dataDir, d.cmd.Process.Pid) {
		argv, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
		if bytes.Contains(argv, root) && bytes.Contains(argv, []byte("\x00wait\x00torpor-"+id+"\x00")) && processAlive(pid) {
			out = append(out, pid)
		}
	}
	return out
}

// TestRestartPolicyBacksOffAndGivesUp is issue 17's F11 on the real
// runtime: a process that fails at once, with restart.max_retries 3, is
// restarted 3 times, after 200, 400 and 800 ms (--restart-backoff 200ms),
// then stays stopped. Before the fix restart.max_retries was ignored and
// each exit was cold-started again at once (167 cold starts in 30 s).
func TestRestartPolicyBacksOffAndGivesUp(t *testing.T) {
	d := newParallelDaemon(t, "--restart-backoff", "200ms", "--restart-backoff-max", "10s")
	cfg := counterConfig(nil)
	cfg.Init.Exec = []string{"python3", "-c", "import sys; sys.exit(3)"}
	cfg.Restart = &model.RestartPolicy{Policy: "on-failure", MaxRetries: 3}
	m, err := d.c.CreateMachine(ctx(t), d.app, model.CreateMachineRequest{Config: cfg})
	if err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(60 * time.Second)
	var backoffs []int64
	gaveUp := false
	for !gaveUp {
		if time.Now().After(deadline) {
			t.Fatalf("the restart policy did not give up within 60 s: %+v", d.get(m.ID))
		}
		time.Sleep(100 * time.Millisecond)
		evs, err := d.c.Events(ctx(t), d.app, m.ID)
		if err != nil {
			t.Fatal(err)
		}
		backoffs = backoffs[:0]
		for i := len(evs) - 1; i >= 0; i-- {
			if ev := evs[i]; ev.Type == model.EventRestart {
				switch ev.Status {
				case "pending":
					backoffs = append(backoffs, int64(ev.Field("backoff_ms").(float64)))
				case "failed":
					gaveUp = true
				}
			}
		}
	}
	time.Sleep(2 * time.Second) // longer than the next backoff would be
	got := d.get(m.ID)
	t.Logf("boot generations %d, backoffs %v ms, state %s", got.BootGeneration, backoffs, got.State)
	if got.State != model.StateStopped || got.BootGeneration != 4 {
		t.Fatalf("after giving up: %s in boot generation %d, want stopped in 4 (1 boot + 3 restarts)", got.State, got.BootGeneration)
	}
	if len(backoffs) != 3 || backoffs[0] != 200 || backoffs[1] != 400 || backoffs[2] != 800 {
		t.Fatalf("backoffs = %v ms, want [200 400 800]", backoffs)
	}
}

package daemon_test

import (
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/torpor-dev/torpor/internal/fence"
	"github.com/torpor-dev/torpor/internal/identifiers"
	"github.com/torpor-dev/torpor/internal/model"
)

// probe GETs a machine's app at addr every 50 ms until stopped, recording
// when each request that was answered was sent.
type probe struct {
	mu       sync.Mutex
	answered []time.Time
	stop     chan struct{}
	done     chan struct{}
}

func startProbe(addr string) *probe {
	p := &probe{stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(p.done)
		cl := http.Client{Timeout: 300 * time.Millisecond}
		for {
			select {
			case <-p.stop:
				return
			default:
			}
			sent := time.Now()
			if resp, err := cl.Get("http://" + addr + ":8080/"); err == nil {
				resp.Body.Close()
				if resp.StatusCode == http.StatusOK {
					p.mu.Lock()
					p.answered = append(p.answered, sent)
					p.mu.Unlock()
				}
			}
			time.Sleep(50 * time.Millisecond)
		}
	}()
	return p
}

func (p *probe) end() []time.Time {
	close(p.stop)
	<-p.done
	return p.answered
}

// TestClusterDaemonKilledFenced (issue 15): kill -9 only the daemon of h0
// and freeze (SIGSTOP: a hang) only the daemon of h2, each with a running
// machine with restart policy "always" (their sandboxes run on). Their
// fencing watchdogs freeze the sandboxes before the leases expire, so
// before h1 restarts the machines, and the old sandboxes never answer
// after that. h0 started again and h2 resumed remove the sandboxes of the
// machines they no longer own.
func TestClusterDaemonKilledFenced(t *testing.T) {
	t.Parallel()
	tc := newTestCluster(t, false)
	app := tc.app("fenced")
	victims := []int{0, 2}
	olds := map[int]model.Machine{}
	probes := map[int]*probe{}
	for _, i := range victims {
		host := "h" + string(rune('0'+i))
		m := tc.createOn(0, app, host, restartAlways())
		tc.hosts[i].waitCount(m.ID, 2)
		olds[i] = tc.waitMachine(0, app, m.ID, model.StateStarted, host, 30*time.Second)
		probes[i] = startProbe(olds[i].PrivateIP)
	}
	hung := tc.hosts[2].cmd.Process
	t.Cleanup(func() { hung.Signal(syscall.SIGCONT) }) // before the host's own cleanup

	killed := time.Now()
	tc.hosts[0].crash()          // the daemon alone: its sandbox runs on
	hung.Signal(syscall.SIGSTOP) // a hang
	for _, i := range victims {
		old := olds[i]
		moved := tc.waitStartedOff(1, app, old.ID, old.Host)
		var moveAt time.Time
		evs, _ := tc.hosts[1].c.Events(ctx(t), app, old.ID)
		for _, e := range evs {
			if e.Type == model.EventMove {
				moveAt = time.UnixMilli(e.Timestamp)
				break
			}
		}
		if moveAt.IsZero() {
			t.Fatalf("no move event: %+v", evs)
		}
		after := tc.hosts[1].httpGet(moved) // the new one answers
		answered := probes[i].end()
		dir := tc.hosts[i].dataDir
		mk, ok, err := fence.ReadMarker(dir)
		if err != nil || !ok || mk.FrozenAt.IsZero() {
			log, _ := os.ReadFile(filepath.Join(dir, fence.LogFile))
			t.Fatalf("%s: the watchdog froze nothing: %+v %v %v\n%s", old.Host, mk, ok, err, log)
		}
		if !slices.Contains(mk.Sandboxes, identifiers.SandboxID(old.ID)) {
			t.Fatalf("%s: the watchdog's marker misses the machine's sandbox: %+v", old.Host, mk)
		}
		if !mk.FrozenAt.Before(moveAt) {
			t.Fatalf("%s: frozen at %s, after the machine started on %s at %s", old.Host, mk.FrozenAt, moved.Host, moveAt)
		}
		for _, at := range answered {
			if at.After(mk.FrozenAt) {
				t.Errorf("%s: the old sandbox answered a request sent at %s, after it was frozen at %s", old.Host, at, mk.FrozenAt)
			}
		}
		t.Logf("%s: daemon stopped at 0 (%s); the old sandbox's last answer to a request sent at %s; frozen at %s; "+
			"restarted on %s at %s (TTL %s); the new one answers (count %d)", old.Host,
			map[bool]string{true: "kill -9", false: "SIGSTOP"}[i == 0],
			answered[len(answered)-1].Sub(killed).Round(time.Millisecond), mk.FrozenAt.Sub(killed).Round(time.Millisecond),
			moved.Host, moveAt.Sub(killed).Round(time.Millisecond), tc.ttl, after.Count)
		if o := tc.owner(old.ID); o != moved.Host {
			t.Fatalf("machine %s is owned by %q, want %s", old.ID, o, moved.Host)
		}
	}

	// The daemons come back: the machines are not theirs any more.
	tc.restart(0)
	hung.Signal(syscall.SIGCONT)
	for _, i := range victims {
		host := olds[i].Host
		tc.waitHostStatus(1, host, "up", 30*time.Second)
		deadline := time.Now().Add(30 * time.Second)
		for len(tc.sandboxes(i)) != 0 || fence.HasMarker(tc.hosts[i].dataDir) {
			if time.Now().After(deadline) {
				t.Fatalf("%s back: sandboxes %v, watchdog marker left: %v", host, tc.sandboxes(i), fence.HasMarker(tc.hosts[i].dataDir))
			}
			time.Sleep(100 * time.Millisecond)
		}
		if pid, _ := os.ReadFile(filepath.Join(tc.hosts[i].dataDir, fence.PIDFile)); len(pid) == 0 {
			t.Fatalf("%s has no fencing watchdog", host)
		}
	}
	log, _ := os.ReadFile(filepath.Join(tc.hosts[0].dataDir, "daemon.log"))
	if !strings.Contains(string(log), "started the fencing watchdog") {
		t.Fatal("h0's daemon started no fencing watchdog")
	}
}

package daemon_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/torpor-dev/torpor/internal/client"
	"github.com/torpor-dev/torpor/internal/model"
)

// TestSoak runs many machines (TORPOR_SOAK_MACHINES, default 50) through
// start → suspend → resume → stop cycles for TORPOR_SOAK_DURATION (default
// 2m), driven concurrently by several API clients (TORPOR_SOAK_CLIENTS,
// default 5); the last client drives its machines through the proxy, so its
// resumes and cold starts are the proxy's auto-starts. Every machine belongs
// to exactly one client, so no two operations legitimately conflict: any
// API error or failed HTTP check fails the test.
//
// Around the load it counts what the daemon holds on the host (processes,
// mounts, network namespaces and links, files, descriptors, goroutines) and
// checks that stopped machines hold no process or mount and that destroying
// everything returns every count to its baseline. It samples the daemon's
// memory throughout and bounds its growth after a warm-up, and fails on any
// error line in the daemon's log.
func TestSoak(t *testing.T) {
	if testing.Short() {
		t.Skip("soak test")
	}
	n := envInt(t, "TORPOR_SOAK_MACHINES", 50)
	nClients := max(envInt(t, "TORPOR_SOAK_CLIENTS", 5), 1)
	dur, err := time.ParseDuration(envOr("TORPOR_SOAK_DURATION", "2m"))
	if err != nil {
		t.Fatalf("TORPOR_SOAK_DURATION: %v", err)
	}
	runDir, err := os.MkdirTemp("", "tps-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(runDir) })
	// The proxy waits for a wake as long as an API call may take: on this
	// shared 2-core host a resume under load can take over 30 s (the
	// default), and this test is about errors and leaks, not latency.
	d := newDaemon(t, "--run-dir", runDir, "--pprof", "--proxy-wake-timeout", opTimeout.String())
	s := &soak{t: t, d: d, stats: newOpStats(), counter: &counter{d: d, runDir: runDir,
		bridgeOf: bridgePrefixOf(testNetworkRange())}}

	base := s.settledCount(nil)
	baseFiles := append(listFiles(d.dataDir), listFiles(runDir)...)
	t.Logf("baseline:            %v", base)

	s.setUp(n, nClients)
	s.measureHost()
	series := s.runMeasured(n, nClients, dur)
	if !t.Failed() { // else machines may be in any state
		stopped := s.settledCount(func(c hostCounts) bool { return c.Procs == base.Procs && c.Mounts == base.Mounts })
		t.Logf("all stopped:         %v", stopped)
		s.checkStopped(base, stopped, n)
	}

	s.tearDown()
	final := s.settledCount(func(c hostCounts) bool { return c.leakable() == base.leakable() })
	t.Logf("after destroy:       %v", final)
	if final.leakable() != base.leakable() {
		t.Errorf("leak: after destroying everything\n  %v\nwant the baseline (threads aside)\n  %v\nmounts: %v\nnew files: %v",
			final, base, mountPointsUnder(d.dataDir, runDir), newFiles(baseFiles, append(listFiles(d.dataDir), listFiles(runDir)...)))
	}
	checkNetworkState(t, d.dataDir)
	checkMemory(t, series)
	checkDaemonLog(t, d.log())
}

// runMeasured runs the soak for dur and logs its operations and CPU use;
// it returns the daemon's memory samples.
func (s *soak) runMeasured(n, nClients int, dur time.Duration) []memSample {
	pid := s.d.cmd.Process.Pid
	mem := startMemSampler(s.d, 2*time.Second)
	cpu0, children0 := procCPUTicks(pid), procChildTicks(pid)
	begin := time.Now()
	s.run(time.Now().Add(dur))
	soakTime := time.Since(begin)
	series := mem.stop()
	daemonCPU := float64(procCPUTicks(pid)-cpu0) / 100
	runscCPU := float64(procChildTicks(pid)-children0) / 100
	sandboxCPU := mem.sandboxCPU()
	s.t.Logf("soak: %d machines, %d clients, %s (asked %s); CPU seconds: daemon %.1f, runsc commands %.1f, sandboxes ≥ %.1f; "+
		"%.2f cores on average; load average %s",
		n, nClients, soakTime.Round(time.Second), dur, daemonCPU, runscCPU, sandboxCPU,
		(daemonCPU+runscCPU+sandboxCPU)/soakTime.Seconds(), loadAvg())
	s.stats.log(s.t, soakTime)
	return series
}

// checkDaemonLog logs the daemon's warnings and fails on its errors: a
// soak with no fault injected should cause neither.
func checkDaemonLog(t *testing.T, log string) {
	var warns, errs []string
	for _, line := range strings.Split(log, "\n") {
		switch {
		case strings.Contains(line, "level=ERROR"):
			errs = append(errs, line)
		case strings.Contains(line, "level=WARN"):
			warns = append(warns, line)
		}
	}
	t.Logf("daemon log: %d warnings, %d errors", len(warns), len(errs))
	for _, l := range warns[:min(len(warns), 10)] {
		t.Logf("  %s", l)
	}
	if len(errs) > 0 {
		t.Errorf("the daemon logged %d errors, first: %s", len(errs), errs[0])
	}
}

// soak is the state of one soak test.
type soak struct {
	t       *testing.T
	d       *daemon
	stats   *opStats
	counter *counter
	clients []*soakClient
}

// soakClient is one API client and the machines it owns.
type soakClient struct {
	c        *client.Client
	proxy    bool // drive wakes through the proxy
	apps     []string
	machines []soakMachine
}

// soakMachine is one machine of a client; port is its proxy port, if any.
type soakMachine struct {
	app  string
	id   string
	ip   string
	port int
}

// soakConfig is the demo app kept small: a tiny table, a slow counter.
func soakConfig() model.MachineConfig {
	cfg := counterConfig(map[string]string{"TABLE_SIZE": "1000", "TICK": "1"})
	cfg.Guest.MemoryMB = 128
	return cfg
}

// setUp creates the clients, their apps and their machines (started), all
// clients at once.
func (s *soak) setUp(n, nClients int) {
	t := s.t
	for i := 0; i < nClients; i++ {
		c, err := client.New("unix://"+s.d.sock, "")
		if err != nil {
			t.Fatal(err)
		}
		s.clients = append(s.clients, &soakClient{c: c, proxy: nClients > 1 && i == nClients-1})
	}
	begin := time.Now()
	var wg sync.WaitGroup
	errs := make(chan error, n)
	var mu sync.Mutex
	for i := 0; i < n; i++ {
		sc := s.clients[i%nClients]
		m := soakMachine{app: fmt.Sprintf("%s-c%d", s.d.app, i%nClients)}
		cfg := soakConfig()
		if sc.proxy {
			// One app per proxied machine: the proxy wakes "a machine of
			// the app", and this client must know which one it woke.
			m.app = fmt.Sprintf("%s-p%d", s.d.app, i)
			m.port = freePort(t)
			cfg = serviceConfig(m.port, []string{"http"}, model.AutostopOff, 0)
			cfg.Env, cfg.Guest = soakConfig().Env, soakConfig().Guest
		}
		if !contains(sc.apps, m.app) {
			if _, err := sc.c.CreateApp(ctx(t), m.app, ""); err != nil {
				t.Fatal(err)
			}
			sc.apps = append(sc.apps, m.app)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			c, cancel := context.WithTimeout(context.Background(), opTimeout)
			defer cancel()
			created, err := sc.c.CreateMachine(c, m.app, model.CreateMachineRequest{Config: cfg})
			if err != nil {
				errs <- fmt.Errorf("create in %s: %w", m.app, err)
				return
			}
			m.id, m.ip = created.ID, created.PrivateIP
			mu.Lock()
			sc.machines = append(sc.machines, m)
			s.counter.ids = append(s.counter.ids, m.id)
			mu.Unlock()
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if t.Failed() {
		t.FailNow()
	}
	t.Logf("created %d started machines in %s", n, time.Since(begin).Round(time.Millisecond))
}

// measureHost logs what the started machines cost the host: memory (sum of
// the proportional set sizes of the sandbox processes) and CPU while idle.
func (s *soak) measureHost() {
	procs := runscProcs(s.d.dataDir, s.d.cmd.Process.Pid)
	pss := 0
	var cpu0 int64
	for _, p := range procs {
		pss += max(procPssKB(p), 0)
		cpu0 += procCPUTicks(p)
	}
	const idle = 10 * time.Second
	time.Sleep(idle)
	var cpu1 int64
	for _, p := range procs {
		cpu1 += procCPUTicks(p)
	}
	s.t.Logf("host cost of %d started machines: %d processes, PSS %.0f MiB (%.1f MiB/machine), idle CPU %.2f cores; daemon RSS %d MiB",
		len(s.counter.ids), len(procs), float64(pss)/1024, float64(pss)/1024/float64(len(s.counter.ids)),
		float64(cpu1-cpu0)/100/idle.Seconds(), procStatus(s.d.cmd.Process.Pid, "VmRSS")/1024)
}

// run cycles every machine until deadline; each ends stopped.
func (s *soak) run(deadline time.Time) {
	var wg sync.WaitGroup
	for _, sc := range s.clients {
		for _, m := range sc.machines {
			wg.Add(1)
			go func() {
				defer wg.Done()
				var err error
				if sc.proxy {
					err = s.cycleProxied(sc.c, m, deadline)
				} else {
					err = s.cycleDirect(sc.c, m, deadline)
				}
				if err != nil {
					s.t.Errorf("machine %s (%s): %v", m.id, m.app, err)
				}
			}()
		}
	}
	wg.Wait()
}

// cycleDirect drives one started machine through the API until deadline:
// HTTP check, suspend, resume (same process, counter not gone back), HTTP
// check, stop, cold start. It returns with the machine stopped.
func (s *soak) cycleDirect(c *client.Client, m soakMachine, deadline time.Time) error {
	for {
		before, err := s.timedGet("http", m.ip)
		if err != nil {
			return err
		}
		if err := s.timed("suspend", func(ctx context.Context) error { return c.Suspend(ctx, m.app, m.id) }); err != nil {
			return fmt.Errorf("suspend: %w", err)
		}
		var resp model.StartResponse
		if err := s.timed("resume", func(ctx context.Context) (err error) { resp, err = c.Start(ctx, m.app, m.id); return }); err != nil {
			return fmt.Errorf("resume: %w", err)
		}
		after, err := s.timedGet("http-after-resume", m.ip)
		if err != nil {
			return err
		}
		if !resp.FromSnapshot || after.Started != before.Started || after.Count < before.Count {
			return fmt.Errorf("resume lost the app's state: from_snapshot=%v, before %+v, after %+v", resp.FromSnapshot, before, after)
		}
		if err := s.timed("stop", func(ctx context.Context) error { return c.Stop(ctx, m.app, m.id, model.StopRequest{}) }); err != nil {
			return fmt.Errorf("stop: %w", err)
		}
		if time.Now().After(deadline) {
			return nil
		}
		if err := s.timed("cold-start", func(ctx context.Context) (err error) { resp, err = c.Start(ctx, m.app, m.id); return }); err != nil {
			return fmt.Errorf("cold start: %w", err)
		}
		if resp.FromSnapshot || resp.PreviousState != model.StateStopped {
			return fmt.Errorf("start of a stopped machine answered %+v", resp)
		}
	}
}

// cycleProxied drives one started machine whose app publishes it on the
// proxy: a request, a suspend over the API, a request that the proxy
// answers by resuming it, a stop, a request that cold-starts it. It returns
// with the machine stopped.
func (s *soak) cycleProxied(c *client.Client, m soakMachine, deadline time.Time) error {
	first, err := s.timedProxyGet("proxy-http", m.port)
	if err != nil {
		return err
	}
	for {
		if err := s.timed("suspend", func(ctx context.Context) error { return c.Suspend(ctx, m.app, m.id) }); err != nil {
			return fmt.Errorf("suspend: %w", err)
		}
		woken, err := s.timedProxyGet("proxy-resume", m.port)
		if err != nil {
			return err
		}
		if woken.Started != first.Started || woken.Count < first.Count {
			return fmt.Errorf("proxy wake did not resume the same process: before %+v, after %+v", first, woken)
		}
		if err := s.timed("stop", func(ctx context.Context) error { return c.Stop(ctx, m.app, m.id, model.StopRequest{}) }); err != nil {
			return fmt.Errorf("stop: %w", err)
		}
		if time.Now().After(deadline) {
			return nil
		}
		if first, err = s.timedProxyGet("proxy-cold-start", m.port); err != nil {
			return err
		}
		if first.Started == woken.Started {
			return fmt.Errorf("proxy wake of a stopped machine answered from the old process: %+v", first)
		}
	}
}

// opTimeout bounds one operation; generous, since 50 machines share 2 cores.
const opTimeout = 3 * time.Minute

// timed runs fn with a context bounded by opTimeout and records its latency
// under op, or its failure.
func (s *soak) timed(op string, fn func(ctx context.Context) error) error {
	c, cancel := context.WithTimeout(context.Background(), opTimeout)
	defer cancel()
	begin := time.Now()
	err := fn(c)
	if err == nil {
		s.stats.add(op, time.Since(begin))
	} else {
		s.stats.fail(op)
	}
	return err
}

// soakHTTP asks apps over the machine network; one try, no retry: a
// started (or resumed) machine must answer.
var soakHTTP = &http.Client{Timeout: 60 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 1, DisableKeepAlives: true}}

// timedGet GETs the app at ip. A cold-started app may not listen yet, so
// refused connections are retried for up to 30 s; any other failure fails.
func (s *soak) timedGet(op, ip string) (appState, error) {
	var st appState
	err := s.timed(op, func(context.Context) error {
		until := time.Now().Add(30 * time.Second)
		for {
			err := getAppState(soakHTTP, "http://"+ip+":8080/", &st)
			if err == nil || !strings.Contains(err.Error(), "connection refused") || time.Now().After(until) {
				return err
			}
			time.Sleep(20 * time.Millisecond)
		}
	})
	return st, err
}

// timedProxyGet GETs the app through the proxy, which wakes it if needed.
func (s *soak) timedProxyGet(op string, port int) (appState, error) {
	var st appState
	err := s.timed(op, func(context.Context) error {
		return getAppState(proxyClient, fmt.Sprintf("http://127.0.0.1:%d/", port), &st)
	})
	return st, err
}

func getAppState(hc *http.Client, url string, st *appState) error {
	resp, err := hc.Get(url)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET %s: %s: %s", url, resp.Status, body)
	}
	if err := json.Unmarshal(body, st); err != nil {
		return fmt.Errorf("GET %s: %v: %s", url, err, body)
	}
	return nil
}

// settledCount counts once nothing is in flight: it closes the test's idle
// API connections (each is a descriptor in the daemon) and, when ok is
// given, recounts until ok holds or 30 s pass (a sandbox's processes take a
// moment to go after its delete returns).
func (s *soak) settledCount(ok func(hostCounts) bool) hostCounts {
	until := time.Now().Add(30 * time.Second)
	for {
		s.d.c.CloseIdleConnections()
		for _, sc := range s.clients {
			sc.c.CloseIdleConnections()
		}
		proxyClient.CloseIdleConnections()
		time.Sleep(200 * time.Millisecond) // the daemon sees the closes
		c := s.counter.count()
		if ok == nil || ok(c) || time.Now().After(until) {
			return c
		}
	}
}

// checkStopped checks what stopped machines hold: no process, no mount, no
// snapshot; each keeps its network namespace, veth and address (they are
// released on destroy) and its directories.
func (s *soak) checkStopped(base, c hostCounts, n int) {
	t := s.t
	if c.Procs != base.Procs {
		t.Errorf("stopped machines hold %d processes, want %d: %v", c.Procs, base.Procs, runscProcs(s.d.dataDir, s.d.cmd.Process.Pid))
	}
	if c.Mounts != base.Mounts {
		t.Errorf("stopped machines hold %d mounts, want %d: %v", c.Mounts, base.Mounts, mountPointsUnder(s.d.dataDir, s.counter.runDir))
	}
	if c.Snapshots != 0 {
		t.Errorf("%d snapshot directories left after stop, want 0", c.Snapshots)
	}
	if c.Netns != n || c.Veths != n {
		t.Errorf("%d network namespaces and %d veths for %d stopped machines, want one each", c.Netns, c.Veths, n)
	}
	for _, sc := range s.clients {
		for _, m := range sc.machines {
			got, err := sc.c.GetMachine(ctx(t), m.app, m.id)
			if err != nil || got.State != model.StateStopped {
				t.Errorf("machine %s after the soak: %s, %v", m.id, got.State, err)
			}
		}
	}
}

// tearDown destroys every machine and deletes every app, including the
// harness's own (empty) app, so that nothing of the test is left.
func (s *soak) tearDown() {
	t := s.t
	var wg sync.WaitGroup
	for _, sc := range s.clients {
		for _, m := range sc.machines {
			wg.Add(1)
			go func() {
				defer wg.Done()
				// force: after a failed soak a machine may still run.
				if err := s.timed("destroy", func(ctx context.Context) error { return sc.c.Destroy(ctx, m.app, m.id, t.Failed()) }); err != nil {
					t.Errorf("destroy %s: %v", m.id, err)
				}
			}()
		}
	}
	wg.Wait()
	for _, sc := range s.clients {
		for _, app := range sc.apps {
			if err := sc.c.DeleteApp(ctx(t), app); err != nil {
				t.Errorf("delete app %s: %v", app, err)
			}
		}
	}
	if err := s.d.c.DeleteApp(ctx(t), s.d.app); err != nil {
		t.Errorf("delete app %s: %v", s.d.app, err)
	}
}

// opStats records the latency of every successful operation by kind.
type opStats struct {
	mu     sync.Mutex
	lat    map[string][]time.Duration
	failed map[string]int
}

func newOpStats() *opStats {
	return &opStats{lat: map[string][]time.Duration{}, failed: map[string]int{}}
}

func (o *opStats) add(op string, d time.Duration) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.lat[op] = append(o.lat[op], d)
}

func (o *opStats) fail(op string) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.failed[op]++
}

// log writes a table: count, failures, rate and latency percentiles per op.
func (o *opStats) log(t *testing.T, elapsed time.Duration) {
	o.mu.Lock()
	defer o.mu.Unlock()
	var ops []string
	for op := range o.lat {
		ops = append(ops, op)
	}
	for op := range o.failed {
		if _, ok := o.lat[op]; !ok {
			ops = append(ops, op)
		}
	}
	sort.Strings(ops)
	var b strings.Builder
	fmt.Fprintf(&b, "%-18s %6s %6s %7s %8s %8s %8s %8s\n", "op", "ok", "failed", "per s", "p50 ms", "p90 ms", "p99 ms", "max ms")
	total := 0
	for _, op := range ops {
		l := o.lat[op]
		total += len(l)
		fmt.Fprintf(&b, "%-18s %6d %6d %7.2f %8.0f %8.0f %8.0f %8.0f\n", op, len(l), o.failed[op],
			float64(len(l))/elapsed.Seconds(), millis(percentile(l, 50)), millis(percentile(l, 90)),
			millis(percentile(l, 99)), millis(percentile(l, 100)))
	}
	t.Logf("operations (%d in all):\n%s", total, b.String())
}

// memSample is the daemon's memory at one moment.
type memSample struct {
	at         time.Duration
	rssKB, hwm int
}

// memSampler samples the daemon's VmRSS and VmHWM at an interval, and
// the CPU time of the sandboxes' processes (which the daemon does not wait
// for): the largest time seen of each, so a process's last interval is
// missed.
type memSampler struct {
	done    chan struct{}
	samples chan []memSample
	mu      sync.Mutex
	ticks   map[int]int64 // sandbox process → CPU ticks
}

func startMemSampler(d *daemon, every time.Duration) *memSampler {
	pid := d.cmd.Process.Pid
	m := &memSampler{done: make(chan struct{}), samples: make(chan []memSample, 1), ticks: map[int]int64{}}
	go func() {
		begin := time.Now()
		var out []memSample
		tick := time.NewTicker(every)
		defer tick.Stop()
		for {
			out = append(out, memSample{time.Since(begin), procStatus(pid, "VmRSS"), procStatus(pid, "VmHWM")})
			m.sampleCPU(d.dataDir, pid)
			select {
			case <-m.done:
				m.samples <- out
				return
			case <-tick.C:
			}
		}
	}()
	return m
}

func (m *memSampler) sampleCPU(dataDir string, daemonPid int) {
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, p := range runscProcs(dataDir, daemonPid) {
		if t := procCPUTicks(p); t > m.ticks[p] {
			m.ticks[p] = t
		}
	}
}

// sandboxCPU returns the CPU seconds of the sandbox processes seen.
func (m *memSampler) sandboxCPU() float64 {
	m.mu.Lock()
	defer m.mu.Unlock()
	var sum int64
	for _, t := range m.ticks {
		sum += t
	}
	return float64(sum) / 100
}

func (m *memSampler) stop() []memSample {
	close(m.done)
	return <-m.samples
}

// maxRSSGrowthKB bounds how much the daemon's resident memory may grow from
// the end of the warm-up (the first third of the soak, when every machine
// has been through its first cycle and the Go heap has reached its working
// size) to the end of the soak. A per-operation leak of a few KiB (a
// goroutine stack, an event list, a buffer) over the soak's thousands of
// operations would pass it, which is what the goroutine, descriptor and
// file counts are for; this catches a leak of sandbox-sized things (images,
// logs kept in memory) and unbounded caches. 40 MiB is about twice the
// GC's own swing observed at this load.
const maxRSSGrowthKB = 40 << 10

// checkMemory logs the RSS series and checks its growth after the warm-up.
func checkMemory(t *testing.T, series []memSample) {
	if len(series) < 6 {
		t.Logf("daemon memory: only %d samples; soak too short to judge growth", len(series))
		return
	}
	var b strings.Builder
	for i, s := range series {
		if i%5 == 0 || i == len(series)-1 {
			fmt.Fprintf(&b, " %ds:%d", int(s.at.Seconds()), s.rssKB/1024)
		}
	}
	third := len(series) / 3
	warm := medianRSS(series[third : third+max(len(series)/10, 1)])
	end := medianRSS(series[len(series)-max(len(series)/10, 1):])
	last := series[len(series)-1]
	t.Logf("daemon RSS MiB (every 5th sample):%s; after warm-up %d MiB, at the end %d MiB, growth %+d KiB; VmHWM %d MiB",
		b.String(), warm/1024, end/1024, end-warm, last.hwm/1024)
	if end-warm > maxRSSGrowthKB {
		t.Errorf("daemon RSS grew by %d KiB after the warm-up (%d → %d KiB), bound %d KiB", end-warm, warm, end, maxRSSGrowthKB)
	}
}

func medianRSS(s []memSample) int {
	v := make([]int, len(s))
	for i := range s {
		v[i] = s[i].rssKB
	}
	sort.Ints(v)
	return v[len(v)/2]
}

// loadAvg returns the host's load averages, to tell a slow soak on a busy
// host from a slow daemon.
func loadAvg() string {
	data, _ := os.ReadFile("/proc/loadavg")
	f := strings.Fields(string(data))
	return strings.Join(f[:min(len(f), 3)], " ")
}

func envInt(t *testing.T, key string, def int) int {
	v := os.Getenv(key)
	if v == "" {
		return def
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 1 {
		t.Fatalf("%s=%q: want a positive integer", key, v)
	}
	return n
}

func contains(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}

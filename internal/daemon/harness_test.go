package daemon_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/google/nftables"
	"github.com/torpor-dev/torpor/internal/client"
	"github.com/torpor-dev/torpor/internal/demo"
	"github.com/torpor-dev/torpor/internal/fence"
	"github.com/torpor-dev/torpor/internal/image/imagetest"
	"github.com/torpor-dev/torpor/internal/logs"
	"github.com/torpor-dev/torpor/internal/model"
)

// The integration tests run the real torpor binary, which runs machines
// under the real runsc. They need root, runsc and the test root filesystem
// (scripts/install-runsc.sh, scripts/build-rootfs.sh); without them they are
// skipped, unless TORPOR_INTEGRATION=1 makes that a failure (as in CI).
var (
	torporBin  string
	skipReason string
	rootfs     = envOr("TORPOR_ROOTFS", "/var/cache/torpor/rootfs/bookworm-python")
	runscPath  = envOr("TORPOR_RUNSC", "/var/cache/torpor/bin/runsc")
)

// testNetworkRange is the machine network range of the test daemons: the
// lower half of TORPOR_TEST_NETWORK_RANGE (internal/bench's test takes the
// upper half: a daemon refuses a range overlapping a live daemon's, and
// `go test ./...` runs the two packages at once), else 10.213.0.0/16.
func testNetworkRange() string {
	r, ok := os.LookupEnv("TORPOR_TEST_NETWORK_RANGE")
	if !ok {
		return "10.213.0.0/16"
	}
	p, err := netip.ParsePrefix(r)
	if err != nil || p.Bits() >= 24 {
		return r // let the daemon say what is wrong with it
	}
	return netip.PrefixFrom(p.Masked().Addr(), p.Bits()+1).String()
}

func envOr(key, def string) string {
	if v := os.Getenv(key); v != "" {
		return v
	}
	return def
}

func TestMain(m *testing.M) {
	if spec := os.Getenv(etcdMemberEnv); spec != "" {
		runEtcdMember(spec) // a member of a test's etcd cluster (cluster_harness_test.go)
	}
	skipReason = missingPrerequisite()
	if skipReason != "" {
		if os.Getenv("TORPOR_INTEGRATION") == "1" {
			fmt.Fprintln(os.Stderr, "integration test prerequisite missing:", skipReason)
			os.Exit(1)
		}
		os.Exit(m.Run())
	}
	dir, err := os.MkdirTemp("", "torpor-bin-")
	if err != nil {
		panic(err)
	}
	torporBin = filepath.Join(dir, "torpor")
	build := exec.Command("go", "build", "-tags", "faults", "-o", torporBin, "github.com/torpor-dev/torpor/cmd/torpor")
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "build torpor:", err)
		os.Exit(1)
	}
	stopRegistry, err := startTestRegistry(dir)
	if err != nil {
		fmt.Fprintln(os.Stderr, "test registry:", err)
		os.Exit(1)
	}
	code := m.Run()
	stopRegistry()
	os.RemoveAll(dir)
	os.Exit(code)
}

func missingPrerequisite() string {
	if os.Geteuid() != 0 {
		return "not root"
	}
	if _, err := os.Stat(runscPath); err != nil {
		return "no runsc at " + runscPath + " (run scripts/install-runsc.sh)"
	}
	if _, err := os.Stat(filepath.Join(rootfs, "usr/bin/python3")); err != nil {
		return "no test rootfs at " + rootfs + " (run scripts/build-rootfs.sh)"
	}
	if _, err := os.Stat(imagetest.RegistryBinary); err != nil {
		return "no " + imagetest.RegistryBinary + " (run scripts/deps.sh)"
	}
	return ""
}

// daemon is a torpor daemon process under test.
type daemon struct {
	t       testing.TB
	dataDir string
	sock    string
	cmd     *exec.Cmd
	exited  chan error
	c       *client.Client
	app     string
	flags   []string // extra flags of torpor serve
	nofile  int      // if set, the daemon runs under prlimit --nofile=N:N
}

var appSeq atomic.Int64 // parallel tests make daemons too

// newDaemon starts a daemon with its own data directory (and extra serve
// flags) and creates an app.
func newDaemon(t testing.TB, flags ...string) *daemon {
	t.Helper()
	return newDaemonAt(t, "", flags...)
}

// newDaemonAt is newDaemon with the admin socket at sock ("" for one in the
// data directory).
func newDaemonAt(t testing.TB, sock string, flags ...string) *daemon {
	t.Helper()
	return startDaemon(t, sock, 0, flags)
}

// startDaemon is newDaemonAt with the daemon's descriptor limit set to
// nofile (0: inherited).
func startDaemon(t testing.TB, sock string, nofile int, flags []string) *daemon {
	t.Helper()
	if skipReason != "" {
		t.Skip(skipReason)
	}
	return startDaemonIn(t, t.TempDir(), sock, nofile, flags)
}

// startDaemonIn is startDaemon with the data directory dir (e.g. a small
// file system a test fills).
func startDaemonIn(t testing.TB, dir, sock string, nofile int, flags []string) *daemon {
	t.Helper()
	if skipReason != "" {
		t.Skip(skipReason)
	}
	if sock == "" {
		sock = filepath.Join(dir, "torpor.sock")
	}
	d := &daemon{t: t, dataDir: dir, sock: sock,
		app: fmt.Sprintf("it%d-%d", os.Getpid()%10000, appSeq.Add(1)), flags: flags, nofile: nofile}
	d.run()
	t.Cleanup(d.cleanup)
	if _, err := d.c.CreateApp(ctx(t), d.app, ""); err != nil {
		t.Fatal(err)
	}
	return d
}

func ctx(t testing.TB) context.Context {
	c, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	return c
}

// run runs the daemon with extra environment and waits until it answers.
func (d *daemon) run(env ...string) {
	d.t.Helper()
	logf, err := os.OpenFile(filepath.Join(d.dataDir, "daemon.log"), os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		d.t.Fatal(err)
	}
	// --pprof: a failed test's log shows the daemon's goroutines (cleanup).
	args := append([]string{"serve", "--data-dir", d.dataDir, "--socket", d.sock,
		"--runsc", runscPath, "--network-range", testNetworkRange(),
		"--insecure-registry", registry.Host, "--pprof"}, d.flags...)
	d.cmd = exec.Command(torporBin, args...)
	if d.nofile > 0 { // prlimit sets the limit and execs the daemon: same pid
		d.cmd = exec.Command("prlimit", append([]string{fmt.Sprintf("--nofile=%d:%d", d.nofile, d.nofile), torporBin}, args...)...)
	}
	d.cmd.Env = append(os.Environ(), env...)
	d.cmd.Stdout, d.cmd.Stderr = logf, logf
	if err := d.cmd.Start(); err != nil {
		d.t.Fatal(err)
	}
	logf.Close()
	d.exited = make(chan error, 1)
	go func(cmd *exec.Cmd, ch chan error) { ch <- cmd.Wait() }(d.cmd, d.exited)
	if d.c, err = client.New("unix://"+d.sock, ""); err != nil {
		d.t.Fatal(err)
	}
	deadline := time.Now().Add(30 * time.Second)
	for d.c.Health(context.Background()) != nil {
		select {
		case err := <-d.exited:
			d.t.Fatalf("daemon exited at start: %v\n%s", err, d.log())
		default:
		}
		if time.Now().After(deadline) {
			d.t.Fatalf("daemon not ready after 30s\n%s", d.log())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// adminHTTP is an HTTP client of the daemon's admin socket, where requests
// come from the local admin: its API, /metrics and /debug/pprof/. A new
// connection per request, so that none is left among the daemon's fds.
func (d *daemon) adminHTTP(timeout time.Duration) *http.Client {
	return &http.Client{Timeout: timeout, Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, "unix", d.sock)
		},
		DisableKeepAlives: true,
	}}
}

// adminGet reads path on the admin socket (http://torpor + path).
func (d *daemon) adminGet(path string) (string, error) {
	resp, err := d.adminHTTP(10 * time.Second).Get("http://torpor" + path)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err == nil && resp.StatusCode != http.StatusOK {
		err = fmt.Errorf("GET %s: %s", path, resp.Status)
	}
	return string(body), err
}

func (d *daemon) log() string {
	data, _ := os.ReadFile(filepath.Join(d.dataDir, "daemon.log"))
	return string(data)
}

// crash kills the daemon as a crash would: no shutdown at all.
func (d *daemon) crash() {
	d.cmd.Process.Signal(syscall.SIGKILL)
	<-d.exited
}

// stop stops the daemon gracefully; machines keep running.
func (d *daemon) stop() {
	d.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-d.exited:
	case <-time.After(30 * time.Second):
		d.t.Fatalf("daemon did not stop\n%s", d.log())
	}
}

// waitExit waits for the daemon to exit by itself and returns its status.
func (d *daemon) waitExit() int {
	select {
	case <-d.exited:
	case <-time.After(60 * time.Second):
		d.t.Fatalf("daemon did not exit\n%s", d.log())
	}
	return d.cmd.ProcessState.ExitCode()
}

func (d *daemon) running() bool {
	select {
	case err := <-d.exited:
		d.exited <- err
		return false
	default:
		return d.cmd.ProcessState == nil
	}
}

// cleanup destroys every machine and stops the daemon, then removes any
// sandbox left behind.
func (d *daemon) cleanup() {
	if d.t.Failed() {
		d.t.Logf("daemon log:\n%s", d.log())
		// Where it stands: an operation that hangs (a start stuck for the
		// client's 2 minutes, CI 2026-12-07) shows where.
		if d.running() {
			if dump, err := d.adminGet("/debug/pprof/goroutine?debug=2"); err == nil {
				d.t.Logf("daemon goroutines:\n%s", dump)
			} else {
				d.t.Logf("daemon goroutines: %v", err)
			}
		}
		// And the runsc processes it runs (a create or restore that hangs
		// shows with its age and where it sleeps in the kernel).
		if out, err := exec.Command("ps", "-eo", "pid,etime,stat,wchan:24,args", "--sort", "start_time").Output(); err == nil {
			var mine []string
			for _, l := range strings.Split(string(out), "\n") {
				if strings.Contains(l, d.dataDir) {
					mine = append(mine, l)
				}
			}
			d.t.Logf("processes of this daemon's data dir (pid, age, state, kernel wait, command):\n%s", strings.Join(mine, "\n"))
		}
	}
	if d.running() {
		c, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
		defer cancel()
		// Every app, not only d.app: a test may create its own, and a
		// machine left behind would leave its netns and links on the host.
		apps, _ := d.c.ListApps(c)
		for _, app := range apps {
			ms, _ := d.c.ListMachines(c, app.Name)
			for _, m := range ms {
				if err := d.c.Destroy(c, app.Name, m.ID, true); err != nil {
					d.t.Logf("cleanup: destroy %s: %v", m.ID, err)
				}
			}
			vs, _ := d.c.ListVolumes(c, app.Name)
			for _, v := range vs {
				if _, err := d.c.DestroyVolume(c, app.Name, v.ID); err != nil {
					d.t.Logf("cleanup: destroy volume %s: %v", v.ID, err)
				}
			}
			d.c.DeleteApp(c, app.Name)
		}
		d.stop()
	}
	root := filepath.Join(d.dataDir, "runsc")
	fence.StopPrevious(d.dataDir) // a crashed cluster daemon's fencing watchdog
	d.killSandboxes()
	d.removeNetwork()
	// The daemon pins the gofers' empty network namespace here and unmounts
	// it when it stops; a crashed daemon leaves it (possibly stacked).
	for syscall.Unmount(filepath.Join(root, "null-netns"), syscall.MNT_DETACH) == nil {
	}
	// Volumes a test left (or a daemon that could not destroy them) stay
	// mounted on the host: unmount them, so that the data dir goes away.
	mounts, _ := filepath.Glob(filepath.Join(d.dataDir, "volumes", "*", "fs"))
	for _, m := range mounts {
		syscall.Unmount(m, syscall.MNT_DETACH)
	}
	// The volumes directory is a shared bind mount while volumes are
	// mounted (volume/sharedmount.go).
	for syscall.Unmount(filepath.Join(d.dataDir, "volumes"), syscall.MNT_DETACH) == nil {
	}
}

// removeNetwork deletes from the host what the daemon's network state file
// still allocates: the machines' namespaces and veths and the apps' bridges.
// A daemon that destroyed everything leaves nothing there; one the test
// crashed or stopped with machines left them, and without this they outlive
// the test (a reused CI host once held 141 such bridges, and a cluster test
// found no free /24 in its range).
func (d *daemon) removeNetwork() {
	data, err := os.ReadFile(filepath.Join(d.dataDir, "network", "network.json"))
	if err != nil {
		return
	}
	var st struct {
		Apps map[string]struct {
			Subnet netip.Prefix `json:"subnet"`
		} `json:"apps"`
		Machines map[string]struct {
			Instance string `json:"instance"`
		} `json:"machines"`
	}
	if json.Unmarshal(data, &st) != nil {
		return
	}
	for id, m := range st.Machines {
		key, ns := id, "torpor-"+id
		if m.Instance != "" {
			key, ns = m.Instance+"/"+id, "torpor-"+m.Instance+"-"+id
		}
		exec.Command("ip", "link", "del", vethOf(key)).Run()
		syscall.Unmount(filepath.Join("/run/netns", ns), syscall.MNT_DETACH)
		os.Remove(filepath.Join("/run/netns", ns))
	}
	for _, a := range st.Apps {
		bridge := bridgeOf(a.Subnet.Addr())
		exec.Command("ip", "link", "del", bridge).Run()
		for range 4 { // its isolation rule (one, unless a leftover doubled it)
			if exec.Command("ip", "rule", "del", "iif", bridge).Run() != nil {
				break
			}
		}
		if c, err := nftables.New(); err == nil { // its firewall table
			c.DelTable(&nftables.Table{Family: nftables.TableFamilyINet, Name: "torpor-" + bridge})
			c.Flush()
		}
	}
}

// killSandboxes kills and deletes every sandbox of the daemon's runsc.
func (d *daemon) killSandboxes() {
	root := filepath.Join(d.dataDir, "runsc")
	out, _ := exec.Command(runscPath, "--root", root, "list", "-quiet").Output()
	for _, id := range strings.Fields(string(out)) {
		exec.Command(runscPath, "--root", root, "kill", id, "KILL").Run()
		exec.Command(runscPath, "--root", root, "delete", "--force", id).Run()
	}
}

// counterConfig is a machine running the demo app (internal/demo/app.py),
// from the Debian+python OCI image the daemon pulls from the test registry.
func counterConfig(env map[string]string) model.MachineConfig {
	e := map[string]string{"TABLE_SIZE": "200000"}
	for k, v := range env {
		e[k] = v
	}
	return model.MachineConfig{
		Image: pythonImage,
		Init:  model.InitConfig{Exec: []string{"python3", "-c", demo.AppSource}},
		Env:   e,
		Guest: model.Guest{CPUs: 1, MemoryMB: 512},
	}
}

func (d *daemon) create(cfg model.MachineConfig) model.Machine {
	d.t.Helper()
	m, err := d.c.CreateMachine(ctx(d.t), d.app, model.CreateMachineRequest{Config: cfg})
	if err != nil {
		d.t.Fatalf("create: %v", err)
	}
	if m.State != model.StateStarted {
		d.t.Fatalf("created machine is %s", m.State)
	}
	return m
}

func (d *daemon) get(id string) model.Machine {
	d.t.Helper()
	m, err := d.c.GetMachine(ctx(d.t), d.app, id)
	if err != nil {
		d.t.Fatal(err)
	}
	return m
}

func (d *daemon) wantState(id string, want model.State) {
	d.t.Helper()
	if got := d.get(id).State; got != want {
		d.t.Fatalf("machine %s is %s, want %s", id, got, want)
	}
}

func (d *daemon) suspend(id string) {
	d.t.Helper()
	if err := d.c.Suspend(ctx(d.t), d.app, id); err != nil {
		d.t.Fatalf("suspend: %v", err)
	}
	d.wantState(id, model.StateSuspended)
}

func (d *daemon) start(id string) model.StartResponse {
	d.t.Helper()
	resp, err := d.c.Start(ctx(d.t), d.app, id)
	if err != nil {
		d.t.Fatalf("start: %v", err)
	}
	d.wantState(id, model.StateStarted)
	return resp
}

// consoleLines reads the machine's console log from disk.
func (d *daemon) consoleLines(id string) []string {
	recs, err := logs.ReadDir(filepath.Join(d.dataDir, "machines", id, "logs"), 0, 0)
	if err != nil {
		return nil
	}
	var lines []string
	for _, r := range recs {
		lines = append(lines, r.Line)
	}
	return lines
}

// counts returns the counter values the machine printed, in order.
func (d *daemon) counts(id string) []int {
	var out []int
	for _, l := range d.consoleLines(id) {
		if n, ok := strings.CutPrefix(l, "count "); ok {
			if v, err := strconv.Atoi(n); err == nil {
				out = append(out, v)
			}
		}
	}
	return out
}

// waitCount waits until the machine has printed a counter of at least min
// and returns the counters printed so far.
func (d *daemon) waitCount(id string, min int) []int {
	d.t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for {
		c := d.counts(id)
		if len(c) > 0 && c[len(c)-1] >= min {
			return c
		}
		if time.Now().After(deadline) {
			d.t.Fatalf("machine %s did not count to %d; console: %v", id, min, d.consoleLines(id))
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// event returns the newest event of type typ.
func (d *daemon) event(id, typ string) model.Event {
	d.t.Helper()
	evs, err := d.c.Events(ctx(d.t), d.app, id)
	if err != nil {
		d.t.Fatal(err)
	}
	for _, ev := range evs {
		if ev.Type == typ {
			return ev
		}
	}
	d.t.Fatalf("no %s event: %+v", typ, evs)
	return model.Event{}
}

func (d *daemon) snapshotDirs(id string) []string {
	entries, _ := os.ReadDir(filepath.Join(d.dataDir, "machines", id, "snapshots"))
	var out []string
	for _, e := range entries {
		out = append(out, filepath.Join(d.dataDir, "machines", id, "snapshots", e.Name()))
	}
	return out
}

// appState is what examples/counter/app.py answers.
type appState struct {
	Count   int     `json:"count"`
	Started float64 `json:"started"`
	Version string  `json:"version"`
	PID     int     `json:"pid"`
	Now     float64 `json:"now"`
}

// httpGet asks the machine's app over the machine network.
func (d *daemon) httpGet(m model.Machine) appState {
	d.t.Helper()
	var st appState
	d.getJSON(m, &st)
	return st
}

// getJSON GETs / from the machine's app on port 8080 into v, retrying for
// up to 30 s while the app comes up.
func (d *daemon) getJSON(m model.Machine, v any) {
	d.t.Helper()
	if m.PrivateIP == "" {
		d.t.Fatalf("machine %s has no private IP", m.ID)
	}
	cl := http.Client{Timeout: 5 * time.Second}
	deadline := time.Now().Add(30 * time.Second)
	for {
		resp, err := cl.Get("http://" + m.PrivateIP + ":8080/")
		if err == nil {
			err = json.NewDecoder(resp.Body).Decode(v)
			resp.Body.Close()
			if err == nil {
				return
			}
		}
		if time.Now().After(deadline) {
			d.t.Fatalf("GET machine %s: %v", m.ID, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// consecutive checks that counts go 1, 2, 3, ... with no gap or reset.
func consecutive(t testing.TB, counts []int) {
	t.Helper()
	for i, c := range counts {
		if c != i+1 {
			t.Fatalf("count #%d is %d, want %d (a reset or a lost line): %v", i, c, i+1, counts)
		}
	}
}

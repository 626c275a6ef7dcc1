package daemon_test

import (
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/torpor-dev/torpor/internal/client"
	"github.com/torpor-dev/torpor/internal/model"
)

// clusterApp creates an app through host 0 and returns its name.
func (tc *testCluster) app(name string) string {
	tc.t.Helper()
	app := fmt.Sprintf("%s-%d", name, os.Getpid()%10000)
	if _, err := tc.hosts[0].c.CreateApp(ctx(tc.t), app, ""); err != nil {
		tc.t.Fatal(err)
	}
	return app
}

// createOn creates a machine of app on host (through host via).
func (tc *testCluster) createOn(via int, app, host string, cfg model.MachineConfig) model.Machine {
	tc.t.Helper()
	m, err := tc.hosts[via].c.CreateMachine(ctx(tc.t), app, model.CreateMachineRequest{Config: cfg, Host: host})
	if err != nil {
		tc.t.Fatalf("create on %q via h%d: %v", host, via, err)
	}
	return m
}

// proxyGet GETs / from the app's service port on host i's proxy.
func (tc *testCluster) proxyGet(i, port int) (appState, int, error) {
	cl := http.Client{Timeout: 30 * time.Second}
	resp, err := cl.Get(fmt.Sprintf("http://127.0.27.%d:%d/", i+1, port))
	if err != nil {
		return appState{}, 0, err
	}
	defer resp.Body.Close()
	var st appState
	if resp.StatusCode == http.StatusOK {
		err = json.NewDecoder(resp.Body).Decode(&st)
	}
	return st, resp.StatusCode, err
}

// resumes counts a machine's resume events that resumed its snapshot.
func resumes(evs []model.Event) int {
	n := 0
	for _, e := range evs {
		if e.Type == model.EventResume && e.Start() != nil && e.Start().FromSnapshot {
			n++
		}
	}
	return n
}

// TestClusterCreateAndRoute: one API and one proxy over three hosts. A
// machine created through one host on another is served by every host's
// API (forwarded to its owner over mutual TLS); apps and tokens are
// cluster-wide; placement spreads machines; every host's proxy routes to
// the machine and wakes it when suspended, and a burst at all three
// proxies resumes it exactly once.
func TestClusterCreateAndRoute(t *testing.T) {
	t.Parallel()
	tc := newTestCluster(t, false)
	hosts, err := tc.hosts[2].c.ListHosts(ctx(t))
	if err != nil || len(hosts) != 3 {
		t.Fatalf("hosts: %+v %v", hosts, err)
	}
	for _, h := range hosts {
		if h.Status != "up" || h.CPUs != 8 || h.MemoryMB != 8192 || h.RuntimeVersion == "" || h.CPU == "" {
			t.Fatalf("host %+v", h)
		}
	}
	app := tc.app("route")
	port := freePort(t)
	cfg := serviceConfig(port, []string{"http"}, model.AutostopOff, 0)
	cfg.Guest.MemoryMB = 256
	m := tc.createOn(0, app, "h1", cfg)
	if m.State != model.StateStarted || m.Host != "h1" {
		t.Fatalf("created machine: %s on %q", m.State, m.Host)
	}
	if got := tc.owner(m.ID); got != "h1" {
		t.Fatalf("owner in etcd is %q", got)
	}
	// Every host's API serves it; the apps are the same everywhere.
	for i := range 3 {
		g, err := tc.hosts[i].c.GetMachine(ctx(t), app, m.ID)
		if err != nil || g.State != model.StateStarted || g.Host != "h1" || g.HostStatus != "ok" {
			t.Fatalf("get via h%d: %+v %v", i, g, err)
		}
		if _, err := tc.hosts[i].c.GetApp(ctx(t), app); err != nil {
			t.Fatalf("app via h%d: %v", i, err)
		}
	}
	// A token made on one host works on every host.
	tok, err := tc.hosts[0].c.CreateToken(ctx(t), model.CreateTokenRequest{Apps: []string{app}})
	if err != nil {
		t.Fatal(err)
	}
	tcp, err := client.New(tc.listens[2], tok.Secret)
	if err != nil {
		t.Fatal(err)
	}
	if evs, err := tcp.Events(ctx(t), app, m.ID); err != nil || len(evs) == 0 {
		t.Fatalf("events with a token via h2's TCP API: %v %v", len(evs), err)
	}
	// Placement: with h1 holding a machine, the next goes elsewhere.
	cfg2 := counterConfig(nil)
	cfg2.Guest.MemoryMB = 256
	m2 := tc.createOn(2, app, "", cfg2)
	if m2.Host == "h1" || m2.State != model.StateStarted {
		t.Fatalf("placed machine: %s on %q", m2.State, m2.Host)
	}
	// A machine that mounts a volume is created where the volume is (the
	// host whose API is asked), not where placement would put it: h1
	// already holds a machine, so placement alone would pick another host,
	// which has no such volume.
	one := 1
	vol, err := tc.hosts[1].c.CreateVolume(ctx(t), app, model.CreateVolumeRequest{Name: "placed_vol", SizeGB: &one})
	if err != nil {
		t.Fatalf("volume on h1: %v", err)
	}
	cfg3 := counterConfig(nil)
	cfg3.Guest.MemoryMB = 256
	cfg3.Mounts = []model.Mount{{Volume: vol.ID, Path: "/data"}}
	m3 := tc.createOn(1, app, "", cfg3)
	if m3.Host != "h1" || m3.State != model.StateStarted {
		t.Fatalf("machine with a volume of h1: %s on %q", m3.State, m3.Host)
	}
	if err := tc.hosts[1].c.Destroy(ctx(t), app, m3.ID, true); err != nil {
		t.Fatal(err)
	}
	if _, err := tc.hosts[1].c.DestroyVolume(ctx(t), app, vol.ID); err != nil {
		t.Fatal(err)
	}
	list, err := tc.hosts[0].c.ListMachines(ctx(t), app)
	if err != nil || len(list) != 2 {
		t.Fatalf("list via h0: %d %v", len(list), err)
	}
	if err := tc.hosts[0].c.Destroy(ctx(t), app, m2.ID, true); err != nil {
		t.Fatalf("destroy via h0 of a machine on %s: %v", m2.Host, err)
	}

	// Every proxy routes to the machine on h1.
	for i := range 3 {
		st, code, err := tc.proxyGet(i, port)
		if err != nil || code != http.StatusOK || st.Count < 1 {
			t.Fatalf("proxy of h%d: %d %+v %v", i, code, st, err)
		}
	}
	// Suspended, it is woken by a burst at all three proxies: one resume.
	if err := tc.hosts[2].c.Suspend(ctx(t), app, m.ID); err != nil {
		t.Fatalf("suspend via h2: %v", err)
	}
	tc.waitMachine(0, app, m.ID, model.StateSuspended, "h1", 10*time.Second)
	time.Sleep(500 * time.Millisecond) // every proxy sees it suspended (eventually consistent routes)
	var wg sync.WaitGroup
	errs := make(chan error, 30)
	for i := range 3 {
		for range 10 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				st, code, err := tc.proxyGet(i, port)
				if err == nil && (code != http.StatusOK || st.Count < 1) {
					err = fmt.Errorf("status %d, %+v", code, st)
				}
				if err != nil {
					errs <- fmt.Errorf("proxy of h%d: %w", i, err)
				}
			}()
		}
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	evs, err := tc.hosts[1].c.Events(ctx(t), app, m.ID)
	if err != nil {
		t.Fatal(err)
	}
	if n := resumes(evs); n != 1 {
		t.Fatalf("%d resumes after a burst at three proxies, want 1: %+v", n, evs)
	}
}

// TestClusterDrain: draining a host moves its machines with their memory:
// a suspended counter resumes on another host where it left off, and a
// started one is suspended, moved and resumed there.
func TestClusterDrain(t *testing.T) {
	t.Parallel()
	tc := newTestCluster(t, false)
	app := tc.app("drain")
	cfg := counterConfig(nil)
	cfg.Guest.MemoryMB = 256
	sus := tc.createOn(0, app, "h0", cfg)
	run := tc.createOn(0, app, "h0", cfg)
	tc.hosts[0].waitCount(sus.ID, 3)
	tc.hosts[0].waitCount(run.ID, 3)
	before := tc.hosts[0].httpGet(sus)
	beforeRun := tc.hosts[0].httpGet(run)
	if err := tc.hosts[0].c.Suspend(ctx(t), app, sus.ID); err != nil {
		t.Fatal(err)
	}
	report, err := tc.hosts[1].c.DrainHost(ctx(t), "h0")
	if err != nil {
		t.Fatalf("drain h0 via h1: %v", err)
	}
	t.Logf("drain report: %+v", report)
	if len(report.Moves) != 2 {
		t.Fatalf("drain moved %d machines, want 2: %+v", len(report.Moves), report)
	}
	for _, mv := range report.Moves {
		if mv.Error != "" || mv.To == "" || mv.To == "h0" || mv.Snapshot != "carried" {
			t.Fatalf("move %+v", mv)
		}
	}
	hosts, _ := tc.hosts[2].c.ListHosts(ctx(t))
	for _, h := range hosts {
		if h.ID == "h0" && (!h.Cordoned || h.Machines != 0) {
			t.Fatalf("h0 after the drain: %+v", h)
		}
	}
	// The started machine runs on its new host with its memory.
	mr, err := tc.hosts[2].c.GetMachine(ctx(t), app, run.ID)
	if err != nil || mr.State != model.StateStarted || mr.Host == "h0" {
		t.Fatalf("moved started machine: %+v %v", mr, err)
	}
	afterRun := tc.hosts[0].httpGet(mr)
	if afterRun.Started != beforeRun.Started || afterRun.PID != beforeRun.PID || afterRun.Count < beforeRun.Count {
		t.Fatalf("moved started machine lost its memory: before %+v after %+v", beforeRun, afterRun)
	}
	// Its console log came along and goes on: 1, 2, 3, ... with no gap.
	target := tc.hosts[map[string]int{"h1": 1, "h2": 2}[mr.Host]]
	counts := target.waitCount(run.ID, afterRun.Count+1)
	consecutive(t, counts)
	// The suspended one resumes on its new host where it left off.
	ms := tc.waitMachine(2, app, sus.ID, model.StateSuspended, "", 10*time.Second)
	if ms.Host == "h0" {
		t.Fatalf("suspended machine still on h0")
	}
	resp, err := tc.hosts[2].c.Start(ctx(t), app, sus.ID)
	if err != nil || !resp.FromSnapshot {
		t.Fatalf("start of the moved machine via h2: %+v %v", resp, err)
	}
	ms, _ = tc.hosts[2].c.GetMachine(ctx(t), app, sus.ID)
	after := tc.hosts[0].httpGet(ms)
	if after.Started != before.Started || after.PID != before.PID || after.Count < before.Count {
		t.Fatalf("moved suspended machine lost its memory: before %+v after %+v", before, after)
	}
	evs, _ := tc.hosts[0].c.Events(ctx(t), app, sus.ID)
	var moved *model.MoveDetails
	for _, e := range evs {
		if d, ok := e.Request.(*model.MoveDetails); ok && e.Type == model.EventMove {
			moved = d
		}
	}
	if moved == nil || moved.From != "h0" || moved.Snapshot != "carried" || moved.SnapshotSource != "host" {
		t.Fatalf("move event: %+v", moved)
	}
}

// restartAlways is a counter machine the restart policy restarts.
func restartAlways() model.MachineConfig {
	cfg := counterConfig(nil)
	cfg.Guest.MemoryMB = 256
	cfg.Restart = &model.RestartPolicy{Policy: "always"}
	return cfg
}

// waitStored waits until the snapshot of suspended machine id of app
// reached the snapshot store (its cluster record says so).
func (tc *testCluster) waitStored(via int, app, id string) string {
	tc.t.Helper()
	evs, err := tc.hosts[via].c.Events(ctx(tc.t), app, id)
	if err != nil {
		tc.t.Fatal(err)
	}
	snap := ""
	for _, e := range evs {
		if d := e.Suspend(); d != nil && d.SnapshotID != "" {
			snap = d.SnapshotID
			break
		}
	}
	deadline := time.Now().Add(60 * time.Second)
	for {
		if rec := tc.snapRecord(id, snap); rec != nil && rec["stored"] == true {
			return snap
		}
		if time.Now().After(deadline) {
			tc.t.Fatalf("snapshot %s of %s never reached the store", snap, id)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// runningAndSuspended creates, on host i, a running counter with restart
// policy "always" and a suspended one whose snapshot reached the store; it
// returns them, what the suspended one answered before, and its snapshot.
func (tc *testCluster) runningAndSuspended(app string, i int) (run, sus model.Machine, before appState, snap string) {
	tc.t.Helper()
	host := fmt.Sprintf("h%d", i)
	run = tc.createOn(0, app, host, restartAlways())
	plain := counterConfig(nil)
	plain.Guest.MemoryMB = 256
	sus = tc.createOn(0, app, host, plain)
	tc.hosts[i].waitCount(sus.ID, 3)
	before = tc.hosts[i].httpGet(sus)
	if err := tc.hosts[i].c.Suspend(ctx(tc.t), app, sus.ID); err != nil {
		tc.t.Fatal(err)
	}
	return run, sus, before, tc.waitStored(i, app, sus.ID)
}

// waitStartedOff waits until machine id is started on a host other than off.
func (tc *testCluster) waitStartedOff(via int, app, id, off string) model.Machine {
	tc.t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		m := tc.waitMachine(via, app, id, model.StateStarted, "", 30*time.Second)
		if m.Host != off {
			return m
		}
		if time.Now().After(deadline) {
			tc.t.Fatalf("machine %s still on %s", id, off)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// sandboxes lists the sandboxes host i's runsc runs.
func (tc *testCluster) sandboxes(i int) []string {
	out, _ := exec.Command(runscPath, "--root", filepath.Join(tc.hosts[i].dataDir, "runsc"), "list", "-quiet").Output()
	return strings.Fields(string(out))
}

// TestClusterHostDies: kill -9 a host (daemon and sandboxes) with running
// and suspended machines. Its running machine with restart policy
// "always" is restarted elsewhere, only once the host's lease expired; the
// suspended machine (its snapshot in the S3 store) resumes elsewhere with
// its memory once the dead host is drained; a running machine without a
// restart policy waits for the drain and cold-starts elsewhere. The host,
// back, runs none of them.
func TestClusterHostDies(t *testing.T) {
	t.Parallel()
	tc := newTestCluster(t, true)
	app := tc.app("dies")
	plain := counterConfig(nil)
	plain.Guest.MemoryMB = 256
	norestart := tc.createOn(0, app, "h0", plain)
	run, sus, before, snap := tc.runningAndSuspended(app, 0)

	killed := time.Now()
	tc.killHost(0)
	// The running machine with a restart policy comes back elsewhere, after
	// the lease expired (at least TTL minus one renewal interval after the kill).
	tc.waitStartedOff(1, app, run.ID, "h0")
	var moved model.Event
	evs, _ := tc.hosts[1].c.Events(ctx(t), app, run.ID)
	for _, e := range evs {
		if e.Type == model.EventMove {
			moved = e
			break
		}
	}
	if moved.Type == "" {
		t.Fatalf("no move event: %+v", evs)
	}
	if at := time.UnixMilli(moved.Timestamp); at.Before(killed.Add(tc.ttl * 3 / 4)) {
		t.Fatalf("restarted elsewhere %s after the kill, before the lease (TTL %s) could expire", at.Sub(killed), tc.ttl)
	}
	// The others wait on the dead host, for the user to drain it.
	g, err := tc.hosts[2].c.GetMachine(ctx(t), app, sus.ID)
	if err != nil || g.HostStatus != "unreachable" || g.State != model.StateSuspended {
		t.Fatalf("suspended machine of the dead host: %+v %v", g, err)
	}
	if _, err := tc.hosts[2].c.Start(ctx(t), app, sus.ID); err == nil || !strings.Contains(err.Error(), "drain") {
		t.Fatalf("start of a machine of a dead host: %v", err)
	}
	report, err := tc.hosts[2].c.DrainHost(ctx(t), "h0")
	if err != nil {
		t.Fatalf("drain the dead host: %v", err)
	}
	t.Logf("drain report: %+v", report)
	byID := map[string]model.MoveResult{}
	for _, mv := range report.Moves {
		byID[mv.Machine] = mv
	}
	if mv := byID[sus.ID]; mv.Error != "" || mv.Snapshot != "carried" || mv.State != model.StateSuspended {
		t.Fatalf("suspended machine's move: %+v", mv)
	}
	if mv := byID[norestart.ID]; mv.Error != "" || mv.State != model.StateStarted {
		t.Fatalf("running machine without a restart policy: %+v", mv)
	}
	if _, ok := byID[run.ID]; ok {
		t.Fatalf("the drain moved the machine that was restarted already: %+v", byID[run.ID])
	}
	resp, err := tc.hosts[1].c.Start(ctx(t), app, sus.ID)
	if err != nil || !resp.FromSnapshot {
		t.Fatalf("start of the moved machine: %+v %v", resp, err)
	}
	ms, _ := tc.hosts[1].c.GetMachine(ctx(t), app, sus.ID)
	after := tc.hosts[1].httpGet(ms)
	if after.Started != before.Started || after.PID != before.PID || after.Count < before.Count {
		t.Fatalf("the machine lost its memory: before %+v after %+v", before, after)
	}
	if rec := tc.snapRecord(sus.ID, snap); rec == nil || rec["claimed_by"] != ms.Host {
		t.Fatalf("snapshot claim: %+v (machine on %s)", rec, ms.Host)
	}
	// The dead host comes back: it forgets every machine that moved and
	// runs none of them.
	tc.restart(0)
	tc.waitHostStatus(1, "h0", "up", 30*time.Second)
	for _, id := range []string{run.ID, norestart.ID, sus.ID} {
		if o := tc.owner(id); o == "h0" || o == "" {
			t.Fatalf("machine %s is owned by %q", id, o)
		}
	}
	if sb := tc.sandboxes(0); len(sb) != 0 {
		t.Fatalf("h0 runs sandboxes after coming back: %v", sb)
	}
	if local, _ := tc.hosts[0].c.ListMachines(ctx(t), app); len(local) != 3 {
		t.Fatalf("h0 lists %d machines of the app, want the 3 on other hosts", len(local))
	}
}

// fenceEvents returns the machine's fence events' statuses, oldest first.
func fenceStatuses(evs []model.Event) []string {
	var out []string
	for i := len(evs) - 1; i >= 0; i-- {
		if evs[i].Type == model.EventFence {
			out = append(out, evs[i].Status)
		}
	}
	return out
}

// TestClusterPartition: a host cut off from etcd fences itself before its
// lease expires (its running machine is frozen, its API refuses changes);
// the others restart its machine with a restart policy and move its
// suspended machine from the snapshot store. When the partition heals, the
// host registers again and forgets both (killing the frozen sandbox): no
// machine runs on two hosts, and no snapshot is restored twice.
func TestClusterPartition(t *testing.T) {
	t.Parallel()
	tc := newTestCluster(t, true)
	app := tc.app("part")
	plain := counterConfig(nil)
	plain.Guest.MemoryMB = 256
	run, sus, before, snap := tc.runningAndSuspended(app, 1)
	tc.partition(1, true)
	// h1 fences itself: its running machine is frozen, changes refused.
	deadline := time.Now().Add(2 * tc.ttl)
	for {
		evs, err := tc.hosts[1].c.Events(ctx(t), app, run.ID)
		if err == nil && len(fenceStatuses(evs)) > 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("h1 did not fence itself within %s: %v %v", 2*tc.ttl, fenceStatuses(evs), err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	if err := tc.hosts[1].c.Stop(ctx(t), app, run.ID, model.StopRequest{}); err == nil || !strings.Contains(err.Error(), "fenced") {
		t.Fatalf("stop on a fenced host: %v", err)
	}
	// The others restart the running machine elsewhere and drain the
	// suspended one from the store.
	tc.waitStartedOff(0, app, run.ID, "h1")
	report, err := tc.hosts[0].c.DrainHost(ctx(t), "h1")
	if err != nil {
		t.Fatalf("drain the partitioned host: %v", err)
	}
	t.Logf("drain report: %+v", report)
	ms := tc.waitMachine(2, app, sus.ID, model.StateSuspended, "", 10*time.Second)
	if ms.Host == "h1" {
		t.Fatalf("suspended machine still on h1: %+v", report)
	}
	resp, err := tc.hosts[2].c.Start(ctx(t), app, sus.ID)
	if err != nil || !resp.FromSnapshot {
		t.Fatalf("start of the moved machine: %+v %v", resp, err)
	}
	ms, _ = tc.hosts[2].c.GetMachine(ctx(t), app, sus.ID)
	if after := tc.hosts[2].httpGet(ms); after.Started != before.Started || after.Count < before.Count {
		t.Fatalf("the machine lost its memory: before %+v after %+v", before, after)
	}
	// Heal: h1 comes back, forgets both machines, kills the frozen sandbox.
	tc.partition(1, false)
	tc.waitHostStatus(0, "h1", "up", 30*time.Second)
	onDisk := func(id string) bool {
		_, err := os.Stat(filepath.Join(tc.hosts[1].dataDir, "machines", id))
		return !os.IsNotExist(err)
	}
	deadline = time.Now().Add(30 * time.Second)
	for len(tc.sandboxes(1)) != 0 || onDisk(run.ID) || onDisk(sus.ID) {
		if time.Now().After(deadline) {
			t.Fatalf("h1 still runs %v (or has the machines on disk) after the partition healed", tc.sandboxes(1))
		}
		time.Sleep(200 * time.Millisecond)
	}
	for _, id := range []string{run.ID, sus.ID} {
		if o := tc.owner(id); o == "h1" || o == "" {
			t.Fatalf("machine %s owned by %q", id, o)
		}
	}
	if rec := tc.snapRecord(sus.ID, snap); rec == nil || rec["claimed_by"] != ms.Host {
		t.Fatalf("snapshot claim: %+v, machine on %s", rec, ms.Host)
	}
	// h1 works again once it has reconciled: it takes a new machine.
	deadline = time.Now().Add(15 * time.Second)
	for {
		m, err := tc.hosts[0].c.CreateMachine(ctx(t), app, model.CreateMachineRequest{Config: plain, Host: "h1"})
		if err == nil && m.State == model.StateStarted {
			break
		}
		if time.Now().After(deadline) || (err != nil && !strings.Contains(err.Error(), "fenced")) {
			t.Fatalf("new machine on h1 after the partition: %+v %v", m, err)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// TestClusterEtcdMemberDies: killing one of the three etcd members (the
// cluster keeps its quorum) fences no host; machines are created, suspended
// and resumed across hosts as before.
func TestClusterEtcdMemberDies(t *testing.T) {
	t.Parallel()
	tc := newTestCluster(t, false)
	app := tc.app("etcdm")
	cfg := counterConfig(nil)
	cfg.Guest.MemoryMB = 256
	a := tc.createOn(0, app, "h2", cfg)
	// Kill the member that leads the cluster: the worst case.
	status, err := tc.etcd.cli.Status(ctx(t), tc.etcd.members[0].clientURL)
	if err != nil {
		t.Fatal(err)
	}
	leader := 0
	for i, mb := range tc.etcd.members {
		st, err := tc.etcd.cli.Status(ctx(t), mb.clientURL)
		if err == nil && st.Header.MemberId == status.Leader {
			leader = i
		}
	}
	tc.etcd.kill(leader)
	time.Sleep(2 * tc.ttl) // longer than a fence would take
	b := tc.createOn(1, app, "h0", cfg)
	if err := tc.hosts[1].c.Suspend(ctx(t), app, a.ID); err != nil {
		t.Fatalf("suspend with an etcd member down: %v", err)
	}
	if resp, err := tc.hosts[0].c.Start(ctx(t), app, a.ID); err != nil || !resp.FromSnapshot {
		t.Fatalf("resume with an etcd member down: %+v %v", resp, err)
	}
	for _, id := range []string{a.ID, b.ID} {
		evs, _ := tc.hosts[0].c.Events(ctx(t), app, id)
		if f := fenceStatuses(evs); len(f) != 0 {
			t.Fatalf("machine %s was fenced: %v", id, f)
		}
	}
	hosts, _ := tc.hosts[2].c.ListHosts(ctx(t))
	for _, h := range hosts {
		if h.Status != "up" {
			t.Fatalf("host %s is %s with one etcd member down", h.ID, h.Status)
		}
	}
	// A daemon that stops freezes its running machines (another host may
	// take them over once its lease expires); started again, it thaws them.
	tc.hosts[0].waitCount(b.ID, 2)
	tc.hosts[0].stop()
	tc.restart(0)
	deadline := time.Now().Add(20 * time.Second)
	for {
		evs, _ := tc.hosts[0].c.Events(ctx(t), app, b.ID)
		if f := fenceStatuses(evs); len(f) == 2 && f[0] == "frozen" && f[1] == "thawed" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("fence events of a machine across a daemon restart: %v", fenceStatuses(evs))
		}
		time.Sleep(100 * time.Millisecond)
	}
	n := len(tc.hosts[0].counts(b.ID))
	tc.hosts[0].waitCount(b.ID, tc.hosts[0].counts(b.ID)[n-1]+2) // it counts on
	consecutive(t, tc.hosts[0].counts(b.ID))
}

// otherRunsc is a copy of runsc with one byte appended: the same program,
// but another build to torpor (the runtime version hashes the binary), so
// a host running it cannot restore the others' snapshots.
func otherRunsc(t *testing.T) string {
	data, err := os.ReadFile(runscPath)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "runsc")
	if err := os.WriteFile(path, append(data, '\n'), 0o755); err != nil {
		t.Fatal(err)
	}
	return path
}

// TestClusterIncompatibleTarget: a suspended machine drained to the only
// host with room, which runs another runsc build, moves without its
// snapshot: its next start is a cold start that says why.
func TestClusterIncompatibleTarget(t *testing.T) {
	t.Parallel()
	tc := newTestCluster(t, false, map[int][]string{2: {"--runsc", otherRunsc(t)}})
	app := tc.app("incompat")
	cfg := counterConfig(nil)
	cfg.Guest.MemoryMB = 256
	m := tc.createOn(0, app, "h0", cfg)
	tc.hosts[0].waitCount(m.ID, 2)
	if err := tc.hosts[0].c.Suspend(ctx(t), app, m.ID); err != nil {
		t.Fatal(err)
	}
	if err := tc.hosts[0].c.CordonHost(ctx(t), "h1", true); err != nil {
		t.Fatal(err)
	}
	report, err := tc.hosts[0].c.DrainHost(ctx(t), "h0")
	if err != nil || len(report.Moves) != 1 {
		t.Fatalf("drain: %+v %v", report, err)
	}
	mv := report.Moves[0]
	if mv.To != "h2" || mv.Snapshot != "left behind" || !strings.Contains(mv.Reason, "cannot restore") || mv.State != model.StateSuspended {
		t.Fatalf("move to an incompatible host: %+v", mv)
	}
	resp, err := tc.hosts[1].c.Start(ctx(t), app, m.ID)
	if err != nil || resp.FromSnapshot {
		t.Fatalf("start after the move: %+v %v", resp, err)
	}
	evs, _ := tc.hosts[2].c.Events(ctx(t), app, m.ID)
	var ev model.Event
	for _, e := range evs {
		if e.Type == model.EventResume {
			ev = e
			break
		}
	}
	if d := ev.Start(); d == nil || d.FromSnapshot || !strings.Contains(d.Reason, "cannot restore") {
		t.Fatalf("resume event: %+v", ev)
	}
}

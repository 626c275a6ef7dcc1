package daemon_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/torpor-dev/torpor/internal/model"
)

// flyCall sends a request to the daemon's admin socket as a Fly client
// would (with the lease nonce header when nonce is set) and returns the
// status and the body.
func (d *daemon) flyCall(method, path, nonce, body string) (int, []byte) {
	d.t.Helper()
	hc := d.adminHTTP(2 * time.Minute)
	var r io.Reader
	if body != "" {
		r = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, "http://torpor"+path, r)
	if err != nil {
		d.t.Fatal(err)
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	if nonce != "" {
		req.Header.Set("fly-machine-lease-nonce", nonce)
	}
	resp, err := hc.Do(req)
	if err != nil {
		d.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, b
}

// mustFly is flyCall that wants status want and decodes the answer into v.
func (d *daemon) mustFly(method, path, nonce, body string, want int, v any) {
	d.t.Helper()
	code, b := d.flyCall(method, path, nonce, body)
	if code != want {
		d.t.Fatalf("%s %s: %d %s, want %d", method, path, code, b, want)
	}
	if v != nil {
		if err := json.Unmarshal(b, v); err != nil {
			d.t.Fatalf("%s %s: %v: %s", method, path, err, b)
		}
	}
}

// TestFlyOperationsOnRealMachine runs Fly's operations beyond the lifecycle
// on a real sandbox: exec (stdout, stderr and exit code apart), ps (the
// app's listening socket, as flyctl deploy checks it), metadata, restart,
// signal, and a lease that survives a daemon restart and guards the
// machine across it.
func TestFlyOperationsOnRealMachine(t *testing.T) {
	d := newDaemon(t)
	m := d.create(counterConfig(nil))
	d.waitCount(m.ID, 3)
	mpath := fmt.Sprintf("/v1/apps/%s/machines/%s", d.app, m.ID)

	var out model.ExecResponse
	d.mustFly("POST", mpath+"/exec", "", `{"cmd":"python3 -c 'import sys; print(\"hi\"); print(\"oops\", file=sys.stderr); sys.exit(4)'","timeout":30}`, 200, &out)
	if out.Stdout != "hi\n" || out.Stderr != "oops\n" || out.ExitCode != 4 {
		t.Errorf("exec = %+v", out)
	}
	code, b := d.flyCall("POST", mpath+"/exec", "", `{"command":["/no/such/program"]}`)
	if code != 400 || !strings.Contains(string(b), "no such file") {
		t.Errorf("exec of a missing program: %d %s", code, b)
	}
	var ps []model.ProcessStat
	d.mustFly("GET", mpath+"/ps", "", "", 200, &ps)
	found := false
	for _, p := range ps {
		for _, s := range p.ListenSockets {
			found = found || s.Proto == "tcp" && s.Address == "0.0.0.0:8080"
		}
	}
	if !found || len(ps) == 0 || !strings.HasPrefix(ps[0].Command, "python3") {
		t.Errorf("ps = %+v: want python3 listening on 0.0.0.0:8080", ps)
	}

	d.mustFly("POST", mpath+"/metadata/fly_process_group", "", `{"value":"app"}`, 204, nil)

	// A lease taken before a daemon restart still holds after it.
	var lease struct {
		Status string      `json:"status"`
		Data   model.Lease `json:"data"`
	}
	d.mustFly("POST", mpath+"/lease?ttl=300", "", "", 200, &lease)
	d.stop()
	d.run()
	d.mustFly("POST", mpath+"/restart", "", "", 409, nil)
	var got struct {
		Data model.Lease `json:"data"`
	}
	d.mustFly("GET", mpath+"/lease", "", "", 200, &got)
	if got.Data != lease.Data {
		t.Fatalf("lease after restart %+v, want %+v", got.Data, lease.Data)
	}
	gen := d.get(m.ID).BootGeneration
	d.mustFly("POST", mpath+"/restart?signal=SIGTERM&timeout=5s", lease.Data.Nonce, "", 200, nil)
	after := d.get(m.ID)
	if after.State != model.StateStarted || after.BootGeneration != gen+1 || after.Config.Metadata["fly_process_group"] != "app" {
		t.Fatalf("after restart: %s generation %d metadata %v", after.State, after.BootGeneration, after.Config.Metadata)
	}
	d.mustFly("DELETE", mpath+"/lease", lease.Data.Nonce, "", 200, nil)

	// Kill as fly-go does: the signal as a number.
	d.mustFly("POST", mpath+"/signal", "", `{"signal":9}`, 200, nil)
	d.mustFly("GET", mpath+"/wait?state=stopped&timeout=30", "", "", 200, nil)
	if ev := d.event(m.ID, "exit"); ev.Field("exit_event.signal") != 9.0 {
		t.Errorf("exit event %+v: want Fly's exit_event with signal 9", ev.Fields())
	}
}

// heapCounter counts like the demo app ("count N") after dirtying mib MiB.
func heapCounter(mib int) string {
	return fmt.Sprintf(`
import time
heap = bytearray(%d << 20)
for j in range(0, len(heap), 4096):
    heap[j] = 1
n = 0
while True:
    n += 1
    print("count", n, flush=True)
    time.sleep(0.05)
`, mib)
}

// TestStartDuringTheSuspendOfOneGiBMachine suspends a 1 GiB machine (768
// MiB of dirtied heap: the checkpoint takes seconds) and starts it while it
// is being saved: the save cannot be abandoned, so the suspend completes,
// and the start, which waited for it, resumes the machine from that
// snapshot: the same process goes on (its counter neither resets nor skips
// a line) in the same boot generation.
func TestStartDuringTheSuspendOfOneGiBMachine(t *testing.T) {
	d := newDaemon(t)
	cfg := model.MachineConfig{Image: rootfs, Init: model.InitConfig{Exec: []string{"python3", "-c", heapCounter(768)}},
		Guest: model.Guest{CPUs: 1, MemoryMB: 1024}}
	m := d.create(cfg)
	d.waitCount(m.ID, 3)

	suspended := make(chan error, 1)
	begin := time.Now()
	go func() { suspended <- d.c.Suspend(context.Background(), d.app, m.ID) }()
	deadline := time.Now().Add(30 * time.Second)
	for d.get(m.ID).State != model.StateSuspending {
		if time.Now().After(deadline) {
			t.Fatalf("machine never suspending: %s", d.get(m.ID).State)
		}
		time.Sleep(10 * time.Millisecond)
	}
	time.Sleep(300 * time.Millisecond) // into the checkpoint
	startBegin := time.Now()
	resp, err := d.c.Start(ctx(t), d.app, m.ID)
	took := time.Since(startBegin)
	if err := <-suspended; err != nil {
		t.Fatalf("suspend: %v", err)
	}
	if err != nil || resp.PreviousState != model.StateSuspended || !resp.FromSnapshot {
		t.Fatalf("start during the suspend = %+v, %v; want a resume from the new snapshot", resp, err)
	}
	got := d.get(m.ID)
	if got.State != model.StateStarted || got.BootGeneration != m.BootGeneration {
		t.Fatalf("machine %s generation %d, want started in %d", got.State, got.BootGeneration, m.BootGeneration)
	}
	t.Logf("1 GiB machine: the start sent during the suspend answered after %s (%s after the suspend began)", took, time.Since(begin))
	consecutive(t, d.waitCount(m.ID, len(d.counts(m.ID))+5))
	if dirs := d.snapshotDirs(m.ID); len(dirs) != 0 {
		t.Fatalf("images left after the resume: %v", dirs)
	}
}

func mustEvents(t *testing.T, d *daemon, id string) []model.Event {
	t.Helper()
	evs, err := d.c.Events(ctx(t), d.app, id)
	if err != nil {
		t.Fatal(err)
	}
	return evs
}

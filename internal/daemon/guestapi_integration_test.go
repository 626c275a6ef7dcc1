package daemon_test

import (
	"strings"
	"testing"
	"time"

	"github.com/torpor-dev/torpor/internal/model"
)

// selfSuspendSource counts, asks the in-machine API to suspend its machine
// once, and after the resume reads its own record from the API.
const selfSuspendSource = `
import http.client, json, socket, time

class UnixConnection(http.client.HTTPConnection):
    def __init__(self, path):
        super().__init__("localhost")
        self.path = path
    def connect(self):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.connect(self.path)

def call(method, path):
    c = UnixConnection("/.torpor/api.sock")
    c.request(method, path)
    r = c.getresponse()
    return r.status, json.loads(r.read())

n = 0
while True:
    n += 1
    print(f"count {n}", flush=True)
    if n == 20:
        status, body = call("POST", "/v1/suspend")
        print(f"self-suspend {status}", flush=True)
    if n == 60:
        status, body = call("GET", "/v1/machine")
        print(f"info {status} {body['id']} {body['state']} {body['boot_generation']}", flush=True)
    time.sleep(0.02)
`

func TestMachineSuspendsItselfThroughTheInMachineAPI(t *testing.T) {
	d := newDaemon(t)
	cfg := counterConfig(nil)
	cfg.Init.Exec = []string{"python3", "-c", selfSuspendSource}
	m := d.create(cfg)

	if _, err := d.c.Wait(ctx(t), d.app, m.ID, []model.State{model.StateSuspended}, 60*time.Second); err != nil {
		t.Fatalf("machine did not suspend itself: %v\n%v", err, d.consoleLines(m.ID))
	}
	if ev := d.event(m.ID, "suspend"); ev.Source != model.SourceMachine || ev.Status != "suspended" {
		t.Fatalf("suspend event = %+v, want source machine", ev)
	}
	if !containsLine(d.consoleLines(m.ID), "self-suspend 202") {
		t.Fatalf("the app did not get its 202 before the snapshot: %v", d.consoleLines(m.ID))
	}
	if resp := d.start(m.ID); !resp.FromSnapshot {
		t.Fatal("not resumed")
	}
	consecutive(t, d.waitCount(m.ID, 61))
	want := "info 200 " + m.ID + " started 1"
	deadline := time.Now().Add(30 * time.Second)
	for !containsLine(d.consoleLines(m.ID), want) {
		if time.Now().After(deadline) {
			t.Fatalf("no %q line after resume: %v", want, d.consoleLines(m.ID))
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func containsLine(lines []string, want string) bool {
	for _, l := range lines {
		if strings.TrimSpace(l) == want {
			return true
		}
	}
	return false
}

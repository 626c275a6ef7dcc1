package daemon_test

import (
	"fmt"
	"net/http"
	"strings"
	"testing"

	"github.com/torpor-dev/torpor/internal/model"
)

// TestPortsBelongToTheirFirstApp is issue 17's F2 on the real daemon: app
// A publishes host port P; app "a…" (which sorts first), with its own
// token, asks for P and is refused with a 409 at submit time; after a
// daemon restart P still reaches A's machine (it used to go to the first app
// in name order, with A's clients' cookies and auth headers).
func TestPortsBelongToTheirFirstApp(t *testing.T) {
	apiPort, port := freePort(t), freePort(t)
	d := newDaemon(t, "--listen", fmt.Sprintf("127.0.0.1:%d", apiPort))
	owner := serviceConfig(port, []string{"http"}, model.AutostopOff, 0)
	owner.Env["VERSION"] = "owner"
	m := d.create(owner)
	if st, err := proxyGet(port); err != nil || st.Version != "owner" {
		t.Fatalf("port %d before: %+v %v", port, st, err)
	}

	rival := "a" + d.app // first in name order
	if _, err := d.c.CreateApp(ctx(t), rival, ""); err != nil {
		t.Fatal(err)
	}
	tok, err := d.c.CreateToken(ctx(t), model.CreateTokenRequest{Apps: []string{rival}, Name: "rival"})
	if err != nil {
		t.Fatal(err)
	}
	cfg := serviceConfig(port, []string{"http"}, model.AutostopOff, 0)
	cfg.Env["VERSION"] = "rival"
	_, err = tcpClient(t, apiPort, tok.Secret).CreateMachine(ctx(t), rival, model.CreateMachineRequest{Config: cfg})
	wantStatus(t, "a machine of another app asking for a published port", err, http.StatusConflict)
	if !strings.Contains(err.Error(), "config.services[0].ports[0].port") || strings.Contains(err.Error(), d.app) {
		t.Fatalf("the refusal should name the field and not the other tenant's app: %v", err)
	}
	if ms, _ := d.c.ListMachines(ctx(t), rival); len(ms) != 0 {
		t.Fatalf("the refused config left machines: %+v", ms)
	}

	d.stop()
	d.run()
	d.wantState(m.ID, model.StateStarted)
	if st, err := proxyGet(port); err != nil || st.Version != "owner" {
		t.Fatalf("port %d after a restart: %+v %v, want the owner's machine", port, st, err)
	}
}

// TestDaemonAddressesAreReserved is issue 17's F3: a service asking for the
// daemon's own --listen port is refused at submit time, and the daemon
// restarts (it used to exit at every restart, the proxy having bound the
// port before the API).
func TestDaemonAddressesAreReserved(t *testing.T) {
	apiPort := freePort(t)
	d := newDaemon(t, "--listen", fmt.Sprintf("127.0.0.1:%d", apiPort))
	_, err := d.c.CreateMachine(ctx(t), d.app, model.CreateMachineRequest{Config: serviceConfig(apiPort, []string{"http"}, model.AutostopOff, 0)})
	wantStatus(t, "a service on the daemon's --listen port", err, http.StatusConflict)
	if !strings.Contains(err.Error(), "reserved for the daemon's TCP API") {
		t.Fatalf("the refusal does not say why: %v", err)
	}
	d.stop()
	d.run() // fails the test if the daemon does not come up
	if _, err := tcpClient(t, apiPort, "").ListApps(ctx(t)); err == nil || !strings.Contains(err.Error(), "token") {
		t.Fatalf("port %d is not the daemon's API after the restart: %v", apiPort, err)
	}
}

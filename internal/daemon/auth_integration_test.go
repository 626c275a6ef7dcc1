package daemon_test

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/torpor-dev/torpor/internal/client"
	"github.com/torpor-dev/torpor/internal/model"
)

// wantStatus fails unless err is an API error with status.
func wantStatus(t *testing.T, what string, err error, status int) {
	t.Helper()
	var apiErr *client.APIError
	if !errors.As(err, &apiErr) || apiErr.Status != status {
		t.Fatalf("%s: %v, want HTTP %d", what, err, status)
	}
}

// tcpClient is a client of the daemon's TCP API with token.
func tcpClient(t *testing.T, port int, token string) *client.Client {
	t.Helper()
	c, err := client.New(fmt.Sprintf("127.0.0.1:%d", port), token)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// TestAPITokens drives the real daemon's TCP API with tokens made over the
// admin socket: no token is refused, an app token manages its app's machine
// and nothing of another app, an admin token sees everything, a revoked
// token stops working.
func TestAPITokens(t *testing.T) {
	port := freePort(t)
	d := newDaemon(t, "--listen", fmt.Sprintf("127.0.0.1:%d", port))
	c := ctx(t)
	other := d.app + "-b"
	if _, err := d.c.CreateApp(c, other, ""); err != nil { // the admin socket needs no token
		t.Fatal(err)
	}
	t.Cleanup(func() { d.c.DeleteApp(context.Background(), other) })

	_, err := tcpClient(t, port, "").ListApps(c)
	wantStatus(t, "no token", err, http.StatusUnauthorized)
	_, err = tcpClient(t, port, "torpor_0123456789abcdef_"+strings.Repeat("0", 64)).ListApps(c)
	wantStatus(t, "made-up token", err, http.StatusUnauthorized)

	appTok, err := d.c.CreateToken(c, model.CreateTokenRequest{Apps: []string{d.app}, Name: "app"})
	if err != nil {
		t.Fatal(err)
	}
	adminTok, err := d.c.CreateToken(c, model.CreateTokenRequest{Admin: true})
	if err != nil {
		t.Fatal(err)
	}
	ac := tcpClient(t, port, appTok.Secret)
	m, err := ac.CreateMachine(c, d.app, model.CreateMachineRequest{Config: counterConfig(nil)})
	if err != nil {
		t.Fatalf("app token creates a machine in its app: %v", err)
	}
	if err := ac.Stop(c, d.app, m.ID, model.StopRequest{}); err != nil {
		t.Fatalf("app token stops its machine: %v", err)
	}
	if _, err := ac.Wait(c, d.app, m.ID, []model.State{model.StateStopped}, 0); err != nil {
		t.Fatal(err)
	}
	apps, err := ac.ListApps(c)
	if err != nil || len(apps) != 1 || apps[0].Name != d.app {
		t.Fatalf("app token lists %+v, %v; want only %s", apps, err, d.app)
	}
	_, err = ac.ListMachines(c, other)
	wantStatus(t, "app token lists another app's machines", err, http.StatusForbidden)
	_, err = ac.CreateMachine(c, other, model.CreateMachineRequest{Config: counterConfig(nil)})
	wantStatus(t, "app token creates a machine in another app", err, http.StatusForbidden)
	wantStatus(t, "app token deletes another app", ac.DeleteApp(c, other), http.StatusForbidden)
	_, err = ac.GetApp(c, "no-such-app")
	wantStatus(t, "app token probes a missing app", err, http.StatusForbidden)
	_, err = ac.ListTokens(c)
	wantStatus(t, "app token lists tokens", err, http.StatusForbidden)
	if _, err := d.c.GetApp(c, other); err != nil {
		t.Fatalf("other app after the refused delete: %v", err)
	}

	admin := tcpClient(t, port, adminTok.Secret)
	if apps, err := admin.ListApps(c); err != nil || len(apps) < 2 {
		t.Fatalf("admin token lists %+v, %v", apps, err)
	}
	if _, err := admin.ListMachines(c, other); err != nil {
		t.Fatalf("admin token on another app: %v", err)
	}
	if err := admin.RevokeToken(c, appTok.ID); err != nil {
		t.Fatal(err)
	}
	_, err = ac.GetMachine(c, d.app, m.ID)
	wantStatus(t, "revoked token", err, http.StatusUnauthorized)
	if tokens, err := d.c.ListTokens(c); err != nil || len(tokens) != 1 || tokens[0].ID != adminTok.ID {
		t.Fatalf("tokens over the admin socket: %+v, %v", tokens, err)
	}
}

// TestAdminSocketPermissions checks that another user cannot use the admin
// socket: its mode keeps them out, and should the mode be loosened, the
// daemon still does not treat them as admin (peer credentials). It also
// checks that the daemon refuses a socket directory others can write.
func TestAdminSocketPermissions(t *testing.T) {
	if skipReason != "" {
		t.Skip(skipReason)
	}
	// A directory nobody may enter, so that only the socket's own mode
	// stands between them and the socket.
	dir, err := os.MkdirTemp("", "torpor-sock-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	sock := filepath.Join(dir, "torpor.sock")
	d := newDaemonAt(t, sock)
	fi, err := os.Stat(sock)
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("socket mode %v, %v; want 0600", fi.Mode(), err)
	}
	code, out := curlAs(t, 0, sock)
	if code != 0 || !strings.Contains(out, d.app) {
		t.Fatalf("root over the socket: exit %d: %s", code, out)
	}
	// curl exits 7 when it cannot connect (here: EACCES on the socket).
	if code, out := curlAs(t, 65534, sock); code != 7 {
		t.Fatalf("nobody over the 0600 socket: exit %d: %s; want exit 7 (could not connect)", code, out)
	}
	if err := os.Chmod(sock, 0o666); err != nil {
		t.Fatal(err)
	}
	if code, out := curlAs(t, 65534, sock); code != 0 || !strings.Contains(out, "missing bearer token") {
		t.Fatalf("nobody over a loosened socket: exit %d: %s; want 401 missing bearer token", code, out)
	}

	bad := filepath.Join(dir, "open")
	if err := os.Mkdir(bad, 0o777); err != nil {
		t.Fatal(err)
	}
	os.Chmod(bad, 0o777) // past the umask
	cmd := exec.Command(torporBin, "serve", "--data-dir", t.TempDir(), "--socket", filepath.Join(bad, "torpor.sock"),
		"--runsc", runscPath, "--network-range", "", "--no-proxy")
	outb, err := cmd.CombinedOutput()
	if err == nil || !strings.Contains(string(outb), "must not be writable by group or others") {
		t.Fatalf("daemon with a world-writable socket directory: %v\n%s", err, outb)
	}
}

// curlAs GETs /v1/apps over the Unix socket as uid (and the same gid) and
// returns curl's exit status and output.
func curlAs(t *testing.T, uid uint32, sock string) (int, string) {
	t.Helper()
	cmd := exec.Command("curl", "-sS", "--max-time", "10", "--unix-socket", sock, "http://torpor/v1/apps")
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uid, Gid: uid}}
	out, err := cmd.CombinedOutput()
	var exit *exec.ExitError
	if err != nil && !errors.As(err, &exit) {
		t.Fatalf("run curl as %d: %v", uid, err)
	}
	return cmd.ProcessState.ExitCode(), string(out)
}

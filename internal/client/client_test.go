package client_test

import (
	"context"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/torpor-dev/torpor/internal/api"
	"github.com/torpor-dev/torpor/internal/api/apitest"
	"github.com/torpor-dev/torpor/internal/client"
	"github.com/torpor-dev/torpor/internal/model"
)

// serve starts the API over the real machine lifecycle (on the fake
// runtime) on TCP and returns a client of it: with an admin token when
// withToken, else as if over the local admin socket.
func serve(t *testing.T, withToken bool) (*client.Client, *apitest.Manager, string) {
	t.Helper()
	mgr := apitest.NewManager(t, nil)
	tokens := apitest.NewTokens(t)
	h := api.New(mgr, api.Config{Tokens: tokens}, nil)
	token := ""
	if withToken {
		token = apitest.MustToken(t, tokens, model.CreateTokenRequest{Admin: true}).Secret
	} else {
		h = apitest.Local(h)
	}
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	c, err := client.New(srv.URL, token)
	if err != nil {
		t.Fatal(err)
	}
	return c, mgr, srv.URL
}

func TestNewAddresses(t *testing.T) {
	good := []string{"unix:///run/torpor/torpor.sock", "/run/torpor.sock", "http://127.0.0.1:4280", "https://h:1", "localhost:4280"}
	for _, addr := range good {
		if _, err := client.New(addr, ""); err != nil {
			t.Errorf("New(%q): %v", addr, err)
		}
	}
	bad := []string{"", "unix://relative.sock", "ftp://host:1", "http://host:1/prefix", "justahost"}
	for _, addr := range bad {
		if _, err := client.New(addr, ""); err == nil {
			t.Errorf("New(%q) accepted", addr)
		}
	}
}

func TestLifecycle(t *testing.T) {
	c, _, _ := serve(t, true)
	ctx := context.Background()
	if err := c.Health(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := c.CreateApp(ctx, "web", "personal"); err != nil {
		t.Fatal(err)
	}
	apps, err := c.ListApps(ctx)
	if err != nil || len(apps) != 1 || apps[0].Name != "web" {
		t.Fatalf("ListApps = %+v, %v", apps, err)
	}
	m, err := c.CreateMachine(ctx, "web", model.CreateMachineRequest{Config: model.MachineConfig{Image: "rootfs", Init: model.InitConfig{Exec: []string{"/app"}}}})
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Suspend(ctx, "web", m.ID); err != nil {
		t.Fatal(err)
	}
	state, err := c.Wait(ctx, "web", m.ID, []model.State{model.StateSuspended, model.StateStopped}, 2*time.Second)
	if err != nil || state != model.StateSuspended {
		t.Fatalf("Wait = %q, %v", state, err)
	}
	resp, err := c.Start(ctx, "web", m.ID)
	if err != nil || !resp.FromSnapshot {
		t.Fatalf("Start = %+v, %v", resp, err)
	}
	if err := c.Stop(ctx, "web", m.ID, model.StopRequest{Signal: "SIGINT"}); err != nil {
		t.Fatal(err)
	}
	if err := c.Cordon(ctx, "web", m.ID, true); err != nil {
		t.Fatal(err)
	}
	got, err := c.GetMachine(ctx, "web", m.ID)
	if err != nil || got.State != model.StateStopped || !got.Cordoned {
		t.Fatalf("GetMachine = %+v, %v", got, err)
	}
	updated, err := c.UpdateMachine(ctx, "web", m.ID, model.UpdateMachineRequest{Config: model.MachineConfig{Image: "new", Init: model.InitConfig{Exec: []string{"/app"}}}, SkipLaunch: true})
	if err != nil || updated.Config.Image != "new" {
		t.Fatalf("UpdateMachine = %+v, %v", updated, err)
	}
	events, err := c.Events(ctx, "web", m.ID)
	if err != nil || len(events) == 0 {
		t.Fatalf("Events = %+v, %v", events, err)
	}
	list, err := c.ListMachines(ctx, "web")
	if err != nil || len(list) != 1 {
		t.Fatalf("ListMachines = %+v, %v", list, err)
	}
	if err := c.Destroy(ctx, "web", m.ID, true); err != nil {
		t.Fatal(err)
	}
	if err := c.DeleteApp(ctx, "web"); err != nil {
		t.Fatal(err)
	}
}

func TestAPIError(t *testing.T) {
	c, _, url := serve(t, true)
	_, err := c.GetMachine(context.Background(), "web", "nope")
	var apiErr *client.APIError
	if !errors.As(err, &apiErr) || apiErr.Status != http.StatusNotFound || !strings.Contains(apiErr.Message, "not found") {
		t.Fatalf("GetMachine error = %#v", err)
	}

	anon, err := client.New(url, "")
	if err != nil {
		t.Fatal(err)
	}
	_, err = anon.ListApps(context.Background())
	if !errors.As(err, &apiErr) || apiErr.Status != http.StatusUnauthorized {
		t.Fatalf("ListApps without token: %#v", err)
	}
}

func TestWaitTimeout(t *testing.T) {
	c, _, _ := serve(t, false)
	ctx := context.Background()
	if _, err := c.CreateApp(ctx, "web", ""); err != nil {
		t.Fatal(err)
	}
	m, err := c.CreateMachine(ctx, "web", model.CreateMachineRequest{Config: model.MachineConfig{Image: "rootfs", Init: model.InitConfig{Exec: []string{"/app"}}}})
	if err != nil {
		t.Fatal(err)
	}
	_, err = c.Wait(ctx, "web", m.ID, []model.State{model.StateStopped}, 10*time.Millisecond)
	var apiErr *client.APIError
	if !errors.As(err, &apiErr) || apiErr.Status != http.StatusRequestTimeout {
		t.Fatalf("Wait error = %#v", err)
	}
}

func TestUnixSocket(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "api.sock")
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	h := api.New(apitest.NewManager(t, nil), api.Config{}, nil)
	var sentAuth atomic.Value
	srv := &http.Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			sentAuth.Store(r.Header.Get("Authorization"))
			h.ServeHTTP(w, r)
		}),
		ConnContext: func(ctx context.Context, _ net.Conn) context.Context { return api.WithLocalAdmin(ctx) }}
	go srv.Serve(l)
	t.Cleanup(func() { srv.Close() })

	for _, addr := range []string{"unix://" + sock, sock} {
		c, err := client.New(addr, "torpor_secret")
		if err != nil {
			t.Fatal(err)
		}
		if err := c.Health(context.Background()); err != nil {
			t.Errorf("Health over %s: %v", addr, err)
		}
		if _, err := c.ListApps(context.Background()); err != nil {
			t.Errorf("ListApps over %s: %v", addr, err)
		}
		if got := sentAuth.Load(); got != "" {
			t.Errorf("client sent Authorization %q over the admin socket", got)
		}
	}
}

func TestTokens(t *testing.T) {
	c, _, url := serve(t, true)
	ctx := context.Background()
	tok, err := c.CreateToken(ctx, model.CreateTokenRequest{Apps: []string{"web"}, Name: "ci"})
	if err != nil || tok.Secret == "" || tok.ID == "" {
		t.Fatalf("CreateToken = %+v, %v", tok, err)
	}
	list, err := c.ListTokens(ctx)
	if err != nil || len(list) != 2 {
		t.Fatalf("ListTokens = %+v, %v", list, err)
	}
	scoped, err := client.New(url, tok.Secret)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := scoped.CreateApp(ctx, "web", ""); err != nil {
		t.Fatalf("scoped token creates its app: %v", err)
	}
	var apiErr *client.APIError
	if _, err := scoped.CreateApp(ctx, "other", ""); !errors.As(err, &apiErr) || apiErr.Status != http.StatusForbidden {
		t.Fatalf("scoped token creates another app: %v", err)
	}
	if err := c.RevokeToken(ctx, tok.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := scoped.ListApps(ctx); !errors.As(err, &apiErr) || apiErr.Status != http.StatusUnauthorized {
		t.Fatalf("revoked token: %v", err)
	}
}

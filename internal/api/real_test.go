package api_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/torpor-dev/torpor/internal/api"
	"github.com/torpor-dev/torpor/internal/api/apitest"
	"github.com/torpor-dev/torpor/internal/machine"
	"github.com/torpor-dev/torpor/internal/model"
	"github.com/torpor-dev/torpor/internal/runtime/fake"
)

// realEnv is the API handler over the real machine.Manager, on the fake
// runtime and a bbolt store kept in memory-backed storage when the host has
// it (fuzzing makes many small commits).
type realEnv struct {
	h      http.Handler
	m      *machine.Manager
	rt     *fake.Runtime
	images string
	data   string
	log    *lockedBuffer
}

// lockedBuffer collects the handler's log for failure messages.
type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

// Since returns what was written after the first n bytes, and the length.
func (b *lockedBuffer) Since(n int) (string, int) {
	b.mu.Lock()
	defer b.mu.Unlock()
	all := b.buf.String()
	return all[min(n, len(all)):], len(all)
}

func newRealEnv(tb testing.TB) *realEnv { return newRealEnvWith(tb, false) }

// newRealEnvWith is newRealEnv, with the real volume manager when
// withVolumes (never for the fuzzer: a volume it made would reserve its
// size on the host).
func newRealEnvWith(tb testing.TB, withVolumes bool) *realEnv {
	tb.Helper()
	logBuf := &lockedBuffer{}
	newManager := apitest.NewManager
	if withVolumes {
		newManager = apitest.NewManagerWithVolumes
	}
	m := newManager(tb, logBuf)
	if err := os.Symlink("/", filepath.Join(m.Images, "escape")); err != nil {
		tb.Fatal(err)
	}
	logger := slog.New(slog.NewTextHandler(logBuf, &slog.HandlerOptions{Level: slog.LevelWarn}))
	acfg := api.Config{}
	if m.Volumes != nil {
		acfg.Volumes = m.Volumes
	}
	return &realEnv{h: asLocalAdmin(api.New(m, acfg, logger)), m: m.Manager, rt: m.Runtime, images: m.Images, data: m.Data, log: logBuf}
}

// asLocalAdmin serves h as the daemon serves its admin socket: every request
// is an admin's, so validation is reached without a token.
func asLocalAdmin(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h.ServeHTTP(w, r.WithContext(api.WithLocalAdmin(r.Context())))
	})
}

// fixture is one app with one machine in a chosen state.
type fixture struct {
	app, id string
}

// fixtureStates are the states a fixture's machine can be put in.
var fixtureStates = []model.State{model.StateCreated, model.StateStarted, model.StateStopped, model.StateSuspended}

// newFixture creates app and a machine in state (one of fixtureStates).
func (e *realEnv) newFixture(tb testing.TB, app string, state model.State) fixture {
	tb.Helper()
	ctx := context.Background()
	if _, err := e.m.CreateApp(ctx, model.App{Name: app}); err != nil {
		tb.Fatal(err)
	}
	req := model.CreateMachineRequest{SkipLaunch: state == model.StateCreated,
		Config: model.MachineConfig{Image: "base", Init: model.InitConfig{Exec: []string{"/app"}}}}
	mc, err := e.m.Create(ctx, app, req)
	if err != nil {
		tb.Fatal(err)
	}
	switch state {
	case model.StateStopped:
		err = e.m.Stop(ctx, app, mc.ID, model.StopRequest{})
	case model.StateSuspended:
		err = e.m.Suspend(ctx, app, mc.ID)
	}
	if err != nil {
		tb.Fatalf("put machine in state %s: %v", state, err)
	}
	return fixture{app: app, id: mc.ID}
}

// remove destroys the fixture's machines and its app.
func (e *realEnv) remove(tb testing.TB, fx fixture) {
	tb.Helper()
	ctx := context.Background()
	ms, err := e.m.List(ctx, fx.app)
	if model.IsNotFound(err) {
		return
	}
	// As the daemon's own operation: a lease the request took holds no sway.
	ctx = model.WithSource(ctx, model.SourceFlyd)
	for _, mc := range ms {
		if err := e.m.Destroy(ctx, fx.app, mc.ID, true); err != nil {
			tb.Fatalf("destroy %s: %v", mc.ID, err)
		}
	}
	if err := e.m.DeleteApp(ctx, fx.app); err != nil && !model.IsNotFound(err) {
		tb.Fatalf("delete app %s: %v", fx.app, err)
	}
	e.rt.ResetCalls()
}

// expand replaces {app}, {id}, $IMAGES and $DATA in s by the fixture's.
func (e *realEnv) expand(s string, fx fixture) string {
	return strings.NewReplacer("{app}", fx.app, "{id}", fx.id, "$IMAGES", e.images, "$DATA", e.data).Replace(s)
}

// serve sends a request with a context that ends after timeout and returns
// the recorded answer.
func (e *realEnv) serve(method, target, body string, timeout time.Duration) (*httptest.ResponseRecorder, error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, "http://torpor"+target, rd)
	if err != nil {
		return nil, err
	}
	req.RequestURI = target
	if req.Body == nil {
		req.Body = http.NoBody // as the server sets it
	}
	rec := httptest.NewRecorder()
	e.h.ServeHTTP(rec, req)
	return rec, nil
}

// checkAnswer checks what must hold of any answer: no 5xx, and every
// non-2xx answer is a JSON object with a non-empty "error".
func checkAnswer(rec *httptest.ResponseRecorder) error {
	if rec.Code >= 500 {
		return fmt.Errorf("status %d: %s", rec.Code, rec.Body)
	}
	if rec.Code >= 200 && rec.Code < 300 {
		return nil
	}
	if ct := rec.Header().Get("Content-Type"); ct != "application/json" {
		return fmt.Errorf("status %d with Content-Type %q: %s", rec.Code, ct, rec.Body)
	}
	var eb struct {
		Error string `json:"error"`
	}
	if err := json.Unmarshal(rec.Body.Bytes(), &eb); err != nil || eb.Error == "" {
		return fmt.Errorf("status %d without a JSON error: %q", rec.Code, rec.Body)
	}
	return nil
}

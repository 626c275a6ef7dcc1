// Package machinetest gives tests of the packages built on the machine
// lifecycle (metrics, dashboard, ...) a real machine.Manager over the fake
// runtime and a real store in a temporary directory: only the sandbox is
// faked.
package machinetest

import (
	"context"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/torpor-dev/torpor/internal/machine"
	"github.com/torpor-dev/torpor/internal/model"
	"github.com/torpor-dev/torpor/internal/runtime/fake"
	"github.com/torpor-dev/torpor/internal/store"
)

// Env is a recovered Manager on the fake runtime.
type Env struct {
	M       *machine.Manager
	RT      *fake.Runtime
	Store   *store.Store
	DataDir string
	// Image is an image name machines can be created with.
	Image string
}

// New returns an Env that is closed when tb ends.
func New(tb testing.TB) *Env {
	tb.Helper()
	dir := tb.TempDir()
	images := filepath.Join(dir, "images")
	if err := os.MkdirAll(filepath.Join(images, "base"), 0o755); err != nil {
		tb.Fatal(err)
	}
	st, err := store.Open(filepath.Join(dir, "torpor.db"))
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { st.Close() })
	rt := fake.New("v1")
	data := filepath.Join(dir, "data")
	m, err := machine.New(machine.Config{DataDir: data, ImagesDir: images, RunDir: filepath.Join(dir, "run"),
		StopTimeout: 5 * time.Millisecond, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))}, st, rt)
	if err != nil {
		tb.Fatal(err)
	}
	if err := m.Recover(context.Background()); err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(m.Close)
	return &Env{M: m, RT: rt, Store: st, DataDir: data, Image: "base"}
}

// App creates an app.
func (e *Env) App(tb testing.TB, name string) {
	tb.Helper()
	if _, err := e.M.CreateApp(context.Background(), model.App{Name: name}); err != nil {
		tb.Fatal(err)
	}
}

// Machine creates a started machine in app.
func (e *Env) Machine(tb testing.TB, app string) model.Machine {
	tb.Helper()
	mc, err := e.M.Create(context.Background(), app, model.CreateMachineRequest{
		Config: model.MachineConfig{Image: e.Image, Init: model.InitConfig{Exec: []string{"/app"}}}})
	if err != nil {
		tb.Fatal(err)
	}
	return mc
}

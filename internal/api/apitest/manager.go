// Package apitest owns what tests of the API, the client and the CLI share:
// NewManager, the real machine lifecycle (machine.Manager) over the fake
// runtime (only the sandbox is faked), and helpers for authentication:
// Local marks requests as coming over the admin socket, NewTokens gives
// real tokens in a temporary store.
package apitest

import (
	"context"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/torpor-dev/torpor/internal/machine"
	"github.com/torpor-dev/torpor/internal/runtime/fake"
	"github.com/torpor-dev/torpor/internal/store"
	"github.com/torpor-dev/torpor/internal/volume"
)

// Manager is a real machine.Manager over the fake runtime, with its store,
// data and images in a temporary directory (on /dev/shm when the host has
// one: fuzzing makes many small commits).
type Manager struct {
	*machine.Manager
	// Runtime is the fake runtime under it.
	Runtime *fake.Runtime
	// Images is its images directory. It holds the images Images names.
	Images string
	// Data is its data directory.
	Data string
	// Volumes is the real volume manager it mounts volumes with, when made
	// by NewManagerWithVolumes.
	Volumes *volume.Manager
}

// ImageNames are the images every Manager has: empty directories, which the
// fake runtime needs no more of.
var ImageNames = []string{"base", "rootfs", "other", "new"}

// NewManager returns a recovered Manager, closed at the end of tb. A nil
// log logs nowhere.
func NewManager(tb testing.TB, log io.Writer) *Manager { return newManager(tb, log, false) }

// NewManagerWithVolumes is NewManager with the real volume manager (its
// volumes in the temporary directory; never for a fuzzer: each volume it
// makes reserves its size on the host).
func NewManagerWithVolumes(tb testing.TB, log io.Writer) *Manager { return newManager(tb, log, true) }

func newManager(tb testing.TB, log io.Writer, withVolumes bool) *Manager {
	tb.Helper()
	dir := fastTempDir(tb)
	images := filepath.Join(dir, "images")
	for _, name := range ImageNames {
		if err := os.MkdirAll(filepath.Join(images, name), 0o755); err != nil {
			tb.Fatal(err)
		}
	}
	st, err := store.Open(filepath.Join(dir, "torpor.db"))
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { st.Close() })
	if log == nil {
		log = io.Discard
	}
	logger := slog.New(slog.NewTextHandler(log, &slog.HandlerOptions{Level: slog.LevelWarn}))
	rt := fake.New("v1")
	data := filepath.Join(dir, "data")
	mcfg := machine.Config{DataDir: data, ImagesDir: images, RunDir: filepath.Join(dir, "run"),
		StopTimeout: 5 * time.Millisecond, Logger: logger}
	var vols *volume.Manager
	if withVolumes {
		if vols, err = volume.New(volume.Config{Dir: filepath.Join(dir, "volumes"), Logger: logger}, st); err != nil {
			tb.Fatal(err)
		}
		mcfg.Volumes = vols
		// A volume stays mounted until it is destroyed (across daemon
		// restarts too), and a test need not destroy what it made: unmount
		// them all, or each run leaves a loop device holding its deleted
		// file, 1 GiB of /dev/shm's memory (seen: ten after ten CI runs).
		tb.Cleanup(func() { unmountVolumes(filepath.Join(dir, "volumes")) })
	}
	m, err := machine.New(mcfg, st, rt)
	if err != nil {
		tb.Fatal(err)
	}
	if err := m.Recover(context.Background()); err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(m.Close)
	return &Manager{Manager: m, Runtime: rt, Images: images, Data: data, Volumes: vols}
}

// unmountVolumes detaches every volume's filesystem under dir.
func unmountVolumes(dir string) {
	entries, _ := os.ReadDir(dir)
	for _, e := range entries {
		_ = unix.Unmount(filepath.Join(dir, e.Name(), "fs"), unix.MNT_DETACH)
	}
}

// fastTempDir is a temporary directory on /dev/shm when there is one.
func fastTempDir(tb testing.TB) string {
	tb.Helper()
	dir, err := os.MkdirTemp("/dev/shm", "torpor-api-test-")
	if err != nil {
		return tb.TempDir()
	}
	tb.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}

package gvisor

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/torpor-dev/torpor/internal/runtime"
)

// hostMountApp writes to a bind-mounted host directory before it is
// checkpointed (through an fd it keeps open, and through a shared memory
// mapping), then, once restored and told to go on, reads what the host
// wrote meanwhile and writes through its old fd again.
const hostMountApp = `
import mmap, os, sys, time
log = open('/data/log', 'a')
log.write('before\n'); log.flush()          # write(2), no fsync
fd = os.open('/data/mm', os.O_RDWR)
mm = mmap.mmap(fd, 4096, mmap.MAP_SHARED)
mm[:7] = b'mmapped'
print('ready', flush=True)
while not os.path.exists('/data/go'):
    time.sleep(0.02)
print('host:' + open('/data/host').read(), flush=True)
print('mm:' + mm[:12].decode(), flush=True)
log.write('after\n'); log.flush()
print('log:' + open('/data/log').read().replace('\n', '|'), flush=True)
print('done', flush=True)
while True:
    time.sleep(1)
`

// TestHostMountAcrossCheckpointRestore measures what gVisor does with a
// host directory bound into a sandbox (as torpor binds volumes) across a
// checkpoint and a restore: see docs/volumes.md.
func TestHostMountAcrossCheckpointRestore(t *testing.T) {
	base := t.TempDir()
	dataA, dataB := filepath.Join(base, "a"), filepath.Join(base, "b")
	if err := os.Mkdir(dataA, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dataA, "mm"), make([]byte, 4096), 0o644); err != nil {
		t.Fatal(err)
	}
	ctx, rt, spec, con, image := checkpointWithMount(t, "hostmount", hostMountApp, dataA)
	// 1. Writes the app made (write(2) without fsync, and a store into a
	// shared mapping) are in the host's file once the sandbox is gone: a
	// cold start that discards the snapshot sees them.
	if got := readFile(t, filepath.Join(dataA, "log")); got != "before\n" {
		t.Fatalf("host sees log %q after checkpoint, want the app's write", got)
	}
	if got := readFile(t, filepath.Join(dataA, "mm")); !strings.HasPrefix(got, "mmapped") {
		t.Fatalf("host sees mapping %q after checkpoint, want the app's store", got[:16])
	}
	// 2. The host changes the directory while the sandbox is suspended.
	appendFile(t, filepath.Join(dataA, "log"), "host-appended\n")
	if err := os.WriteFile(filepath.Join(dataA, "host"), []byte("from host"), 0o644); err != nil {
		t.Fatal(err)
	}
	writeAt(t, filepath.Join(dataA, "mm"), 7, "-host")
	// 3. The restore is given the same destination from another source path.
	if err := os.Rename(dataA, dataB); err != nil {
		t.Fatal(err)
	}
	spec.Mounts[0].Source = dataB
	if err := rt.Restore(ctx, spec, image); err != nil {
		t.Fatalf("restore with the mount's source moved: %v", err)
	}
	if err := os.WriteFile(filepath.Join(dataB, "go"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 30*time.Second, "the app after restore", func() bool { return hasLine(con.snapshot(), "done") })
	lines := con.snapshot()
	for _, want := range []string{"host:from host", "mm:mmapped-host", "log:before|host-appended|after|"} {
		if !hasLine(lines, want) {
			t.Errorf("after restore the app printed %q, want a line %q", lines, want)
		}
	}
}

// checkpointWithMount boots python code with the host directory data at
// /data, waits for it to print "ready" and checkpoints it.
func checkpointWithMount(t *testing.T, prefix, code, data string) (context.Context, *Runtime, runtime.Spec, *console, string) {
	t.Helper()
	rt := newTestRuntime(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	t.Cleanup(cancel)
	con := newConsole(t)
	spec := newSpec(t, rt, prefix, con.path, code)
	spec.Mounts = []runtime.Mount{{Source: data, Destination: "/data"}}
	if err := rt.Boot(ctx, spec); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 30*time.Second, "the app", func() bool { return hasLine(con.snapshot(), "ready") })
	image := t.TempDir()
	if err := rt.Checkpoint(ctx, spec.ID, image); err != nil {
		t.Fatal(err)
	}
	return ctx, rt, spec, con, image
}

func hasLine(lines []string, want string) bool {
	for _, l := range lines {
		if l == want {
			return true
		}
	}
	return false
}

func readFile(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func appendFile(t *testing.T, path, s string) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteString(s); err != nil {
		t.Fatal(err)
	}
}

func writeAt(t *testing.T, path string, off int64, s string) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteAt([]byte(s), off); err != nil {
		t.Fatal(err)
	}
}

// heldFileApp keeps a file of the host directory open.
const heldFileApp = `
import os, time
held = open('/data/held', 'r+')
print('ready', flush=True)
while True:
    time.sleep(1)
`

// TestHostMountFileRemovedWhileSuspended: a file the app holds open is
// deleted on the host while the sandbox is suspended. gVisor reopens the
// files its app holds by path when it restores, so the restore fails
// (torpor then cold-starts the machine, see docs/volumes.md).
func TestHostMountFileRemovedWhileSuspended(t *testing.T) {
	data := t.TempDir()
	if err := os.WriteFile(filepath.Join(data, "held"), []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	ctx, rt, spec, _, image := checkpointWithMount(t, "held", heldFileApp, data)
	os.Remove(filepath.Join(data, "held"))
	err := rt.Restore(ctx, spec, image)
	if err == nil || !strings.Contains(err.Error(), "held") || !strings.Contains(err.Error(), "no such file") {
		t.Fatalf("restore after the held file was removed: %v, want a failure naming it", err)
	}
}

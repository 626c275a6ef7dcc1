package gvisor

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// mountsAt counts the mounts stacked at path.
func mountsAt(t *testing.T, path string) int {
	t.Helper()
	data, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, line := range strings.Split(string(data), "\n") {
		if f := strings.Fields(line); len(f) > 4 && f[4] == path {
			n++
		}
	}
	return n
}

func TestNullNetnsPinnedOnceAndUnmountedOnClose(t *testing.T) {
	rt := newTestRuntime(t)
	path := filepath.Join(rt.cfg.RootDir, nullNetnsFile)
	if n := mountsAt(t, path); n != 1 {
		t.Fatalf("%d mounts at %s after New, want 1", n, path)
	}
	// Concurrent first cold starts: runsc would stack one mount each if it
	// found no namespace pinned.
	const n = 4
	var wg sync.WaitGroup
	for i := 0; i < n; i++ {
		spec := newSpec(t, rt, "nullns", "", "import time; time.sleep(60)")
		wg.Add(1)
		go func() {
			defer wg.Done()
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
			defer cancel()
			if err := rt.Boot(ctx, spec); err != nil {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	if got := mountsAt(t, path); got != 1 {
		t.Fatalf("%d mounts at %s after %d concurrent boots, want 1", got, path, n)
	}
	if err := rt.Close(); err != nil {
		t.Fatal(err)
	}
	if got := mountsAt(t, path); got != 0 {
		t.Fatalf("%d mounts at %s after Close, want 0", got, path)
	}
	if _, err := os.Stat(path); !os.IsNotExist(err) {
		t.Fatalf("%s after Close: %v, want it gone", path, err)
	}
}

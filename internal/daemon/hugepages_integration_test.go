package daemon_test

import (
	"os"
	"strings"
	"testing"

	"github.com/torpor-dev/torpor/internal/runtime/gvisor"
)

// TestDaemonLetsMachineMemoryUseHugePages: on a host whose shmem huge page
// policy is "never" (Debian's default), the daemon sets it to "advise" at
// start and says so; with --host-huge-pages=false it leaves it and warns.
// The policy is host-wide: other tests running meanwhile only get faster
// or slower, never different results.
func TestDaemonLetsMachineMemoryUseHugePages(t *testing.T) {
	orig, err := gvisor.ShmemHugePages(gvisor.ShmemEnabledPath)
	if err != nil {
		t.Skip(err)
	}
	t.Cleanup(func() { os.WriteFile(gvisor.ShmemEnabledPath, []byte(orig), 0o644) })
	set := func(p string) {
		t.Helper()
		if err := os.WriteFile(gvisor.ShmemEnabledPath, []byte(p), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	rng := parallelRange(t)
	set("never")
	kept := newDaemon(t, append(rng, "--host-huge-pages=false")...)
	if p, _ := gvisor.ShmemHugePages(gvisor.ShmemEnabledPath); p != "never" {
		t.Fatalf("--host-huge-pages=false changed the policy to %q", p)
	}
	if !strings.Contains(kept.log(), "machine memory cannot use huge pages") {
		t.Errorf("no warning with the policy left at never:\n%s", kept.log())
	}
	kept.stop()
	d := newDaemon(t, rng...)
	if p, _ := gvisor.ShmemHugePages(gvisor.ShmemEnabledPath); p != "advise" {
		t.Fatalf("policy after the daemon started: %q, want advise", p)
	}
	if !strings.Contains(d.log(), "set the host's shmem huge page policy") {
		t.Errorf("the daemon did not say it changed the policy:\n%s", d.log())
	}
}

package daemon_test

import (
	"os"
	"strings"
	"testing"

	"github.com/torpor-dev/torpor/internal/runtime/gvisor"
)

// TestDaemonLetsMachineMemoryUseHugePages: on a host with Debian's default
// policies (shmem "never", defrag "madvise"), under which runsc uses no
// huge pages, the daemon sets shmem to "advise" and defrag to "defer" at
// start and says so; with --host-huge-pages=false it leaves them and warns.
// The policies are host-wide: other tests running meanwhile only get
// faster or slower, never different results.
func TestDaemonLetsMachineMemoryUseHugePages(t *testing.T) {
	paths := []string{gvisor.ShmemEnabledPath, gvisor.DefragPath}
	for _, p := range paths {
		orig, err := gvisor.ShmemHugePages(p)
		if err != nil {
			t.Skip(err)
		}
		t.Cleanup(func() { os.WriteFile(p, []byte(orig), 0o644) })
	}
	policies := func() []string {
		var out []string
		for _, p := range paths {
			v, _ := gvisor.ShmemHugePages(p)
			out = append(out, v)
		}
		return out
	}
	set := func(shmem, defrag string) {
		t.Helper()
		for i, v := range []string{shmem, defrag} {
			if err := os.WriteFile(paths[i], []byte(v), 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}
	rng := parallelRange(t)
	set("never", "madvise")
	kept := newDaemon(t, append(rng, "--host-huge-pages=false")...)
	if p := policies(); p[0] != "never" || p[1] != "madvise" {
		t.Fatalf("--host-huge-pages=false changed the policies to %q", p)
	}
	if !strings.Contains(kept.log(), "machine memory cannot use huge pages") {
		t.Errorf("no warning with the policies left at never and madvise:\n%s", kept.log())
	}
	kept.stop()
	d := newDaemon(t, rng...)
	if p := policies(); p[0] != "advise" || p[1] != "defer" {
		t.Fatalf("policies after the daemon started: %q, want advise and defer", p)
	}
	if strings.Count(d.log(), "set a host huge page policy") != 2 {
		t.Errorf("the daemon did not say it changed both policies:\n%s", d.log())
	}
	if strings.Contains(d.log(), "machine memory cannot use huge pages") {
		t.Errorf("the daemon warns with both policies set:\n%s", d.log())
	}
}

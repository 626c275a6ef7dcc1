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
// The policies are host-wide, and every daemon sets them at start: the test
// is not parallel (in the package's sequential phase no other daemon of its
// starts meanwhile), and it checks what each daemon did by its log. It ran
// beside parallel daemons before, which could set the policies between its
// write and its daemon's start.
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
	set("never", "madvise")
	kept := newDaemon(t, "--host-huge-pages=false")
	if strings.Contains(kept.log(), "set a host huge page policy") {
		t.Fatalf("--host-huge-pages=false changed a policy (now %q):\n%s", policies(), kept.log())
	}
	if !strings.Contains(kept.log(), "machine memory cannot use huge pages") {
		t.Errorf("no warning with the policies left at never and madvise:\n%s", kept.log())
	}
	kept.stop()
	set("never", "madvise")
	d := newDaemon(t)
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

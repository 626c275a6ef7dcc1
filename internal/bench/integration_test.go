package bench_test

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"image/png"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/torpor-dev/torpor/internal/bench"
	"github.com/torpor-dev/torpor/internal/cli"
)

// TestQuickBench runs `torpor bench --quick` on the real runtime, as CI
// does once: it proves the benchmark works end to end (the report, the
// files, the cleanup), never how fast anything is.
func TestQuickBench(t *testing.T) {
	runsc := envOr("TORPOR_RUNSC", "/var/cache/torpor/bin/runsc")
	rootfs := envOr("TORPOR_ROOTFS", "/var/cache/torpor/rootfs/bookworm-python")
	if why := missing(runsc, rootfs); why != "" {
		if os.Getenv("TORPOR_INTEGRATION") == "1" {
			t.Fatal("integration test prerequisite missing: " + why)
		}
		t.Skip(why)
	}
	out := t.TempDir()
	var stdout, stderr bytes.Buffer
	root := cli.NewRoot(nil)
	root.SetOut(&stdout)
	root.SetErr(&stderr)
	// No proxied wake here: polled every 2 ms through the proxy while other
	// packages' tests load the host, the single-threaded app behind it
	// never answered the first cold start (twice in two parallel runs;
	// alone it passes). The proxied wake is measured by torpor bench.
	root.SetArgs([]string{"bench", "--quick", "--out", out, "--runsc", runsc, "--image", rootfs,
		"--network-range", benchNetworkRange(), "--proxy-wake=false"})
	if err := root.Execute(); err != nil {
		t.Fatalf("bench --quick: %v\nstderr:\n%s", err, stderr.String())
	}
	if !regexp.MustCompile(`\| ~0\.1 s \| 64 MiB \(RSS \d+\) \| [\d.]+ \(\+[\d.]+\) \| \d+ / \d+ \| \d+ / \d+ \| \d+ / \d+ \| \d+ / \d+ \| \d+ / \d+ \| [\d.]+× \|`).
		MatchString(stdout.String()) {
		t.Errorf("no result row in the report:\n%s", stdout.String())
	}
	if !regexp.MustCompile(`\| ~0\.1 s \| 64 MiB \| \d+ / \d+ \| \d+ / \d+ \| [+-]\d+ \| \d+ / \d+ \| – \| – \| – \| – \| [\d.]+ \| [\d.]+ \| [\d.]+ \|`).
		MatchString(stdout.String()) {
		t.Errorf("no row of the raw restore (no proxied wake) in the report:\n%s", stdout.String())
	}
	checkFiles(t, out, stdout.String())
	checkCleanup(t, stderr.String())
}

func checkFiles(t *testing.T, dir, report string) {
	t.Helper()
	latest, err := os.ReadFile(filepath.Join(dir, "latest.md"))
	if err != nil || string(latest) != report {
		t.Errorf("latest.md (%v) differs from the report printed", err)
	}
	stamped, _ := filepath.Glob(filepath.Join(dir, "2*Z.md"))
	if len(stamped) != 1 {
		t.Errorf("want one timestamped report, got %v", stamped)
	}
	raw, err := os.ReadFile(filepath.Join(dir, "latest.json"))
	if err != nil {
		t.Fatal(err)
	}
	var res bench.Result
	if err := json.Unmarshal(raw, &res); err != nil {
		t.Fatalf("latest.json: %v", err)
	}
	if len(res.Scenarios) != 1 || len(res.Scenarios[0].Samples) != 2 {
		t.Fatalf("want 1 scenario of 2 runs, got %+v", res.Scenarios)
	}
	sr := res.Scenarios[0]
	for i, s := range sr.Samples {
		if s.ColdMS <= 0 || s.ResumeMS <= 0 || s.SuspendMS <= 0 || s.SnapshotBytes <= 0 || s.SnapshotSource != "disk" ||
			s.ResumeEvent["duration_ms"] <= 0 || s.SuspendEvent["duration_ms"] <= 0 || s.RSSBytes < 60<<20 ||
			s.RawMS <= 0 || s.RawRestoreMS <= 0 || s.PageCacheGBs <= 0 {
			t.Errorf("sample %d incomplete: %+v", i, s)
		}
	}
	// The ways back rotate: the second run begins with the first run's second.
	if o0, o1 := sr.Samples[0].Order, sr.Samples[1].Order; len(o0) < 2 || len(o1) != len(o0) || o1[0] != o0[1] || o1[len(o1)-1] != o0[0] {
		t.Errorf("the runs' orders do not rotate: %v then %v", o0, o1)
	}
	if !strings.Contains(sr.Verified, "intact") {
		t.Errorf("memory check after the last resume: %q", sr.Verified)
	}
	f, err := os.Open(filepath.Join(dir, "latest.png"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	img, err := png.Decode(f)
	if err != nil || img.Bounds().Dx() < 200 {
		t.Errorf("latest.png: %v", err)
	}
}

// checkCleanup checks the in-process daemon's directory is gone.
func checkCleanup(t *testing.T, progress string) {
	t.Helper()
	m := regexp.MustCompile(`removed (\S+)`).FindStringSubmatch(progress)
	if m == nil {
		t.Fatalf("the in-process daemon was not cleaned up:\n%s", progress)
	}
	if _, err := os.Stat(m[1]); !os.IsNotExist(err) {
		t.Errorf("%s still exists (%v)", m[1], err)
	}
}

func missing(runsc, rootfs string) string {
	if os.Geteuid() != 0 {
		return "needs root"
	}
	for _, p := range []string{runsc, filepath.Join(rootfs, "usr/bin/python3")} {
		if _, err := os.Stat(p); err != nil {
			return err.Error()
		}
	}
	return ""
}

func envOr(key, def string) string {
	if v := os.Getenv(key); v != "" {
		return v
	}
	return def
}

// benchNetworkRange is the upper half of TORPOR_TEST_NETWORK_RANGE
// (internal/daemon's tests take the lower half: a daemon refuses a range
// overlapping a live daemon's, and `go test ./...` runs both at once), else
// 10.212.0.0/16.
func benchNetworkRange() string {
	r, ok := os.LookupEnv("TORPOR_TEST_NETWORK_RANGE")
	if !ok {
		return "10.212.0.0/16"
	}
	p, err := netip.ParsePrefix(r)
	if err != nil || p.Bits() >= 24 {
		return r
	}
	p = p.Masked()
	a := p.Addr().As4()
	upper := binary.BigEndian.Uint32(a[:]) | 1<<(31-p.Bits())
	binary.BigEndian.PutUint32(a[:], upper)
	return netip.PrefixFrom(netip.AddrFrom4(a), p.Bits()+1).String()
}

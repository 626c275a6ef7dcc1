package bench

import (
	"encoding/json"
	"image/png"
	"maps"
	"math"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/torpor-dev/torpor/internal/model"
)

func TestPercentileNearestRank(t *testing.T) {
	xs := []float64{10, 1, 9, 2, 8, 3, 7, 4, 6, 5}
	for _, c := range []struct{ q, want float64 }{{50, 5}, {95, 10}, {90, 9}, {10, 1}, {1, 1}, {100, 10}} {
		if got := Percentile(xs, c.q); got != c.want {
			t.Errorf("p%v of 1..10 = %v, want %v", c.q, got, c.want)
		}
	}
	if xs[0] != 10 {
		t.Error("Percentile sorted its input in place")
	}
	if got := Percentile([]float64{3, 1}, 50); got != 1 {
		t.Errorf("p50 of {1,3} = %v, want 1 (a sample, not 2)", got)
	}
	if !math.IsNaN(Percentile(nil, 50)) {
		t.Error("p50 of nothing should be NaN")
	}
}

func TestDurationsKeepsOnlyMillisecondFields(t *testing.T) {
	skew := 3.0
	got := durations(&model.StartDetails{FromSnapshot: true, SnapshotID: "x", DurationMS: 40,
		ResumePhases: &model.ResumePhases{RestoreMS: 12, ClaimMS: 1},
		AppNotice:    &model.AppNotice{ResumeCount: 2, ClockSkewMS: &skew}})
	want := map[string]float64{"duration_ms": 40, "restore_ms": 12, "claim_ms": 1, "prepare_ms": 0,
		"runtime_restore_ms": 0, "verify_ms": 0, "verify_wait_ms": 0}
	if !maps.Equal(got, want) {
		t.Errorf("durations = %v, want %v", got, want)
	}
}

func TestDiskUsageAddsUpFiles(t *testing.T) {
	dir := t.TempDir()
	os.MkdirAll(filepath.Join(dir, "a", "b"), 0o700)
	os.WriteFile(filepath.Join(dir, "a", "x"), make([]byte, 10000), 0o600)
	os.WriteFile(filepath.Join(dir, "a", "b", "y"), []byte("12345"), 0o600)
	blocks, apparent, err := diskUsage(dir)
	if err != nil || apparent != 10005 || blocks < 10005 {
		t.Errorf("diskUsage = %d blocks, %d apparent, %v", blocks, apparent, err)
	}
	if _, _, err := diskUsage(filepath.Join(dir, "missing")); err == nil {
		t.Error("no error for a missing directory")
	}
}

// TestFirstByteWaitsForTheApp starts the server only after the probe has
// been refused a few times.
func TestFirstByteWaitsForTheApp(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	go func() {
		time.Sleep(50 * time.Millisecond)
		l, err := net.Listen("tcp", addr)
		if err != nil {
			return
		}
		http.Serve(l, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			json.NewEncoder(w).Encode(appState{Started: 7, PID: 42, BallastMB: int(len(r.URL.Path))})
		}))
	}()
	begin := time.Now()
	p, err := firstByte(t.Context(), addr, "/verify", time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	if p.attempts < 2 || p.state.PID != 42 || p.state.BallastMB != len("/verify") || p.firstByte.Before(begin.Add(50*time.Millisecond)) {
		t.Errorf("probe = %+v", p)
	}
}

func TestFirstByteRetriesAnError(t *testing.T) {
	var calls atomic.Int32
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go http.Serve(l, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if calls.Add(1) < 3 {
			http.Error(w, "warming up", http.StatusServiceUnavailable)
			return
		}
		json.NewEncoder(w).Encode(appState{PID: 1})
	}))
	defer l.Close()
	p, err := firstByte(t.Context(), l.Addr().String(), "/", time.Millisecond)
	if err != nil || p.attempts != 3 {
		t.Errorf("probe = %+v, %v", p, err)
	}
}

func TestValidateNamesTheFlag(t *testing.T) {
	good := Config{Runs: 1, Inits: []Init{{Name: "light"}}, ResidentMB: []int{64}, PollInterval: time.Millisecond, CPUs: 1}
	if err := good.Validate(); err != nil {
		t.Fatal(err)
	}
	for flag, mutate := range map[string]func(*Config){
		"--runs":          func(c *Config) { c.Runs = 0 },
		"--init":          func(c *Config) { c.Inits = nil },
		"--memory":        func(c *Config) { c.ResidentMB = []int{8} },
		"--poll-interval": func(c *Config) { c.PollInterval = 0 },
		"--cpus":          func(c *Config) { c.CPUs = 0 },
	} {
		c := good
		mutate(&c)
		if err := c.Validate(); err == nil || !strings.Contains(err.Error(), flag) {
			t.Errorf("bad %s: error %v", flag, err)
		}
	}
}

// sampleResult is a two-scenario result with known numbers.
func sampleResult() *Result {
	heavy := Init{Name: "heavy", Target: "~2 s", Seconds: 2}
	mk := func(cold, resume float64) Sample {
		return Sample{ColdMS: cold, ColdAPIMS: cold - 100, ResumeMS: resume, ResumeAPIMS: resume - 10, SuspendMS: 120, ResuspendMS: 60,
			SnapshotBytes: 50 << 20, InitSeconds: 2, ReadySeconds: 2.1, RSSBytes: 64 << 20,
			ResumeEvent:  map[string]float64{"duration_ms": resume - 12, "claim_ms": 5, "zz_new_ms": 1},
			SuspendEvent: map[string]float64{"checkpoint_ms": 80, "duration_ms": 110}}
	}
	return &Result{
		Started: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC), Runs: 2, PollInterval: "2ms",
		Host: HostInfo{CPU: "Test CPU", Cores: 2, Kernel: "6.1", Runsc: "runsc version test"},
		Scenarios: []ScenarioResult{
			{Scenario: Scenario{Init: heavy, ResidentMB: 64, GuestMB: 320}, Samples: []Sample{mk(2500, 90), mk(2600, 110)}, Verified: "ok"},
			{Scenario: Scenario{Init: heavy, ResidentMB: 256, GuestMB: 512}, Samples: []Sample{mk(3000, 400), mk(3100, 500)}},
		},
	}
}

func TestMarkdownReportsPercentilesAndRatio(t *testing.T) {
	md := Markdown(sampleResult())
	for _, want := range []string{
		"Host: Test CPU, 2 cores, Linux 6.1; runsc version test;",
		"| ~2 s | 64 MiB (RSS 64) | 2.00 (+0.10) | 2500 / 2600 | 120 / 120 | 60 / 60 | 50 / 50 | 90 / 110 | 27.8× |",
		"| ~2 s | 256 MiB (RSS 64) | 2.00 (+0.10) | 3000 / 3100 | 120 / 120 | 60 / 60 | 50 / 50 | 400 / 500 | 7.5× |",
		"resume p50 ≤ 100 ms: 90 ms (met)",
		"init ~2 s, 256 MiB: cold / resume ≥ 10×: 7.5× (not met)",
		"every 2ms",
		"disk blocks of the files",
	} {
		if !strings.Contains(md, want) {
			t.Errorf("report lacks %q:\n%s", want, md)
		}
	}
	if strings.Contains(md, "in-process daemon ran with") {
		t.Errorf("report names daemon flags the run did not set:\n%s", md)
	}
	flagged := sampleResult()
	flagged.DaemonFlags = (&Config{ClockGate: true, SyncSnapshots: true, KeepHugePagePolicies: true, NoPagesReuse: true}).daemonFlags()
	flagged.Host.HugePages = "shmem_enabled advise, defrag madvise: runsc uses 4 KiB pages for machine memory"
	for _, want := range []string{"The in-process daemon ran with --clock-gate --sync-snapshots --host-huge-pages=false --no-pages-reuse.",
		"Huge pages: shmem_enabled advise, defrag madvise: runsc uses 4 KiB pages for machine memory."} {
		if !strings.Contains(Markdown(flagged), want) {
			t.Errorf("report lacks %q", want)
		}
	}
	if f := (&Config{API: "unix:///x", ClockGate: true}).daemonFlags(); f != nil {
		t.Errorf("flags of a daemon driven by API = %q, want none (the bench does not run it)", f)
	}
	// Known event fields first, unknown ones next, duration_ms last.
	i, j, k := strings.Index(md, "resume event claim_ms"), strings.Index(md, "resume event zz_new_ms"), strings.Index(md, "resume event duration_ms")
	if i < 0 || !(i < j && j < k) {
		t.Errorf("breakdown columns out of order: %d %d %d", i, j, k)
	}
}

func TestWriteFilesWritesReportDataAndChart(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "results")
	res := sampleResult()
	files, err := WriteFiles(dir, res, Markdown(res))
	if err != nil {
		t.Fatal(err)
	}
	if len(files) != 5 {
		t.Errorf("files = %v", files)
	}
	for _, name := range []string{"20260102T030405Z.md", "latest.md", "20260102T030405Z.json", "latest.json"} {
		if _, err := os.Stat(filepath.Join(dir, name)); err != nil {
			t.Error(err)
		}
	}
	raw, _ := os.ReadFile(filepath.Join(dir, "latest.json"))
	var back Result
	if err := json.Unmarshal(raw, &back); err != nil || back.Scenarios[1].Samples[1].ResumeMS != 500 {
		t.Errorf("latest.json does not round-trip: %v", err)
	}
	f, err := os.Open(filepath.Join(dir, "latest.png"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := png.Decode(f); err != nil {
		t.Errorf("latest.png: %v", err)
	}
}

func TestRerenderRewritesFromSavedResult(t *testing.T) {
	res := sampleResult()
	raw, _ := json.Marshal(res)
	saved := filepath.Join(t.TempDir(), "saved.json")
	os.WriteFile(saved, raw, 0o600)
	out := t.TempDir()
	var printed strings.Builder
	if err := Rerender(Config{OutDir: out, Out: &printed}, saved); err != nil {
		t.Fatal(err)
	}
	latest, _ := os.ReadFile(filepath.Join(out, "latest.md"))
	if want := Markdown(res); printed.String() != want || string(latest) != want {
		t.Errorf("rerendered report differs:\n%s", printed.String())
	}
	os.WriteFile(saved, []byte(`{"runs": 1}`), 0o600)
	if err := Rerender(Config{}, saved); err == nil || !strings.Contains(err.Error(), "no scenarios") {
		t.Errorf("empty result: %v", err)
	}
}

func TestNiceTicksAreRound(t *testing.T) {
	var labels []string
	for _, tk := range (niceTicks{}).Ticks(0, 26000) {
		labels = append(labels, tk.Label)
	}
	if got := strings.Join(labels, " "); got != "0 10000 20000" {
		t.Errorf("ticks of 0..26000 = %s", got)
	}
	for raw, want := range map[float64]float64{0.3: 0.5, 7: 10, 120: 200, 1000: 1000, 1500: 2000} {
		if got := niceStep(raw); got != want {
			t.Errorf("niceStep(%v) = %v, want %v", raw, got, want)
		}
	}
}

// TestRotateStartsEachRunOneLater: run n begins with the way after run
// n-1's first, every way comes once, and the input is left as it was.
func TestRotateStartsEachRunOneLater(t *testing.T) {
	ways := []string{"resume", "warm resume", "proxied wake"}
	want := [][]string{
		{"resume", "warm resume", "proxied wake"},
		{"warm resume", "proxied wake", "resume"},
		{"proxied wake", "resume", "warm resume"},
		{"resume", "warm resume", "proxied wake"},
	}
	for k, w := range want {
		if got := rotate(ways, k); !slices.Equal(got, w) {
			t.Errorf("rotate(%d) = %v, want %v", k, got, w)
		}
	}
	if !slices.Equal(ways, []string{"resume", "warm resume", "proxied wake"}) {
		t.Errorf("rotate changed its input: %v", ways)
	}
	if got := rotate([]string(nil), 3); len(got) != 0 {
		t.Errorf("rotate(nil) = %v", got)
	}
}

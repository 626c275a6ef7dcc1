package bench

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestSummarizeProbeFindsTheKnee(t *testing.T) {
	p := summarizeProbe([]float64{130, 120, 125, 118, 121, 1100, 1200, 1150}, 256)
	if p.KneeMiB != 5*256 {
		t.Errorf("knee at %d MiB, want %d", p.KneeMiB, 5*256)
	}
	// Fast: the median of 130 120 125 118 121 (121 ms per 256 MiB); slow:
	// of 1100 1200 1150.
	if want := float64(256<<20) / 0.121 / 1e9; p.FastGBps < want*0.999 || p.FastGBps > want*1.001 {
		t.Errorf("fast %.3f GB/s, want %.3f", p.FastGBps, want)
	}
	if want := float64(256<<20) / 1.150 / 1e9; p.SlowGBps < want*0.999 || p.SlowGBps > want*1.001 {
		t.Errorf("slow %.3f GB/s, want %.3f", p.SlowGBps, want)
	}
	s := p.String()
	for _, want := range []string{"2.22 GB/s for the first 1280 MiB, then 0.23 GB/s", "256 MiB at a time"} {
		if !strings.Contains(s, want) {
			t.Errorf("%q lacks %q", s, want)
		}
	}
}

func TestSummarizeProbeWithoutAKnee(t *testing.T) {
	// A slow first step alone (the kernel warming up) is no knee, nor is a
	// step less than three times the first ones'.
	p := summarizeProbe([]float64{300, 100, 110, 290, 105}, 256)
	if p.KneeMiB != 0 || p.SlowGBps != 0 {
		t.Errorf("knee %d MiB, slow %.2f GB/s; want none", p.KneeMiB, p.SlowGBps)
	}
	if !strings.Contains(p.String(), "over all 1280 MiB") {
		t.Errorf("report %q", p.String())
	}
}

func TestPageReportingReadsTheBalloonsFeatures(t *testing.T) {
	sys := t.TempDir()
	write := func(rel, data string) {
		t.Helper()
		path := filepath.Join(sys, rel)
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, []byte(data), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if got := pageReporting(sys); got != "" {
		t.Errorf("no balloon: %q", got)
	}
	write("bus/virtio/drivers/virtio_balloon/virtio0/features", "0110000000\n")
	if got := pageReporting(sys); got != "" {
		t.Errorf("balloon without reporting: %q", got)
	}
	write("bus/virtio/drivers/virtio_balloon/virtio0/features", "0110010100\n")
	write("module/page_reporting/parameters/page_reporting_order", "9\n")
	if got, want := pageReporting(sys), "free blocks of 2048 KiB and up"; !strings.Contains(got, want) {
		t.Errorf("reporting on: %q, want it to say %q", got, want)
	}
}

// TestProbeMemoryTouchesRealMemory runs the probe itself, small.
func TestProbeMemoryTouchesRealMemory(t *testing.T) {
	p, err := probeMemory(64, 16)
	if err != nil {
		t.Fatal(err)
	}
	if len(p.StepsMS) != 4 || p.FastGBps <= 0 {
		t.Fatalf("probe %+v: want 4 steps and a rate", p)
	}
	for _, ms := range p.StepsMS {
		if ms <= 0 {
			t.Fatalf("a step of %v ms: %+v", ms, p)
		}
	}
	if _, err := probeMemory(8, 16); err == nil {
		t.Error("a probe smaller than its step: no error")
	}
}

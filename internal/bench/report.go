package bench

import (
	"encoding/json"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
)

// Markdown renders the result: header, main table, the resume's breakdown,
// the targets and how the numbers were taken.
func Markdown(res *Result) string {
	var b strings.Builder
	h := res.Host
	fmt.Fprintf(&b, "## torpor bench, %s\n\n", res.Started.Format("2006-01-02 15:04 UTC"))
	fmt.Fprintf(&b, "Host: %s, %d cores, Linux %s; %s; torpor %s (%s). "+
		"Load average (1/5/15 min) %s at the start, %s at the end.\n\n",
		h.CPU, h.Cores, h.Kernel, h.Runsc, h.Torpor, h.Go, h.LoadStart, h.LoadEnd)
	if h.Memory != nil {
		b.WriteString(h.Memory.String() + "\n\n")
	}
	if h.HugePages != "" {
		fmt.Fprintf(&b, "Huge pages: %s.\n\n", h.HugePages)
	}
	if len(res.DaemonFlags) > 0 {
		fmt.Fprintf(&b, "The in-process daemon ran with %s.\n\n", strings.Join(res.DaemonFlags, " "))
	}
	mainTable(&b, res)
	sameRunTable(&b, res)
	warmTable(&b, res)
	imagesTable(&b, res)
	breakdownTable(&b, res)
	targets(&b, res)
	method(&b, res)
	return b.String()
}

// series collects one number per sample.
func series(ss []Sample, f func(Sample) float64) []float64 {
	xs := make([]float64, 0, len(ss))
	for _, s := range ss {
		xs = append(xs, f(s))
	}
	return xs
}

// pair formats a summary as "p50 / p95" with the given verb.
func pair(s Summary, verb string) string {
	if s.N == 0 || math.IsNaN(s.P50) {
		return "–"
	}
	return fmt.Sprintf(verb+" / "+verb, s.P50, s.P95)
}

func mainTable(b *strings.Builder, res *Result) {
	b.WriteString("| app init | resident | app's own init, s (+ ballast fill) | cold start, ms | suspend, ms | suspend after a resume, ms | snapshot on disk, MiB | resume, ms | cold / resume | resume into a warm sandbox (the default), ms | cold / warm resume |\n")
	b.WriteString("|---|---|---|---|---|---|---|---|---|---|---|\n")
	for _, sr := range res.Scenarios {
		ss := sr.Samples
		cold := Summarize(series(ss, func(s Sample) float64 { return s.ColdMS }))
		resume := Summarize(series(ss, func(s Sample) float64 { return s.ResumeMS }))
		init := Percentile(series(ss, func(s Sample) float64 { return s.InitSeconds }), 50)
		fill := Percentile(series(ss, func(s Sample) float64 { return s.ReadySeconds - s.InitSeconds }), 50)
		rss := Percentile(series(ss, func(s Sample) float64 { return mib(s.RSSBytes) }), 50)
		warm := Summarize(nonZero(series(ss, func(s Sample) float64 { return s.WarmResumeMS })))
		warmRatio := "–"
		if warm.N > 0 {
			warmRatio = ratio(cold.P50, warm.P50)
		}
		fmt.Fprintf(b, "| %s | %d MiB (RSS %.0f) | %.2f (+%.2f) | %s | %s | %s | %s | %s | %s | %s | %s |\n",
			sr.Init.Target, sr.ResidentMB, rss, init, fill, pair(cold, "%.0f"),
			pair(Summarize(series(ss, func(s Sample) float64 { return s.SuspendMS })), "%.0f"),
			pair(Summarize(nonZero(series(ss, func(s Sample) float64 { return s.ResuspendMS }))), "%.0f"),
			pair(Summarize(series(ss, func(s Sample) float64 { return mib(s.SnapshotBytes) })), "%.0f"),
			pair(resume, "%.0f"), ratio(cold.P50, resume.P50), pair(warm, "%.0f"), warmRatio)
	}
	b.WriteString("\nTimes are p50 / p95 over the runs; cold / resume is the ratio of the p50s. The suspend column follows a cold " +
		"start; the suspend after a resume is the same machine suspended again right after the run's first way back, as in every cycle of scale to " +
		"zero after the first (it writes over the pages file it was resumed from: docs/suspend-resume.md#reusing-the-pages-file). The resume column creates its sandbox " +
		"(warm sandboxes off); the daemon's default (--warm-sandboxes-memory 256MiB) resumes the machines likeliest to wake into one " +
		"created ahead, as in the warm column (see the warm table below).\n\n")
}

// sameRunTable sets torpor's resume beside, in the same runs, a restore of
// the same snapshot with runsc alone and a wake through the proxy, with
// the bandwidth a restore reads pages at against the page cache's.
func sameRunTable(b *strings.Builder, res *Result) {
	measured := false
	for _, sr := range res.Scenarios {
		for _, s := range sr.Samples {
			measured = measured || s.RawMS > 0 || s.ProxyWakeMS > 0
		}
	}
	if !measured {
		return
	}
	b.WriteString("Resume beside a raw runsc restore and a proxied wake, in the same runs (p50 / p95, ms):\n\n")
	b.WriteString("| app init | resident | torpor resume | raw runsc restore + SIGCONT | torpor's own share (p50) | raw `runsc restore` command | proxied wake (resume + proxy) | proxy's share (p50) | the proxied wake's resume (its event's duration_ms) | proxied wake beyond its resume (p50) | page-cache read, GB/s | raw restore reads, GB/s | checkpoint writes, GB/s |\n")
	b.WriteString("|---|---|---|---|---|---|---|---|---|---|---|---|---|\n")
	for _, sr := range res.Scenarios {
		ss := sr.Samples
		sum := func(f func(Sample) float64) Summary { return Summarize(nonZero(series(ss, f))) }
		resume := sum(func(s Sample) float64 { return s.ResumeMS })
		raw := sum(func(s Sample) float64 { return s.RawMS })
		proxied := sum(func(s Sample) float64 { return s.ProxyWakeMS })
		wakeResume := sum(func(s Sample) float64 { return s.ProxyWakeEvent["duration_ms"] })
		beyond := sum(func(s Sample) float64 {
			if s.ProxyWakeEvent["duration_ms"] <= 0 {
				return 0
			}
			return s.ProxyWakeMS - s.ProxyWakeEvent["duration_ms"]
		})
		cache := sum(func(s Sample) float64 { return s.PageCacheGBs })
		reads := sum(func(s Sample) float64 {
			if s.RawRestoreMS <= 0 {
				return 0
			}
			return float64(s.SnapshotApparent) / (s.RawRestoreMS / 1e3) / 1e9
		})
		writes := sum(func(s Sample) float64 {
			if s.SuspendEvent["checkpoint_ms"] <= 0 {
				return 0
			}
			return float64(s.SnapshotApparent) / (s.SuspendEvent["checkpoint_ms"] / 1e3) / 1e9
		})
		fmt.Fprintf(b, "| %s | %d MiB | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |\n", sr.Init.Target, sr.ResidentMB,
			pair(resume, "%.0f"), pair(raw, "%.0f"), diff(resume, raw),
			pair(sum(func(s Sample) float64 { return s.RawRestoreMS }), "%.0f"),
			pair(proxied, "%.0f"), diff(proxied, resume), pair(wakeResume, "%.0f"), p50(beyond, "%+.0f"),
			p50(cache, "%.1f"), p50(reads, "%.2f"), p50(writes, "%.2f"))
	}
	b.WriteString("\nThe raw restore runs just before torpor's resume, on hard links to the same snapshot files, with runsc's flags as the daemon " +
		"passes them, the machine's config.json and network namespace, then `runsc kill --all SIGCONT` (torpor freezes the app before " +
		"the checkpoint); it is probed like the resume. Its share is the difference of the p50s. The proxied wake is a request through " +
		"the daemon's proxy to the suspended machine (a wake right after a suspend, as the proxy's first request " +
		"after an autosuspend may be), without a warm sandbox; \"beyond its resume\" is, per run, its time to first byte less its resume " +
		"event's duration_ms: what the proxy adds (a resume through the API adds ~10 ms to its event the same way: the client's poll, " +
		"see the breakdown below). The page-cache read is a second read of the snapshot's files " +
		"just before the raw restore; \"raw restore reads\" is the snapshot's size over the `runsc restore` command's time, and \"checkpoint writes\" " +
		"its size over the suspend event's checkpoint_ms (compare both with the fresh-memory rate in the header).\n\n")
}

// warmTable sets, in the same runs, a resume that creates its sandbox
// beside one into a sandbox created ahead (Config.Warm).
func warmTable(b *strings.Builder, res *Result) {
	measured := false
	for _, sr := range res.Scenarios {
		for _, s := range sr.Samples {
			measured = measured || s.WarmResumeMS > 0
		}
	}
	if !measured {
		return
	}
	b.WriteString("Resume without and with a warm sandbox (created ahead, `--warm-sandboxes-memory`), in the same runs (p50 / p95, ms):\n\n")
	b.WriteString("| app init | resident | resume | resume into a warm sandbox | gain (p50) | runtime restore | runtime restore, warm |\n")
	b.WriteString("|---|---|---|---|---|---|---|\n")
	for _, sr := range res.Scenarios {
		ss := sr.Samples
		sum := func(f func(Sample) float64) Summary { return Summarize(nonZero(series(ss, f))) }
		resume := sum(func(s Sample) float64 { return s.ResumeMS })
		warm := sum(func(s Sample) float64 { return s.WarmResumeMS })
		fmt.Fprintf(b, "| %s | %d MiB | %s | %s | %s | %s | %s |\n", sr.Init.Target, sr.ResidentMB,
			pair(resume, "%.0f"), pair(warm, "%.0f"), diff(warm, resume),
			pair(sum(func(s Sample) float64 { return s.ResumeEvent["runtime_restore_ms"] }), "%.0f"),
			pair(sum(func(s Sample) float64 { return s.WarmRuntimeRestoreMS }), "%.0f"))
	}
	b.WriteString("\nThe warm resume is of the suspended machine once the daemon has created its " +
		"sandbox ahead (one, at the default cost); the plain resume runs with the budget off. Before each of the two, the benchmark " +
		"flushes the snapshot's files (the daemon does it in the background after the suspend), so that neither resume competes with that, and with the raw restore on (which reads the plain resume's image from the page cache " +
		"just before it) reads the warm resume's image the same way. Runtime restore is the resume event's " +
		"runtime_restore_ms (the `runsc restore` and the cgroup work around it).\n\n")
}

// nonZero drops the zeros (runs where a number was not measured).
func nonZero(xs []float64) []float64 {
	out := xs[:0:0]
	for _, x := range xs {
		if x > 0 {
			out = append(out, x)
		}
	}
	return out
}

// diff is the difference of two p50s, "–" when either is missing.
func diff(a, b Summary) string {
	if a.N == 0 || b.N == 0 || math.IsNaN(a.P50) || math.IsNaN(b.P50) {
		return "–"
	}
	return fmt.Sprintf("%+.0f", a.P50-b.P50)
}

// p50 formats a summary's p50 alone.
func p50(s Summary, verb string) string {
	if s.N == 0 || math.IsNaN(s.P50) {
		return "–"
	}
	return fmt.Sprintf(verb, s.P50)
}

func ratio(a, b float64) string {
	if b <= 0 || math.IsNaN(a) || math.IsNaN(b) {
		return "–"
	}
	return fmt.Sprintf("%.1f×", a/b)
}

// eventOrder is the order of the resume event's known fields
// (model.ResumePhases, in the order the phases happen, then
// model.AppNotice's); others go before duration_ms, alphabetically.
var eventOrder = []string{"claim_ms", "prepare_ms", "runtime_restore_ms", "verify_ms", "verify_wait_ms", "restore_ms", "app_notice_ms"}

// eventKeys lists the *_ms fields some sample's event map has.
func eventKeys(res *Result, m func(Sample) map[string]float64) []string {
	seen := map[string]bool{}
	for _, sr := range res.Scenarios {
		for _, s := range sr.Samples {
			for k := range m(s) {
				seen[k] = true
			}
		}
	}
	rank := func(k string) int {
		if i := slices.Index(eventOrder, k); i >= 0 {
			return i
		}
		if k == "duration_ms" {
			return len(eventOrder) + 1
		}
		return len(eventOrder)
	}
	keys := make([]string, 0, len(seen))
	for k := range seen {
		keys = append(keys, k)
	}
	slices.SortFunc(keys, func(a, b string) int {
		if d := rank(a) - rank(b); d != 0 {
			return d
		}
		return strings.Compare(a, b)
	})
	return keys
}

func breakdownTable(b *strings.Builder, res *Result) {
	resumeKeys := eventKeys(res, func(s Sample) map[string]float64 { return s.ResumeEvent })
	suspendKeys := eventKeys(res, func(s Sample) map[string]float64 { return s.SuspendEvent })
	b.WriteString("Where the time goes, p50 / p95 in ms: the start and suspend calls as the client sees them, " +
		"the daemon's own fields from the resume and suspend events, and the wait for the first byte once the start call has returned.\n\n")
	b.WriteString("| app init | resident | resume: start call |")
	for _, k := range resumeKeys {
		fmt.Fprintf(b, " resume event %s |", k)
	}
	b.WriteString(" resume: first byte after the call |")
	for _, k := range suspendKeys {
		fmt.Fprintf(b, " suspend event %s |", k)
	}
	b.WriteString(" cold: start call | cold: first byte after the call |\n|---|---|---|")
	b.WriteString(strings.Repeat("---|", len(resumeKeys)+len(suspendKeys)+3) + "\n")
	for _, sr := range res.Scenarios {
		ss := sr.Samples
		cell := func(f func(Sample) float64) string { return pair(Summarize(series(ss, f)), "%.0f") }
		fmt.Fprintf(b, "| %s | %d MiB | %s |", sr.Init.Target, sr.ResidentMB, cell(func(s Sample) float64 { return s.ResumeAPIMS }))
		for _, k := range resumeKeys {
			fmt.Fprintf(b, " %s |", eventCell(ss, func(s Sample) map[string]float64 { return s.ResumeEvent }, k))
		}
		fmt.Fprintf(b, " %s |", cell(func(s Sample) float64 { return s.ResumeMS - s.ResumeAPIMS }))
		for _, k := range suspendKeys {
			fmt.Fprintf(b, " %s |", eventCell(ss, func(s Sample) map[string]float64 { return s.SuspendEvent }, k))
		}
		fmt.Fprintf(b, " %s | %s |\n", cell(func(s Sample) float64 { return s.ColdAPIMS }),
			cell(func(s Sample) float64 { return s.ColdMS - s.ColdAPIMS }))
	}
	b.WriteString("\n")
}

// eventCell summarizes one event field over the samples that have it.
func eventCell(ss []Sample, m func(Sample) map[string]float64, key string) string {
	var xs []float64
	for _, s := range ss {
		if v, ok := m(s)[key]; ok {
			xs = append(xs, v)
		}
	}
	return pair(Summarize(xs), "%.0f")
}

// targets compares the numbers with issue 6's goals. Informational: the
// benchmark never fails on them.
func targets(b *strings.Builder, res *Result) {
	var lines []string
	for _, sr := range res.Scenarios {
		ss := sr.Samples
		resume := Percentile(series(ss, func(s Sample) float64 { return s.ResumeMS }), 50)
		suspend := Percentile(series(ss, func(s Sample) float64 { return s.SuspendMS }), 50)
		cold := Percentile(series(ss, func(s Sample) float64 { return s.ColdMS }), 50)
		name := fmt.Sprintf("init %s, %d MiB", sr.Init.Target, sr.ResidentMB)
		if sr.ResidentMB == 64 {
			lines = append(lines, goal(name+": resume p50 ≤ 100 ms", fmt.Sprintf("%.0f ms", resume), resume <= 100),
				goal(name+": suspend p50 ≤ 150 ms", fmt.Sprintf("%.0f ms", suspend), suspend <= 150))
		}
		if sr.Init.Seconds > 0 {
			lines = append(lines, goal(name+": cold / resume ≥ 10×", ratio(cold, resume), cold >= 10*resume))
		}
	}
	goalList(b, "Issue 6's goals", lines)
	speedTargets(b, res)
}

// goalList writes a titled list of goals, nothing if there are none.
func goalList(b *strings.Builder, title string, lines []string) {
	if len(lines) == 0 {
		return
	}
	b.WriteString(title + " (for information; nothing fails on them):\n\n")
	for _, l := range lines {
		b.WriteString("- " + l + "\n")
	}
	b.WriteString("\n")
}

// speedTargets compares the numbers with issue 16's goals, for the
// daemon's default configuration: a resume into a warm sandbox when the
// run measured one (the default --warm-sandboxes-memory keeps one for the
// machines likeliest to wake), else the plain resume. Informational too.
func speedTargets(b *strings.Builder, res *Result) {
	var lines []string
	for _, sr := range res.Scenarios {
		ss := sr.Samples
		p50 := func(f func(Sample) float64) float64 { return Percentile(nonZero(series(ss, f)), 50) }
		resume, which := p50(func(s Sample) float64 { return s.WarmResumeMS }), "warm sandbox"
		if math.IsNaN(resume) {
			resume, which = p50(func(s Sample) float64 { return s.ResumeMS }), "no warm sandbox"
		}
		plain := p50(func(s Sample) float64 { return s.ResumeMS })
		cold := p50(func(s Sample) float64 { return s.ColdMS })
		suspend := p50(func(s Sample) float64 { return s.SuspendMS })
		resuspend := p50(func(s Sample) float64 { return s.ResuspendMS })
		proxied := p50(func(s Sample) float64 { return s.ProxyWakeMS })
		name := fmt.Sprintf("init %s, %d MiB", sr.Init.Target, sr.ResidentMB)
		ms := func(v float64) string { return fmt.Sprintf("%.0f ms (%s)", v, which) }
		switch sr.ResidentMB {
		case 64:
			lines = append(lines, goal(name+": resume p50 ≤ 100 ms", ms(resume), resume <= 100))
		case 1024:
			lines = append(lines, goal(name+": resume p50 ≤ 400 ms", ms(resume), resume <= 400),
				goal(name+": suspend p50 ≤ 500 ms", fmt.Sprintf("%.0f ms", suspend), suspend <= 500))
			if !math.IsNaN(resuspend) {
				lines = append(lines, goal(name+": suspend after a resume p50 ≤ 500 ms", fmt.Sprintf("%.0f ms", resuspend), resuspend <= 500))
			}
		}
		if sr.Init.Seconds > 1 {
			lines = append(lines, goal(name+": cold / resume ≥ 10×", ratio(cold, resume)+" ("+which+")", cold >= 10*resume))
		}
		if !math.IsNaN(proxied) {
			// The proxied wake resumes without a warm sandbox (the
			// machine was suspended again just before): compare it with
			// the plain resume.
			lines = append(lines, goal(name+": proxied wake ≤ resume + 5 ms",
				fmt.Sprintf("%+.0f ms over the plain resume", proxied-plain), proxied <= plain+5))
		}
	}
	goalList(b, "Issue 16's goals, in the daemon's default configuration", lines)
}

func goal(what, got string, met bool) string {
	verdict := "not met"
	if met {
		verdict = "met"
	}
	return fmt.Sprintf("%s: %s (%s)", what, got, verdict)
}

func method(b *strings.Builder, res *Result) {
	fmt.Fprintf(b, "Method: %d runs per scenario, one machine per scenario; each run stops the machine, then times a cold start, "+
		"a suspend and the ways back (the raw restore and the resume, the warm resume, the proxied wake, each after a suspend of its own), "+
		"so cold starts and resumes alternate and drift hits both; the ways back rotate their order from run to run (the JSON's order), "+
		"so none is always a run's first or last restore. "+
		"Cold start and resume run from the start API call to the first byte of the app's HTTP response, "+
		"polled on a new TCP connection at the machine's address every %s; suspend is the suspend API call, which returns once the machine is suspended. "+
		"p50 and p95 are nearest-rank percentiles (a sample, no interpolation; with 10 runs p95 is the slowest run). "+
		"%s "+
		"Resumes read a snapshot written seconds before, so mostly from the page cache. "+
		"The app (internal/bench/app.py) reaches its resident size with a ballast of a 1 MiB os.urandom block repeated: every page non-zero and incompressible. "+
		"The host runs other work too: treat differences of a few tens of percent as noise.\n\n", res.Runs, res.PollInterval, snapshotMethod(res))
	for _, sr := range res.Scenarios {
		if sr.Verified != "" {
			fmt.Fprintf(b, "- init %s, %d MiB (machine %s, guest %d MiB): %s.\n", sr.Init.Target, sr.ResidentMB, sr.MachineID, sr.GuestMB, sr.Verified)
		}
	}
}

// WriteFiles writes the report as dir/<UTC time>.md and dir/latest.md, the
// raw result as dir/<UTC time>.json and dir/latest.json, and the chart as
// dir/latest.png. It returns the files written.
func WriteFiles(dir string, res *Result, md string) ([]string, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	raw, err := json.MarshalIndent(res, "", "  ")
	if err != nil {
		return nil, err
	}
	stamp := res.Started.Format("20060102T150405Z")
	files := map[string][]byte{stamp + ".md": []byte(md), "latest.md": []byte(md), stamp + ".json": raw, "latest.json": raw}
	var written []string
	for _, name := range []string{stamp + ".md", "latest.md", stamp + ".json", "latest.json"} {
		path := filepath.Join(dir, name)
		if err := os.WriteFile(path, files[name], 0o644); err != nil {
			return written, err
		}
		written = append(written, path)
	}
	png := filepath.Join(dir, "latest.png")
	if err := WriteChart(png, res); err != nil {
		return written, fmt.Errorf("chart: %w", err)
	}
	return append(written, png), nil
}

// snapshotMethod says where the snapshot sizes come from.
func snapshotMethod(res *Result) string {
	for _, sr := range res.Scenarios {
		for _, s := range sr.Samples {
			if s.SnapshotSource == "event" {
				return "The snapshot size is the one the suspend event reports (size_bytes): the daemon's data dir was not given."
			}
		}
	}
	return "The snapshot size is the disk blocks of the files in the machine's snapshot directory."
}

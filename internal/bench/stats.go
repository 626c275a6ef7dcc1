package bench

import (
	"math"
	"slices"
)

// Percentile returns the q-th percentile (0 < q <= 100) of xs by the
// nearest-rank method: the smallest sample that at least q% of the samples
// are at or below, i.e. the ceil(q/100·n)-th smallest. It is always one of
// the samples (no interpolation): with 10 samples p50 is the 5th smallest and
// p95 the largest. NaN when xs is empty.
func Percentile(xs []float64, q float64) float64 {
	if len(xs) == 0 {
		return math.NaN()
	}
	sorted := slices.Clone(xs)
	slices.Sort(sorted)
	rank := int(math.Ceil(q / 100 * float64(len(sorted))))
	rank = min(max(rank, 1), len(sorted))
	return sorted[rank-1]
}

// Summary is a metric's p50 and p95 over a scenario's runs.
type Summary struct {
	P50 float64 `json:"p50"`
	P95 float64 `json:"p95"`
	N   int     `json:"n"`
}

// Summarize returns the p50 and p95 of xs.
func Summarize(xs []float64) Summary {
	return Summary{P50: Percentile(xs, 50), P95: Percentile(xs, 95), N: len(xs)}
}

// Package bench is `torpor bench`: it measures, on the real runtime, what a
// suspend buys over a cold start. For each scenario of a matrix (an app's init
// cost × its resident memory) it runs one machine with an embedded Python
// HTTP app (app.py) and repeats, alternately, a cold start (stopped → start →
// first HTTP byte), a suspend (API call until suspended, and the snapshot's
// size on disk) and a resume (suspended → start → first HTTP byte); beside
// the resume, on the same snapshot, a restore with runsc alone (raw.go) and
// a read of the snapshot from the page cache, and after it a wake through
// the daemon's proxy. It reports each metric's p50 and p95 (nearest rank),
// the cold/resume ratio and the resume's own breakdown from its event, as a
// Markdown table on stdout
// and in results/<UTC time>.md, results/latest.md, the raw samples as JSON,
// and a PNG chart (results/latest.png).
//
// By default it runs its own daemon in-process, in a temporary data
// directory, and removes everything it created when done; it can instead
// drive a running daemon. It never asserts a speed: it measures.
package bench

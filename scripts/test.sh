#!/usr/bin/env bash
# Installs what the tests need, then runs every test: unit tests and the
# integration tests on the real runsc (which need root); then each fuzz
# target for a bounded time (FUZZTIME, default 20s; 0 skips them).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/deps.sh
export PATH="/usr/local/go/bin:$PATH"
# Two builds: the release one, and the test one with fault points compiled
# in (-tags faults), which the crash tests need.
go vet ./...
go vet -tags faults ./...
go test -count=1 -run 'TestReleaseBuild' ./internal/daemon/
TORPOR_INTEGRATION=1 go test -tags faults -count=1 -timeout 40m "$@" ./...

# Fuzz targets, each for a bounded number of inputs (about 20 s apiece here).
# Counts, not durations: with a -fuzztime duration Go 1.26's fuzz coordinator
# can fail a target with a bare "context deadline exceeded" at the deadline
# (golang/go#75804, fixed in Go 1.27). FUZZ=0 skips them; FUZZTIME=30s (or
# 50000x) sets one budget for all.
if [ "${FUZZ:-1}" != 0 ]; then
	# One target per invocation (go test -fuzz takes one); a failure leaves
	# its input under the package's testdata/fuzz/ to keep as a regression seed.
	for target in internal/machine:FuzzConfigDecoder:400000x internal/api:FuzzHandlers:20000x internal/appconfig:FuzzParse:200000x; do
		pkg="${target%%:*}" rest="${target#*:}"
		name="${rest%%:*}" budget="${FUZZTIME:-${rest#*:}}"
		go test -tags faults -count=1 -run '^$' -fuzz "^${name}\$" -fuzztime "$budget" -fuzzminimizetime 100x -parallel 2 "./${pkg}/"
	done
fi

#!/usr/bin/env bash
# Installs what the tests need, then runs every test: unit tests and the
# integration tests on the real runsc (which need root); then each fuzz
# target for a bounded time (FUZZTIME, default 20s; 0 skips them).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/deps.sh
export PATH="/usr/local/go/bin:$PATH"
go vet ./...
TORPOR_INTEGRATION=1 go test -count=1 -timeout 40m "$@" ./...

fuzztime="${FUZZTIME:-20s}"
if [ "$fuzztime" != 0 ]; then
	# One target per invocation (go test -fuzz takes one); a failure leaves
	# its input under the package's testdata/fuzz/ to keep as a regression seed.
	for target in internal/machine:FuzzConfigDecoder internal/api:FuzzHandlers; do
		go test -count=1 -run '^$' -fuzz "^${target#*:}\$" -fuzztime "$fuzztime" -fuzzminimizetime 100x -parallel 2 "./${target%%:*}/"
	done
fi

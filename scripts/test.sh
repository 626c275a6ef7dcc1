#!/usr/bin/env bash
# Installs what the tests need, then runs every test: unit tests and the
# integration tests on the real runsc (which need root).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/deps.sh
export PATH="/usr/local/go/bin:$PATH"
go vet ./...
TORPOR_INTEGRATION=1 go test -count=1 -timeout 40m "$@" ./...

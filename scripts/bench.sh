#!/usr/bin/env bash
# Runs the benchmarks on the real runsc (root): proxy overhead vs direct,
# time to first byte waking a suspended vs a stopped machine, snapshot
# verification, the gVisor driver and the machine log.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/deps.sh
export PATH="/usr/local/go/bin:$PATH"
TORPOR_INTEGRATION=1 go test -run '^$' -bench 'ProxyOverhead' -benchtime "${PROXY_BENCHTIME:-500x}" ./internal/daemon/
TORPOR_INTEGRATION=1 go test -run '^$' -bench 'WakeTTFB' -benchtime "${WAKE_BENCHTIME:-10x}" ./internal/daemon/
go test -run '^$' -bench . -benchtime 5x ./internal/snapshot/
TORPOR_INTEGRATION=1 go test -run '^$' -bench . -benchtime 3x ./internal/runtime/gvisor/
go test -run '^$' -bench . ./internal/logs/ ./internal/proxy/

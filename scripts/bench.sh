#!/usr/bin/env bash
# Runs the benchmarks on the real runsc (root): proxy overhead vs direct,
# time to first byte waking a suspended vs a stopped machine, the first
# request after a deploy with and without prewarm, snapshot
# verification, the gVisor driver and the machine log.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/deps.sh
export PATH="/usr/local/go/bin:$PATH"
TORPOR_INTEGRATION=1 go test -run '^$' -bench 'ProxyOverhead' -benchtime "${PROXY_BENCHTIME:-500x}" ./internal/daemon/
TORPOR_INTEGRATION=1 go test -run '^$' -bench 'WakeTTFB' -benchtime "${WAKE_BENCHTIME:-10x}" ./internal/daemon/
TORPOR_INTEGRATION=1 go test -run '^$' -bench 'DeployFirstRequest' -benchtime "${DEPLOY_BENCHTIME:-5x}" ./internal/daemon/
go test -run '^$' -bench . -benchtime 5x ./internal/snapshot/
TORPOR_INTEGRATION=1 go test -run '^$' -bench . -benchtime 3x ./internal/runtime/gvisor/
go test -run '^$' -bench . ./internal/logs/ ./internal/proxy/
# torpor bench: cold start, suspend, resume beside a raw runsc restore and a
# proxied wake, in one run (results in bench/results/). TORPOR_BENCH_ARGS
# narrows it, e.g. "--init light --memory 64,1024 --runs 5 --image-runs 0".
go build -o bin/torpor ./cmd/torpor
# shellcheck disable=SC2086
bin/torpor bench ${TORPOR_BENCH_ARGS:-}

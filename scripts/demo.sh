#!/usr/bin/env bash
# Installs what torpor needs, starts a daemon in a scratch directory, runs the
# demo (create a machine, suspend it, resume it, print cold-start vs resume
# timings), and cleans up.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/deps.sh
export PATH="/usr/local/go/bin:$PATH"

CACHE="${TORPOR_CACHE:-/var/cache/torpor}"
go build -o bin/torpor ./cmd/torpor
work="$(mktemp -d /tmp/torpor-demo.XXXXXX)"
sock="$work/torpor.sock"
bin/torpor serve --data-dir "$work/data" --socket "$sock" --runsc "$CACHE/bin/runsc" \
  --network-range "${TORPOR_DEMO_RANGE:-10.213.0.0/16}" >"$work/daemon.log" 2>&1 &
daemon=$!
cleanup() {
  kill "$daemon" 2>/dev/null && wait "$daemon" 2>/dev/null || true
  umount -l "$work/data/runsc/null-netns" 2>/dev/null || true # runsc's empty netns for --network=none
  rm -rf "$work"
}
trap cleanup EXIT

for _ in $(seq 1 300); do
  [[ -S "$sock" ]] && break
  sleep 0.1
done
bin/torpor --api "unix://$sock" demo --image "$CACHE/rootfs/bookworm-python" "$@" || {
  echo "--- daemon log ---" >&2
  cat "$work/daemon.log" >&2
  exit 1
}

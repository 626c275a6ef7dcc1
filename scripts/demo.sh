#!/usr/bin/env bash
# Installs what torpor needs, starts a local registry (Debian's
# docker-registry on loopback) and a daemon in a scratch directory, runs the
# demo (push an OCI image built from the cached Debian rootfs, pull it,
# create a machine from it, suspend it, resume it, print the timings), and
# cleans up.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/deps.sh
export PATH="/usr/local/go/bin:$PATH"

CACHE="${TORPOR_CACHE:-/var/cache/torpor}"
go build -o bin/torpor ./cmd/torpor
work="$(mktemp -d /tmp/torpor-demo.XXXXXX)"
sock="$work/torpor.sock"

# The registry listens on a free loopback port, over plain HTTP (the daemon
# is told so with --insecure-registry).
for _ in $(seq 1 20); do
  port=$((20000 + RANDOM % 20000))
  ss -ltnH "sport = :$port" 2>/dev/null | grep -q . || break
done
mkdir -p "$work/registry"
cat >"$work/registry/config.yml" <<CONFIG
version: 0.1
log:
  level: warn
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: $work/registry/data
http:
  addr: 127.0.0.1:$port
CONFIG
docker-registry serve "$work/registry/config.yml" >"$work/registry.log" 2>&1 &
registry=$!

bin/torpor serve --data-dir "$work/data" --socket "$sock" --runsc "$CACHE/bin/runsc" \
  --network-range "${TORPOR_DEMO_RANGE:-10.213.0.0/16}" --insecure-registry "127.0.0.1:$port" \
  >"$work/daemon.log" 2>&1 &
daemon=$!
cleanup() {
  kill "$daemon" 2>/dev/null && wait "$daemon" 2>/dev/null || true
  kill "$registry" 2>/dev/null && wait "$registry" 2>/dev/null || true
  umount -l "$work/data/runsc/null-netns" 2>/dev/null || true # runsc's empty netns for --network=none
  rm -rf "$work"
}
trap cleanup EXIT

for _ in $(seq 1 300); do
  [[ -S "$sock" ]] && break
  sleep 0.1
done
bin/torpor --api "unix://$sock" demo --rootfs "$CACHE/rootfs/bookworm-python" --push-to "127.0.0.1:$port" "$@" || {
  echo "--- daemon log ---" >&2
  cat "$work/daemon.log" >&2
  echo "--- registry log ---" >&2
  cat "$work/registry.log" >&2
  exit 1
}

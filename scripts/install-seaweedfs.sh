#!/usr/bin/env bash
# Builds the pinned SeaweedFS (its S3 gateway is the real S3 server the
# cluster tests keep snapshots in) from its Go module into
# $TORPOR_CACHE/bin/weed. Cached: does nothing when a weed of the pinned
# version is already there. The first build takes ~15 minutes on 2 cores.
set -euo pipefail

SEAWEEDFS_VERSION="${SEAWEEDFS_VERSION:-v0.0.0-20261109003541-7506e5f91cd6}"
CACHE="${TORPOR_CACHE:-/var/cache/torpor}"
BIN="$CACHE/bin/weed"
STAMP="$CACHE/bin/weed.version"

if [[ -x "$BIN" && -f "$STAMP" && "$(cat "$STAMP")" == "$SEAWEEDFS_VERSION" ]]; then
  echo "SeaweedFS $SEAWEEDFS_VERSION already built at $BIN"
  exit 0
fi

mkdir -p "$CACHE/bin"
work="$(mktemp -d)"
trap 'chmod -R u+w "$work"; rm -rf "$work"' EXIT
cd "$work"
go mod init torpor.local/weed-build >/dev/null 2>&1
go get "github.com/seaweedfs/seaweedfs/weed@$SEAWEEDFS_VERSION"
CGO_ENABLED=0 go build -trimpath -o "$BIN.tmp" github.com/seaweedfs/seaweedfs/weed
mv "$BIN.tmp" "$BIN"
echo "$SEAWEEDFS_VERSION" >"$STAMP"
echo "built SeaweedFS $SEAWEEDFS_VERSION at $BIN"

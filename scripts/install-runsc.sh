#!/usr/bin/env bash
# Builds the pinned runsc from the gVisor Go module into $TORPOR_CACHE/bin/runsc.
# Cached: does nothing when a runsc of the pinned version is already there.
# CGO_ENABLED=0 is required: with cgo the gofer cannot re-exec itself (see DESIGN.md).
set -euo pipefail

GVISOR_VERSION="${GVISOR_VERSION:-v0.0.0-20260905035102-160fafc42237}"
CACHE="${TORPOR_CACHE:-/var/cache/torpor}"
BIN="$CACHE/bin/runsc"
STAMP="$CACHE/bin/runsc.version"

if [[ -x "$BIN" && -f "$STAMP" && "$(cat "$STAMP")" == "$GVISOR_VERSION" ]]; then
  echo "runsc $GVISOR_VERSION already built at $BIN"
  exit 0
fi

mkdir -p "$CACHE/bin"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
cd "$work"
go mod init torpor.local/runsc-build >/dev/null 2>&1
go get "gvisor.dev/gvisor/runsc@$GVISOR_VERSION"
CGO_ENABLED=0 go build -o "$BIN.tmp" gvisor.dev/gvisor/runsc
mv "$BIN.tmp" "$BIN"
echo "$GVISOR_VERSION" >"$STAMP"
echo "built runsc $GVISOR_VERSION at $BIN"

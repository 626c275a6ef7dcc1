#!/usr/bin/env bash
# Builds the pinned runsc from the gVisor Go module into $TORPOR_CACHE/bin/runsc.
# Cached: does nothing when a runsc of the pinned version and build recipe is
# already there.
# CGO_ENABLED=0 is required: with cgo the gofer cannot re-exec itself (see DESIGN.md).
# The module's stub of runsc/boot/filter/filter_precompiled.go is replaced by
# the precompiled seccomp programs (scripts/runsc-seccomp.go), as gVisor's own
# Bazel build does: without them every sandbox start and restore compiles its
# seccomp filters from scratch (~80 ms on a 2-core host).
# Then torpor's own patches in scripts/runsc-patches/ are applied, in name
# order (each says what it changes and why; docs/suspend-resume.md lists
# them): the recipe names them, so changing one rebuilds runsc.
set -euo pipefail

GVISOR_VERSION="${GVISOR_VERSION:-v0.0.0-20260905035102-160fafc42237}"
CACHE="${TORPOR_CACHE:-/var/cache/torpor}"
BIN="$CACHE/bin/runsc"
STAMP="$CACHE/bin/runsc.version"
here="$(cd "$(dirname "$0")" && pwd)"
patches=("$here"/runsc-patches/*.patch)
RECIPE="$GVISOR_VERSION+precompiled-seccomp-systrap"
for p in "${patches[@]}"; do
  RECIPE+="+$(basename "$p" .patch)@$(sha256sum "$p" | cut -c1-12)"
done

if [[ -x "$BIN" && -f "$STAMP" && "$(cat "$STAMP")" == "$RECIPE" ]]; then
  echo "runsc $GVISOR_VERSION already built at $BIN"
  exit 0
fi

mkdir -p "$CACHE/bin"
work="$(mktemp -d)"
trap 'chmod -R u+w "$work"; rm -rf "$work"' EXIT
cd "$work"
go mod init torpor.local/runsc-build >/dev/null 2>&1
go get "gvisor.dev/gvisor/runsc@$GVISOR_VERSION"
# Build from a writable copy of the module with the generated programs in.
src="$(go mod download -json "gvisor.dev/gvisor@$GVISOR_VERSION" | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')"
cp -r "$src" gvisor
chmod -R u+w gvisor
cp "$here/runsc-seccomp.go" .
CGO_ENABLED=0 go run runsc-seccomp.go >filter_precompiled.go
go mod edit -replace gvisor.dev/gvisor=./gvisor
mv filter_precompiled.go gvisor/runsc/boot/filter/filter_precompiled.go
for p in "${patches[@]}"; do
  patch -p1 --forward --silent -d gvisor <"$p"
done
CGO_ENABLED=0 go build -trimpath \
  -ldflags "-X gvisor.dev/gvisor/runsc/version.version=$GVISOR_VERSION" \
  -o "$BIN.tmp" gvisor.dev/gvisor/runsc
mv "$BIN.tmp" "$BIN"
echo "$RECIPE" >"$STAMP"
echo "built runsc $GVISOR_VERSION at $BIN"

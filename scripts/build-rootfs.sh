#!/usr/bin/env bash
# Builds a cached Debian bookworm minbase root filesystem with python3 for tests and the demo
# at $TORPOR_CACHE/rootfs/bookworm-python. Cached: does nothing when it is already complete.
set -euo pipefail

CACHE="${TORPOR_CACHE:-/var/cache/torpor}"
DEST="$CACHE/rootfs/bookworm-python"
MIRROR="${DEBIAN_MIRROR:-}"

if [[ -f "$DEST/.torpor-complete" ]]; then
  echo "rootfs already built at $DEST"
  exit 0
fi

if [[ -z "$MIRROR" ]]; then
  # Use the mirror this host is configured with.
  MIRROR="$( (cat /etc/apt/sources.list.d/*.sources /etc/apt/sources.list 2>/dev/null || true) \
    | grep -oE '^(URIs:|deb) +[^ ]+' | awk '{print $2}' | grep -v security | head -n1)"
  MIRROR="${MIRROR:-http://deb.debian.org/debian}"
fi

command -v debootstrap >/dev/null || { apt-get update -qq && apt-get install -y -qq debootstrap; }

tmp="$DEST.tmp"
rm -rf "$tmp"
mkdir -p "$(dirname "$DEST")"
debootstrap --variant=minbase --include=python3-minimal,python3 bookworm "$tmp" "$MIRROR"
rm -rf "$tmp/var/cache/apt/archives/"*.deb
touch "$tmp/.torpor-complete"
rm -rf "$DEST"
mv "$tmp" "$DEST"
echo "built rootfs at $DEST"

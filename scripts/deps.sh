#!/usr/bin/env bash
# Installs what torpor needs on a fresh Debian 12 machine (run as root):
# Debian packages, the pinned runsc, the cached test/demo root filesystem and
# the S3 server (SeaweedFS) the cluster tests use.
# Every step is cached: running it again does nothing that is already done.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v go >/dev/null; then
  if [[ -x /usr/local/go/bin/go ]]; then
    export PATH="/usr/local/go/bin:$PATH"
  else
    echo "Go 1.26 or newer is required (https://go.dev/dl/); Debian's golang package is too old" >&2
    exit 1
  fi
fi

# docker-registry (the CNCF distribution server) and apache2-utils
# (htpasswd) run the local registry that the image tests and benchmarks
# pull from.
need=()
# chromium: the dashboard's browser test (internal/daemon, TestDashboardInBrowser).
# patch: scripts/install-runsc.sh applies scripts/runsc-patches/.
for pkg in debootstrap iproute2 ca-certificates e2fsprogs util-linux chromium docker-registry apache2-utils patch; do
  dpkg -s "$pkg" >/dev/null 2>&1 || need+=("$pkg")
done
if ((${#need[@]})); then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}"
fi

scripts/install-runsc.sh
scripts/build-rootfs.sh
scripts/install-seaweedfs.sh # the S3 server of the cluster tests

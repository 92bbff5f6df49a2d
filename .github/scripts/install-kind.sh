#!/usr/bin/env bash
# Install one pinned kind release from its GitHub release, verified against the SHA-256 file
# published with it (kind-linux-<arch>.sha256sum); fails on a mismatch.
#
#   .github/scripts/install-kind.sh VERSION [DEST_DIR]     # e.g. v0.32.0 /usr/local/bin
#
# The node image is pinned separately, by digest (CD's KIND_NODE_IMAGE: the default image of
# that kind release, from its pkg/apis/config/defaults/image.go).
set -euo pipefail

VERSION=${1:?usage: install-kind.sh VERSION [DEST_DIR]}
DEST=${2:-/usr/local/bin}
[[ $VERSION =~ ^v[0-9]+\.[0-9]+\.[0-9]+$ ]] || {
    echo "ERROR: VERSION must look like v0.32.0, got '$VERSION'" >&2
    exit 2
}
case $(uname -m) in
    x86_64) ARCH=amd64 ;;
    aarch64 | arm64) ARCH=arm64 ;;
    *) echo "ERROR: no kind build for $(uname -m)" >&2; exit 1 ;;
esac

WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
FILE=kind-linux-$ARCH
BASE=https://github.com/kubernetes-sigs/kind/releases/download/$VERSION
curl -fsSL --retry 3 -o "$WORK/$FILE" "$BASE/$FILE"
curl -fsSL --retry 3 -o "$WORK/$FILE.sha256sum" "$BASE/$FILE.sha256sum"
# The published line names the file without a directory: check from inside $WORK.
(cd "$WORK" && sha256sum --check --strict "$FILE.sha256sum")
install -m 0755 "$WORK/$FILE" "$DEST/kind"
"$DEST/kind" version

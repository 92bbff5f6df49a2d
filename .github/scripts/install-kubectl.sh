#!/usr/bin/env bash
# Install one pinned kubectl release from dl.k8s.io, verified against the SHA-256 the Kubernetes
# release publishes beside the binary (the procedure of the Kubernetes docs, "Install kubectl
# binary with curl on Linux"); fails on a mismatch instead of installing an unverified binary.
#
#   .github/scripts/install-kubectl.sh VERSION [DEST_DIR]     # e.g. v1.36.1 /usr/local/bin
#
# Used by CI's test job (tests/k8s render the overlays with `kubectl kustomize` and fail without
# it) and by CD's kind and deploy jobs, so that every job renders with the same kustomize.
set -euo pipefail

VERSION=${1:?usage: install-kubectl.sh VERSION [DEST_DIR]}
DEST=${2:-/usr/local/bin}
[[ $VERSION =~ ^v[0-9]+\.[0-9]+\.[0-9]+$ ]] || {
    echo "ERROR: VERSION must look like v1.36.1, got '$VERSION'" >&2
    exit 2
}
case $(uname -m) in
    x86_64) ARCH=amd64 ;;
    aarch64 | arm64) ARCH=arm64 ;;
    *) echo "ERROR: no kubectl build for $(uname -m)" >&2; exit 1 ;;
esac

WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
BASE=https://dl.k8s.io/release/$VERSION/bin/linux/$ARCH
curl -fsSL --retry 3 -o "$WORK/kubectl" "$BASE/kubectl"
curl -fsSL --retry 3 -o "$WORK/kubectl.sha256" "$BASE/kubectl.sha256"
# The .sha256 file holds the bare digest; sha256sum --check wants "<digest>  <file>".
echo "$(cat "$WORK/kubectl.sha256")  $WORK/kubectl" | sha256sum --check --strict -
install -m 0755 "$WORK/kubectl" "$DEST/kubectl"
"$DEST/kubectl" version --client

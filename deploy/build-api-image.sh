#!/usr/bin/env bash
# Build the API image (../Dockerfile) with podman, once per state of its sources: the image is
# labelled with a hash of the build context, and a second call with the same sources (the
# container smoke test, then `podman kube play` of k8s/, in one CI run) reuses it instead of
# building again. Builds the stand-in base image first if it is missing (build-base-image.sh).
#
#   deploy/build-api-image.sh [IMAGE]     # default IMAGE: fraud-api:smoke
#   FORCE=1 deploy/build-api-image.sh     # build even if the sources did not change
#
# Needs `apt-get install -y podman runc debootstrap` (and root the first time, for debootstrap).
set -euo pipefail

REPO_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
export CONTAINERS_CONF=${CONTAINERS_CONF:-$REPO_ROOT/deploy/containers.conf}
IMAGE=${1:-fraud-api:smoke}
CA_BUNDLE=/etc/ssl/certs/ca-certificates.crt
LABEL=org.fraud-mlops.context-sha256

# What the Dockerfile can see (.dockerignore allows these), content only: a change to any of
# them is a new hash, so a new build. __pycache__ and friends are excluded there and here.
sources=()
for path in Dockerfile .dockerignore pyproject.toml constraints.txt fraud serving build-model; do
    [[ -e $REPO_ROOT/$path ]] && sources+=("$path")
done
context_hash=$(
    cd "$REPO_ROOT" &&
        find "${sources[@]}" -type f ! -path '*/__pycache__/*' ! -name '*.py[cod]' -print0 |
        sort -z | xargs -0 sha256sum | sha256sum | cut -d' ' -f1
)

if [[ -z ${FORCE:-} ]] && podman image exists "$IMAGE" &&
    [[ $(podman image inspect "$IMAGE" --format "{{index .Labels \"$LABEL\"}}") == "$context_hash" ]]; then
    echo "==> $IMAGE is already built from these sources ($LABEL=${context_hash:0:12}); not rebuilding"
    exit 0
fi

"$REPO_ROOT/deploy/build-base-image.sh"
echo "==> podman build -t $IMAGE"
b0=$SECONDS
ca_mount=()
[[ -f $CA_BUNDLE ]] && ca_mount=(-v "$CA_BUNDLE:$CA_BUNDLE:ro")
podman build --format docker --network host "${ca_mount[@]}" \
    --label "$LABEL=$context_hash" -t "$IMAGE" "$REPO_ROOT" || {
    echo "ERROR: podman build failed" >&2
    exit 1
}
echo "image built in $((SECONDS - b0))s; size: $(podman image inspect "$IMAGE" --format '{{.Size}}' |
    awk '{printf "%.0f MB", $1 / 1e6}')"

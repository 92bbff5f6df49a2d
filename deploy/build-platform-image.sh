#!/usr/bin/env bash
# Build the platform image (deploy/platform.Dockerfile: MLflow server, Prefect server and worker,
# Evidently UI, flow jobs) with podman, once per state of its sources: the image is labelled with
# a hash of the build context, and a second call with the same sources reuses it. Builds the
# stand-in base image first if it is missing (build-base-image.sh), like build-api-image.sh.
#
#   deploy/build-platform-image.sh [IMAGE]     # default IMAGE: fraud-platform:0.1.0
#   FORCE=1 deploy/build-platform-image.sh     # build even if the sources did not change
#
# The build context is assembled in a temporary directory from the list below, so that the
# repository's .dockerignore (written for the API image, which needs fewer files) does not apply.
# Needs `apt-get install -y podman runc debootstrap` (and root the first time, for debootstrap).
set -euo pipefail

REPO_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
export CONTAINERS_CONF=${CONTAINERS_CONF:-$REPO_ROOT/deploy/containers.conf}
IMAGE=${1:-fraud-platform:0.1.0}
CA_BUNDLE=/etc/ssl/certs/ca-certificates.crt
LABEL=org.fraud-mlops.context-sha256
# What the image is made of: a change to any of these is a new hash, so a new build.
SOURCES=(deploy/platform.Dockerfile pyproject.toml README.md constraints.txt params.yaml dvc.yaml
    fraud pipelines serving monitoring)

for path in "${SOURCES[@]}"; do
    [[ -e $REPO_ROOT/$path ]] || {
        echo "ERROR: $path is missing: the platform image is built from ${SOURCES[*]}" >&2
        exit 1
    }
done
# Content only, without bytecode and tool caches (they change without the sources changing).
list_sources() {
    cd "$REPO_ROOT" && find "${SOURCES[@]}" -type f ! -path '*/__pycache__/*' ! -name '*.py[cod]' \
        ! -path '*/.mypy_cache/*' ! -path '*/.pytest_cache/*' ! -path '*/.ruff_cache/*' -print0 |
        sort -z
}
context_hash=$(list_sources | (cd "$REPO_ROOT" && xargs -0 sha256sum) | sha256sum | cut -d' ' -f1)

if [[ -z ${FORCE:-} ]] && podman image exists "$IMAGE" &&
    [[ $(podman image inspect "$IMAGE" --format "{{index .Labels \"$LABEL\"}}") == "$context_hash" ]]; then
    echo "==> $IMAGE is already built from these sources ($LABEL=${context_hash:0:12}); not rebuilding"
    exit 0
fi

"$REPO_ROOT/deploy/build-base-image.sh"

CONTEXT=$(mktemp -d /tmp/fraud-platform-context.XXXXXX)
trap 'rm -rf "$CONTEXT"' EXIT
list_sources | (cd "$REPO_ROOT" && tar --null -T - -cf -) | tar -C "$CONTEXT" -xf -

echo "==> podman build -t $IMAGE (context: ${#SOURCES[@]} sources, $(du -sh "$CONTEXT" | cut -f1))"
b0=$SECONDS
ca_mount=()
[[ -f $CA_BUNDLE ]] && ca_mount=(-v "$CA_BUNDLE:$CA_BUNDLE:ro")
podman build --format docker --network host "${ca_mount[@]}" \
    -f "$CONTEXT/deploy/platform.Dockerfile" \
    --label "$LABEL=$context_hash" -t "$IMAGE" "$CONTEXT" || {
    echo "ERROR: podman build of $IMAGE failed" >&2
    exit 1
}
echo "image built in $((SECONDS - b0))s; size: $(podman image inspect "$IMAGE" --format '{{.Size}}' |
    awk '{printf "%.0f MB", $1 / 1e6}')"

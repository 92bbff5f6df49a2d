#!/usr/bin/env bash
# Smoke test of the API container: build the image with podman, run it read-only as in production
# with a serving model cache mounted (registry unreachable, so it serves that cache), then check
# /health, /ready, one /predict, and that it does not run as root. Exits non-zero on any failure.
#
#   deploy/container-smoke.sh MODEL_CACHE_DIR
#
# MODEL_CACHE_DIR: what serving/model_store.py writes (model.ubj, train_info.json,
# history.parquet, meta.json), e.g. .cache/serving/model after `make serve`.
# Environment: IMAGE (default fraud-api:smoke), PORT (default: a free one), SKIP_BUILD=1 to use an
# existing IMAGE, READY_TIMEOUT (seconds, default 120).
# Needs `apt-get install -y podman runc debootstrap`; builds the image (and the stand-in base image)
# with deploy/build-api-image.sh, which does nothing when IMAGE is up to date with the sources.
set -euo pipefail

REPO_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
export CONTAINERS_CONF=${CONTAINERS_CONF:-$REPO_ROOT/deploy/containers.conf}
IMAGE=${IMAGE:-fraud-api:smoke}
READY_TIMEOUT=${READY_TIMEOUT:-120}

fail() {
    echo "SMOKE FAILED: $*" >&2
    exit 1
}

[[ $# -eq 1 ]] || { echo "usage: $0 MODEL_CACHE_DIR" >&2; exit 2; }
MODEL_DIR=$(cd "$1" 2>/dev/null && pwd) || fail "model cache dir $1 does not exist"
for f in model.ubj train_info.json history.parquet meta.json; do
    [[ -f $MODEL_DIR/$f ]] || fail "$MODEL_DIR has no $f (not a serving model cache)"
done
command -v podman >/dev/null || fail "podman not found: apt-get install -y podman runc debootstrap"
command -v curl >/dev/null || fail "curl not found"

if [[ -z ${PORT:-} ]]; then
    PORT=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
fi

t0=$SECONDS
if [[ -z ${SKIP_BUILD:-} ]]; then
    # Reuses IMAGE when it was built from the same sources (deploy/build-api-image.sh).
    "$REPO_ROOT/deploy/build-api-image.sh" "$IMAGE" || fail "podman build failed"
fi

NAME=fraud-api-smoke-$$
# A world-readable copy of the cache: serving/model_store.py creates it 0700 (mkdtemp) for the
# host user, and the container's user (uid 10001) must read it through the bind mount.
MODEL_COPY=$(mktemp -d /tmp/fraud-model-smoke.XXXXXX)
cleanup() {
    local rc=$?
    rm -rf "$MODEL_COPY"
    if [[ $rc -ne 0 ]]; then
        echo "--- container logs ---" >&2
        podman logs --tail 60 "$NAME" >&2 2>&1 || true
    fi
    podman rm -f -t 2 "$NAME" >/dev/null 2>&1 || true
    exit "$rc"
}
trap cleanup EXIT

cp "$MODEL_DIR"/{model.ubj,train_info.json,history.parquet,meta.json} "$MODEL_COPY"/
chmod 0755 "$MODEL_COPY"
chmod 0644 "$MODEL_COPY"/*

echo "==> podman run $IMAGE on 127.0.0.1:$PORT (read-only root, model cache $MODEL_DIR)"
s0=$SECONDS
# --tmpfs ...:U makes the tmpfs owned by the container's user (podman 4.3 has no uid= option for
# tmpfs; Docker's equivalent is uid=10001,gid=10001, as in compose.yaml).
podman run -d --name "$NAME" \
    -p "127.0.0.1:$PORT:8000" \
    --read-only \
    --tmpfs /var/lib/fraud:rw,U \
    -v "$MODEL_COPY:/var/lib/fraud/model:ro" \
    --cap-drop=ALL --security-opt=no-new-privileges \
    -e MLFLOW_TRACKING_URI=http://127.0.0.1:9 \
    "$IMAGE" >/dev/null || fail "podman run failed"

BASE=http://127.0.0.1:$PORT
wait_for() { # wait_for PATH: until it answers 200, or fail after READY_TIMEOUT seconds
    local path=$1 deadline=$((SECONDS + READY_TIMEOUT))
    until curl -fsS -m 5 -o /dev/null "$BASE$path" 2>/dev/null; do
        [[ $(podman inspect -f '{{.State.Running}}' "$NAME" 2>/dev/null) == true ]] ||
            fail "container exited before $path answered"
        ((SECONDS < deadline)) || fail "$path did not answer 200 within ${READY_TIMEOUT}s"
        sleep 1
    done
    echo "$path: 200 after $((SECONDS - s0))s"
}
wait_for /health
wait_for /ready

ready=$(curl -fsS -m 5 "$BASE/ready")
echo "ready: $ready"
grep -q '"cache"' <<<"$ready" || echo "note: /ready does not say source=cache" >&2

predict=$(curl -fsS -m 30 -X POST "$BASE/predict" -H 'content-type: application/json' \
    -d '{"TRANSACTION_ID": 987654321, "TX_DATETIME": "2018-10-01T08:15:00", "CUSTOMER_ID": 1,
         "TERMINAL_ID": 1, "TX_AMOUNT": 57.16}') || fail "/predict did not answer 2xx"
echo "predict: $predict"
python3 -c 'import json, sys; d = json.loads(sys.argv[1]); p = d["fraud_probability"]; assert 0.0 <= float(p) <= 1.0, p' "$predict" ||
    fail "/predict answer has no probability in [0, 1]"

uid=$(podman exec "$NAME" id -u) || fail "podman exec id -u failed"
[[ $uid != 0 ]] || fail "the container runs as root"
echo "user id in the container: $uid"

health=$(podman healthcheck run "$NAME" 2>&1) || fail "HEALTHCHECK failed: $health"
echo "HEALTHCHECK: ok"

echo "SMOKE OK: health, ready, predict, non-root (run $((SECONDS - s0))s, total $((SECONDS - t0))s)"

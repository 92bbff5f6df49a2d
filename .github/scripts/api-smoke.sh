#!/usr/bin/env bash
# Call the prediction API of a cluster through `kubectl port-forward` and fail on any non-200:
# /health, then (with ADMIN_TOKEN set) POST /admin/reload so that a @champion registered a moment
# ago is loaded now rather than at the next 60 s poll, then /ready until it answers 200
# (READY_TIMEOUT seconds), GET /model, and, with PREDICT=1, one POST /predict of a transaction of
# the data contract whose probability must lie in [0, 1].
#
#   NAMESPACE=fraud-dev PREDICT=1 ADMIN_TOKEN=... .github/scripts/api-smoke.sh
#
# Environment: NAMESPACE (required), DEPLOYMENT (fraud-api), CONTAINER_PORT (8000, the `http`
# port), LOCAL_PORT (18000), READY_TIMEOUT (240), PREDICT (0), ADMIN_TOKEN (unset: no reload).
# The port-forward goes to the Deployment, not the Service: a pod that is not ready yet has no
# Service endpoint, and /admin/reload is what makes it ready.
set -euo pipefail

NAMESPACE=${NAMESPACE:?set NAMESPACE}
DEPLOYMENT=${DEPLOYMENT:-fraud-api}
CONTAINER_PORT=${CONTAINER_PORT:-8000}
LOCAL_PORT=${LOCAL_PORT:-18000}
READY_TIMEOUT=${READY_TIMEOUT:-240}
BASE=http://127.0.0.1:$LOCAL_PORT
PF_LOG=$(mktemp)

fail() {
    echo "SMOKE FAILED: $*" >&2
    echo "--- port-forward log ---" >&2
    cat "$PF_LOG" >&2 || true
    exit 1
}

kubectl -n "$NAMESPACE" port-forward "deployment/$DEPLOYMENT" "$LOCAL_PORT:$CONTAINER_PORT" \
    >"$PF_LOG" 2>&1 &
PF_PID=$!
trap 'kill "$PF_PID" 2>/dev/null || true; rm -f "$PF_LOG"' EXIT

# call METHOD PATH [curl args...]: the body on stdout; fails unless the status is 200.
call() {
    local method=$1 path=$2 body code
    shift 2
    body=$(mktemp)
    code=$(curl -sS -m 30 -o "$body" -w '%{http_code}' -X "$method" "$BASE$path" "$@") || code=000
    echo "$method $path -> $code" >&2
    if [[ $code != 200 ]]; then
        cat "$body" >&2
        rm -f "$body"
        fail "$method $path answered $code"
    fi
    cat "$body"
    rm -f "$body"
}

deadline=$((SECONDS + 60))
until curl -fsS -m 3 -o /dev/null "$BASE/health" 2>/dev/null; do
    kill -0 "$PF_PID" 2>/dev/null || fail "kubectl port-forward exited"
    ((SECONDS < deadline)) || fail "/health did not answer within 60 s"
    sleep 2
done
call GET /health >/dev/null

if [[ -n ${ADMIN_TOKEN:-} ]]; then
    call POST /admin/reload -H "Authorization: Bearer $ADMIN_TOKEN"
    echo
fi

deadline=$((SECONDS + READY_TIMEOUT))
until curl -fsS -m 5 -o /dev/null "$BASE/ready" 2>/dev/null; do
    kill -0 "$PF_PID" 2>/dev/null || fail "kubectl port-forward exited (did the pod restart?)"
    ((SECONDS < deadline)) || { call GET /ready; fail "/ready not 200 after ${READY_TIMEOUT}s"; }
    sleep 5
done
call GET /ready
echo
call GET /model
echo

if [[ ${PREDICT:-0} == 1 ]]; then
    answer=$(call POST /predict -H 'content-type: application/json' \
        -d '{"TRANSACTION_ID": 987654321, "TX_DATETIME": "2018-10-01T08:15:00",
             "CUSTOMER_ID": 1, "TERMINAL_ID": 1, "TX_AMOUNT": 57.16}')
    echo "predict: $answer"
    python3 -c 'import json, sys; p = float(json.loads(sys.argv[1])["fraud_probability"]); sys.exit(not 0.0 <= p <= 1.0)' \
        "$answer" || fail "/predict answered without a fraud_probability in [0, 1]"
fi
echo "SMOKE OK: $NAMESPACE/$DEPLOYMENT"

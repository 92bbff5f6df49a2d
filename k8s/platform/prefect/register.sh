#!/bin/sh
# The registration Job's script (register-job.yaml): create or update the work pool from the
# base job template, then register the flows' deployments on it. Every step is idempotent
# (`work-pool create --overwrite`; a deployment is identified by flow and name), so the Job may
# run again after any change: it converges to what the manifests say.
set -eu

: "${POOL:?POOL: the work pool name}" "${FLOW_IMAGE:?FLOW_IMAGE: the flow runs image}"
: "${POD_NAMESPACE:?POD_NAMESPACE: the namespace the flow-run Jobs are created in}"
: "${FRAUD_FLOW_REPO:?FRAUD_FLOW_REPO: the git+DVC repository the training flows read}"

# The template names a placeholder namespace; the Jobs belong in this one (the worker's Role is
# namespaced), and the image default follows FLOW_IMAGE. With the Dask component (k8s/dask/),
# DASK_SCHEDULER_ADDRESS is in this Job's environment: every flow run gets it too, so the stages
# with `compute.engine: dask` use that cluster.
python - <<'PY'
import json
import os

with open("/etc/prefect-work-pool/base-job-template.json") as f:
    template = json.load(f)
variables = template["variables"]["properties"]
variables["namespace"]["default"] = os.environ["POD_NAMESPACE"]
variables["image"]["default"] = os.environ["FLOW_IMAGE"]
if os.environ.get("DASK_SCHEDULER_ADDRESS"):
    env = variables["env"].setdefault("default", {})
    env["DASK_SCHEDULER_ADDRESS"] = os.environ["DASK_SCHEDULER_ADDRESS"]
with open("/tmp/base-job-template.json", "w") as f:
    json.dump(template, f)
PY

# The server may still be starting (a fresh database migrates first): wait up to 5 minutes.
python - <<'PY'
import os
import time
import urllib.request

url = os.environ["PREFECT_API_URL"].rstrip("/") + "/health"
deadline = time.monotonic() + 300
while True:
    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            if r.status == 200:
                break
    except OSError as e:
        if time.monotonic() > deadline:
            raise SystemExit(f"register.sh: the Prefect server at {url} did not answer: {e}")
    time.sleep(5)
PY

prefect work-pool create "$POOL" --type kubernetes \
    --base-job-template /tmp/base-job-template.json --overwrite
# Parameters as the jobs see them: params.yaml in the image's /app; the runs' working
# directories are relative to the job pods' working directory, the shared volume.
python -m pipelines.deploy --work-pool "$POOL" --image "$FLOW_IMAGE" \
    --params /app/params.yaml --repo "$FRAUD_FLOW_REPO"
python -m monitoring.deploy --work-pool "$POOL" --image "$FLOW_IMAGE" \
    --params /app/params.yaml
echo "register.sh: work pool $POOL and the deployments training/production," \
    "retraining/production and monitoring/daily are registered (image $FLOW_IMAGE)"

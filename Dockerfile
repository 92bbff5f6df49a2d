# The prediction API (serving/) as a container: `python -m serving` on port 8000, one worker.
#
#   podman build --format docker --network host \
#       -v /etc/ssl/certs/ca-certificates.crt:/etc/ssl/certs/ca-certificates.crt:ro -t fraud-api .
#   docker build -t fraud-api .                # where python:3.11-slim can be pulled
#
# The image has MLflow's client (mlflow-skinny, serving/requirements.txt), so MLFLOW_TRACKING_URI
# is an MLflow server (http(s)://...). The model comes from the registry at start-up (alias
# FRAUD_MODEL_ALIAS=champion) and is cached in FRAUD_MODEL_CACHE_DIR; when the registry is
# unreachable the service serves that cache. To bake a model into the image, put a serving model
# cache directory (what serving/model_store.py writes: model.ubj, train_info.json,
# history.parquet, meta.json; e.g. .cache/serving/model after `make serve`) inside the build
# context under a path .dockerignore does not exclude, and pass it:
#
#   cp -r .cache/serving/model build-model && podman build ... --build-arg MODEL_CACHE=build-model .
#
# Run with a read-only root filesystem and writable /var/lib/fraud (model cache + prediction log):
#   podman run --read-only --tmpfs /var/lib/fraud:rw,U -p 127.0.0.1:8000:8000 \
#       -e MLFLOW_TRACKING_URI=http://mlflow:5000 fraud-api
# (`U`: the tmpfs belongs to the container's user; Docker: --tmpfs /var/lib/fraud:uid=10001,gid=10001.
# podman's --tmpfs copies the image's /var/lib/fraud, baked model included, into the tmpfs;
# Docker's does not: with Docker and a baked model, use a named volume at /var/lib/fraud.)
# No secrets in the image: FRAUD_ADMIN_TOKEN and registry credentials come from the environment.

# --- builder: the serving runtime in a venv ------------------------------------------------
# The base, by tag in each FROM (no ARG): hadolint and checkov cannot see through a variable, and
# check that the tag is pinned and not `latest` only when it is written here. On machines
# without a registry, deploy/build-base-image.sh builds a stand-in under this very name.
FROM python:3.11-slim AS builder
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DEFAULT_TIMEOUT=120 \
    PYTHONDONTWRITEBYTECODE=1
WORKDIR /src
RUN python -m venv /opt/venv
COPY constraints.txt ./
COPY serving/requirements.txt ./serving-requirements.txt
# Only what the service imports (serving/requirements.txt: a subset of pyproject.toml's
# dependencies, with the MLflow client instead of the whole of MLflow), pinned by constraints.txt:
# a layer that only changes with those two files. The code itself is not installed: the runtime
# stage copies fraud/ and serving/ and puts them on PYTHONPATH. PIP_CERT: the system bundle
# (the build host's, mounted read-only at build time on machines behind a TLS-intercepting
# proxy; the image's own otherwise).
RUN PIP_CERT=/etc/ssl/certs/ca-certificates.crt \
        /opt/venv/bin/pip install --no-cache-dir -c constraints.txt -r serving-requirements.txt \
    && /opt/venv/bin/pip check \
    && /opt/venv/bin/pip uninstall --yes pip setuptools
COPY fraud /src/fraud
COPY serving /src/serving
RUN /opt/venv/bin/python -c "import serving.app, serving.__main__, serving.feature_store"

# --- model: an optional serving model cache to bake in (build arg MODEL_CACHE) ---------------
FROM python:3.11-slim AS model
ARG MODEL_CACHE=
# pyproject.toml is only there so that COPY has a source when MODEL_CACHE is empty.
COPY pyproject.toml ${MODEL_CACHE:-pyproject.toml} /model-src/
RUN mkdir -p /model \
    && if [ -n "$MODEL_CACHE" ]; then \
        for f in model.ubj train_info.json history.parquet meta.json; do \
            test -f "/model-src/$f" || { echo "MODEL_CACHE=$MODEL_CACHE has no $f" >&2; exit 1; }; \
            cp "/model-src/$f" /model/; \
        done; \
    fi

# --- runtime -----------------------------------------------------------------------------------
FROM python:3.11-slim
LABEL org.opencontainers.image.title="fraud-api" \
      org.opencontainers.image.description="Fraud-detection prediction API (FastAPI + XGBoost)" \
      org.opencontainers.image.licenses="Apache-2.0"
RUN groupadd --gid 10001 fraud \
    && useradd --uid 10001 --gid 10001 --home-dir /var/lib/fraud --no-create-home \
        --shell /usr/sbin/nologin fraud \
    && mkdir -p /var/lib/fraud \
    && chown 10001:10001 /var/lib/fraud
COPY --from=builder /opt/venv /opt/venv
WORKDIR /app
# The packages the service imports (the same code is also installed in /opt/venv; /app comes
# first on sys.path, so these are the ones that run).
COPY fraud ./fraud
COPY serving ./serving
COPY --from=model --chown=10001:10001 /model /var/lib/fraud/model
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONPATH=/app \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HOME=/var/lib/fraud \
    FRAUD_HOST=0.0.0.0 \
    FRAUD_PORT=8000 \
    FRAUD_MODEL_CACHE_DIR=/var/lib/fraud/model \
    FRAUD_PREDICTION_LOG=/var/lib/fraud/predictions.sqlite \
    FRAUD_LOG_LEVEL=info \
    MLFLOW_DISABLE_TELEMETRY=true \
    DO_NOT_TRACK=true
USER 10001:10001
EXPOSE 8000
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import sys, urllib.request; sys.exit(urllib.request.urlopen('http://127.0.0.1:8000/health', timeout=4).status != 200)"]
# Every setting is a FRAUD_* variable (docs/serving.md, `python -m serving --help`).
CMD ["python", "-m", "serving"]

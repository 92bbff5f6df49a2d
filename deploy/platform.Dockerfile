# The platform image `fraud-platform`: everything around the prediction API runs from it on
# Kubernetes (k8s/platform/): the MLflow tracking server (basic-auth app, PostgreSQL backend, S3
# artifacts), the Prefect server and its Kubernetes worker, the Evidently UI, and the flow-run
# jobs (`python -m pipelines...`, `python -m monitoring`), with DVC's S3 remote (the flows'
# data) and Dask (the scheduler and workers of k8s/dask/, and the flow runs that use them). One
# image, so that the server, the worker and the jobs always run the same code and pinned versions.
#
# Build it with deploy/build-platform-image.sh (podman; it assembles the build context, so the
# repository's .dockerignore, which serves the API image, does not apply here):
#   deploy/build-platform-image.sh                 # -> fraud-platform:0.1.0
#
# The context (assembled by the script): pyproject.toml, README.md (the package's readme),
# constraints.txt, params.yaml, dvc.yaml and the four packages fraud/, pipelines/, serving/,
# monitoring/.
#
# No secret in the image: database URLs, S3 keys and MLflow credentials come from the
# environment (Kubernetes Secrets, k8s/user-secrets.yaml).

# --- builder: the project and its `platform`, `s3` and `dask` extras in a venv --------------------------------------
# The base, by tag in each FROM (no ARG), as in ../Dockerfile: hadolint and checkov check the tag
# only when it is written here. On machines without a registry, deploy/build-base-image.sh builds
# a stand-in under this very name.
FROM python:3.11-slim AS builder
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DEFAULT_TIMEOUT=120 \
    PYTHONDONTWRITEBYTECODE=1
WORKDIR /src
RUN python -m venv /opt/venv
# Dependencies first, in a layer that changes only with pyproject.toml and constraints.txt: a
# stub of each package lets pip resolve and install the project's requirements before the code
# is copied. PIP_CERT: the system bundle (the build host's, mounted read-only at build time on
# machines behind a TLS-intercepting proxy; the image's own otherwise).
COPY pyproject.toml README.md constraints.txt ./
RUN for p in fraud pipelines serving monitoring; do mkdir -p "$p" && touch "$p/__init__.py"; done \
    && PIP_CERT=/etc/ssl/certs/ca-certificates.crt \
        /opt/venv/bin/pip install --no-cache-dir -c constraints.txt '.[platform,s3,dask]' \
    && /opt/venv/bin/pip uninstall --yes fraud-mlops \
    && /opt/venv/bin/pip check \
    && /opt/venv/bin/pip uninstall --yes pip setuptools \
    && for p in pandas numpy scipy pyarrow statsmodels matplotlib sklearn; do \
        find "/opt/venv/lib/python3.11/site-packages/$p" -depth -type d -name tests -exec rm -rf {} +; \
    done
# The stub project is gone again (the code runs from /app, below): pip check makes a broken pin
# fail the build, not a pod; pip and setuptools are dropped, nothing needs them at run time, and
# so are the test suites of the big numeric libraries (about 120 MB; named ones only: Evidently's
# `evidently.tests` is an API, not a test suite). The code is checked here, in the builder, by
# importing every service's entry module.
COPY fraud ./fraud
COPY pipelines ./pipelines
COPY serving ./serving
COPY monitoring ./monitoring
RUN /opt/venv/bin/python -c "import pipelines.flows, monitoring.flows, serving.app, mlflow.server.auth, prefect_kubernetes, boto3, dvc_s3, distributed, xgboost.dask"

# --- runtime ------------------------------------------------------------------------------------
# No HEALTHCHECK: the image runs five different services (and jobs), each with its own health
# endpoint; Kubernetes ignores HEALTHCHECK and probes each one as its manifest says
# (k8s/platform/<service>/).
# checkov:skip=CKV_DOCKER_2: one image, several services: the manifests' probes check each one
FROM python:3.11-slim
LABEL org.opencontainers.image.title="fraud-platform" \
      org.opencontainers.image.description="Fraud-detection MLOps platform: MLflow server, Prefect server and worker, Evidently UI, flow jobs" \
      org.opencontainers.image.licenses="Apache-2.0"
# git: the training flows read their data through DVC from a git repository (dvc.api at a
# commit; `dvc add` of production files) and record its commit as lineage, and the registration
# Job creates that repository on the shared volume (k8s/platform/prefect/init-flow-repo.sh).
# Pinned to the major version only: python:3.11-slim follows Debian's stable release (bookworm:
# 2.39, trixie: 2.47), so an exact pin would break the build when the base moves on; no
# recommends (no ssh client, no less): a fork is cloned over HTTPS. apt's package caches go too
# (/var/cache/apt holds 75 MB of them after an update). git costs about 100 MB, half of it Perl
# (a dependency of Debian's git).
RUN apt-get update \
    && apt-get install -y --no-install-recommends 'git=1:2.*' \
    && rm -rf /var/lib/apt/lists/* /var/cache/apt/* /usr/share/doc/* /usr/share/man/*
# uid/gid 10001 like the API image. HOME holds what the tools write (Prefect's profile, MLflow's
# generated auth config): an emptyDir in Kubernetes, so it must belong to the user in the image
# (podman kube play creates an emptyDir owned like the image's path).
RUN groupadd --gid 10001 fraud \
    && useradd --uid 10001 --gid 10001 --home-dir /var/lib/fraud --no-create-home \
        --shell /usr/sbin/nologin fraud \
    && mkdir -p /var/lib/fraud \
    && chown 10001:10001 /var/lib/fraud
COPY --from=builder /opt/venv /opt/venv
WORKDIR /app
# The code and the pipeline's params: flows and jobs run `python -m ...` from here (the packages
# are found through PYTHONPATH; the venv has only their dependencies, so there is no `fraud`
# command: `python -m pipelines.cli` is the same thing).
COPY fraud ./fraud
COPY pipelines ./pipelines
COPY serving ./serving
COPY monitoring ./monitoring
COPY params.yaml dvc.yaml pyproject.toml ./
# Offline-safe defaults (../../shared/STACK.md): no telemetry, Prefect's home under HOME, MLflow's
# job workers off (they cost 3 GiB). Everything else is set by the manifests.
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONPATH=/app \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HOME=/var/lib/fraud \
    MLFLOW_DISABLE_TELEMETRY=true \
    MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false \
    DO_NOT_TRACK=true \
    PREFECT_HOME=/var/lib/fraud/.prefect \
    PREFECT_SERVER_ANALYTICS_ENABLED=false \
    DVC_NO_ANALYTICS=1 \
    ITERATIVE_DO_NOT_TRACK=1 \
    GIT_PYTHON_REFRESH=quiet
USER 10001:10001
# No default service: each Deployment or Job names its command (k8s/platform/<service>/).
CMD ["python", "-c", "print('fraud-platform: run mlflow server, prefect server start, prefect worker start, evidently ui or python -m <module>')"]

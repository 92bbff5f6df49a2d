# Two commands for a fresh machine: `make run` and `make test`. Both set up the venv first.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(CURDIR)/$(VENV)/bin
export PATH := $(BIN):$(PATH)

# Offline-safe, project-local defaults from offline.env (see docs/stack.md), each exported with
# `?=` so that the environment overrides it; ${PROJECT_ROOT} in a value is this directory.
PROJECT_ROOT := $(CURDIR)
OFFLINE_ENV := $(shell grep -E '^[A-Z_][A-Z0-9_]*=' $(CURDIR)/offline.env)
$(if $(OFFLINE_ENV),,$(error $(CURDIR)/offline.env is missing or has no KEY=value line))
OFFLINE_ENV_KEYS := $(foreach kv,$(OFFLINE_ENV),$(firstword $(subst =, ,$(kv))))
$(foreach kv,$(OFFLINE_ENV),$(eval export $(firstword $(subst =, ,$(kv))) ?= \
	$(patsubst $(firstword $(subst =, ,$(kv)))=%,%,$(kv))))

INPUT ?=
HOST ?= 127.0.0.1
PORT ?= 8000
OUTPUT ?=
MODEL ?=
PYTEST_ARGS ?=
BENCH_ARGS ?=
MONITOR_ARGS ?=
FIRST ?=
PRODUCTION ?=
WINDOW ?=
LAST ?=
DASHBOARD_PORT ?= 8085
WORKSPACE ?= reports/monitoring/workspace
DEMO_ARGS ?=
KUBECTL ?= kubectl
# checkov lives in a venv of its own: its pinned dependencies conflict with the project's
# (deploy/checkov-requirements.txt says which).
CHECKOV_VENV ?= .venv-checkov
# Every image's Dockerfile: the API's, and the others' under deploy/ (platform.Dockerfile, ...).
DOCKERFILES = Dockerfile $(sort $(wildcard deploy/*.Dockerfile))
# The delivery's shell scripts (the workflows' inline run: scripts go through actionlint).
SHELL_SCRIPTS = .ci/run $(sort $(wildcard deploy/*.sh .github/scripts/*.sh))
# The overlays as a cluster gets them, rendered by kubectl (checkov's own kustomize support
# shells out to a kubectl/kustomize of its choosing and wants the network): kept after the run,
# so that the line numbers in checkov's findings can be looked up.
LINT_RENDERS := .cache/lint-deploy

.PHONY: help setup system-deps run test test-platform test-backends test-reliability test-fast lint lint-deploy checkov-setup format score serve flow retrain retrain-serve monitor monitor-flow monitor-replay monitor-serve drift-demo dashboards mlflow-ui plots bench bench-serving bench-budget bench-drift bench-scale clean print-env

help: ## list the targets
	@grep -hE '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' \
		'{ name[NR] = $$1; text[NR] = $$2; if (length($$1) > width) width = length($$1) } \
		END { for (i = 1; i <= NR; i++) printf "  make %-" width "s  %s\n", name[i], text[i] }'

print-env: ## print the offline.env variables as the targets' commands see them
	@$(foreach k,$(OFFLINE_ENV_KEYS),printf '%s=%s\n' $(k) "$${$(k)-(unset)}";)

$(VENV)/.installed: pyproject.toml constraints.txt
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade "pip>=24"
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[dev,platform,s3,dask]'
	@touch $@

setup: $(VENV)/.installed ## create the venv and install the project (pinned by constraints.txt)

run: setup ## run the whole pipeline (dvc repro) on the embedded defaults and print the results
	dvc repro
	fraud summary

test: setup ## run the tests that CI runs, every tier (any that skip are listed at the end); not the platform image's
	pytest $(PYTEST_ARGS)

test-platform: setup ## the platform image's tests: build it (minutes, once per source state), then run MLflow, the API and Prefect from it under podman kube play
	pytest -m platform $(PYTEST_ARGS)

test-backends: setup ## the production backends' tests: MLflow on PostgreSQL + S3 (moto), Prefect server + process worker, DVC's S3 remote, the Dask cluster
	pytest -m backends $(PYTEST_ARGS)

test-reliability: setup ## load, faults, hostile input and security (tests/reliability; docs/reliability.md has the figures)
	pytest -m reliability $(PYTEST_ARGS)

test-fast: setup ## the unit tier only: in-process tests, no service or pipeline run (under a minute)
	pytest -m unit $(PYTEST_ARGS)

system-deps: ## install the Debian packages the tests need (PostgreSQL, Redis, podman, ...; root or sudo)
	bash deploy/system-packages.sh

lint: setup ## ruff (lint + format check) and mypy
	ruff check .
	ruff format --check .
	mypy

$(CHECKOV_VENV)/.installed: deploy/checkov-requirements.txt
	@test -x $(CHECKOV_VENV)/bin/python || $(PYTHON) -m venv $(CHECKOV_VENV)
	@# --no-deps: the file pins the whole resolved set; pip check proves it consistent.
	$(CHECKOV_VENV)/bin/python -m pip install --quiet --no-deps -r deploy/checkov-requirements.txt
	$(CHECKOV_VENV)/bin/python -m pip check
	@touch $@

checkov-setup: $(CHECKOV_VENV)/.installed ## create checkov's own venv (.venv-checkov, pinned by deploy/checkov-requirements.txt)

# Every linter runs even when one before it failed, so that one run lists every finding; the
# target fails at the end, naming the linters that did. All of them work offline.
lint-deploy: setup checkov-setup ## lint the delivery files offline: yamllint, hadolint, actionlint, shellcheck, checkov (rendered overlays, Dockerfiles, workflows)
	@command -v $(KUBECTL) >/dev/null || { echo "ERROR: kubectl is not installed: lint-deploy renders" \
		"k8s/overlays/* with \`kubectl kustomize\` (kubectl has kustomize built in; CI machines have it" \
		"at /usr/bin/kubectl)" >&2; exit 1; }
	@# actionlint checks the workflows' run: scripts only when shellcheck is on PATH, silently
	@# skipping them otherwise: make its absence an error.
	@command -v shellcheck >/dev/null || { echo "ERROR: shellcheck is not installed: actionlint" \
		"would skip the workflows' scripts; make system-deps installs it (Debian: shellcheck)" >&2; exit 1; }
	@failed=(); \
	run() { local name=$$1; shift; printf '\n==> %s: %s\n' "$$name" "$$*"; "$$@" || failed+=("$$name"); }; \
	run yamllint yamllint --strict k8s .github compose.yaml .hadolint.yaml .checkov.yaml; \
	run hadolint hadolint --no-color --config .hadolint.yaml $(DOCKERFILES); \
	run actionlint actionlint -no-color; \
	run shellcheck shellcheck $(SHELL_SCRIPTS); \
	mkdir -p $(LINT_RENDERS); renders=(); \
	for overlay in dev prod prod-canary; do \
		out=$(LINT_RENDERS)/k8s-overlays-$$overlay.yaml; \
		if $(KUBECTL) kustomize k8s/overlays/$$overlay >"$$out"; then renders+=(-f "$$out"); \
		else failed+=("kubectl kustomize k8s/overlays/$$overlay"); fi; \
	done; \
	run checkov env CKV_SKIP_PACKAGE_UPDATE_CHECK=true $(CHECKOV_VENV)/bin/checkov \
		--config-file .checkov.yaml --framework kubernetes dockerfile github_actions \
		"$${renders[@]}" $(addprefix -f ,$(DOCKERFILES)) $(addprefix -f ,$(sort $(wildcard .github/workflows/*.yml .github/workflows/*.yaml))); \
	if (( $${#failed[@]} )); then printf '\nlint-deploy FAILED: %s\n' "$${failed[*]}" >&2; exit 1; fi; \
	printf '\nlint-deploy: all passed\n'

format: setup ## apply ruff's fixes and formatting
	ruff check --fix .
	ruff format .

score: setup ## batch-score INPUT (CSV/Parquet) into OUTPUT with @champion (or MODEL=<version>)
	@test -n "$(INPUT)" -a -n "$(OUTPUT)" || { echo "usage: make score INPUT=path OUTPUT=path [MODEL=version]"; exit 2; }
	fraud score --input "$(INPUT)" --output "$(OUTPUT)" $(if $(MODEL),--model-version $(MODEL),)

serve: setup ## start the prediction API on http://$(HOST):$(PORT) (docs at /docs) with @champion
	python -m serving --host $(HOST) --port $(PORT)

flow: setup ## run the Prefect training flow on the DVC-versioned data (temporary Prefect server unless PREFECT_API_URL is set)
	fraud flow

retrain: setup ## the Prefect retraining flow: the DVC data plus PRODUCTION=path (matured labels, e.g. from python -m monitoring export)
	@test -n "$(PRODUCTION)" || { echo "usage: make retrain PRODUCTION=path [WINDOW=YYYY-MM-DD..YYYY-MM-DD]"; exit 2; }
	fraud retrain --production "$(PRODUCTION)" $(if $(WINDOW),--window $(WINDOW),)

retrain-serve: setup ## serve the retraining flow as retraining/production on the Prefect server at PREFECT_API_URL (monitoring triggers it)
	python -m pipelines.deploy

monitor: setup ## run the monitoring job once: the latest day of the prediction log, or INPUT=path (a file scored with @champion); MONITOR_ARGS=--help for options
	python -m monitoring run $(if $(INPUT),--input "$(INPUT)",) $(MONITOR_ARGS)

monitor-flow: setup ## the monitoring flow once (Prefect; temporary server unless PREFECT_API_URL), INPUT=path for a file
	python -m monitoring.flows run $(if $(INPUT),--input "$(INPUT)",) $(MONITOR_ARGS)

monitor-replay: setup ## FIRST=YYYY-MM-DD LAST=YYYY-MM-DD: the monitoring flow for each day of the prediction log
	@test -n "$(FIRST)" -a -n "$(LAST)" || { echo "usage: make monitor-replay FIRST=YYYY-MM-DD LAST=YYYY-MM-DD"; exit 2; }
	python -m monitoring.flows replay $(FIRST) $(LAST) $(MONITOR_ARGS)

monitor-serve: setup ## serve the daily monitoring deployment (cron 15 0 * * * UTC) on the Prefect server at PREFECT_API_URL
	python -m monitoring.deploy $(MONITOR_ARGS)

drift-demo: setup ## the whole loop on simulated production, in runs/drift-demo: drift found, retrained through Prefect, gated, served (~10 min; DEMO_ARGS=--help)
	python -m monitoring.demo run $(DEMO_ARGS)

dashboards: setup ## the Evidently UI on the monitoring workspace (WORKSPACE=, e.g. runs/drift-demo/monitoring/workspace): http://127.0.0.1:$(DASHBOARD_PORT)
	python -m monitoring.ui --workspace $(WORKSPACE) --port $(DASHBOARD_PORT)

mlflow-ui: setup ## open the MLflow UI on http://127.0.0.1:5000
	mlflow ui --backend-store-uri "$(MLFLOW_TRACKING_URI)" --host 127.0.0.1 --port 5000

plots: setup ## render the DVC plots to reports/plots/index.html (works offline)
	fraud plots

bench: setup ## run the pipeline benchmark and print its table
	python benchmarks/pipeline_bench.py

bench-serving: setup ## benchmark the API against mlflow models serve with wrk (BENCH_ARGS=--help for options)
	python benchmarks/serving/run.py $(BENCH_ARGS)

bench-budget: setup ## where a /predict/batch request's CPU goes, and what 100,000 tx/s would leave
	python benchmarks/serving/budget.py $(BENCH_ARGS)

bench-drift: setup ## the drift benchmark: scenarios x seeds through the monitor's checks, with Evidently's preset beside (about 10 min)
	python benchmarks/drift_bench.py $(BENCH_ARGS)

bench-scale: setup ## the scale benchmark: wall, CPU and peak memory per stage at 1x, 4x, 16x the data, in process and on a Dask LocalCluster, and make score's rows/s (BENCH_ARGS=--help; 1-2 hours on 2 quiet cores)
	python -m benchmarks.scale_bench $(BENCH_ARGS)

clean: ## remove generated data, models, reports and stores (keeps the venv)
	rm -rf data/raw data/features models reports mlflow.db mlartifacts .prefect runs .cache/serving

#!/usr/bin/env bash
# The Debian packages this project needs besides Python 3.11: installs those that are missing
# (apt-get update first), as root or through sudo. The one list: `make system-deps` and CI
# (.ci/run) both run this script. Without these packages the tests that need them are skipped
# (listed at the end of `make test`), and CI fails.
#
#   deploy/system-packages.sh           # install what is missing
#   deploy/system-packages.sh --check   # list what is missing; exit 1 if anything is
set -euo pipefail

missing=()
need() { # need PACKAGE CHECK...: PACKAGE is missing unless the command CHECK succeeds
    local package=$1
    shift
    "$@" >/dev/null 2>&1 || missing+=("$package")
}
need make command -v make
need git command -v git
need python3-venv python3 -c 'import ensurepip, venv'
# The container test (tests/deploy/test_api_container_image.py) builds the API image with
# podman, on a base image that deploy/build-base-image.sh makes with debootstrap.
need podman command -v podman
need runc command -v runc
need debootstrap command -v debootstrap
# podman kube play's pause container runs catatonit (tests/k8s/test_kube_play.py).
need catatonit command -v catatonit
# PostgreSQL's server binaries (Debian keeps initdb and postgres off PATH, under
# /usr/lib/postgresql/<version>/bin): the prediction log's PostgreSQL tests start their own server.
need postgresql compgen -G '/usr/lib/postgresql/*/bin/initdb'
# The shared online feature state's tests start their own redis-server.
need redis-server command -v redis-server
# The serving benchmark drives the API with wrk.
need wrk command -v wrk
# The browser test drives a headless chromium.
need chromium command -v chromium
# make lint-deploy: shellcheck on the delivery's scripts, and actionlint runs it on the workflows'
# run: steps (silently skipping them without it).
need shellcheck command -v shellcheck
# npm installs Vega for the offline DVC plots (pipelines/dvc_plots.py) and their test.
need npm command -v npm

if ((${#missing[@]} == 0)); then
    echo "system packages: all present"
    exit 0
fi
echo "system packages missing: ${missing[*]}"
if [[ ${1:-} == --check ]]; then
    exit 1
fi

SUDO=()
if [[ $(id -u) -ne 0 ]]; then
    command -v sudo >/dev/null || {
        echo "ERROR: run this as root, or install sudo: apt-get install ${missing[*]}" >&2
        exit 1
    }
    # Non-interactive runs (CI) must not wait for a password.
    if [[ -t 0 ]]; then SUDO=(sudo); else SUDO=(sudo -n); fi
fi
export DEBIAN_FRONTEND=noninteractive
"${SUDO[@]}" apt-get update -qq
"${SUDO[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}"

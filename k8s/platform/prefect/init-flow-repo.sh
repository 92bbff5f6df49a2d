#!/bin/sh
# The training flows' git+DVC repository on the shared volume ($FRAUD_FLOW_REPO): the training
# flow reads the raw data from it with dvc.api at a commit, the retraining flow `dvc add`s the
# production file in it, and both record its commit as the model's lineage (pipelines/flows.py).
# Run by the registration Job's init container (register-job.yaml) before the deployments are
# registered, so that no flow run can start before the repository exists.
#
# Where the repository comes from, when $FRAUD_FLOW_REPO/.git is missing:
#   * FRAUD_GIT_URL set: a clone of the user's fork (HTTPS; its own DVC remote with the data
#     pushed). Credentials, if the fork is private, from the optional Secret flow-repo-git, key
#     git-credentials (a git-credential-store line, https://USER:TOKEN@HOST), mounted at
#     $FRAUD_GIT_CREDENTIALS: given to git for the clone only, never written to the repository.
#   * otherwise (the default: a fresh cluster works with nothing outside it): seeded from the
#     image's own project files (/app: the code, params.yaml, dvc.yaml), `git init`, `dvc init`,
#     the DVC remote $FRAUD_DVC_REMOTE (endpoint $FRAUD_DVC_ENDPOINT_URL; keys only from the
#     AWS_* environment, never in the repository), `dvc repro ingest` (the simulator writes the
#     DVC-tracked raw data, about a minute), `dvc push` when a remote is set, one commit.
#
# Safe to re-run, never destructive: an existing repository is left exactly as it is (nothing
# fetched, nothing committed); a non-empty directory that is not a git repository is an error,
# never deleted. The repository is built in a temporary directory beside it and moved into place
# (a rename on the same volume) only when complete, pushed included: a failed attempt (the S3
# store still starting, a wrong URL) leaves no half-made repository, and the Job's next attempt
# starts over.
set -eu

: "${FRAUD_FLOW_REPO:?FRAUD_FLOW_REPO: where the flows repository lives (the shared volume)}"
REPO=${FRAUD_FLOW_REPO%/}
SOURCE=${FRAUD_SEED_SOURCE:-/app}
GIT_URL=${FRAUD_GIT_URL:-}
DVC_REMOTE=${FRAUD_DVC_REMOTE:-}
DVC_ENDPOINT_URL=${FRAUD_DVC_ENDPOINT_URL:-}
CREDENTIALS=${FRAUD_GIT_CREDENTIALS:-/etc/flow-repo-git/git-credentials}
# The S3 store may still be starting (dev: its bucket Job): retry the push for about 2 minutes.
PUSH_ATTEMPTS=${FRAUD_DVC_PUSH_ATTEMPTS:-12}
# The repository's identity for the commit made here (and for later ones made in a pod).
AUTHOR_NAME="fraud-platform"
AUTHOR_EMAIL="fraud-platform@fraud-mlops.invalid"

log() { echo "init-flow-repo: $*"; }
fail() {
    echo "init-flow-repo: ERROR: $*" >&2
    exit 1
}

if [ -e "$REPO/.git" ]; then
    log "$REPO exists (HEAD $(git -C "$REPO" rev-parse --short HEAD 2>/dev/null ||
        echo 'without a commit')): left as it is"
    exit 0
fi
if [ -d "$REPO" ] && [ -n "$(ls -A "$REPO")" ]; then
    fail "$REPO is not empty and not a git repository: move it away (nothing here deletes it)"
fi
if [ -e "$REPO" ] && [ ! -d "$REPO" ]; then
    fail "$REPO exists and is not a directory"
fi

PARENT=$(dirname "$REPO")
mkdir -p "$PARENT"
# Leftovers of attempts that were killed (a pod evicted mid-way): only this script's own names.
rm -rf "$PARENT/.$(basename "$REPO").init."*
WORK=$(mktemp -d "$PARENT/.$(basename "$REPO").init.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
# mktemp's 0700 would become the repository's mode: readable by its owner only (uid 10001, which
# every platform pod runs as) is enough, but a user who `kubectl exec`s as another uid could not
# even look; git's own default is 0755.
chmod 0755 "$WORK"

# DVC's site cache defaults to /var/tmp/dvc, on the pods' read-only root filesystem (podman's
# --read-only hides this: it mounts a tmpfs on /var/tmp, Kubernetes does not): /tmp instead, for
# this script's commands here, and in .dvc/config.local for every pod that uses the repository
# (the flow runs: dvc.api.open, dvc add). A setting of this machine, not of the project: the
# local config is not committed.
export DVC_SITE_CACHE_DIR=/tmp/dvc-site-cache
dvc_local_config() {
    python -m dvc config --local core.analytics false
    python -m dvc config --local core.check_update false
    python -m dvc config --local core.site_cache_dir /tmp/dvc-site-cache
}

if [ -n "$GIT_URL" ]; then
    log "cloning $GIT_URL"
    if [ -f "$CREDENTIALS" ]; then
        # -c applies to this command only: the token stays in the Secret's file.
        git -c "credential.helper=store --file=$CREDENTIALS" clone --quiet -- "$GIT_URL" "$WORK" ||
            fail "git clone $GIT_URL failed (credentials from $CREDENTIALS)"
    else
        git clone --quiet -- "$GIT_URL" "$WORK" ||
            fail "git clone $GIT_URL failed (no credentials: for a private fork, create the Secret flow-repo-git)"
    fi
    cd "$WORK"
    [ -d .dvc ] || fail "$GIT_URL is not a DVC project (no .dvc/): the flows read data/raw through DVC"
    dvc_local_config
    remote=$(python -m dvc remote default 2>/dev/null || true)
    [ -n "$remote" ] ||
        log "WARNING: $GIT_URL names no default DVC remote: the flows can read only what is in this clone's cache"
else
    log "seeding from the image's project files in $SOURCE"
    for f in fraud pipelines serving monitoring params.yaml dvc.yaml pyproject.toml; do
        [ -e "$SOURCE/$f" ] || fail "$SOURCE/$f is missing: FRAUD_SEED_SOURCE must be the project"
        cp -R "$SOURCE/$f" "$WORK/"
    done
    cd "$WORK"
    printf '%s\n' '__pycache__/' '*.py[cod]' >.gitignore
    git init --quiet --initial-branch=main
    git config user.name "$AUTHOR_NAME"
    git config user.email "$AUTHOR_EMAIL"
    python -m dvc init --quiet
    # Committed, as in the project's own .dvc/config: no telemetry, no update check, and every
    # file DVC tracks staged for the commit below.
    python -m dvc config core.analytics false
    python -m dvc config core.check_update false
    python -m dvc config core.autostage true
    dvc_local_config
    if [ -n "$DVC_REMOTE" ]; then
        python -m dvc remote add --default cluster "$DVC_REMOTE"
        if [ -n "$DVC_ENDPOINT_URL" ]; then
            python -m dvc remote modify cluster endpointurl "$DVC_ENDPOINT_URL"
        fi
    fi
    log "dvc repro ingest (the simulator, with the image's params.yaml)"
    python -m dvc repro --quiet ingest
    git add --all
    git commit --quiet -m "The flows' repository, seeded by the platform" \
        -m "The fraud-platform image's code, params.yaml and dvc.yaml; data/raw by \`dvc repro ingest\`."
    if [ -n "$DVC_REMOTE" ]; then
        attempt=1
        until python -m dvc push --quiet; do
            [ "$attempt" -lt "$PUSH_ATTEMPTS" ] ||
                fail "dvc push to $DVC_REMOTE failed $attempt times (the S3 store and its keys: AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY)"
            attempt=$((attempt + 1))
            sleep 10
        done
        log "raw data pushed to $DVC_REMOTE"
    else
        log "no FRAUD_DVC_REMOTE: nothing pushed, the data lives in the repository's DVC cache only"
    fi
fi

cd /
if [ -d "$REPO" ]; then
    rmdir "$REPO"
fi
mv "$WORK" "$REPO"
trap - EXIT
log "$REPO ready at HEAD $(git -C "$REPO" rev-parse --short HEAD)"

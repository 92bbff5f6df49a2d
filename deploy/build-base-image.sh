#!/usr/bin/env bash
# Build a stand-in for docker.io/library/python:3.11-slim on a machine that reaches Debian but no
# container registry: a debootstrap'ed Debian 12 (python3 = 3.11) imported into podman under that
# name, so the Dockerfile keeps a normal `FROM python:3.11-slim`. Once per machine: does nothing
# when the image already exists. Needs root (debootstrap) and `apt-get install podman runc
# debootstrap`.
#
#   deploy/build-base-image.sh            # build if missing
#   FORCE=1 deploy/build-base-image.sh    # rebuild
set -euo pipefail

IMAGE=docker.io/library/python:3.11-slim
SUITE=bookworm
REPO_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
export CONTAINERS_CONF=${CONTAINERS_CONF:-$REPO_ROOT/deploy/containers.conf}

for tool in podman debootstrap; do
    command -v "$tool" >/dev/null || {
        echo "ERROR: $tool not found: apt-get install -y podman runc debootstrap" >&2
        exit 1
    }
done

if [[ -z ${FORCE:-} ]] && podman image exists "$IMAGE"; then
    echo "$IMAGE already exists; nothing to do (FORCE=1 to rebuild)"
    exit 0
fi
if [[ $(id -u) -ne 0 ]]; then
    echo "ERROR: $IMAGE is missing and debootstrap needs root: run this script as root" \
        "(the same user that runs podman, since root and rootless podman keep separate images)" >&2
    exit 1
fi

# The machine's Debian mirror (deb822 sources first, then the one-line format, then the default).
MIRROR=${DEBIAN_MIRROR:-}
if [[ -z $MIRROR && -f /etc/apt/sources.list.d/debian.sources ]]; then
    MIRROR=$(awk '/^URIs:/ && $2 !~ /security/ {print $2; exit}' /etc/apt/sources.list.d/debian.sources)
fi
if [[ -z $MIRROR && -f /etc/apt/sources.list ]]; then
    MIRROR=$(awk '/^deb / && $0 !~ /security/ {print $2; exit}' /etc/apt/sources.list)
fi
MIRROR=${MIRROR:-http://deb.debian.org/debian}

ROOTFS=$(mktemp -d /tmp/python-slim-rootfs.XXXXXX)
cleanup() { rm -rf "$ROOTFS"; }
trap cleanup EXIT

echo "debootstrap $SUITE from $MIRROR into $ROOTFS"
keyring=()
[[ -f /usr/share/keyrings/debian-archive-keyring.gpg ]] &&
    keyring=(--keyring=/usr/share/keyrings/debian-archive-keyring.gpg)
debootstrap --variant=minbase "${keyring[@]}" \
    --include=python3,python3-pip,python3-venv,ca-certificates \
    "$SUITE" "$ROOTFS" "$MIRROR" >/tmp/debootstrap.log 2>&1 || {
    tail -n 30 /tmp/debootstrap.log >&2
    echo "ERROR: debootstrap failed (full log: /tmp/debootstrap.log)" >&2
    exit 1
}

# python:3.11-slim has `python`; the minbase has only python3.
ln -sf /usr/bin/python3 "$ROOTFS/usr/local/bin/python"
# Slim it: package lists, apt and debootstrap caches, docs and man pages.
rm -rf "$ROOTFS"/var/lib/apt/lists/* "$ROOTFS"/var/cache/apt/*.bin "$ROOTFS"/var/cache/apt/archives/*.deb \
    "$ROOTFS"/usr/share/doc/* "$ROOTFS"/usr/share/man/* "$ROOTFS"/usr/share/info/* \
    "$ROOTFS"/debootstrap
# Images do not carry the build host's resolver or hostname.
: >"$ROOTFS/etc/resolv.conf"
: >"$ROOTFS/etc/hostname"

tar --numeric-owner --xattrs -C "$ROOTFS" -c . |
    podman import \
        --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
        --change 'ENV LANG=C.UTF-8' \
        --change 'CMD ["python3"]' \
        --message "stand-in for python:3.11-slim: debootstrap $SUITE minbase + python3" \
        - "$IMAGE"
podman run --rm "$IMAGE" python --version
echo "built $IMAGE"

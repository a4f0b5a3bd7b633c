#!/usr/bin/env bash
# Build prerequisites of the CPU image, once, cached on this machine (outside the repo clone):
#   1. the local Debian bookworm base image `lenet-base:bookworm`;
#   2. the CPU wheelhouse: every pinned wheel the image installs (torch's +cpu build included),
#      hard-linked into the build context at .cache/wheelhouse/ (git-ignored) so that the
#      Dockerfile installs offline from it.
#
# Why: no container registry is reachable from this machine or CI, so nothing can be pulled.
# debootstrap builds a minimal bookworm root file system from the same Debian mirror apt uses
# here, and `docker import` turns it into an image. On a machine that can pull, the Dockerfile's
# default BASE_IMAGE (a digest-pinned public image) is used instead and this script is not needed.
#
# Idempotent: exits at once when the image exists. The root file system tarball is kept in
# $LENET_DOCKER_CACHE (default /var/cache/lenet-docker) so that an engine whose images were wiped
# re-imports in seconds instead of re-running debootstrap (minutes).
#
# Usage: bash deploy/base-image.sh [--force]
#   env: LENET_BASE_IMAGE, LENET_DOCKER_CACHE, DEBIAN_MIRROR, LENET_PYTHON (pip for the wheelhouse)
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
IMAGE="${LENET_BASE_IMAGE:-lenet-base:bookworm}"
CACHE="${LENET_DOCKER_CACHE:-/var/cache/lenet-docker}"
SUITE=bookworm
TARBALL="$CACHE/rootfs-$SUITE-minbase.tar"

# The mirror apt uses on this host (deb822 sources first, then the classic list), so the base
# comes from the same place as every other Debian package here.
default_mirror() {
    local uri
    uri=$(grep -hsE '^URIs:' /etc/apt/sources.list.d/*.sources 2>/dev/null \
        | awk '{print $2}' | grep -v security | head -n1 || true)
    if [[ -z "$uri" ]]; then
        uri=$(grep -hsE '^deb ' /etc/apt/sources.list 2>/dev/null \
            | awk '{print $2}' | grep -v security | head -n1 || true)
    fi
    echo "${uri:-http://deb.debian.org/debian}"
}
MIRROR="${DEBIAN_MIRROR:-$(default_mirror)}"

log() { echo "[base-image] $*" >&2; }

FORCE=0
[[ "${1:-}" == "--force" ]] && FORCE=1

# --- 2. wheelhouse (runs first: cheap when cached) -----------------------------------------
# The same requirement list the Dockerfile derives from pyproject.toml. The wheels come through
# this host's pip configuration (its CA bundle, index and local wheel folders), so no CA bundle
# or pip.conf has to enter the build; the image installs with --no-index.
PYTHON="${LENET_PYTHON:-$REPO/.venv/bin/python}"
[[ -x "$PYTHON" ]] || PYTHON=python3
REQS=$("$PYTHON" -c "
import tomllib
p = tomllib.load(open('$REPO/pyproject.toml', 'rb'))['project']
extra = [d for d in p['optional-dependencies']['dev'] if d.split('==')[0] in ('onnx', 'onnxscript')]
extra += p['optional-dependencies']['ray']  # images built with EXTRAS=ray install offline too
print('\n'.join(p['dependencies'] + extra))")
KEY=$(printf '%s\n' "$REQS" | sha256sum | cut -c1-12)
WHEELS="$CACHE/wheelhouse-cpu-$KEY"
if [[ $FORCE == 1 || ! -f "$WHEELS/.complete" ]]; then
    log "downloading the CPU wheelhouse into $WHEELS"
    mkdir -p "$CACHE"
    rm -rf "$WHEELS"
    printf '%s\n' "$REQS" >"$CACHE/requirements-$KEY.txt"
    # torch==2.13.0 is satisfied by the local 2.13.0+cpu wheel (PEP 440 ignores the +cpu label)
    # when pip's find-links has it; TORCH_CPU_WHEEL names it explicitly otherwise.
    torch_wheel="${TORCH_CPU_WHEEL:-$(ls /opt/wheels/torch-2.13.0+cpu-*.whl 2>/dev/null | head -n1)}"
    "$PYTHON" -m pip download --quiet --only-binary :all: --dest "$WHEELS.partial" \
        ${torch_wheel:+"$torch_wheel"} -r "$CACHE/requirements-$KEY.txt" \
        >"$CACHE/pip-download.log" 2>&1 \
        || { grep -v "is ignored" "$CACHE/pip-download.log" | tail -n 20 >&2;
             log "pip download failed (log: $CACHE/pip-download.log)"; exit 1; }
    ls "$WHEELS.partial"/torch-2.13.0+cpu-*.whl >/dev/null \
        || { log "the wheelhouse has no torch +cpu wheel; set TORCH_CPU_WHEEL"; exit 1; }
    touch "$WHEELS.partial/.complete"
    mv "$WHEELS.partial" "$WHEELS"
fi
# Hard links (same file system) or copies into the git-ignored build context folder.
rm -rf "$REPO/.cache/wheelhouse"
mkdir -p "$REPO/.cache"
cp -al "$WHEELS" "$REPO/.cache/wheelhouse" 2>/dev/null || cp -a "$WHEELS" "$REPO/.cache/wheelhouse"
log "wheelhouse: $(ls "$REPO/.cache/wheelhouse" | wc -l) wheels in .cache/wheelhouse ($(du -sh "$WHEELS" | cut -f1))"

# --- 1. base image ---------------------------------------------------------------------------
if [[ $FORCE == 0 ]] && docker image inspect "$IMAGE" >/dev/null 2>&1; then
    log "$IMAGE exists"
    exit 0
fi

mkdir -p "$CACHE"
if [[ $FORCE == 1 || ! -s "$TARBALL" ]]; then
    [[ $EUID -eq 0 ]] || { log "debootstrap needs root"; exit 1; }
    if ! command -v debootstrap >/dev/null; then
        log "installing debootstrap"
        apt-get install -y --no-install-recommends debootstrap >/dev/null 2>&1 \
            || { apt-get update >/dev/null && apt-get install -y --no-install-recommends debootstrap; } \
            || { log "debootstrap is not installed and could not be (apt-get install debootstrap)"; exit 1; }
    fi
    work=$(mktemp -d "$CACHE/rootfs.XXXXXX")
    trap 'rm -rf "$work"' EXIT
    log "debootstrap --variant=minbase $SUITE from $MIRROR (a few minutes, once)"
    start=$SECONDS
    debootstrap --variant=minbase "$SUITE" "$work/root" "$MIRROR" >"$work/debootstrap.log" 2>&1 \
        || { tail -n 30 "$work/debootstrap.log" >&2; log "debootstrap failed"; exit 1; }
    # apt caches and lists are re-fetched by `apt-get update` in the Dockerfile anyway.
    rm -rf "$work/root/var/cache/apt/archives/"*.deb "$work/root/var/lib/apt/lists/"*
    tar -C "$work/root" --numeric-owner -cf "$TARBALL.partial" .
    mv "$TARBALL.partial" "$TARBALL"
    log "root file system built in $((SECONDS - start)) s: $TARBALL"
fi

log "importing $TARBALL as $IMAGE"
docker import \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'ENV LANG=C.UTF-8' \
    --change 'CMD ["/bin/bash"]' \
    --message "debootstrap --variant=minbase $SUITE $MIRROR" \
    "$TARBALL" "$IMAGE" >/dev/null
docker image inspect "$IMAGE" --format '[base-image] {{.RepoTags}} {{.Size}} bytes' >&2

#!/usr/bin/env bash
# Install the Docker tools the compose tests need, where they are missing: the engine (Debian's
# docker.io: dockerd, containerd, runc) and Compose (Debian's docker-compose 1.29, v1; bookworm
# packages no v2 plugin). Only as root and only with apt; otherwise it changes nothing, and the
# tests that need the tools skip with the reason.
#
# Called by `make test` before pytest (so `docker-compose config` validates both compose files
# on a fresh machine) and by deploy/compose-test.sh. It does not start the engine: compose-test.sh
# starts dockerd for its own run and stops it again. docker.io's postinst cannot start a service
# without an init system, which is fine for the same reason.
#
# Always exits 0; one line on stderr per package it installs, apt's output in $LENET_DOCKER_CACHE.
set -uo pipefail

CACHE="${LENET_DOCKER_CACHE:-/var/cache/lenet-docker}"
log() { echo "[docker-tools] $*" >&2; }

[[ $EUID -eq 0 ]] && command -v apt-get >/dev/null || exit 0
mkdir -p "$CACHE" 2>/dev/null || CACHE=$(mktemp -d)

apt_install() {  # $1: package; the package lists are refreshed only when the first try fails
    log "installing Debian's $1 (log: $CACHE/apt-$1.log)"
    { DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "$1" \
        || { apt-get update \
             && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "$1"; }; \
    } >"$CACHE/apt-$1.log" 2>&1 || log "apt-get install $1 failed: see $CACHE/apt-$1.log"
}

if ! command -v dockerd >/dev/null && ! docker info >/dev/null 2>&1; then
    apt_install docker.io
fi
if ! docker compose version >/dev/null 2>&1 && ! command -v docker-compose >/dev/null; then
    apt_install docker-compose
fi
exit 0

#!/usr/bin/env bash
# GPU-node smoke for the compose stack, run by an operator on a real NVIDIA node AFTER
# `docker compose up -d` (docker-compose.yml, the GPU file) reported the server healthy:
#
#   1. nvidia-smi works inside the torchserve container (the GPU reservation reached it);
#   2. the CUDA build of torch sees a device there;
#   3. the management API's describe says every lenet worker runs with `gpu: true`;
#   4. real MNIST digits sent through the inference API come back right (client/smoke.py
#      in a one-off container of the loadtest image, on the compose network).
#
# Usage: bash deploy/gpu-smoke.sh        env: COMPOSE (default: docker compose, else
#                                             docker-compose), LENET_MANAGEMENT_PORT (8081)
# Exit 0 when all four hold; the failing check otherwise. Keys are read inside the container
# and handed to processes through the environment, never printed.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO"
if [[ -n "${COMPOSE:-}" ]]; then
    read -r -a COMPOSE_BIN <<<"$COMPOSE"
elif docker compose version >/dev/null 2>&1; then
    COMPOSE_BIN=(docker compose)
else
    COMPOSE_BIN=(docker-compose)
fi
compose() { "${COMPOSE_BIN[@]}" -f "$REPO/docker-compose.yml" "$@"; }
log() { echo "[gpu-smoke] $*" >&2; }
fail() { log "FAILED: $*"; exit 1; }

CID=$(compose ps -q torchserve)
[[ -n "$CID" ]] || fail "no torchserve container: run 'docker compose up -d' first"
[[ $(docker inspect -f '{{.State.Health.Status}}' "$CID") == healthy ]] \
    || fail "the torchserve container is not healthy yet (docker compose ps)"

# 1. the driver's tools are visible in the container
compose exec -T torchserve nvidia-smi --query-gpu=name,driver_version,memory.total \
    --format=csv,noheader || fail "nvidia-smi does not run inside the container"

# 2. torch is the CUDA build and sees the device
compose exec -T torchserve python -c "
import sys, torch
ok = torch.version.cuda is not None and torch.cuda.is_available()
print('torch', torch.__version__, 'cuda', torch.version.cuda, 'devices', torch.cuda.device_count())
sys.exit(0 if ok else 1)" || fail "torch in the container does not see a CUDA device"

# 3. workers on the GPU, per TorchServe's own describe (management API, inside the container)
compose exec -T torchserve python -c "
import json, sys, urllib.request
from deploy.keys import auth_headers, management_token
port = __import__('os').environ.get('LENET_MANAGEMENT_PORT', '8081')
req = urllib.request.Request(f'http://127.0.0.1:{port}/models/lenet',
                             headers=auth_headers(management_token()))
workers = json.load(urllib.request.urlopen(req, timeout=10))[0]['workers']
print('workers:', [(w['id'], w['status'], 'gpu' if w['gpu'] else 'cpu') for w in workers])
sys.exit(0 if workers and all(w['gpu'] and w['status'] == 'READY' for w in workers) else 1)" \
    || fail "not every lenet worker is READY on the GPU (describe says gpu: false)"

# 4. right answers: real MNIST digits through the inference API, from a one-off container
TOKEN=$(compose exec -T torchserve python -c \
    "from deploy.keys import inference_token; print(inference_token() or '')")
LENET_INFERENCE_TOKEN="$TOKEN" compose --profile loadtest run --rm --no-deps -T \
    -e LENET_INFERENCE_TOKEN --entrypoint python locust-pool \
    -m client.smoke --url http://torchserve:8080 --digits-dir /tmp/digits --count 20 \
    || fail "predictions through the GPU server are wrong or refused"
log "PASSED: GPU visible, workers on the GPU, predictions right"

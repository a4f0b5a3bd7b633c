#!/usr/bin/env bash
# A node of the compose `ray` profile (docker-compose.yml, docker-compose.cpu.yml):
#
#   ray-node.sh head    start the Ray head, wait until LENET_RAY_WORKERS worker nodes have joined,
#                       run the batch job on the cluster from here (this container is the driver's
#                       node), stop Ray and exit with the job's status (0, 3 or 2: batch/README.md)
#   ray-node.sh worker  join the head at LENET_RAY_HEAD (HOST:PORT) and stay up
#
# Environment: RAY_AUTH_TOKEN (required: every node and the driver share it; Ray's token
# authentication is on), LENET_RAY_NODE_IP (this node's address; empty: the container's own),
# LENET_RAY_GCS_PORT (head, default 6379), LENET_RAY_NUM_CPUS / LENET_RAY_NUM_GPUS (empty: Ray
# counts them), LENET_RAY_OBJECT_STORE_MB (default 512), LENET_RAY_WORKERS (head: nodes to wait
# for), LENET_RAY_JOB_ARGS (head: extra `batch score` options). The job reads /data/in (mounted
# at the same path on every node) and appends to /data/out/predictions.csv with --resume, so a
# second `up` continues where the first stopped.
#
# Every other port a node listens on is chosen free when it starts, and Ray's worker processes
# take ports the kernel picks, so nodes can share one host (host networking, several workers).
set -euo pipefail

: "${RAY_AUTH_TOKEN:?set RAY_AUTH_TOKEN to a random secret shared by every node (e.g. openssl rand -hex 32)}"
export RAY_AUTH_MODE=token RAY_USAGE_STATS_ENABLED=0
GCS_PORT="${LENET_RAY_GCS_PORT:-6379}"
log() { echo "[ray-node $1 $(date +%T)] ${*:2}" >&2; }

read -r P_NM P_OM P_MET P_ENV P_AGENT P_AGENT_GRPC P_CLIENT < <(python -c "
import socket
socks = [socket.socket() for _ in range(7)]
for s in socks:
    s.bind(('', 0))
print(*[s.getsockname()[1] for s in socks])")
node=(--disable-usage-stats --object-store-memory "$(( ${LENET_RAY_OBJECT_STORE_MB:-512} * 1048576 ))"
      --min-worker-port 0 --max-worker-port 0 --node-manager-port "$P_NM"
      --object-manager-port "$P_OM" --metrics-export-port "$P_MET" --runtime-env-agent-port "$P_ENV"
      --dashboard-agent-listen-port "$P_AGENT" --dashboard-agent-grpc-port "$P_AGENT_GRPC")
[[ -n "${LENET_RAY_NODE_IP:-}" ]] && node+=(--node-ip-address "$LENET_RAY_NODE_IP")
[[ -n "${LENET_RAY_NUM_CPUS:-}" ]] && node+=(--num-cpus "$LENET_RAY_NUM_CPUS")
[[ -n "${LENET_RAY_NUM_GPUS:-}" ]] && node+=(--num-gpus "$LENET_RAY_NUM_GPUS")

case "${1:-}" in
head)
    ray start --head --port "$GCS_PORT" --ray-client-server-port "$P_CLIENT" \
        --include-dashboard false "${node[@]}" >&2
    # `ray stop` sees this container's processes only: it stops this node, nothing else.
    trap 'ray stop --force >/dev/null 2>&1 || true' EXIT
    want=$(( 1 + ${LENET_RAY_WORKERS:-0} ))
    log head "waiting for $want nodes"
    python - "$want" <<'EOF'
import sys, time, ray
ray.init(address="auto", logging_level="ERROR")
deadline = time.monotonic() + 300
while len([n for n in ray.nodes() if n["Alive"]]) < int(sys.argv[1]):
    if time.monotonic() > deadline:
        sys.exit(f"only {len([n for n in ray.nodes() if n['Alive']])} Ray nodes after 300 s")
    time.sleep(1)
EOF
    log head "cluster up; scoring /data/in"
    # shellcheck disable=SC2086 # LENET_RAY_JOB_ARGS is a list of options
    set +e
    python -m batch score /data/in -o /data/out/predictions.csv --engine ray --address auto \
        --resume --no-progress --summary /data/out/summary.json ${LENET_RAY_JOB_ARGS:-}
    status=$?
    set -e
    log head "job exited $status"
    exit "$status"
    ;;
worker)
    : "${LENET_RAY_HEAD:?set LENET_RAY_HEAD to HOST:PORT of the head}"
    for _ in $(seq 120); do  # the head's GCS first: `ray start` gives up on an absent one
        python -c "import socket, sys; h, p = sys.argv[1].rsplit(':', 1); socket.create_connection((h, int(p)), 2)" \
            "$LENET_RAY_HEAD" 2>/dev/null && break
        sleep 1
    done
    exec ray start --block --address "$LENET_RAY_HEAD" "${node[@]}"
    ;;
*)
    echo "usage: $0 head|worker" >&2
    exit 2
    ;;
esac

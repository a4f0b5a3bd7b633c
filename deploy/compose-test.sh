#!/usr/bin/env bash
# `make compose-test`: the CPU compose stack, built and exercised for real on this machine.
#
#   1. start the Docker engine if none runs (as root, installing Debian's docker.io where dockerd is
#      missing; without root or apt: exit 77 = SKIP + reason)
#   2. build prerequisites (cached base image + wheelhouse) and the image; bring the stack up
#   3. wait for the container's HEALTHCHECK to say healthy
#   4. HTTP contract smoke: real MNIST digits -> right answers, bad input -> 400, no key -> refused
#      (TorchServe 0.12.0's 400 InvalidKeyException, deploy/keys.py)
#      (the key read from the container's key file with `compose exec`, never printed)
#   5. the batch job's http engine scores the smoke digits through the stack
#   5b. the ray profile: a Ray head and LENET_RAY_WORKERS (2) workers score 300 digits with
#      `--engine ray` on a mounted folder; every file exactly once, rows on every node
#   6. a 30 s Locust run (loadtest profile, master + 2 workers) and its SLO gate
#   7. kill TorchServe's java process inside the container; compose restarts it, healthy again
#   8. `down -v` leaves no container, network or volume of the project behind
#
# Every request goes to 127.0.0.1 (host networking, servers bound to loopback, free ports).
# Exit codes: 0 passed, 77 skipped (reason on the last line), anything else failed.
# The last line starting with COMPOSE_TEST_RESULT is a JSON summary (timings, sizes).
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO"
CACHE="${LENET_DOCKER_CACHE:-/var/cache/lenet-docker}"
PY="${LENET_PYTHON:-$REPO/.venv/bin/python}"
PROJECT="lenet-ct-$$"
LOCUST_WORKERS="${LOCUST_WORKERS:-2}"
LOCUST_RUN_TIME="${LOCUST_RUN_TIME:-30s}"
export LENET_BASE_IMAGE="${LENET_BASE_IMAGE:-lenet-base:bookworm}"

T0=$SECONDS
ENGINE_PID=""
stop_engine() {
    [[ -n "$ENGINE_PID" ]] || return 0
    log "stopping the dockerd this run started (pid $ENGINE_PID)"
    kill -TERM "$ENGINE_PID" 2>/dev/null || true
    for _ in $(seq 30); do kill -0 "$ENGINE_PID" 2>/dev/null || return 0; sleep 1; done
    kill -KILL "$ENGINE_PID" 2>/dev/null || true
}
trap stop_engine EXIT
declare -A TIMES
log() { echo "[compose-test $(date +%T)] $*" >&2; }
skip() { echo "COMPOSE_TEST_SKIP: $*"; exit 77; }
fail() { log "FAILED: $*"; exit 1; }
step_time() { TIMES[$1]=$((SECONDS - $2)); }

# --- 1. engine ---------------------------------------------------------------------------------
t=$SECONDS
mkdir -p "$CACHE" 2>/dev/null || CACHE=$(mktemp -d)
# As root, the engine and Compose are installed where missing (deploy/docker-tools.sh).
bash "$REPO/deploy/docker-tools.sh"
command -v docker >/dev/null || skip "no docker client on PATH"
if ! docker info >/dev/null 2>&1; then
    command -v dockerd >/dev/null || skip "no Docker engine runs and dockerd is not installed (as root: apt-get install docker.io)"
    [[ $EUID -eq 0 ]] || skip "no Docker engine runs and starting dockerd needs root"
    log "starting dockerd (log: $CACHE/dockerd.log)"
    # Started here, stopped here (in cleanup): images and build cache stay on disk in
    # /var/lib/docker, so the next run is just as fast without a daemon left running.
    setsid dockerd >"$CACHE/dockerd.log" 2>&1 </dev/null &
    ENGINE_PID=$!
    for _ in $(seq 60); do
        docker info >/dev/null 2>&1 && break
        kill -0 "$ENGINE_PID" 2>/dev/null || break  # it exited: no point waiting
        sleep 1
    done
    docker info >/dev/null 2>&1 \
        || skip "dockerd did not start: $(tail -n 3 "$CACHE/dockerd.log" | tr '\n' ' ')"
fi
# Compose: the v2 plugin when present, else v1 (Debian's 1.29.2, which docker-tools.sh installs:
# profiles, GPU device reservations and depends_on conditions all work).
if docker compose version >/dev/null 2>&1; then
    COMPOSE_BIN=(docker compose)
elif command -v docker-compose >/dev/null; then
    COMPOSE_BIN=(docker-compose)
else
    skip "neither 'docker compose' (v2 plugin) nor docker-compose (v1: apt-get install docker-compose) is installed"
fi
compose() { "${COMPOSE_BIN[@]}" -p "$PROJECT" -f "$REPO/docker-compose.cpu.yml" "$@"; }
step_time engine "$t"
log "engine $(docker version --format '{{.Server.Version}}'), $("${COMPOSE_BIN[@]}" version --short 2>/dev/null || true)"

[[ -s model_store/lenet.mar ]] || fail "model_store/lenet.mar is missing: run 'make archive'"
[[ -s artifacts/lenet.pt ]] || fail "artifacts/lenet.pt is missing: run 'make train'"
[[ -x "$PY" ]] || fail "$PY not found: run 'make venv'"
# MNIST for the smoke digits, the image pool and the containers' mount: $MNIST_DIR, else the
# project's verified download cache (filled from the public mirrors the first time).
if [[ -z "${MNIST_DIR:-}" ]]; then
    MNIST_DIR=$("$PY" -c "from train.mnist import download_mnist; print(download_mnist())") \
        || fail "no MNIST: set MNIST_DIR to the four IDX files"
fi
export MNIST_DIR

# Free loopback ports for everything the stack listens on (other servers may hold 8080 etc.).
read -r P_INF P_MGT P_MET P_GI P_GM P_LOC P_GCS < <("$PY" -c "
import socket
socks = [socket.socket() for _ in range(7)]
for s in socks: s.bind(('127.0.0.1', 0))
print(*[s.getsockname()[1] for s in socks])
for s in socks: s.close()")
export LENET_INFERENCE_PORT=$P_INF LENET_MANAGEMENT_PORT=$P_MGT LENET_METRICS_PORT=$P_MET \
    LENET_GRPC_INFERENCE_PORT=$P_GI LENET_GRPC_MANAGEMENT_PORT=$P_GM LOCUST_MASTER_PORT=$P_LOC \
    LOCUST_WORKERS LOCUST_RUN_TIME LENET_RAY_GCS_PORT=$P_GCS
WORK=$(mktemp -d /tmp/lenet-compose-test.XXXXXX)
chmod 0755 "$WORK"  # the containers' user (10001) mounts folders below it
export LENET_RESULTS_DIR="$WORK/results"
mkdir -p "$LENET_RESULTS_DIR"
chown 10001:10001 "$LENET_RESULTS_DIR" 2>/dev/null || chmod 0777 "$LENET_RESULTS_DIR"
# The training job writes lenet.pt 0600; the Locust containers (uid 10001) read a 0644 copy.
export LENET_ARTIFACTS_DIR="$WORK/artifacts"
mkdir -p "$LENET_ARTIFACTS_DIR"
install -m 0644 artifacts/lenet.pt "$LENET_ARTIFACTS_DIR/lenet.pt"

cleanup() {
    local rc=$?
    if [[ $rc -ne 0 && $rc -ne 77 ]]; then
        log "logs of the failed run:"
        compose --profile loadtest --profile ray logs --no-color --tail 40 >&2 2>/dev/null || true
    fi
    compose --profile loadtest --profile ray down -v --remove-orphans --timeout 10 >/dev/null 2>&1 || true
    rm -rf "$WORK"
    stop_engine
    exit "$rc"
}
trap cleanup EXIT

# --- 2. build and up -----------------------------------------------------------------------------
t=$SECONDS
bash deploy/base-image.sh
step_time prerequisites "$t"
t=$SECONDS
log "building lenet-serve:cpu (base $LENET_BASE_IMAGE)"
compose build torchserve >"$WORK/build.log" 2>&1 || { tail -n 40 "$WORK/build.log" >&2; fail "image build"; }
step_time build "$t"
# Each rebuild leaves the previous lenet-serve:cpu untagged; drop those (the label is set only at
# the end of the runtime stage, so the cached layers of the build are not touched).
docker image prune -f --filter label=org.opencontainers.image.title=lenet-serve >/dev/null
IMAGE_SIZE=$(docker image inspect lenet-serve:cpu --format '{{.Size}}')
BASE_SIZE=$(docker image inspect "$LENET_BASE_IMAGE" --format '{{.Size}}')
log "image lenet-serve:cpu: $((IMAGE_SIZE / 1000000)) MB (base $((BASE_SIZE / 1000000)) MB)"

t=$SECONDS
compose up -d --no-build torchserve
CID=$(compose ps -q torchserve)
[[ -n "$CID" ]] || fail "no torchserve container"
# The one-shot train service must have succeeded (it finds the .mar and exits 0).
TRAIN_RC=$(docker inspect -f '{{.State.ExitCode}}' "$(compose ps -a -q train)")
[[ "$TRAIN_RC" == 0 ]] || fail "the train service exited $TRAIN_RC"

# --- 3. healthy ------------------------------------------------------------------------------------
wait_healthy() {  # $1: seconds
    local status=""
    for _ in $(seq "$1"); do
        status=$(docker inspect -f '{{.State.Health.Status}}' "$CID" 2>/dev/null || echo gone)
        [[ "$status" == healthy ]] && return 0
        sleep 1
    done
    log "container health after $1 s: $status"
    docker inspect -f '{{range .State.Health.Log}}{{.Output}}{{end}}' "$CID" | tail -n 5 >&2
    return 1
}
wait_healthy 180 || fail "TorchServe did not become healthy"
step_time healthy "$t"
log "healthy in ${TIMES[healthy]} s on 127.0.0.1:$P_INF"
URL="http://127.0.0.1:$P_INF"

# The inference key, from the key file TorchServe wrote inside the container (never printed).
read_token() {
    compose exec -T torchserve cat /srv/lenet/run/key_file.json \
        | "$PY" -c "import json, sys; print(json.load(sys.stdin)['inference']['key'])"
}
LENET_INFERENCE_TOKEN=$(read_token) || fail "cannot read the key file in the container"
export LENET_INFERENCE_TOKEN
# The server runs as the image's non-root user, and its key file is private to that user.
SERVER_UID=$(compose exec -T torchserve id -u | tr -d '\r')
KEY_MODE=$(compose exec -T torchserve stat -c %a /srv/lenet/run/key_file.json | tr -d '\r')
[[ "$SERVER_UID" != 0 ]] || fail "TorchServe runs as root in the container"
[[ "$KEY_MODE" == 600 ]] || fail "key_file.json has mode $KEY_MODE, not 600"
log "server uid $SERVER_UID, key file mode $KEY_MODE"

# --- 4. HTTP contract smoke ----------------------------------------------------------------------
t=$SECONDS
SMOKE=$("$PY" -m client.smoke --url "$URL" --digits-dir "$WORK/digits") \
    || fail "HTTP contract smoke"
step_time smoke "$t"
log "smoke: $SMOKE"

# --- 5. batch job, http engine ---------------------------------------------------------------------
t=$SECONDS
"$PY" -m batch score "$WORK/digits" --output "$WORK/batch.csv" --engine http --url "$URL" \
    --no-progress >"$WORK/batch.log" 2>&1 || { tail -n 20 "$WORK/batch.log" >&2; fail "batch job"; }
BATCH=$("$PY" -c "
import csv, sys
from pathlib import Path
rows = list(csv.DictReader(open('$WORK/batch.csv')))
wrong = [r['path'] for r in rows if r['error'] or int(r['digit']) != int(Path(r['path']).parent.name)]
files = len(list(Path('$WORK/digits').rglob('*.png')))
print(f'{len(rows)} rows for {files} files, {len(wrong)} wrong')
sys.exit(1 if wrong or len(rows) != files or not rows else 0)") || fail "batch output: $BATCH"
step_time batch "$t"
log "batch: $BATCH"

# --- 5b. batch job on Ray: ray profile, head + workers, mounted folder -----------------------------
t=$SECONDS
RAY_WORKERS="${LENET_RAY_WORKERS:-2}"
log "building lenet-serve:cpu-ray (the image with the ray extra)"
compose --profile ray build ray-head >"$WORK/build-ray.log" 2>&1 \
    || { tail -n 40 "$WORK/build-ray.log" >&2; fail "ray image build"; }
docker run --rm --entrypoint python lenet-serve:cpu-ray -c "import ray; print('ray', ray.__version__)" \
    >&2 || fail "the ray image has no ray"
mkdir -p "$WORK/ray-in" "$WORK/ray-out"
"$PY" -c "from batch.bench import write_pngs; write_pngs(__import__('pathlib').Path('$WORK/ray-in'), 300, '$MNIST_DIR')"
chmod -R a+rX "$WORK/ray-in"
chown 10001:10001 "$WORK/ray-out" 2>/dev/null || chmod 0777 "$WORK/ray-out"
RAY_AUTH_TOKEN=$("$PY" -c "import secrets; print(secrets.token_hex(32))")
export RAY_AUTH_TOKEN LENET_RAY_WORKERS=$RAY_WORKERS LENET_RAY_NUM_CPUS=1 \
    LENET_RAY_INPUT="$WORK/ray-in" LENET_RAY_OUTPUT="$WORK/ray-out" \
    LENET_RAY_JOB_ARGS="--batch-size 32 --chunk-size 32"
log "ray: head + $RAY_WORKERS workers (1 CPU each), 300 digits"
compose --profile ray up -d --no-build --scale ray-worker="$RAY_WORKERS" ray-head ray-worker
RAY_HEAD=$(compose --profile ray ps -a -q ray-head)
[[ -n "$RAY_HEAD" ]] || fail "no ray-head container"
RAY_RC=$(timeout 600 docker wait "$RAY_HEAD") || fail "the ray job did not finish in 600 s"
compose --profile ray logs --no-color ray-head 2>&1 | grep -v logging_progress | tail -n 12 >&2
[[ "$RAY_RC" == 0 ]] || fail "the ray job exited $RAY_RC"
RAY_RESULT=$("$PY" -c "
import csv, json, sys
from collections import Counter
from pathlib import Path
rows = list(csv.DictReader(open('$WORK/ray-out/predictions.csv')))
files = {str(p.relative_to('$WORK/ray-in')) for p in Path('$WORK/ray-in').rglob('*.png')}
counts = Counter(r['path'] for r in rows)
right = sum(int(r['digit']) == int(r['path'].rsplit('_', 1)[1][:-4]) for r in rows if not r['error'])
nodes = json.load(open('$WORK/ray-out/summary.json'))['rows_per_node']
print(f'{len(rows)} rows for {len(files)} files, {right} digits right, rows per node {nodes}')
ok = set(counts) == files and max(counts.values()) == 1 and right >= 0.97 * len(files)
sys.exit(0 if ok and len(nodes) == 1 + $RAY_WORKERS and min(nodes.values()) > 0 else 1)") \
    || fail "ray job output: $RAY_RESULT"
# Only the ray services: `down` would take the running TorchServe with them.
compose --profile ray rm -s -f ray-head ray-worker >/dev/null 2>&1
step_time ray "$t"
log "ray: $RAY_RESULT"

# --- 6. Locust, loadtest profile, SLO gate ---------------------------------------------------------
t=$SECONDS
log "locust: $LOCUST_WORKERS workers, $LOCUST_RUN_TIME"
compose --profile loadtest up -d --no-build --scale locust-worker="$LOCUST_WORKERS" locust-worker
MASTER=$(compose --profile loadtest ps -a -q locust-master)
[[ -n "$MASTER" ]] || fail "no locust-master container"
LOCUST_RC=$(timeout 300 docker wait "$MASTER") || fail "locust master did not finish in 300 s"
compose --profile loadtest logs --no-color locust-master 2>&1 | tail -n 25 >&2
[[ "$LOCUST_RC" == 0 ]] || fail "Locust run / SLO gate failed (master exit $LOCUST_RC)"
[[ -s "$LENET_RESULTS_DIR/compose_stats.csv" ]] || fail "no Locust stats in the results folder"
LOCUST_TOTAL=$("$PY" -c "
import csv
row = next(r for r in csv.DictReader(open('$LENET_RESULTS_DIR/compose_stats.csv'))
           if r['Name'] == 'Aggregated')
print(f\"{row['Request Count']} requests, {row['Failure Count']} failures, p99 {row['99%']} ms\")")
step_time locust "$t"
log "locust gate passed: $LOCUST_TOTAL"

# --- 7. kill TorchServe inside the container: compose restarts it --------------------------------
t=$SECONDS
RESTARTS_BEFORE=$(docker inspect -f '{{.RestartCount}}' "$CID")
JAVA_PID=$(docker top "$CID" -eo pid,comm | awk '$2=="java" {print $1; exit}')
[[ -n "$JAVA_PID" ]] || fail "no java process in the container"
log "SIGKILL to TorchServe's java (host pid $JAVA_PID)"
kill -KILL "$JAVA_PID"
for _ in $(seq 60); do
    [[ $(docker inspect -f '{{.RestartCount}}' "$CID") -gt $RESTARTS_BEFORE ]] && break
    sleep 1
done
[[ $(docker inspect -f '{{.RestartCount}}' "$CID") -gt $RESTARTS_BEFORE ]] \
    || fail "the container was not restarted after TorchServe died"
wait_healthy 180 || fail "TorchServe did not become healthy again after the restart"
OLD_TOKEN=$LENET_INFERENCE_TOKEN
LENET_INFERENCE_TOKEN=$(read_token) || fail "cannot read the new key file"
[[ "$LENET_INFERENCE_TOKEN" != "$OLD_TOKEN" ]] || log "note: the key did not change on restart"
rm -rf "$WORK/digits"
"$PY" -m client.smoke --url "$URL" --digits-dir "$WORK/digits" --count 5 >/dev/null \
    || fail "predictions after the restart"
step_time restart "$t"
log "restarted (restart count $(docker inspect -f '{{.RestartCount}}' "$CID")) and healthy in ${TIMES[restart]} s"

# --- 8. down leaves nothing behind -----------------------------------------------------------------
t=$SECONDS
compose --profile loadtest --profile ray down -v --remove-orphans --timeout 10 >/dev/null 2>&1
LABEL="label=com.docker.compose.project=$PROJECT"
LEFT="$(docker ps -a -q --filter "$LABEL")$(docker network ls -q --filter "$LABEL")$(docker volume ls -q --filter "$LABEL")"
[[ -z "$LEFT" ]] || fail "left behind after down: $LEFT"
step_time down "$t"

TOTAL=$((SECONDS - T0))
log "PASSED in $TOTAL s"
printf 'COMPOSE_TEST_RESULT {"passed": true, "total_s": %d, "image_bytes": %s, "base_bytes": %s' \
    "$TOTAL" "$IMAGE_SIZE" "$BASE_SIZE"
for k in "${!TIMES[@]}"; do printf ', "%s_s": %s' "$k" "${TIMES[$k]}"; done
printf ', "locust": "%s"}\n' "$LOCUST_TOTAL"

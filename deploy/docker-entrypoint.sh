#!/usr/bin/env bash
# Container entrypoint. `serve` (the default) runs TorchServe IN THE FOREGROUND as the container's
# main process: when the server dies the container exits and the restart policy brings it back
# (the official image instead ends in `tail -f /dev/null`, which hides a dead server).
# Any other command runs as given (`python -m train`, `locust ...`, `bash`).
set -euo pipefail

if [[ "${1:-serve}" != "serve" ]]; then
    exec "$@"
fi
shift || true

RUN_DIR="${LENET_RUN_DIR:-/srv/lenet/run}"
mkdir -p "$RUN_DIR/logs" "$RUN_DIR/tmp"
# A restarted container keeps its file system: the torchserve CLI's pid file from the previous
# run would name a pid of the old namespace and make it refuse to start; the old key file is
# replaced by TorchServe at start anyway.
rm -f "$RUN_DIR/tmp/.model_server.pid" "$RUN_DIR/key_file.json"

config=$(python -m deploy.container_config)
cd "$RUN_DIR"  # TorchServe writes key_file.json (0600) into its cwd; healthcheck.py reads it there
export LOG_LOCATION="$RUN_DIR/logs" METRICS_LOCATION="$RUN_DIR/logs" TMPDIR="$RUN_DIR/tmp" \
    TEMP="$RUN_DIR/tmp"
# --ncs: no config snapshots; a restart serves exactly what config.properties says.
exec torchserve --start --foreground --ncs --ts-config "$config" "$@"

"""Render the container's TorchServe config from the environment (run by docker-entrypoint.sh).

The image bakes in no capacity settings: workers, batching and torch threads come from the
environment at start, the addresses and ports too. The rendering is the local server's
(`deploy.config.ServerConfig`): the committed deploy/config.properties with this run's values
applied, and a per-run copy of lenet.mar when a model setting is overridden.

Environment (unset = the committed default / the value packed into lenet.mar):
  LENET_MODEL_STORE      folder holding lenet.mar                      (/app/model_store)
  LENET_RUN_DIR          TorchServe's cwd: config, key_file.json, logs (/srv/lenet/run)
  LENET_BIND             address the inference and metrics APIs listen on   (0.0.0.0)
  LENET_MANAGEMENT_BIND  address the management API listens on         (LENET_BIND)
  LENET_INFERENCE_PORT / LENET_MANAGEMENT_PORT / LENET_METRICS_PORT   (8080 / 8081 / 8082)
  LENET_GRPC_INFERENCE_PORT / LENET_GRPC_MANAGEMENT_PORT (7070 / 7071; gRPC cannot be turned
                         off in 0.12.0 and listens on 127.0.0.1 only)
  LENET_WORKERS, LENET_BATCH_SIZE, LENET_MAX_BATCH_DELAY, LENET_TORCH_THREADS
  LENET_TOKEN_AUTH=off   serve without token authorisation (deploy/keys.py)
"""

from __future__ import annotations

import argparse
import logging
import os
import sys

from deploy.config import ServerConfig
from project import paths

logger = logging.getLogger(__name__)

DEFAULT_MODEL_STORE = "/app/model_store"
# Environment variable -> model-config.yaml override understood by deploy/config.py.
MODEL_ENV = {
    "LENET_WORKERS": "workers",
    "LENET_BATCH_SIZE": "batchSize",
    "LENET_MAX_BATCH_DELAY": "maxBatchDelay",
    "LENET_TORCH_THREADS": "torch_threads",
}


def _int_env(env: dict[str, str], name: str, default: int | None = None) -> int | None:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise SystemExit(f"{name}={raw!r} in the container environment is not an integer") from None
    if value < 0:
        raise SystemExit(f"{name}={value} in the container environment must be >= 0")
    return value


def config_from_env(env: dict[str, str]) -> ServerConfig:
    """The server's configuration from the container environment `env`."""
    bind = env.get("LENET_BIND", "0.0.0.0").strip()
    management_bind = env.get("LENET_MANAGEMENT_BIND", bind).strip()
    ports = {
        "inference": _int_env(env, "LENET_INFERENCE_PORT", 8080),
        "management": _int_env(env, "LENET_MANAGEMENT_PORT", 8081),
        "metrics": _int_env(env, "LENET_METRICS_PORT", 8082),
    }
    overrides = {
        key: value for name, key in MODEL_ENV.items() if (value := _int_env(env, name)) is not None
    }
    config_overrides = {
        "inference_address": f"http://{bind}:{ports['inference']}",
        "management_address": f"http://{management_bind}:{ports['management']}",
        "metrics_address": f"http://{bind}:{ports['metrics']}",
    }
    return ServerConfig(
        model_store=env.get("LENET_MODEL_STORE", DEFAULT_MODEL_STORE),
        inference_port=ports["inference"],
        management_port=ports["management"],
        metrics_port=ports["metrics"],
        config_overrides=config_overrides,
        model_config_overrides=overrides,
        grpc_ports=(
            _int_env(env, "LENET_GRPC_INFERENCE_PORT", 7070),
            _int_env(env, "LENET_GRPC_MANAGEMENT_PORT", 7071),
        ),
    )


def main(argv: list[str] | None = None) -> int:
    """Write the run's config.properties and print its path (for the entrypoint)."""
    parser = argparse.ArgumentParser(
        description="Render TorchServe's config.properties from the container environment.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--print", action="store_true", help="also print the rendered config")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        config = config_from_env(dict(os.environ))
        path = config.write(paths.run_dir())
    except Exception as exc:  # the entrypoint must show why it cannot start
        print(f"container_config: cannot prepare TorchServe's config: {exc}", file=sys.stderr)
        return 1
    overrides = config.model_config_overrides or "none (values packed in lenet.mar)"
    print(f"container_config: model overrides: {overrides}", file=sys.stderr)
    if args.print:
        print(path.read_text(), file=sys.stderr)
    print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())

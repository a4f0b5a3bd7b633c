"""What one TorchServe run is configured with, rendered into files; no processes here.

`ServerConfig` holds every choice (ports, model store, token auth, overrides of
`deploy/config.properties` and of the archive's `model-config.yaml`) and renders:

- `config.properties`: the committed file with this run's values applied (`render_properties`);
- a per-run copy of `lenet.mar` whose `model-config.yaml` carries this run's workers, batching,
  timeouts and torch threads (`write_served_store`). TorchServe 0.12.0 lets the archive's
  model-config.yaml win over config.properties' `models=` JSON, so this is how sweeps and the
  container change those settings without rebuilding the archive;
- the environment of the server's process group (`process_env`).

`deploy.server.TorchServe` runs a config; the container entrypoint only renders one.
"""

from __future__ import annotations

import json
import os
import re
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from deploy import keys
from handler import MODEL_NAME, TORCH_THREADS_ENV
from handler.artifact import MANIFEST_NAME
from project import paths
from project.ports import free_port

BASE_CONFIG = paths.DEPLOY_DIR / "config.properties"
MODEL_CONFIG = paths.DEPLOY_DIR / "model-config.yaml"
MAR_NAME = f"{MODEL_NAME}.mar"
# Per-model settings of model-config.yaml a run may override ("workers" sets min and max).
MODEL_CONFIG_KEYS = ("minWorkers", "maxWorkers", "batchSize", "maxBatchDelay",
                     "responseTimeout", "startupTimeout")  # fmt: skip
# Per-worker thread caps: the handler sets torch's own threads; these keep OpenMP/MKL/BLAS
# pools (created before the handler runs) from starting one thread per core in every worker.
THREAD_ENV_DEFAULTS = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}


def read_properties(path: str | Path) -> dict[str, str]:
    """`key=value` pairs of a Java properties file (comments and blank lines skipped)."""
    props = {}
    for line in Path(path).read_text().splitlines():
        line = line.strip()
        if line and not line.startswith(("#", "!")) and "=" in line:
            key, value = line.split("=", 1)
            props[key.strip()] = value.strip()
    return props


def max_request_size() -> int:
    """The committed body limit in bytes (config.properties `max_request_size`): what clients
    size their requests by and quote when the frontend answers a bare 413."""
    return int(read_properties(BASE_CONFIG)["max_request_size"])


def committed_model_config() -> dict:
    """deploy/model-config.yaml as committed: the per-model settings `make archive` ships."""
    return yaml.safe_load(MODEL_CONFIG.read_text())


@dataclass
class ServerConfig:
    """One TorchServe's settings. `stock=True` keeps TorchServe's own defaults (one worker per
    core, no batching, torch threads per core): the baseline the benchmarks compare against."""

    model_store: Path = field(default_factory=paths.model_store)
    inference_port: int = 8080
    management_port: int = 8081
    metrics_port: int = 8082
    grpc_ports: tuple[int, int] = (7070, 7071)  # gRPC cannot be disabled in 0.12.0
    config_overrides: dict = field(default_factory=dict)
    model_config_overrides: dict = field(default_factory=dict)
    token_auth: bool = field(default_factory=keys.token_auth_enabled)
    stock: bool = False
    env: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.model_store = Path(self.model_store).resolve()
        self.grpc_ports = tuple(self.grpc_ports)

    @classmethod
    def on_free_ports(cls, **settings) -> ServerConfig:
        """A config on ports nothing listens on now, so several servers run side by side."""
        ports = {"inference_port": free_port(), "management_port": free_port(),
                 "metrics_port": free_port(), "grpc_ports": (free_port(), free_port())}
        return cls(**{**ports, **settings})

    @property
    def ports(self) -> list[int]:
        return [self.inference_port, self.management_port, self.metrics_port, *self.grpc_ports]

    def url(self, api: str) -> str:
        """Where the `inference`, `management` or `metrics` API listens (loopback)."""
        return f"http://127.0.0.1:{getattr(self, api + '_port')}"

    @property
    def inference_url(self) -> str:
        return self.url("inference")

    @property
    def predict_url(self) -> str:
        return f"{self.url('inference')}/predictions/{MODEL_NAME}"

    @property
    def explain_url(self) -> str:
        return f"{self.url('inference')}/explanations/{MODEL_NAME}"

    @property
    def archive(self) -> Path:
        return self.model_store / MAR_NAME

    # --- model-config.yaml ------------------------------------------------------------------
    def model_config(self, archived: dict) -> dict:
        """The model-config.yaml of this run: the archive's, with this run's overrides applied."""
        overrides = dict(self.model_config_overrides)
        if "workers" in overrides:
            overrides["minWorkers"] = overrides["maxWorkers"] = overrides.pop("workers")
        threads = overrides.pop("torch_threads", None)
        # The share of the worker explanations may use (handler/limits.py `EXPLAIN_SHARE`).
        explain_share = overrides.pop("explain_share", None)
        unknown = set(overrides) - set(MODEL_CONFIG_KEYS)
        if unknown:
            known = [*MODEL_CONFIG_KEYS, "workers", "torch_threads", "explain_share"]
            raise ValueError(f"unknown model config override(s) {sorted(unknown)}; known: {known}")
        config = dict(archived)
        config["handler"] = dict(config.get("handler") or {})
        if self.stock:
            for key in ("minWorkers", "maxWorkers", "batchSize", "maxBatchDelay"):
                config.pop(key, None)
            config["handler"]["torch_threads"] = 0
        config.update({k: int(v) for k, v in overrides.items()})
        if threads is not None:
            config["handler"]["torch_threads"] = int(threads)
        if explain_share is not None:
            config["handler"]["explain_share"] = float(explain_share)
        return config

    def write_served_store(self, run_dir: Path) -> Path:
        """The model store this run serves from: the committed one, or a per-run copy of the
        archive with this run's model-config.yaml in `<run_dir>/model_store` (a ~0.3 MB copy in
        milliseconds; the built archive is never touched). Raises FileNotFoundError."""
        if not self.archive.is_file():
            raise FileNotFoundError(f"{self.archive} not found: build it with "
                                    "`python -m deploy archive`")  # fmt: skip
        if not self.model_config_overrides and not self.stock:
            return self.model_store
        store = Path(run_dir) / "model_store"
        store.mkdir(parents=True, exist_ok=True)
        tmp = store / f".{MAR_NAME}.tmp"
        with zipfile.ZipFile(self.archive) as src, \
                zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as dst:  # fmt: skip
            manifest = json.loads(src.read(MANIFEST_NAME))
            name = manifest["model"].get("configFile") or "model-config.yaml"
            archived = yaml.safe_load(src.read(name)) if name in src.namelist() else {}
            manifest["model"]["configFile"] = name
            for item in src.infolist():
                if item.filename not in (name, MANIFEST_NAME):
                    dst.writestr(item, src.read(item))
            dst.writestr(MANIFEST_NAME, json.dumps(manifest, indent=2))
            header = f"# {MAR_NAME} model config for the run in {run_dir} (deploy/config.py)\n"
            dst.writestr(name, header + yaml.safe_dump(self.model_config(archived or {}),
                                                       sort_keys=False))  # fmt: skip
        os.replace(tmp, store / MAR_NAME)
        return store

    # --- config.properties ------------------------------------------------------------------
    def render_properties(self, served_store: Path) -> str:
        """config.properties for this run: the committed file with this run's values applied."""
        run_values = {
            "inference_address": self.inference_url,
            "management_address": self.url("management"),
            "metrics_address": self.url("metrics"),
            "grpc_inference_address": "127.0.0.1",
            "grpc_management_address": "127.0.0.1",
            "grpc_inference_port": self.grpc_ports[0],
            "grpc_management_port": self.grpc_ports[1],
            "model_store": str(served_store),
            "load_models": MAR_NAME,
            "allowed_urls": "file://" + re.escape(str(served_store)) + r"/.*\.mar",
            "disable_token_authorization": "false" if self.token_auth else "true",
        }
        values = {**run_values, **self.config_overrides}
        if self.stock:
            # Only what is needed to run at all; everything else stays TorchServe's default.
            values = {**run_values, "enable_model_api": "false", **self.config_overrides}
            lines = ["# stock TorchServe defaults (the benchmarks' baseline), deploy/config.py"]
            return "\n".join(lines + [f"{k}={v}" for k, v in values.items()]) + "\n"
        out, seen = [], set()
        for line in BASE_CONFIG.read_text().splitlines():
            setting = "=" in line and not line.startswith("#")
            key = line.split("=", 1)[0].strip() if setting else None
            if key in values:
                line = f"{key}={values[key]}"
                seen.add(key)
            out.append(line)
        extra = [f"{k}={v}" for k, v in values.items() if k not in seen]
        if extra:
            out += ["", "# --- added by deploy/config.py for this run", *extra]
        return "\n".join(out) + "\n"

    def process_env(self, run_dir: Path) -> dict[str, str]:
        """Environment of the TorchServe process group running in `run_dir`."""
        env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}  # archive stands alone
        if not self.stock:
            env.update(THREAD_ENV_DEFAULTS)
        threads = self.model_config_overrides.get("torch_threads")
        if threads is not None:
            env[TORCH_THREADS_ENV] = str(int(threads))
        elif self.stock:
            env[TORCH_THREADS_ENV] = "0"  # leave torch's one-thread-per-core default
        tmp = Path(run_dir) / "tmp"
        env.update(
            TMPDIR=str(tmp),  # the torchserve CLI's pid file lives here: one per server
            TEMP=str(tmp),  # java.io.tmpdir: where archives are extracted
            LOG_LOCATION=str(Path(run_dir) / "logs"),
            METRICS_LOCATION=str(Path(run_dir) / "logs"),
        )
        env.update({k: str(v) for k, v in self.env.items()})
        return env

    def write(self, run_dir: Path) -> Path:
        """Render this config into `run_dir` (served store + config.properties); its path."""
        run_dir = Path(run_dir)
        run_dir.mkdir(parents=True, exist_ok=True)
        path = run_dir / "config.properties"
        path.write_text(self.render_properties(self.write_served_store(run_dir)))
        return path

"""Start, watch and stop a real local TorchServe serving `lenet.mar`.

`TorchServe` is the one way this project runs the server: the CLI (`python -m deploy serve`), the
tests, the batch job, the load and fault tests all use it. Each instance owns a run directory:

- `config.properties`: the committed deploy/config.properties with this run's ports, model store
  and overrides applied;
- `model_store/lenet.mar` (only when the model config is overridden): a copy of the archive
  whose model-config.yaml carries this run's workers/batchSize/maxBatchDelay/torch threads.
  TorchServe 0.12.0 lets the archive's model-config.yaml win over config.properties'
  `models=` JSON (verified: batchSize stayed 32 with models={...batchSize: 8}), so this is how
  sweeps change those settings without anyone rebuilding the archive by hand;
- `key_file.json`: written by TorchServe itself into its working directory (= the run dir);
- `torchserve.out` and `logs/`: TorchServe's console output and its log4j logs;
- `tmp/`: TorchServe's temp dir. The `torchserve` CLI keeps its pid file in the temp dir, so a
  private one lets several servers run side by side on one host;
- `torchserve.pid`: the process group of a daemonised server (`serve` / `stop` / `status`).

TorchServe runs in its own process group (`torchserve --start --foreground` -> java -> Python
workers), so stopping kills the whole group and then checks that no process of it is left and
no port is still bound.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import psutil
import requests
import yaml

from deploy import keys

logger = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parent.parent
BASE_CONFIG = REPO_ROOT / "deploy" / "config.properties"
DEFAULT_MODEL_STORE = REPO_ROOT / "model_store"
MODEL_NAME = "lenet"
MAR_NAME = f"{MODEL_NAME}.mar"
PID_FILE_NAME = "torchserve.pid"
CONSOLE_LOG_NAME = "torchserve.out"
THREADS_ENV = "LENET_TORCH_THREADS"  # read by handler/lenet_handler.py
# Per-model settings of model-config.yaml a run may override.
MODEL_CONFIG_KEYS = (
    "minWorkers",
    "maxWorkers",
    "batchSize",
    "maxBatchDelay",
    "responseTimeout",
    "startupTimeout",
)
# Per-worker thread caps: one torch thread per worker is set by the handler; these keep
# OpenMP/MKL/BLAS pools (created before the handler runs) from starting one thread per core.
THREAD_ENV_DEFAULTS = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}


class ServeError(RuntimeError):
    """TorchServe failed to start, become ready or stop; the message carries its log tail."""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def port_in_use(port: int) -> bool:
    """True when something accepts connections on 127.0.0.1:`port`."""
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def read_properties(path: Path) -> dict[str, str]:
    """`key=value` pairs of a Java properties file (comments and blank lines skipped)."""
    props = {}
    for line in Path(path).read_text().splitlines():
        line = line.strip()
        if line and not line.startswith(("#", "!")) and "=" in line:
            key, value = line.split("=", 1)
            props[key.strip()] = value.strip()
    return props


def mar_version(mar: Path) -> str:
    """The model version recorded in a .mar's MANIFEST.json."""
    try:
        with zipfile.ZipFile(mar) as zf:
            manifest = json.loads(zf.read("MAR-INF/MANIFEST.json"))
    except (OSError, KeyError, zipfile.BadZipFile, json.JSONDecodeError) as exc:
        raise ServeError(f"{mar} is not a readable model archive: {exc}") from exc
    return str(manifest["model"]["modelVersion"])


class TorchServe:
    """One local TorchServe process group serving `lenet.mar`; a context manager.

    `config_overrides` replace or add config.properties keys; `model_config_overrides` set the
    model's minWorkers/maxWorkers/batchSize/maxBatchDelay/responseTimeout (`workers` sets min and
    max at once) and `torch_threads` (per worker; 0 = torch's default). `stock=True` serves with
    TorchServe's own defaults (no tuned config, batchSize 1, one worker per core, torch threads
    per core) as the baseline the benchmarks compare against. `token_auth` defaults to
    `LENET_TOKEN_AUTH` (on unless set to off).
    """

    def __init__(
        self,
        model_store: str | Path = DEFAULT_MODEL_STORE,
        run_dir: str | Path | None = None,
        inference_port: int = 8080,
        management_port: int = 8081,
        metrics_port: int = 8082,
        config_overrides: dict | None = None,
        model_config_overrides: dict | None = None,
        token_auth: bool | None = None,
        env: dict | None = None,
        stock: bool = False,
        grpc_ports: tuple[int, int] | None = None,
    ) -> None:
        self.model_store = Path(model_store).resolve()
        self.run_dir = Path(run_dir).resolve() if run_dir else keys.run_dir()
        self.inference_port = inference_port
        self.management_port = management_port
        self.metrics_port = metrics_port
        self.config_overrides = dict(config_overrides or {})
        self.model_config_overrides = dict(model_config_overrides or {})
        self.token_auth = keys.token_auth_enabled() if token_auth is None else token_auth
        self.env = dict(env or {})
        self.stock = stock
        # gRPC cannot be disabled in 0.12.0; a server on non-default ports gets free gRPC ports.
        if grpc_ports is None:
            grpc_ports = (7070, 7071) if inference_port == 8080 else (free_port(), free_port())
        self.grpc_ports = tuple(grpc_ports)
        self.served_store = self.model_store  # a per-run copy when the model config is overridden
        self._proc: subprocess.Popen | None = None
        self._pgid: int | None = None
        self._foreign_ports: set[int] = set()

    # --- addresses and keys -------------------------------------------------------------
    @property
    def inference_url(self) -> str:
        return f"http://127.0.0.1:{self.inference_port}"

    @property
    def management_url(self) -> str:
        return f"http://127.0.0.1:{self.management_port}"

    @property
    def metrics_url(self) -> str:
        return f"http://127.0.0.1:{self.metrics_port}"

    @property
    def predict_url(self) -> str:
        return f"{self.inference_url}/predictions/{MODEL_NAME}"

    @property
    def urls(self) -> dict[str, str]:
        """Where this server listens."""
        return {
            "inference": self.inference_url,
            "management": self.management_url,
            "metrics": self.metrics_url,
            "predict": self.predict_url,
        }

    @property
    def key_file(self) -> Path:
        return self.run_dir / keys.KEY_FILE_NAME

    @property
    def config_path(self) -> Path:
        return self.run_dir / "config.properties"

    @property
    def console_log(self) -> Path:
        return self.run_dir / CONSOLE_LOG_NAME

    @property
    def inference_token(self) -> str | None:
        """This server's inference key (None with token auth off)."""
        return keys._read_key("inference", self.key_file) if self.token_auth else None

    @property
    def management_token(self) -> str | None:
        """This server's management key (None with token auth off)."""
        return keys._read_key("management", self.key_file) if self.token_auth else None

    @property
    def pid(self) -> int | None:
        """Pid of the `torchserve` process that leads the group (None when not started)."""
        return self._pgid

    # --- configuration ------------------------------------------------------------------
    def model_config(self, archived: dict) -> dict:
        """The model-config.yaml of this run: the archive's, with this run's overrides applied."""
        overrides = dict(self.model_config_overrides)
        if "workers" in overrides:
            overrides["minWorkers"] = overrides["maxWorkers"] = overrides.pop("workers")
        threads = overrides.pop("torch_threads", None)
        unknown = set(overrides) - set(MODEL_CONFIG_KEYS)
        if unknown:
            known = [*MODEL_CONFIG_KEYS, "workers", "torch_threads"]
            raise ValueError(f"unknown model config override(s) {sorted(unknown)}; known: {known}")
        config = dict(archived)
        config["handler"] = dict(config.get("handler") or {})
        if self.stock:
            # TorchServe's own defaults: one worker per core, no batching, torch's thread count.
            for key in ("minWorkers", "maxWorkers", "batchSize", "maxBatchDelay"):
                config.pop(key, None)
            config["handler"]["torch_threads"] = 0
        config.update({k: int(v) for k, v in overrides.items()})
        if threads is not None:
            config["handler"]["torch_threads"] = int(threads)
        return config

    def prepare_model_store(self) -> Path:
        """The model store this run serves from.

        TorchServe 0.12.0 lets the archive's model-config.yaml win over config.properties'
        `models=` JSON, so per-run settings need a per-run archive: a copy of lenet.mar (a zip)
        whose model-config.yaml is rewritten, in `<run_dir>/model_store`. Copying ~0.3 MB takes
        milliseconds, and the committed archive is never touched.
        """
        mar = self.model_store / MAR_NAME
        if not mar.is_file():
            raise ServeError(f"{mar} not found: build it with `python -m deploy archive`")
        if not self.model_config_overrides and not self.stock:
            return self.model_store
        store = self.run_dir / "model_store"
        store.mkdir(parents=True, exist_ok=True)
        tmp = store / f".{MAR_NAME}.tmp"
        with zipfile.ZipFile(mar) as src, zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as dst:
            manifest = json.loads(src.read("MAR-INF/MANIFEST.json"))
            config_name = manifest["model"].get("configFile") or "model-config.yaml"
            archived = (
                yaml.safe_load(src.read(config_name)) if config_name in src.namelist() else {}
            )
            config = self.model_config(archived or {})
            if config_name not in src.namelist():
                manifest["model"]["configFile"] = config_name
            header = (
                f"# {MAR_NAME} model config for the run in {self.run_dir} (deploy/launcher.py)\n"
            )
            for item in src.infolist():
                if item.filename in (config_name, "MAR-INF/MANIFEST.json"):
                    continue
                dst.writestr(item, src.read(item))
            dst.writestr("MAR-INF/MANIFEST.json", json.dumps(manifest, indent=2))
            dst.writestr(config_name, header + yaml.safe_dump(config, sort_keys=False))
        os.replace(tmp, store / MAR_NAME)
        return store

    def render_config(self) -> str:
        """config.properties for this run: the committed file with this run's values applied."""
        store_regex = "file://" + re.escape(str(self.served_store)) + r"/.*\.mar"
        run_values = {
            "inference_address": self.inference_url,
            "management_address": self.management_url,
            "metrics_address": self.metrics_url,
            "grpc_inference_address": "127.0.0.1",
            "grpc_management_address": "127.0.0.1",
            "grpc_inference_port": self.grpc_ports[0],
            "grpc_management_port": self.grpc_ports[1],
            "model_store": str(self.served_store),
            "load_models": MAR_NAME,
            "allowed_urls": store_regex,
            "disable_token_authorization": "false" if self.token_auth else "true",
        }
        if self.stock:
            # Only what is needed to run at all; everything else stays TorchServe's default.
            lines = ["# stock TorchServe defaults (benchmark baseline), written by the launcher"]
            values = {**run_values, "enable_model_api": "false", **self.config_overrides}
            return "\n".join(lines + [f"{k}={v}" for k, v in values.items()]) + "\n"
        values = {**run_values, **self.config_overrides}
        out, seen = [], set()
        for line in BASE_CONFIG.read_text().splitlines():
            key = (
                line.split("=", 1)[0].strip() if "=" in line and not line.startswith("#") else None
            )
            if key in values:
                line = f"{key}={values[key]}"
                seen.add(key)
            out.append(line)
        extra = [f"{k}={v}" for k, v in values.items() if k not in seen]
        if extra:
            out += ["", "# --- added by deploy/launcher.py for this run", *extra]
        return "\n".join(out) + "\n"

    def process_env(self) -> dict[str, str]:
        """Environment of the TorchServe process group."""
        env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}  # archive must stand alone
        if not self.stock:
            env.update(THREAD_ENV_DEFAULTS)
        threads = self.model_config_overrides.get("torch_threads")
        if threads is not None:
            env[THREADS_ENV] = str(int(threads))
        elif self.stock:
            env[THREADS_ENV] = "0"  # leave torch's one-thread-per-core default
        tmp = self.run_dir / "tmp"
        env.update(
            TMPDIR=str(tmp),  # the torchserve CLI's pid file lives here: one per server
            TEMP=str(tmp),  # java.io.tmpdir: where archives are extracted
            LOG_LOCATION=str(self.run_dir / "logs"),
            METRICS_LOCATION=str(self.run_dir / "logs"),
        )
        env.update({k: str(v) for k, v in self.env.items()})
        return env

    # --- lifecycle ----------------------------------------------------------------------
    def start(self, timeout: float = 180.0) -> TorchServe:
        """Start TorchServe and wait until /ping is healthy and the model's workers are READY.

        Raises `ServeError` with the tail of TorchServe's output when it does not get there.
        """
        if self._proc is not None and self._proc.poll() is None:
            raise ServeError(f"TorchServe (pid {self._pgid}) is already running")
        # Archives a previous run extracted (TorchServe leaves them behind on a kill).
        shutil.rmtree(self.run_dir / "tmp" / "models", ignore_errors=True)
        (self.run_dir / "tmp").mkdir(parents=True, exist_ok=True)
        self.served_store = self.prepare_model_store()
        busy = [p for p in self.ports if port_in_use(p)]
        self._foreign_ports = set(busy)  # held by someone else: stop() must not wait for them
        for stale in (self.key_file, self.console_log):
            stale.unlink(missing_ok=True)
        self.config_path.write_text(self.render_config())
        cmd = [
            str(Path(sys.executable).with_name("torchserve")),
            "--start", "--foreground", "--ncs",  # no config snapshots: the run dir is the config
            "--ts-config", str(self.config_path),
            "--model-store", str(self.served_store),
        ]  # fmt: skip
        logger.info("starting TorchServe in %s: %s", self.run_dir, " ".join(cmd))
        with open(self.console_log, "wb") as out:
            self._proc = subprocess.Popen(
                cmd, cwd=self.run_dir, env=self.process_env(), stdout=out,
                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True,
            )  # fmt: skip
        self._pgid = self._proc.pid
        try:
            if busy:
                # Another process holds a port: /ping would be answered by it, so only wait for
                # TorchServe to fail and report its own error.
                self._wait_exit(min(timeout, 60.0))
                raise ServeError(f"port(s) {busy} already in use")
            self.wait_ready(timeout)
        except BaseException as exc:
            tail = self.log_tail()
            self.stop()
            if isinstance(exc, ServeError):
                raise ServeError(
                    f"{exc}\n--- TorchServe output ({self.run_dir}) ---\n{tail}"
                ) from None
            raise
        logger.info("TorchServe ready: %s", self.urls)
        return self

    def wait_ready(self, timeout: float = 180.0) -> None:
        """Block until /ping says Healthy and every model worker is READY (ServeError if not)."""
        deadline = time.monotonic() + timeout
        last = "no answer yet"
        while time.monotonic() < deadline:
            if self._proc is not None and self._proc.poll() is not None:
                raise ServeError(
                    f"TorchServe exited with code {self._proc.returncode} while starting"
                )
            try:
                ping = requests.get(
                    f"{self.inference_url}/ping",
                    headers=keys.auth_headers(self.inference_token),
                    timeout=2,
                )
                if ping.status_code == 200 and ping.json().get("status") == "Healthy":
                    workers = self.workers()
                    if workers and all(w["status"] == "READY" for w in workers):
                        return
                    last = f"workers {workers}"
                else:
                    last = f"/ping {ping.status_code} {ping.text.strip()[:200]}"
            except (requests.RequestException, ValueError) as exc:
                last = type(exc).__name__
            time.sleep(0.25)
        raise ServeError(f"TorchServe not ready after {timeout:.0f} s ({last})")

    def workers(self) -> list[dict]:
        """The model's workers from the management API (`GET /models/lenet`)."""
        resp = requests.get(
            f"{self.management_url}/models/{MODEL_NAME}",
            headers=keys.auth_headers(self.management_token), timeout=5,
        )  # fmt: skip
        if resp.status_code == 404:  # registered asynchronously after /ping turns healthy
            return []
        resp.raise_for_status()
        return resp.json()[0].get("workers", [])

    def worker_pids(self) -> dict[str, int]:
        """{worker id: pid} of the model's workers."""
        return {str(w["id"]): int(w["pid"]) for w in self.workers()}

    @property
    def ports(self) -> list[int]:
        return [self.inference_port, self.management_port, self.metrics_port, *self.grpc_ports]

    def group_processes(self) -> list[psutil.Process]:
        """Live processes of this server's process group (frontend, CLI wrapper, workers)."""
        if self._pgid is None:
            return []
        found = []
        for proc in psutil.process_iter(["pid"]):
            try:
                if os.getpgid(proc.pid) == self._pgid and proc.status() != psutil.STATUS_ZOMBIE:
                    found.append(proc)
            except (ProcessLookupError, psutil.Error):
                continue
        return found

    def stop(self, timeout: float = 30.0) -> None:
        """Stop the whole process group: SIGTERM, then SIGKILL after `timeout`; verify it is gone.

        Raises `ServeError` if a process of the group survives or a port stays bound.
        """
        if self._pgid is None:
            return
        self._signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while self.group_processes() and time.monotonic() < deadline:
            self._reap()
            time.sleep(0.1)
        if self.group_processes():
            logger.warning("TorchServe group %d ignored SIGTERM; killing it", self._pgid)
            self._signal(signal.SIGKILL)
            time.sleep(0.5)
        self._reap()
        left = self.group_processes()
        if left:
            raise ServeError(f"processes {[p.pid for p in left]} of TorchServe survived SIGKILL")
        deadline = time.monotonic() + 10
        ours = [p for p in self.ports if p not in self._foreign_ports]
        while (bound := [p for p in ours if port_in_use(p)]) and time.monotonic() < deadline:
            time.sleep(0.1)
        self._pgid, self._proc = None, None
        if bound:
            raise ServeError(f"port(s) {bound} still bound after TorchServe stopped")
        logger.info("TorchServe stopped")

    def restart(self, timeout: float = 180.0) -> TorchServe:
        """Stop, then start again with the same settings (new keys, new worker pids)."""
        self.stop()
        return self.start(timeout)

    def log_tail(self, lines: int = 40) -> str:
        """The last lines of TorchServe's console output (its errors land there)."""
        try:
            text = self.console_log.read_text(errors="replace")
        except FileNotFoundError:
            return "(no output)"
        return "\n".join(text.splitlines()[-lines:])

    def _signal(self, sig: int) -> None:
        try:
            os.killpg(self._pgid, sig)
        except ProcessLookupError:
            pass

    def _reap(self) -> None:
        if self._proc is not None:
            self._proc.poll()

    def _wait_exit(self, timeout: float) -> None:
        try:
            self._proc.wait(timeout)
        except subprocess.TimeoutExpired:
            pass

    def attach(self, pgid: int) -> TorchServe:
        """Adopt a daemonised server's process group (from its pid file) to stop or inspect it."""
        self._pgid = pgid
        return self

    def __enter__(self) -> TorchServe:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

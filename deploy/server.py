"""Run a real TorchServe: start it, wait until it can answer, stop it with nothing left behind.

`TorchServe(config, run_dir)` is the one way this project runs the server: the CLI
(`python -m deploy serve`), the tests' fixtures, the batch and load-test benchmarks, the load
tests and the fault tests all use it; `TorchServe.private(run_dir, ...)` puts one on free ports.
What it runs is a `deploy.config.ServerConfig`. The run directory holds:

- `config.properties` (and `model_store/` when the model config is overridden): the rendered
  config;
- `key_file.json`: written by TorchServe itself into its working directory (= the run dir);
- `torchserve.out` and `logs/`: TorchServe's console output and its log4j logs;
- `tmp/`: TorchServe's temp dir. The `torchserve` CLI keeps its pid file there, so a private
  one lets several servers run side by side on one host.

TorchServe runs in its own process group (`torchserve --start --foreground` -> java -> Python
workers), so stopping kills the whole group and then checks that no process of it is left and
no port is still bound.
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import requests

from deploy import keys
from deploy.config import ServerConfig
from handler import MODEL_NAME
from project.ports import port_in_use

logger = logging.getLogger(__name__)

CONSOLE_LOG_NAME = "torchserve.out"


class ServeError(RuntimeError):
    """TorchServe failed to start, become ready or stop; the message carries its log tail."""


class TorchServe:
    """One local TorchServe process group; a context manager (start on enter, stop on exit)."""

    def __init__(self, config: ServerConfig | None = None, run_dir: str | Path | None = None):
        self.config = config or ServerConfig()
        self.run_dir = Path(run_dir).resolve() if run_dir else keys.run_dir()
        self._proc: subprocess.Popen | None = None
        self._pgid: int | None = None
        self._foreign_ports: set[int] = set()

    @classmethod
    def private(cls, run_dir: str | Path, **settings) -> TorchServe:
        """A server on free ports with its own run dir (token auth on unless `token_auth=False`);
        `settings` are `ServerConfig` fields. Not started."""
        settings.setdefault("token_auth", True)
        return cls(ServerConfig.on_free_ports(**settings), run_dir)

    # --- addresses and keys -------------------------------------------------------------
    @property
    def inference_url(self) -> str:
        return self.config.inference_url

    @property
    def predict_url(self) -> str:
        return self.config.predict_url

    @property
    def explain_url(self) -> str:
        return self.config.explain_url

    @property
    def management_url(self) -> str:
        """The management API (workers, scaling): loopback only, its own key."""
        return self.config.url("management")

    @property
    def metrics_url(self) -> str:
        """Prometheus metrics: loopback only."""
        return self.config.url("metrics")

    @property
    def ports(self) -> list[int]:
        """Every port the server listens on (HTTP APIs and gRPC)."""
        return self.config.ports

    @property
    def key_file(self) -> Path:
        return self.run_dir / keys.KEY_FILE_NAME

    @property
    def console_log(self) -> Path:
        return self.run_dir / CONSOLE_LOG_NAME

    @property
    def access_log(self) -> Path:
        """TorchServe's access log: one line per request with the time it took."""
        return self.run_dir / "logs" / "access_log.log"

    @property
    def inference_token(self) -> str | None:
        """This server's inference key (None with token auth off)."""
        return keys.read_key("inference", self.key_file) if self.config.token_auth else None

    @property
    def management_token(self) -> str | None:
        """This server's management key (None with token auth off)."""
        return keys.read_key("management", self.key_file) if self.config.token_auth else None

    @property
    def pid(self) -> int | None:
        """Pid of the `torchserve` process that leads the group (None when not started)."""
        return self._pgid

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
        try:
            config_path = self.config.write(self.run_dir)
        except FileNotFoundError as exc:
            raise ServeError(str(exc)) from None
        busy = [p for p in self.ports if port_in_use(p)]
        self._foreign_ports = set(busy)  # held by someone else: stop() must not wait for them
        for stale in (self.key_file, self.console_log):
            stale.unlink(missing_ok=True)
        cmd = [
            str(Path(sys.executable).with_name("torchserve")),
            "--start", "--foreground", "--ncs",  # no config snapshots: the run dir is the config
            "--ts-config", str(config_path),
        ]  # fmt: skip
        logger.info("starting TorchServe in %s: %s", self.run_dir, " ".join(cmd))
        with open(self.console_log, "wb") as out:
            self._proc = subprocess.Popen(
                cmd, cwd=self.run_dir, env=self.config.process_env(self.run_dir), stdout=out,
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
        logger.info("TorchServe ready at %s", self.inference_url)
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
                ping = requests.get(f"{self.inference_url}/ping", timeout=2,
                                    headers=keys.auth_headers(self.inference_token))  # fmt: skip
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
        resp = requests.get(f"{self.management_url}/models/{MODEL_NAME}", timeout=5,
                            headers=keys.auth_headers(self.management_token))  # fmt: skip
        if resp.status_code == 404:  # registered asynchronously after /ping turns healthy
            return []
        resp.raise_for_status()
        return resp.json()[0].get("workers", [])

    def worker_pids(self) -> dict[str, int]:
        """{worker id: pid} of the model's workers."""
        return {str(w["id"]): int(w["pid"]) for w in self.workers()}

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

    def attach(self, pgid: int) -> TorchServe:
        """Adopt a daemonised server's process group (from its pid file) to stop or inspect it."""
        self._pgid = pgid
        return self

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

    def __enter__(self) -> TorchServe:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

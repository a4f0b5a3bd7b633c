"""A private TorchServe for the limits bench, what its processes hold, and one timed request."""

from __future__ import annotations

import time
from pathlib import Path

import requests

from deploy.keys import auth_headers
from deploy.server import TorchServe
from project.memory import peak_rss_mb, rss_mb


def start_server(run_dir: Path, workers: int = 1) -> TorchServe:
    """A private TorchServe with the committed configuration and `workers` workers."""
    return TorchServe.private(run_dir, model_config_overrides={"workers": workers}).start()


def worker_memory(server: TorchServe) -> dict[int, dict]:
    """{pid: {"rss_mb", "peak_rss_mb"}} of each worker (peak: since the worker started)."""
    return {pid: {"rss_mb": rss_mb(pid), "peak_rss_mb": peak_rss_mb(pid)}
            for pid in server.worker_pids().values()}  # fmt: skip


def frontend_rss_mb(server: TorchServe) -> float | None:
    """Resident memory of the server's JVM (the frontend), MiB."""
    for proc in server.group_processes():
        if proc.name() == "java":
            return rss_mb(proc.pid)
    return None


def post(session: requests.Session, url: str, body: bytes, content_type: str,
         token: str | None, timeout: float = 120.0) -> tuple[int, float]:  # fmt: skip
    """POST `body`: (status, seconds)."""
    start = time.perf_counter()
    resp = session.post(url, data=body, timeout=timeout,
                        headers={"Content-Type": content_type, **auth_headers(token)})
    return resp.status_code, time.perf_counter() - start

"""The draw-a-digit app (`python -m web`) as a real subprocess on a free port, for the tests.

`WebApp(inference_url, env=...)` is a context manager: it starts the app, waits until the page is
served and stops the process at exit. The app's output goes to `log` (shown when it fails).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import requests

from project.paths import REPO_ROOT
from project.ports import free_port


class WebApp:
    """One `python -m web` process listening on 127.0.0.1:`port`."""

    def __init__(
        self,
        inference_url: str,
        log: Path,
        env: dict[str, str | None] | None = None,
        args: list[str] | None = None,
    ) -> None:
        self.port = free_port()
        self.inference_url = inference_url
        self.log = Path(log)
        merged = {**os.environ, **(env or {})}  # a None value removes the variable
        self.env = {k: v for k, v in merged.items() if v is not None}
        self.args = list(args or [])
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 30.0) -> WebApp:
        """Start the app and wait until it serves the page; RuntimeError with its log if not."""
        command = [sys.executable, "-m", "web", "--port", str(self.port),
                   "--inference-url", self.inference_url, *self.args]  # fmt: skip
        with open(self.log, "wb") as out:
            self.proc = subprocess.Popen(
                command, cwd=REPO_ROOT, env=self.env, stdout=out, stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )  # fmt: skip
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                break
            try:
                if requests.get(self.url, timeout=1).status_code == 200:
                    return self
            except requests.RequestException:
                pass
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"the web app did not come up:\n{self.log_tail()}")

    def stop(self) -> None:
        """SIGTERM (uvicorn shuts down gracefully), SIGKILL if it hangs."""
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except FileNotFoundError:
            return "(no output)"

    def __enter__(self) -> WebApp:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

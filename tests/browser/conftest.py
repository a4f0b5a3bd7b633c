"""Fixtures of the browser tests: Debian's Chromium, driven by Playwright, against real servers.

- `chromium` (session): the path of Debian's `chromium`. Where it is missing, the fixture installs
  it as root (`apt-get install -y chromium`, after `apt-get update` if the first try fails);
  elsewhere the tests skip and say why. Playwright for Python comes from the pinned dev extra; where
  it is missing the fixture pip-installs that pin. Never `playwright install`: no browser download.
- `served` (module): a PRIVATE TorchServe (`deploy.server.TorchServe.private`, token auth on, free
  ports, own run dir: the tests stop and restart it) and the real app (`python -m web`) in front
  of it, reading the server's key file. `served.keys()` lists every key the server has had.
- `page` (module): one page of a fresh Chromium profile, opened on the app, that records every
  response the browser received (`page.received`: url, headers, body).
"""

from __future__ import annotations

import importlib
import json
import os
import shutil
import subprocess
import sys
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from deploy.server import TorchServe
from project.paths import REPO_ROOT
from tests.web_app import WebApp

CHROMIUM = Path("/usr/bin/chromium")
# Quiet and deterministic: no sandbox (root in a container), no GPU, no network of its own.
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
VIEWPORT = {"width": 1000, "height": 760}


def _install_chromium() -> str | None:
    """Install Debian's chromium as root; the reason it cannot be had, or None."""
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        return f"{CHROMIUM} is missing and this is not root with apt-get: apt-get install chromium"
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    install = ["apt-get", "install", "-y", "chromium"]
    result = subprocess.run(install, capture_output=True, text=True, env=env, timeout=1200)
    if result.returncode != 0:  # a stale package list: refresh it once
        subprocess.run(["apt-get", "update"], capture_output=True, env=env, timeout=600)
        result = subprocess.run(install, capture_output=True, text=True, env=env, timeout=1200)
    if result.returncode != 0 or not CHROMIUM.exists():
        return f"apt-get install chromium failed: {(result.stderr or result.stdout)[-500:]}"
    return None


def _playwright_pin() -> str:
    project = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]
    return next(d for d in project["optional-dependencies"]["dev"] if d.startswith("playwright"))


@pytest.fixture(scope="session")
def chromium() -> Path:
    if not CHROMIUM.exists():
        reason = _install_chromium()
        if reason:
            pytest.skip(reason)
    try:
        importlib.import_module("playwright.sync_api")
    except ImportError:
        pin = _playwright_pin()
        result = subprocess.run([sys.executable, "-m", "pip", "install", pin],
                                capture_output=True, text=True, timeout=600)  # fmt: skip
        importlib.invalidate_caches()
        if result.returncode != 0:
            pytest.skip(f"pip install {pin} failed: {result.stderr[-500:]}")
    return CHROMIUM


@dataclass
class Served:
    """The private TorchServe and the app in front of it."""

    server: TorchServe
    app: WebApp
    seen_keys: set[str] = field(default_factory=set)

    def keys(self) -> set[str]:
        """Every key (inference, management, token API) the server has written so far."""
        data = json.loads(self.server.key_file.read_text())
        self.seen_keys |= {entry["key"] for entry in data.values() if entry.get("key")}
        return set(self.seen_keys)


@pytest.fixture(scope="module")
def served(mar_path, tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("browser-torchserve")
    server = TorchServe.private(run_dir, model_store=mar_path.parent).start()
    # The app finds the key where any client of this server would: in the server's key file.
    key_env = {"LENET_KEY_FILE": str(server.key_file), "LENET_INFERENCE_TOKEN": None}
    app = WebApp(server.inference_url, run_dir / "web.log", env=key_env)
    try:
        app.start()
        served = Served(server, app)
        served.keys()
        yield served
    finally:
        app.stop()
        server.stop()


@pytest.fixture(scope="module")
def page(chromium, served, tmp_path_factory):
    from playwright.sync_api import Error, sync_playwright

    profile = tmp_path_factory.mktemp("chromium-profile")  # fresh: no cache, no cookies
    received: list[tuple[str, dict, bytes]] = []

    def record(response) -> None:
        try:
            body = response.body()
        except Error:  # redirects and aborted loads have no body
            body = b""
        received.append((response.url, response.all_headers(), body))

    with sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            str(profile),
            executable_path=str(chromium),
            headless=True,
            args=CHROMIUM_ARGS,
            viewport=VIEWPORT,
            has_touch=True,
        )
        try:
            page = context.pages[0] if context.pages else context.new_page()
            page.on("response", record)
            page.received = received
            page.goto(served.app.url)
            page.wait_for_selector("#server[data-state=ready]", timeout=30_000)
            yield page
        finally:
            context.close()

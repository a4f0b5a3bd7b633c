"""Small helpers the reliability and security tests share: where a server is, who its workers are.

They read the committed configuration (`deploy/config.properties`) and talk to a real server
through its management API; nothing is mocked.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import requests

from deploy.keys import auth_headers

REPO_ROOT = Path(__file__).resolve().parent.parent
CONFIG_PROPERTIES = REPO_ROOT / "deploy" / "config.properties"
MODEL_NAME = "lenet"


def read_properties(path: Path = CONFIG_PROPERTIES) -> dict[str, str]:
    """`key=value` lines of a Java properties file (comments and blanks skipped)."""
    props = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith(("#", "!")) or "=" not in line:
            continue
        key, value = line.split("=", 1)
        props[key.strip()] = value.strip()
    return props


def configured_max_request_size() -> int | None:
    """`max_request_size` of the committed configuration, if it sets one."""
    if not CONFIG_PROPERTIES.is_file():
        return None
    value = read_properties().get("max_request_size")
    return int(value) if value else None


def max_image_pixels() -> int | None:
    """The handler's decode limit (`handler.preprocessing.MAX_IMAGE_PIXELS`), if it has one."""
    try:
        from handler.preprocessing import MAX_IMAGE_PIXELS
    except ImportError:
        return None
    return MAX_IMAGE_PIXELS


@dataclass(frozen=True)
class Endpoints:
    """URLs and headers of one running server."""

    inference_url: str
    management_url: str
    inference_token: str | None
    management_token: str | None

    @property
    def predict_url(self) -> str:
        return f"{self.inference_url}/predictions/{MODEL_NAME}"

    @property
    def inference_headers(self) -> dict[str, str]:
        return auth_headers(self.inference_token)

    @property
    def management_headers(self) -> dict[str, str]:
        return auth_headers(self.management_token)


def endpoints(server) -> Endpoints:
    """The endpoints of a `deploy.launcher.TorchServe` (the conftest fixtures hand those out)."""
    return Endpoints(
        inference_url=server.inference_url.rstrip("/"),
        management_url=server.management_url.rstrip("/"),
        inference_token=server.inference_token,
        management_token=server.management_token,
    )


def describe_model(server) -> dict:
    """`GET /models/lenet` from the management API (the first, and only, version)."""
    ep = endpoints(server)
    resp = requests.get(
        f"{ep.management_url}/models/{MODEL_NAME}", headers=ep.management_headers, timeout=10
    )
    resp.raise_for_status()
    return resp.json()[0]


def worker_pids(server) -> dict[str, int]:
    """{worker id: pid} of the model's workers, as the management API reports them."""
    return {str(w["id"]): int(w["pid"]) for w in describe_model(server).get("workers", [])}


def ready_worker_pids(server) -> set[int]:
    """Pids of the workers the management API reports as READY."""
    return {
        int(w["pid"])
        for w in describe_model(server).get("workers", [])
        if w.get("status") == "READY" and int(w.get("pid", -1)) > 0
    }

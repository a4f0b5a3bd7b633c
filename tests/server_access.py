"""Small helpers the reliability and security tests share: where a server is, who its workers
are, what a refused key looks like.

They read the committed configuration (`deploy/config.properties`) and ask a real
`deploy.server.TorchServe` (the conftest fixtures) through its management API; nothing is
mocked.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import requests

from deploy.config import BASE_CONFIG, read_properties
from deploy.keys import TOKEN_REFUSED_STATUS, TOKEN_REFUSED_TYPE, auth_headers
from handler.schemas import ErrorResponse

REPO_ROOT = Path(__file__).resolve().parent.parent
CONFIG_PROPERTIES = BASE_CONFIG  # the committed deploy/config.properties
MODEL_NAME = "lenet"


def configured_max_request_size() -> int | None:
    """`max_request_size` of the committed configuration, if it sets one."""
    if not CONFIG_PROPERTIES.is_file():
        return None
    value = read_properties(CONFIG_PROPERTIES).get("max_request_size")
    return int(value) if value else None


def max_image_pixels() -> int | None:
    """The handler's decode limit (`handler.limits.MAX_IMAGE_PIXELS`)."""
    from handler.limits import MAX_IMAGE_PIXELS

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
    """The endpoints of a `deploy.server.TorchServe` (the conftest fixtures hand those out)."""
    return Endpoints(
        inference_url=server.inference_url.rstrip("/"),
        management_url=server.management_url.rstrip("/"),
        inference_token=server.inference_token,
        management_token=server.management_token,
    )


def worker_pids(server) -> dict[str, int]:
    """{worker id: pid} of the model's workers, as the management API reports them."""
    return server.worker_pids()


def ready_worker_pids(server) -> set[int]:
    """Pids of the workers the management API reports as READY."""
    return {
        int(w["pid"])
        for w in server.workers()
        if w.get("status") == "READY" and int(w.get("pid", -1)) > 0
    }


def assert_token_refused(resp: requests.Response) -> None:
    """The response is TorchServe's token-check refusal, and nothing else.

    TorchServe 0.12.0 answers a missing, wrong or wrong-kind key with HTTP 400 and
    `{"type": "InvalidKeyException"}`, not 401 (see `deploy.keys.TOKEN_REFUSED_STATUS`). The type
    proves that the token check refused, not, say, the image.
    """
    assert resp.status_code == TOKEN_REFUSED_STATUS, f"HTTP {resp.status_code}: {resp.text[:300]}"
    error = ErrorResponse.model_validate_json(resp.content)
    assert (error.code, error.type) == (TOKEN_REFUSED_STATUS, TOKEN_REFUSED_TYPE), resp.text[:300]
    assert "Token Authorization failed" in error.message

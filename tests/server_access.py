"""Small helpers the integration, reliability and security tests share: where a server is,
who its workers are, what a refused key looks like.

They ask a real `deploy.server.TorchServe` (the conftest fixtures) through its own API and read
the config it really runs with; nothing is mocked.
"""

from __future__ import annotations

import requests

from deploy.config import read_properties
from deploy.keys import TOKEN_REFUSED_STATUS, TOKEN_REFUSED_TYPE
from handler.schemas import ErrorResponse

# TorchServe's own default `max_request_size`, in force when the config does not set one.
TORCHSERVE_DEFAULT_MAX_REQUEST_SIZE = 6_553_500


def served_properties(server) -> dict[str, str]:
    """The config.properties a started `TorchServe` runs with (rendered into its run dir)."""
    return read_properties(server.run_dir / "config.properties")


def max_request_size(server) -> int:
    """The body limit the server enforces: its config's `max_request_size`, else the default."""
    value = served_properties(server).get("max_request_size")
    return int(value) if value else TORCHSERVE_DEFAULT_MAX_REQUEST_SIZE


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

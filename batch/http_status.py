"""What the HTTP engine makes of TorchServe's answers, by status: which are retried, which are
one image's fault, which doom the whole job, when a token was refused, and the row error of a
refused image. The policy itself is described in `batch.http_engine`'s doc.
"""

from __future__ import annotations

import requests
from pydantic import ValidationError

from deploy.config import max_request_size
from deploy.keys import TOKEN_REFUSED_STATUS, TOKEN_REFUSED_TYPE
from handler.schemas import ErrorResponse

RETRY_STATUS = {429, 500, 502, 503, 504, 507}
# The committed body limit, quoted in the row error of TorchServe's bare 413 (no body).
BODY_LIMIT = max_request_size()
PER_IMAGE_STATUS = {400, 413, 415, 422}
FATAL_STATUS = {404: "the model is not registered there"}


def is_auth_failure(resp: requests.Response) -> bool:
    """A refused token: 401/403 (any server), or TorchServe 0.12.0's 400 InvalidKeyException."""
    if resp.status_code in (401, 403):
        return True
    return (
        resp.status_code == TOKEN_REFUSED_STATUS
        and TOKEN_REFUSED_TYPE.encode() in resp.content[:500]
    )


def error_text(resp: requests.Response, size: int) -> str:
    """The row error for a refused image: the handler's own message (it names the limit), or,
    for the frontend's bare 413, the body limit the request ran into."""
    try:
        body = ErrorResponse.model_validate_json(resp.content)
        return f"{body.type}: {body.message}"
    except ValidationError:
        pass
    if resp.status_code == 413:
        return (f"HTTP 413: the request is over the server's body limit (TorchServe's "
                f"max_request_size, {BODY_LIMIT:,} bytes in deploy/config.properties); the file "
                f"is {size:,} bytes")  # fmt: skip
    return f"HTTP {resp.status_code}: {resp.text[:200].strip()}"

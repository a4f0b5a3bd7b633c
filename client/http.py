"""HTTP client of `POST /predictions/lenet` (see `client` for the multipart rule).

The token defaults to the inference key of the local run (`deploy.keys`); no header is sent when
`LENET_TOKEN_AUTH=off`.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Sequence
from pathlib import Path

import requests

from deploy import keys
from handler import MODEL_NAME
from handler.schemas import ErrorResponse, ImageError, MultiPrediction, Prediction, parse_response

DEFAULT_URL = os.environ.get("LENET_URL", "http://127.0.0.1:8080")


def multipart_body(images: Sequence[bytes], filenames: Sequence[str] | None = None,
                   boundary: str | None = None) -> tuple[bytes, str]:  # fmt: skip
    """`(body, content_type)` of a multipart/form-data request carrying `images` in order, each
    under its own field name `image<i>`; `filenames` (default `image<i>`) only label the parts."""
    boundary = boundary or f"lenet{secrets.token_hex(12)}"
    parts = []
    for i, data in enumerate(images):
        name = filenames[i] if filenames else f"image{i}"
        # The filename is informational; quotes and line breaks would break the header.
        safe = "".join(c if c.isprintable() and c not in '"\\' else "_" for c in name)
        parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="image{i}"; '
                     f'filename="{safe}"\r\nContent-Type: application/octet-stream\r\n\r\n'
                     .encode("utf-8", "replace") + bytes(data) + b"\r\n")  # fmt: skip
    body = b"".join(parts) + f"--{boundary}--\r\n".encode()
    return body, f"multipart/form-data; boundary={boundary}"


class ClientError(RuntimeError):
    """The server refused or failed the whole request; the message has status and body."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class LenetClient:
    """Talks to one TorchServe serving the model; reuses one HTTP connection."""

    def __init__(self, base_url: str = DEFAULT_URL, token: str | None = None,
                 timeout: float = 30.0) -> None:  # fmt: skip
        self.base_url = base_url.rstrip("/")
        self.token = token if token is not None else keys.inference_token()
        self.timeout = timeout
        self.session = requests.Session()

    @property
    def predict_url(self) -> str:
        return f"{self.base_url}/predictions/{MODEL_NAME}"

    def predict(self, images: Sequence[bytes | str | Path]) -> list[Prediction | ImageError]:
        """One answer per image, in order: a `Prediction`, or an `ImageError` for a bad image.

        Raises `ClientError` when the server rejects the request as a whole (a refused key, 413,
        503...).
        """
        if not images:
            return []
        payload = [img if isinstance(img, bytes) else Path(img).read_bytes() for img in images]
        body, content_type = multipart_body(payload)
        headers = {"Content-Type": content_type, **keys.auth_headers(self.token)}
        try:
            resp = self.session.post(self.predict_url, data=body, headers=headers,
                                     timeout=self.timeout)  # fmt: skip
        except requests.RequestException as exc:
            raise ClientError(f"cannot reach {self.predict_url}: {exc}") from exc
        try:
            answer = parse_response(resp.content)
        except ValueError:
            raise ClientError(
                f"{self.predict_url} answered {resp.status_code}: {resp.text.strip()[:500]}",
                resp.status_code,
            ) from None
        if isinstance(answer, ErrorResponse):
            if resp.status_code == 400 and answer.type == "InvalidImage":
                # No image of the request was usable: every slot carries the (joint) reason.
                return [ImageError(error=answer) for _ in payload]
            raise ClientError(f"{resp.status_code} {answer.type}: {answer.message}",
                              resp.status_code)  # fmt: skip
        answers = answer.predictions if isinstance(answer, MultiPrediction) else [answer]
        if len(answers) != len(payload):
            raise ClientError(f"sent {len(payload)} images, got {len(answers)} answers")
        return answers

    def close(self) -> None:
        self.session.close()

    def __enter__(self) -> LenetClient:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

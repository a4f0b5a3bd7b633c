"""The app's side of TorchServe: forward one image with the inference key, say how the server is.

Everything the page learns about TorchServe passes through `Upstream`, and only as the JSON
built here: the prediction, the model's name and version (from the X-Model-Name/X-Model-Version
headers the handler sends), the API's error text, or a verdict on the server (ready, starting,
down). The inference key is read per request through `deploy.keys` (a restarted TorchServe
writes a new one) and only ever goes into the `Authorization` header of requests to TorchServe.

Explanations: a single image goes to `/explanations/lenet` while TorchServe answers explanations
there, else to `/predictions/lenet`; one that TorchServe turns away as busy (429, its explanation
budget is spent) goes to `/predictions/lenet` at once. Whether it explains is asked with one
blank digit (`probe`) once per server start and then every `EXPLAIN_RECHECK_S`, after an answer
has been sent, never in the path of a user's request.
"""

from __future__ import annotations

import asyncio
import io
import logging
import time
from dataclasses import dataclass

import httpx
import numpy as np
from PIL import Image

from deploy import keys
from deploy.keys import TOKEN_REFUSED_TYPE
from handler import MODEL_NAME
from handler.normalization import IMAGE_SIZE
from handler.schemas import MODEL_NAME_HEADER, MODEL_VERSION_HEADER, Prediction, parse_response
from web.explanations import for_page, read_explanation

logger = logging.getLogger(__name__)

EXPLAIN_RECHECK_S = 300.0
READY, STARTING, DOWN = "ready", "starting", "down"
SERVER_DOWN_MESSAGE = (
    "The model server (TorchServe) is not answering: it is stopped or still starting. "
    "This page retries by itself."
)


def _blank_png() -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.zeros((IMAGE_SIZE, IMAGE_SIZE), dtype=np.uint8)).save(buffer, "PNG")
    return buffer.getvalue()


BLANK_PNG = _blank_png()


@dataclass(frozen=True)
class Answer:
    """What the app sends the page for one image: an HTTP status and a JSON body."""

    status: int
    body: dict


def error_answer(status: int, kind: str, message: str, server: str = READY) -> Answer:
    """An error body in TorchServe's own shape, plus the app's verdict on the server."""
    return Answer(status, {"code": status, "type": kind, "message": message, "server": server})


class Upstream:
    """One TorchServe inference API, reached over one pooled async HTTP client."""

    def __init__(self, inference_url: str, timeout: float = 30.0) -> None:
        self.inference_url = inference_url.rstrip("/")
        self.client = httpx.AsyncClient(
            base_url=self.inference_url, timeout=httpx.Timeout(timeout, connect=2.0)
        )
        self.explains: bool | None = None  # None: not asked since this server started
        self.explain_note = "not asked yet"
        self._explain_checked = 0.0
        self._probe_lock = asyncio.Lock()

    async def close(self) -> None:
        await self.client.aclose()

    def _headers(self) -> dict[str, str]:
        token = keys.inference_token()  # read per request: a restarted server has a new one
        return {"Content-Type": "application/octet-stream", **keys.auth_headers(token)}

    # --- the server's state -------------------------------------------------------------
    async def health(self) -> dict:
        """TorchServe as the page should describe it: {"torchserve": ready|starting|down, ...}."""
        try:
            resp = await self.client.get(
                "/ping", headers=keys.auth_headers(keys.inference_token()), timeout=3.0
            )
        except httpx.HTTPError:
            self._forget_explanations()
            return {"torchserve": DOWN, "message": SERVER_DOWN_MESSAGE}
        status = _json(resp).get("status") if resp.status_code == 200 else None
        if status == "Healthy":
            return {"torchserve": READY, "message": "TorchServe is ready",
                    "explanations": self.explain_note}  # fmt: skip
        return {
            "torchserve": STARTING,
            "message": f"TorchServe is starting ({status or f'/ping HTTP {resp.status_code}'}); "
            "this page retries by itself.",
        }

    def explanations_due(self) -> bool:
        """True when it is time to ask (again) whether TorchServe answers explanations."""
        return self.explains is None or time.monotonic() - self._explain_checked > EXPLAIN_RECHECK_S

    async def probe(self) -> None:
        """Ask `/explanations/lenet` once with a blank digit whether it explains; remember it."""
        async with self._probe_lock:
            if not self.explanations_due():
                return
            try:
                resp = await self.client.post(
                    f"/explanations/{MODEL_NAME}", content=BLANK_PNG, headers=self._headers()
                )
            except httpx.HTTPError as exc:
                logger.info("explanations probe failed: %s", exc)
                return  # the server is away: ask again when it is back
            explanation = read_explanation(resp.content) if resp.status_code == 200 else None
            # 429: it explains, and is busy with other explanations just now.
            self.explains = explanation is not None or resp.status_code == 429
            self._explain_checked = time.monotonic()
            if self.explains:
                self.explain_note = "available"
            else:
                why = _describe(resp) if resp.status_code != 200 else "an answer without panels"
                self.explain_note = f"not available, TorchServe gives no explanations yet ({why})"
            logger.info("explanations: %s", self.explain_note)

    def _forget_explanations(self) -> None:
        self.explains = None
        self.explain_note = "not asked since TorchServe went away"

    # --- one image ----------------------------------------------------------------------
    async def classify(self, image: bytes) -> Answer:
        """Forward one image; the page's JSON for the answer or the error."""
        if self.explains:
            answer = await self._post("explanations", image)
            if answer is not None:
                return answer
        return await self._post("predictions", image) or error_answer(
            502, "UpstreamError", "TorchServe's answer was not a prediction"
        )

    async def _post(self, kind: str, image: bytes) -> Answer | None:
        """Answer from /{kind}/lenet; None when explanations turn out unavailable."""
        try:
            resp = await self.client.post(
                f"/{kind}/{MODEL_NAME}", content=image, headers=self._headers()
            )
        except httpx.HTTPError as exc:
            logger.info("TorchServe unreachable: %s", exc)
            self._forget_explanations()
            return error_answer(503, "ServerUnavailable", SERVER_DOWN_MESSAGE, DOWN)
        body = _json(resp)
        model = {
            "name": resp.headers.get(MODEL_NAME_HEADER),
            "version": resp.headers.get(MODEL_VERSION_HEADER),
        }
        if resp.status_code == 200:
            if kind == "explanations":
                explanation = read_explanation(resp.content)
                if explanation is None:
                    self.explains = False
                    self._explain_checked = time.monotonic()
                    self.explain_note = "TorchServe's explanation had no panels"
                    return None
                self.explain_note = "available"
                return Answer(200, {"prediction": explanation.prediction.model_dump(),
                                    "model": model, "explanation": for_page(explanation),
                                    "explanation_note": "available"})  # fmt: skip
            try:
                prediction = parse_response(resp.content)
            except ValueError:
                return None
            if not isinstance(prediction, Prediction):
                return None
            return Answer(200, {"prediction": prediction.model_dump(), "model": model,
                                "explanation": None,
                                "explanation_note": self.explain_note})  # fmt: skip
        if kind == "explanations" and resp.status_code == 429:
            # Explanations have used their share of the worker (handler/limits.py): this image
            # gets its prediction alone, and the next one asks for an explanation again.
            self.explain_note = "skipped, TorchServe is busy with other explanations"
            return None
        if kind == "explanations" and not _is_image_verdict(resp.status_code, body):
            # Explaining failed for another reason than the image: predict instead, ask later.
            self.explains = False
            self._explain_checked = time.monotonic()
            self.explain_note = f"TorchServe failed an explanation: {_describe(resp)}"
            return None
        if _is_not_ready(resp.status_code, body):
            # No worker yet, model not registered yet, or a key from before a restart.
            return error_answer(
                503,
                "ServerStarting",
                f"TorchServe is not ready yet ({_describe(resp)}); this page retries by itself.",
                STARTING,
            )
        if 400 <= resp.status_code < 500:
            # The API's own verdict on the image (InvalidImage, InvalidRequest, 413...).
            message = body.get("message") or resp.text.strip()[:500]
            return error_answer(resp.status_code, body.get("type", "Refused"), message)
        return error_answer(502, "UpstreamError", f"TorchServe failed: {_describe(resp)}")


def _json(resp: httpx.Response) -> dict:
    try:
        body = resp.json()
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}


def _describe(resp: httpx.Response) -> str:
    body = _json(resp)
    detail = f"{body.get('type', '')}: {body.get('message', '')}" if body else resp.text[:200]
    return f"HTTP {resp.status_code} {detail}".strip()


def _is_image_verdict(status: int, body: dict) -> bool:
    """A 4xx about the request itself (bad image, too large), not about the server or key."""
    return 400 <= status < 500 and not _is_not_ready(status, body)


def _is_not_ready(status: int, body: dict) -> bool:
    """TorchServe is up but cannot answer yet: 503/404 before the worker is READY, or a key
    refused because the server restarted and wrote a new one (deploy.keys.TOKEN_REFUSED_TYPE)."""
    return (
        status in (503, 404) and body.get("type") != "InvalidImage"
    ) or body.get("type") == TOKEN_REFUSED_TYPE

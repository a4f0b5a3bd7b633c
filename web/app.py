"""The draw-a-digit page's app: one static page, and a JSON endpoint that forwards to TorchServe.

Why a small Starlette app rather than Gradio (its Sketchpad would draw for us): the page needs
three things, a static page, one size-limited upload and a server-side forward with a key, and
Starlette provides each directly (`StaticFiles` with ETags, a per-route `max_body_size` that
refuses before the body is read, an async lifespan holding one pooled httpx client), in a small
pure-Python dependency with no build step. With Gradio the browser would talk to Gradio's own
API and event queue and load its front-end bundle: the stroke-to-answer time would include its
queue, and "no key ever reaches the browser" would depend on what its routes return. Here the
browser receives only the files in `web/static/` and the JSON bodies built in `web.upstream`.

Routes:
- `GET /`: the page (`web/static/`: index.html, app.js, style.css);
- `POST /api/predict`: the image as the raw request body (what the canvas or the file input
  gives); answers `{"prediction", "model", "explanation", "explanation_note"}`, or an error
  `{"code", "type", "message", "server"}` with the API's status and text (see `web.upstream`);
- `GET /api/health`: the app is up (200) and says how TorchServe is: `{"torchserve": "ready" |
  "starting" | "down", "message"}`. The page polls it to recover by itself.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path

from starlette.applications import Starlette
from starlette.background import BackgroundTask
from starlette.datastructures import Headers, MutableHeaders
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from deploy.config import max_request_size
from web.upstream import READY, Upstream

STATIC_DIR = Path(__file__).with_name("static")
# The page accepts what TorchServe accepts: its max_request_size (deploy/config.properties).
DEFAULT_MAX_UPLOAD_BYTES = max_request_size()
# The page loads only its own files; images it shows are data: URLs built from JSON answers.
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; "
    "object-src 'none'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}


@dataclass(frozen=True)
class Settings:
    """How the app reaches TorchServe and what it accepts."""

    inference_url: str = "http://127.0.0.1:8080"
    max_upload_bytes: int = DEFAULT_MAX_UPLOAD_BYTES
    timeout_s: float = 30.0


class SecurityHeaders:
    """Adds `SECURITY_HEADERS` to every HTTP response (Starlette has no middleware for this)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                for name, value in SECURITY_HEADERS.items():
                    headers.setdefault(name, value)
            await send(message)

        await self.app(scope, receive, send_with_headers if scope["type"] == "http" else send)


class DeclaredSizeLimit:
    """Answers a request whose Content-Length is over the limit at once, with `refuse`'s 413.

    Nothing of such a body is read. Bodies sent without a length are counted by Starlette's own
    limit (the route's `max_body_size`), whose 413 goes through the same `refuse`; for a
    declared length Starlette would answer plain "Content Too Large", which tells a person
    neither the limit nor what to do, so this check runs first.
    """

    def __init__(self, app: ASGIApp, max_bytes: int, refuse) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.refuse = refuse

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            declared = Headers(scope=scope).get("content-length", "")
            if declared.isdigit() and int(declared) > self.max_bytes:
                request = Request(scope, receive)
                response = await self.refuse(request, HTTPException(413))
                return await response(scope, receive, send)
        await self.app(scope, receive, send)


def _json(status: int, body: dict, background: BackgroundTask | None = None) -> JSONResponse:
    return JSONResponse(body, status_code=status, headers={"Cache-Control": "no-store"},
                        background=background)  # fmt: skip


def _probe_later(upstream: Upstream) -> BackgroundTask | None:
    """Ask about explanations after the response has gone out, when it is time to."""
    return BackgroundTask(upstream.probe) if upstream.explanations_due() else None


async def predict(request: Request) -> JSONResponse:
    """Forward the body (one image) to TorchServe; the answer or the API's error, as JSON."""
    upstream: Upstream = request.app.state.upstream
    answer = await upstream.classify(await request.body())
    later = _probe_later(upstream) if answer.body.get("server", READY) == READY else None
    return _json(answer.status, answer.body, later)


async def health(request: Request) -> JSONResponse:
    """200 while the app runs; the body says whether TorchServe is ready, starting or down."""
    upstream: Upstream = request.app.state.upstream
    state = await upstream.health()
    later = _probe_later(upstream) if state["torchserve"] == READY else None
    return _json(200, state, later)


def create_app(settings: Settings | None = None) -> Starlette:
    """The ASGI app for `settings` (defaults: TorchServe on 127.0.0.1:8080, its size limit)."""
    settings = settings or Settings()

    async def too_large(request: Request, exc: HTTPException) -> JSONResponse:
        size = request.headers.get("content-length")
        what = f"The image is {int(size):,} bytes" if size and size.isdigit() else "The upload"
        message = (
            f"{what}; this page accepts images of at most {settings.max_upload_bytes:,} bytes "
            f"({settings.max_upload_bytes / 2**20:.0f} MiB). Send a smaller picture."
        )
        return _json(413, {"code": 413, "type": "RequestTooLarge", "message": message,
                           "server": READY})  # fmt: skip

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette):
        app.state.upstream = Upstream(settings.inference_url, timeout=settings.timeout_s)
        try:
            yield
        finally:
            await app.state.upstream.close()

    routes = [
        Route("/api/predict", predict, methods=["POST"], max_body_size=settings.max_upload_bytes),
        Route("/api/health", health, methods=["GET"]),
        Mount("/", StaticFiles(directory=STATIC_DIR, html=True), name="static"),
    ]
    app = Starlette(
        routes=routes,
        middleware=[
            Middleware(SecurityHeaders),
            Middleware(DeclaredSizeLimit, max_bytes=settings.max_upload_bytes, refuse=too_large),
        ],
        exception_handlers={413: too_large},
        lifespan=lifespan,
    )
    app.state.settings = settings
    return app

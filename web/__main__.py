"""`python -m web`: serve the draw-a-digit page with uvicorn (`make demo` runs it).

    python -m web                                   # http://127.0.0.1:8000, TorchServe on :8080
    python -m web --host 0.0.0.0 --port 8000        # inside a container that publishes the port

The app reads TorchServe's inference key where every client of this project does
(`deploy.keys`: LENET_INFERENCE_TOKEN, LENET_KEY_FILE or the run dir's key_file.json) and keeps it
server-side. Stop it with Ctrl-C.
"""

from __future__ import annotations

import argparse
import os

import uvicorn

from web.app import DEFAULT_MAX_UPLOAD_BYTES, Settings, create_app


def build_parser() -> argparse.ArgumentParser:
    """The CLI's options; each default can come from the environment (compose sets them)."""
    parser = argparse.ArgumentParser(
        prog="python -m web",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    listen = parser.add_argument_group("where the page listens")
    listen.add_argument("--host", default=os.environ.get("LENET_WEB_HOST") or "127.0.0.1",
                        help="address to bind (env LENET_WEB_HOST; default: %(default)s, "
                        "loopback only)")  # fmt: skip
    listen.add_argument("--port", type=int, default=int(os.environ.get("LENET_WEB_PORT") or 8000),
                        help="port (env LENET_WEB_PORT; default: %(default)s)")  # fmt: skip
    server = parser.add_argument_group("TorchServe")
    server.add_argument("--inference-url",
                        default=os.environ.get("LENET_URL") or "http://127.0.0.1:8080",
                        help="its inference API (env LENET_URL; default: %(default)s)")  # fmt: skip
    server.add_argument("--timeout", type=float, default=30.0,
                        help="seconds to wait for one answer (default: %(default)s)")  # fmt: skip
    limits = parser.add_argument_group("limits")
    limits.add_argument("--max-upload-bytes", type=int, default=DEFAULT_MAX_UPLOAD_BYTES,
                        help="largest image accepted, refused with 413 before it is read "
                        "(default: TorchServe's max_request_size, %(default)s)")  # fmt: skip
    parser.add_argument("--log-level", default=os.environ.get("LOG_LEVEL", "info").lower(),
                        choices=["critical", "error", "warning", "info", "debug"],
                        help="uvicorn's log level (env LOG_LEVEL)")  # fmt: skip
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of `python -m web`: run the app in the foreground until Ctrl-C."""
    args = build_parser().parse_args(argv)
    settings = Settings(
        inference_url=args.inference_url,
        max_upload_bytes=args.max_upload_bytes,
        timeout_s=args.timeout,
    )
    print(f"draw-a-digit page: http://{args.host}:{args.port}/  (TorchServe: "
          f"{settings.inference_url}; Ctrl-C stops the page)", flush=True)  # fmt: skip
    uvicorn.run(create_app(settings), host=args.host, port=args.port, log_level=args.log_level,
                server_header=False, proxy_headers=False)  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

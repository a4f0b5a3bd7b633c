"""HTTP client of `POST /predictions/lenet`, and its CLI.

    python -m handler.client predict a.png b.jpg ...   # digit and confidence per file
    python -m handler.client demo                      # one real MNIST test digit, end to end

`LenetClient.predict` sends all images in one multipart/form-data request, each file under its
OWN field name (`image0`, `image1`, ...): TorchServe keeps only one value per field name, so
repeating a name would silently drop images. The token defaults to the inference key of the
local run (`deploy.keys`), and no header is sent when `LENET_TOKEN_AUTH=off`.
"""

from __future__ import annotations

import argparse
import io
import os
import sys
from pathlib import Path

import requests

from deploy import keys
from handler.schemas import (
    ErrorResponse,
    ImageError,
    MultiPrediction,
    Prediction,
    parse_response,
)

DEFAULT_URL = os.environ.get("LENET_URL", "http://127.0.0.1:8080")
MODEL_NAME = "lenet"


class ClientError(RuntimeError):
    """The server refused or failed the whole request; the message has status and body."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class LenetClient:
    """Talks to one TorchServe serving lenet; reuses one HTTP connection."""

    def __init__(
        self, base_url: str = DEFAULT_URL, token: str | None = None, timeout: float = 30.0
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.token = token if token is not None else keys.inference_token()
        self.timeout = timeout
        self.session = requests.Session()

    @property
    def predict_url(self) -> str:
        return f"{self.base_url}/predictions/{MODEL_NAME}"

    def predict(self, images: list[bytes | str | Path]) -> list[Prediction | ImageError]:
        """One answer per image, in order: a `Prediction`, or an `ImageError` for a bad image.

        Raises `ClientError` when the server rejects the request as a whole (401, 413, 503...).
        """
        if not images:
            return []
        payload = [img if isinstance(img, bytes) else Path(img).read_bytes() for img in images]
        files = {
            f"image{i}": (f"image{i}", io.BytesIO(data), "application/octet-stream")
            for i, data in enumerate(payload)
        }
        try:
            resp = self.session.post(
                self.predict_url, files=files, headers=keys.auth_headers(self.token),
                timeout=self.timeout,
            )  # fmt: skip
        except requests.RequestException as exc:
            raise ClientError(f"cannot reach {self.predict_url}: {exc}") from exc
        try:
            body = parse_response(resp.content)
        except ValueError:
            raise ClientError(
                f"{self.predict_url} answered {resp.status_code}: {resp.text.strip()[:500]}",
                resp.status_code,
            ) from None
        if isinstance(body, ErrorResponse):
            if resp.status_code == 400 and body.type == "InvalidImage":
                # No image of the request was usable: every slot carries the (joint) reason.
                return [ImageError(error=body) for _ in payload]
            raise ClientError(f"{resp.status_code} {body.type}: {body.message}", resp.status_code)
        if isinstance(body, MultiPrediction):
            answers = body.predictions
        else:
            answers = [body]
        if len(answers) != len(payload):
            raise ClientError(f"sent {len(payload)} images, got {len(answers)} answers")
        return answers

    def close(self) -> None:
        self.session.close()

    def __enter__(self) -> LenetClient:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def describe(answer: Prediction | ImageError) -> str:
    """One line for a person: the digit and its confidence, or what was wrong."""
    if isinstance(answer, ImageError):
        return f"error: {answer.error.message}"
    return f"digit {answer.digit} (confidence {answer.confidence:.1%})"


def cmd_predict(args) -> int:
    missing = [p for p in args.files if not p.is_file()]
    if missing:
        print(f"no such file: {', '.join(map(str, missing))}", file=sys.stderr)
        return 2
    client = LenetClient(args.url, token=args.token, timeout=args.timeout)
    try:
        answers = client.predict(args.files)
    except ClientError as exc:
        print(f"request failed: {exc}", file=sys.stderr)
        return 1
    for path, answer in zip(args.files, answers, strict=True):
        print(f"{path}: {describe(answer)}")
    return 0 if all(isinstance(a, Prediction) for a in answers) else 1


def cmd_demo(args) -> int:
    import numpy as np
    from PIL import Image

    from train.mnist import MnistError, load_test_digits

    try:
        images, labels = load_test_digits(args.data_dir)
    except MnistError as exc:
        print(f"cannot load MNIST: {exc}", file=sys.stderr)
        return 1
    index = args.index % len(labels)
    args.out_dir.mkdir(parents=True, exist_ok=True)
    png = args.out_dir / f"mnist-test-{index}.png"
    Image.fromarray(np.asarray(images[index], dtype=np.uint8)).save(png)
    client = LenetClient(args.url, token=args.token, timeout=args.timeout)
    try:
        (answer,) = client.predict([png])
    except ClientError as exc:
        print(f"request failed: {exc}\nIs the server up? `make serve` starts it.", file=sys.stderr)
        return 1
    truth = int(labels[index])
    print(f"MNIST test image #{index} -> {png}")
    print(f"  true label: {truth}")
    print(f"  prediction: {describe(answer)}")
    if isinstance(answer, Prediction):
        print("  correct" if answer.digit == truth else "  WRONG")
    print(f"Try: curl -T {png} -H \"Authorization: Bearer $(python3 -c 'from deploy.keys import "
          f"inference_token as t; print(t())')\" {client.predict_url}")  # fmt: skip
    print("The server keeps running in the background; stop it with `make stop`.")
    return 0 if isinstance(answer, Prediction) else 1


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m handler.client",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", required=True)
    fmt = argparse.ArgumentDefaultsHelpFormatter

    def server_options(p: argparse.ArgumentParser) -> None:
        g = p.add_argument_group("server")
        g.add_argument("--url", default=DEFAULT_URL, help="inference address (env LENET_URL)")
        g.add_argument(
            "--token",
            default=None,
            help="inference key (default: from the run dir's key_file.json)",
        )
        g.add_argument("--timeout", type=float, default=30.0, help="seconds per request")

    p = sub.add_parser("predict", help="classify image files", formatter_class=fmt)
    p.add_argument("files", nargs="+", type=Path, help="image files (PNG, JPEG, ...)")
    server_options(p)
    p.set_defaults(func=cmd_predict)

    d = sub.add_parser("demo", help="send one real MNIST test digit", formatter_class=fmt)
    data = d.add_argument_group("data")
    data.add_argument(
        "--data-dir",
        default=None,
        help="MNIST IDX files (default: $MNIST_DIR, else the download cache)",
    )
    data.add_argument("--index", type=int, default=0, help="which test image")
    data.add_argument(
        "--out-dir",
        type=Path,
        default=keys.run_dir(),
        help="where the PNG is written (env LENET_RUN_DIR)",
    )
    server_options(d)
    d.set_defaults(func=cmd_demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of `python -m handler.client`."""
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    raise SystemExit(main())

"""HTTP contract smoke through the compose stack (run by deploy/compose-test.sh, on the host).

`python -m client.smoke --url http://127.0.0.1:PORT --digits-dir DIR` with the inference
key in $LENET_INFERENCE_TOKEN (read from the container's key file by the script, never printed):

- real MNIST test digits, ones the local model (artifacts/lenet.pt) classifies correctly
  through the server's own preprocessing, are sent as PNG and must come back as that digit with
  a valid `Prediction` body; the PNGs are also written to DIR/<label>/ for the batch step;
- a body that is not an image must answer 400 with the `ErrorResponse` contract;
- a request without the key must be refused by TorchServe's token check, in the way
  `deploy.keys.TOKEN_REFUSED_STATUS`/`TOKEN_REFUSED_TYPE` describe: the type proves that it was
  the key check that refused, not the image.
Prints one JSON line; exits 1 on the first broken expectation, with what and where.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import requests

from deploy.keys import TOKEN_REFUSED_STATUS, TOKEN_REFUSED_TYPE, auth_headers
from handler import MODEL_NAME
from handler.predictor import Predictor
from handler.schemas import ErrorResponse, Prediction
from project import paths
from samples.digits import answered_correctly, as_uploads
from train.mnist import load_test_digits


class SmokeFailure(AssertionError):
    """The server broke the contract."""


def _expect(condition: bool, message: str) -> None:
    if not condition:
        raise SmokeFailure(message)


def run(url: str, token: str, digits_dir: Path, count: int, model: Path) -> dict:
    """Run the three checks against `url`; returns counts and timings."""
    digits = as_uploads(*load_test_digits(), seed=7)
    pool = answered_correctly(Predictor.load(model, "cpu"), digits, limit=count)
    predict = f"{url.rstrip('/')}/predictions/{MODEL_NAME}"
    session = requests.Session()
    headers = {**auth_headers(token), "Content-Type": "image/png"}
    started = time.perf_counter()
    for i, (png, label) in enumerate(zip(pool.images, pool.labels, strict=True)):
        folder = digits_dir / str(label)
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"mnist-test-{pool.indices[i]}.png").write_bytes(png)
        resp = session.post(predict, data=png, headers=headers, timeout=30)
        _expect(resp.status_code == 200, f"digit #{i}: HTTP {resp.status_code} from {predict}")
        answer = Prediction.model_validate_json(resp.content)
        _expect(answer.digit == label, f"digit #{i}: expected {label}, got {answer.digit}")
    seconds = time.perf_counter() - started

    resp = session.post(predict, data=b"not an image", headers=headers, timeout=30)
    _expect(resp.status_code == 400, f"bad input: expected 400, got {resp.status_code}")
    ErrorResponse.model_validate_json(resp.content)

    resp = session.post(
        predict, data=pool.images[0], headers={"Content-Type": "image/png"}, timeout=30
    )
    _expect(
        resp.status_code == TOKEN_REFUSED_STATUS,
        f"no token: expected TorchServe's refusal ({TOKEN_REFUSED_STATUS}), got {resp.status_code}",
    )
    refusal = ErrorResponse.model_validate_json(resp.content)
    _expect(
        refusal.type == TOKEN_REFUSED_TYPE,
        f"no token: refused as {refusal.type!r}, not by the token check: {resp.text[:200]}",
    )
    return {
        "digits_correct": count,
        "digits_seconds": round(seconds, 3),
        "bad_input": 400,
        "no_token": f"{resp.status_code} {refusal.type}",
    }


def main(argv: list[str] | None = None) -> int:
    """CLI: run the smoke, print a JSON line, exit 0 only when every check passed."""
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--url", required=True, help="inference API base URL (127.0.0.1 only)")
    parser.add_argument("--digits-dir", type=Path, required=True, help="where the PNGs go")
    parser.add_argument("--count", type=int, default=20, help="MNIST digits to send")
    parser.add_argument(
        "--model",
        type=Path,
        default=paths.default_model(),
        help="local TorchScript model that picks digits it gets right",
    )
    args = parser.parse_args(argv)
    token = os.environ.get("LENET_INFERENCE_TOKEN")
    if not token:
        print("compose_smoke: LENET_INFERENCE_TOKEN is not set", file=sys.stderr)
        return 2
    try:
        result = run(args.url, token, args.digits_dir, args.count, args.model)
    except (SmokeFailure, requests.RequestException, ValueError, RuntimeError, OSError) as exc:
        print(f"compose_smoke: FAILED against {args.url}: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())

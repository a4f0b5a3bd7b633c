"""`python -m client predict|demo`: the served model from the command line.

    python -m client predict a.png b.jpg ...   # digit and confidence per file
    python -m client demo                      # one real MNIST test digit, end to end
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from client.http import DEFAULT_URL, ClientError, LenetClient
from handler.schemas import ImageError, Prediction
from project import paths


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
    print(f"Try: curl -T {png} -H \"Authorization: Bearer $(python3 -m deploy.keys)\" "
          f"{client.predict_url}")  # fmt: skip
    print("The server keeps running in the background; stop it with `make stop`.")
    return 0 if isinstance(answer, Prediction) else 1


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m client",
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
    data.add_argument("--data-dir", default=None,
                      help="MNIST IDX files (default: $MNIST_DIR, else the download cache)")
    data.add_argument("--index", type=int, default=0, help="which test image")
    data.add_argument("--out-dir", type=Path, default=paths.run_dir(),
                      help="where the PNG is written (env LENET_RUN_DIR)")
    server_options(d)
    d.set_defaults(func=cmd_demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of `python -m client`."""
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    raise SystemExit(main())

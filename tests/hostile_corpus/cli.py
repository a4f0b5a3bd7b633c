"""The hostile-input corpus: request bodies a public endpoint must survive.

`python -m tests.hostile_corpus OUT_DIR` writes each case's body to `OUT_DIR/<id>.bin` and a
`manifest.json` describing them, for poking the server by hand with curl.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from tests.hostile_corpus.case import Case
from tests.hostile_corpus.corpus import build_corpus
from tests.server_access import TORCHSERVE_DEFAULT_MAX_REQUEST_SIZE


def write_corpus(cases: list[Case], out_dir: Path) -> Path:
    """Write each body to `out_dir/<id>.bin` and a `manifest.json`; returns the manifest path."""
    out_dir.mkdir(parents=True, exist_ok=True)
    manifest = []
    for case in cases:
        (out_dir / f"{case.id}.bin").write_bytes(case.body)
        manifest.append(
            {
                "id": case.id,
                "file": f"{case.id}.bin",
                "bytes": len(case.body),
                "content_type": case.content_type,
                "expect": case.expect,
                "label": case.label,
                "status": case.status,
                "note": case.note,
            }
        )
    path = out_dir / "manifest.json"
    path.write_text(json.dumps(manifest, indent=2) + "\n")
    return path


def main(argv: list[str] | None = None) -> int:
    """CLI: write the corpus to a folder."""
    parser = argparse.ArgumentParser(
        # Run as a package (`-m`), its script name would be __main__.py.
        prog="python -m tests.hostile_corpus",
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    io_group = parser.add_argument_group("input and output")
    io_group.add_argument("out_dir", type=Path, help="folder to write <id>.bin and manifest.json")
    io_group.add_argument(
        "--mnist-dir", type=Path, default=None, help="MNIST IDX folder (default: $MNIST_DIR)"
    )
    limits = parser.add_argument_group("server limits the corpus is built against")
    limits.add_argument(
        "--max-request-size",
        type=int,
        default=TORCHSERVE_DEFAULT_MAX_REQUEST_SIZE,
        help="body limit in bytes",
    )
    limits.add_argument("--max-image-pixels", type=int, default=None, help="decode limit")
    args = parser.parse_args(argv)
    from train.mnist import DEFAULT_CACHE_DIR, MnistError, load_test_digits

    # An explicit folder, so that this never downloads.
    folder = args.mnist_dir or Path(os.environ.get("MNIST_DIR") or DEFAULT_CACHE_DIR)
    try:
        images, labels = load_test_digits(folder)
    except MnistError as exc:
        print(f"hostile_corpus: error: {exc}", file=sys.stderr)
        return 2
    cases = build_corpus(images, labels, args.max_request_size, args.max_image_pixels)
    path = write_corpus(cases, args.out_dir)
    print(f"wrote {len(cases)} cases to {path}")
    return 0

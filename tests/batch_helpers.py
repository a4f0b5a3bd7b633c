"""Shared pieces of the batch-job tests: real image files, a real model, running the CLI.

Nothing is mocked: images are real encoded files written with Pillow, the model is the trained
TorchScript artifact when it exists (else a freshly initialised LeNet-5 exported the same way,
which exercises the same code paths, only with meaningless digits), and the CLI runs as a
subprocess exactly as a user runs it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
TRAINED_MODEL = REPO_ROOT / "artifacts" / "lenet.pt"
FORMATS = {"png": "PNG", "jpg": "JPEG", "bmp": "BMP", "gif": "GIF", "tiff": "TIFF",
           "webp": "WEBP"}


def mnist_digits(count: int) -> tuple[np.ndarray, np.ndarray]:
    """The first `count` MNIST test images and labels; skips the test when MNIST is absent."""
    from train.mnist import MnistError, load_test_digits

    try:
        images, labels = load_test_digits(os.environ.get("MNIST_DIR"))
    except (MnistError, OSError) as exc:
        pytest.skip(f"MNIST test set not available (set MNIST_DIR): {exc}")
    return images[:count], labels[:count]


def write_image(path: Path, pixels: np.ndarray, fmt: str | None = None) -> Path:
    """Encode a uint8 grayscale array to `path` (format from the extension unless given)."""
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    fmt = fmt or FORMATS[path.suffix.lstrip(".").lower()]
    params = {"lossless": True} if fmt == "WEBP" else {}
    Image.fromarray(pixels).save(path, format=fmt, **params)
    return path


def write_digits(folder: Path, count: int, *, per_folder: int = 500) -> dict[str, int]:
    """`count` MNIST digits as PNGs in sub-folders; returns {relative path: label}."""
    images, labels = mnist_digits(count)
    written = {}
    for i in range(count):
        rel = f"part{i // per_folder:03d}/{i:05d}.png"
        write_image(folder / rel, images[i], "PNG")
        written[rel] = int(labels[i])
    return written


def build_model(path: Path) -> Path:
    """Export a freshly initialised LeNet-5 like the training job does (TorchScript + metadata)."""
    import torch

    from handler import normalization
    from handler.artifact import METADATA_NAME
    from train.model import LeNet5

    torch.manual_seed(0)
    metadata = {"name": "lenet", "version": "test-untrained", "variant": "modern",
                "normalization": normalization.describe()}
    scripted = torch.jit.script(LeNet5().eval())
    torch.jit.save(scripted, str(path), _extra_files={METADATA_NAME: json.dumps(metadata)})
    return path


def model_for_tests(tmp_path_factory) -> Path:
    """The trained artifact when present, else an untrained export in a temp folder."""
    if TRAINED_MODEL.is_file():
        return TRAINED_MODEL
    return build_model(tmp_path_factory.mktemp("model") / "lenet.pt")


def batch_command(*args: str | Path) -> list[str]:
    """`python -m batch ...` with this interpreter."""
    return [sys.executable, "-m", "batch", *map(str, args)]


def run_batch(*args: str | Path, timeout: float = 300) -> subprocess.CompletedProcess:
    """Run the CLI to completion from the repository root; returns the completed process."""
    return subprocess.run(batch_command(*args), cwd=REPO_ROOT, capture_output=True, text=True,
                          timeout=timeout)


def read_output(path: Path) -> list:
    """Every row of a predictions file (CSV or JSONL), via the job's own reader."""
    from batch.output import format_for, read_rows

    return list(read_rows(path, format_for(path)))

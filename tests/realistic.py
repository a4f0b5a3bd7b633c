"""Test helpers around the realistic uploads: the naive baseline, MNIST on disk, the model path.

The presentation itself (MNIST digits as photos, tight crops) lives in `samples.render`; it is
re-exported here so the offline and HTTP accuracy tests keep one import line.
Nothing here runs at import time.
"""

from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np
from PIL import Image

from handler.normalization import IMAGE_SIZE, normalize
from samples.render import render_realistic, render_realistic_set, render_tight_crop

__all__ = [
    "MODEL_PATH",
    "encode_png",
    "load_test_digits",
    "mnist_dir",
    "render_realistic",
    "render_realistic_set",
    "render_tight_crop",
    "resize_only_preprocess",
]

REPO_ROOT = Path(__file__).resolve().parents[1]
MODEL_PATH = Path(os.environ.get("LENET_MODEL", REPO_ROOT / "artifacts" / "lenet.pt"))


def resize_only_preprocess(data: bytes) -> np.ndarray:
    """The naive baseline: grayscale, squash to 28x28, normalise. No inversion, crop or centring."""
    with Image.open(io.BytesIO(data)) as image:
        small = image.convert("L").resize((IMAGE_SIZE, IMAGE_SIZE), Image.Resampling.BILINEAR)
    return normalize(np.asarray(small, dtype=np.uint8))[np.newaxis]


def encode_png(digit28: np.ndarray) -> bytes:
    """An MNIST digit as the 28x28 grayscale PNG a client would upload unchanged."""
    buffer = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(digit28), "L").save(buffer, format="PNG")
    return buffer.getvalue()


def mnist_dir() -> Path | None:
    """Where MNIST already is ($MNIST_DIR, else train.mnist's download cache), or None.

    Tests never download: they run only where the data is already on disk.
    """
    from train import mnist

    candidates = [os.environ.get("MNIST_DIR"), mnist.DEFAULT_CACHE_DIR]
    for candidate in candidates:
        if not candidate:
            continue
        path = Path(candidate).expanduser()
        try:
            mnist.find_file(path, "t10k-images-idx3-ubyte")
            mnist.find_file(path, "t10k-labels-idx1-ubyte")
        except mnist.MnistError:
            continue
        return path
    return None


def load_test_digits(data_dir: Path) -> tuple[np.ndarray, np.ndarray]:
    """The 10,000 MNIST test digits (N, 28, 28) uint8 and labels (N,) uint8 from `data_dir`."""
    from train import mnist

    if data_dir is None:  # train.mnist would fall back to downloading; tests never do
        raise ValueError("no MNIST directory given; see mnist_dir()")
    return mnist.load_test_digits(data_dir)

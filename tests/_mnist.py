"""Helpers shared by the training tests: finding MNIST, synthesising IDX files, one quick run.

Not a conftest (another module owns that): test files import what they need from here.
"""

from __future__ import annotations

import atexit
import functools
import gzip
import json
import os
import shutil
import struct
import tempfile
from pathlib import Path

import numpy as np
import pytest


def mnist_dir() -> Path:
    """$MNIST_DIR, or skip the calling test saying why."""
    env = os.environ.get("MNIST_DIR")
    if not env:
        pytest.skip("MNIST_DIR is not set; export MNIST_DIR=/path/to/mnist (the four IDX files)")
    path = Path(env)
    if not path.is_dir():
        pytest.skip(f"MNIST_DIR={env} does not exist")
    return path


def idx_bytes(magic: int, array: np.ndarray, declared_count: int | None = None) -> bytes:
    """IDX encoding of a uint8 array: big-endian magic, dimension sizes, then the bytes."""
    dims = list(array.shape)
    if declared_count is not None:
        dims[0] = declared_count
    return struct.pack(f">{1 + len(dims)}i", magic, *dims) + array.astype(np.uint8).tobytes()


def write_idx(path: Path, data: bytes, gz: bool = False) -> Path:
    """Write IDX bytes to `path` (gzipped and suffixed .gz when `gz`)."""
    if gz:
        path = path.with_name(path.name + ".gz")
        path.write_bytes(gzip.compress(data))
    else:
        path.write_bytes(data)
    return path


def copy_of_mnist(target: Path) -> Path:
    """A writable copy of the real MNIST folder (small files copied, big ones symlinked)."""
    source = mnist_dir()
    target.mkdir(parents=True, exist_ok=True)
    for entry in source.iterdir():
        if "idx" in entry.name:
            (target / entry.name).symlink_to(entry.resolve())
    return target


@functools.cache
def quick_run() -> tuple[Path, dict]:
    """One `python -m train --quick` run in-process for the whole session: (out dir, metrics).

    Cached so the training and export tests share it instead of training twice.
    """
    from train.cli import main

    data = mnist_dir()
    out = Path(tempfile.mkdtemp(prefix="lenet-quick-"))
    atexit.register(shutil.rmtree, out, ignore_errors=True)
    code = main(["--quick", "--out", str(out), "--data-dir", str(data), "--no-progress"])
    assert code == 0, f"quick training run exited with {code}"
    return out, json.loads((out / "metrics.json").read_text())

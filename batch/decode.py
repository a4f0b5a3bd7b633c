"""Worker-side half of the local engine: read files and preprocess them, torch-free.

This module is all that the preprocessing processes import (numpy, Pillow and
`handler.preprocessing`), so they start in a fraction of a second and stay small; torch lives
only in the main process.
"""

from __future__ import annotations

import os

import numpy as np

from handler.normalization import IMAGE_SIZE
from handler.preprocessing import preprocess


def describe_error(exc: BaseException) -> str:
    """One-line 'Kind: what' for a row's error column."""
    return f"{type(exc).__name__}: {exc}"


def read_and_preprocess(root: str, rel: str) -> np.ndarray:
    """Bytes of `root/rel` -> the handler's (1, 28, 28) float32 input (same function)."""
    with open(os.path.join(root, rel), "rb") as f:
        data = f.read()
    return preprocess(data)


def preprocess_chunk(root: str, rels: list[str]):
    """Worker task: returns `(ok_paths, stacked inputs, [(path, error), ...])`.

    Every failure (vanished, unreadable, not an image, corrupt) becomes an error entry, so one
    bad file never costs its neighbours.
    """
    ok, arrays, errors = [], [], []
    for rel in rels:
        try:
            arrays.append(read_and_preprocess(root, rel))
            ok.append(rel)
        except Exception as exc:  # noqa: BLE001 - any failure is that file's error row
            errors.append((rel, describe_error(exc)))
    stacked = (np.stack(arrays) if arrays
               else np.empty((0, 1, IMAGE_SIZE, IMAGE_SIZE), np.float32))
    return ok, stacked, errors


def ready() -> int:
    """No-op task used to start a worker ahead of the first real chunk; returns its pid."""
    return os.getpid()

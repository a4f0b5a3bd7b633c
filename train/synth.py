"""Synthetic training digits from the stroke model, passed through the serving preprocessing.

Writers come from `samples.realworld.TRAIN_WRITER_BASE` upwards, so no hand of the real-world
set's validation or test half is trained on; no font is used. Each writer fills sheets of 0-9.
A digit is drawn small (36 px tall: enough for a 20 px box) with the stroke model's fast pen
(the training augmentation adds the rotation, bend and width changes it skips), as white ink on
black, and mapped to the model's input by `handler.preprocessing.to_mnist`, the function serving
uses, so training and serving frame digits the same way (20 px box, centre of mass, stroke width).
"""

from __future__ import annotations

import os
from concurrent.futures import ProcessPoolExecutor

import numpy as np
from PIL import Image

from handler.preprocessing import to_mnist
from samples.realworld import TRAIN_WRITER_BASE
from samples.strokes import Writer

DRAW_HEIGHT = 36
_SALT = 0x7A1D  # separates these digits' seeds from the real-world set's item seeds


def stroke_digits(
    count: int, seed: int, workers: int | None = None, chunk: int = 500
) -> tuple[np.ndarray, np.ndarray]:
    """`count` stroke-model digits: float32 `(N, 28, 28)` in [0, 1] (MNIST form) and labels.

    Digit `i` is label `i % 10` by writer `TRAIN_WRITER_BASE + i // 10`, drawn with a generator
    seeded by `(seed, i)`: the same arguments give the same array on any number of workers.
    """
    if count <= 0:
        return np.zeros((0, 28, 28), np.float32), np.zeros(0, np.int64)
    workers = workers if workers is not None else min(2, os.cpu_count() or 1)
    chunks = [range(s, min(s + chunk, count)) for s in range(0, count, chunk)]
    if workers > 1 and len(chunks) > 1:
        with ProcessPoolExecutor(workers) as pool:
            parts = list(pool.map(_chunk, chunks, [seed] * len(chunks)))
    else:
        parts = [_chunk(chunk, seed) for chunk in chunks]
    images = np.concatenate(parts)
    return images, np.arange(count, dtype=np.int64) % 10


def _chunk(indices: range, seed: int) -> np.ndarray:
    out = np.empty((len(indices), 28, 28), dtype=np.float32)
    writer = None
    for k, i in enumerate(indices):
        if writer is None or writer.writer_id != TRAIN_WRITER_BASE + i // 10:
            writer = Writer.from_id(TRAIN_WRITER_BASE + i // 10)
        rng = np.random.default_rng([_SALT, seed, i])
        mask, _ = writer.draw(i % 10, rng, height=DRAW_HEIGHT, fast=True)
        ink = Image.fromarray(np.round(np.clip(mask, 0, 1) * 255).astype(np.uint8), "L")
        out[k] = to_mnist(ink)
    return out

"""Synthetic training digits from the stroke model, passed through the serving preprocessing.

Writers come from `samples.realworld.TRAIN_WRITER_BASE` upwards, so no hand of the real-world
set's validation or test half is trained on; no font is used. Each writer fills sheets of 0-9.
A digit is drawn small (36 px tall: enough for a 20 px box) with the stroke model's fast pen
(the training augmentation adds the rotation, bend and width changes it skips), as white ink on
black, and mapped to the model's input by `handler.preprocessing.to_mnist`, the function serving
uses, so training and serving frame digits the same way (20 px box, centre of mass, stroke width).

Drawing costs about 1 ms of CPU per digit, so `cached_stroke_digits` keeps them in a cache folder
(`~/.cache/lenet-synth` by default), keyed by seed and by a hash of the code that draws and frames
them: a changed stroke model or preprocessing never serves stale digits, and a cached larger
count serves any smaller one (digit `i` depends only on the seed and `i`).
"""

from __future__ import annotations

import hashlib
import logging
import os
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image

from handler import preprocessing
from handler.preprocessing import to_mnist
from samples import digit_shapes, distort, strokes
from samples.realworld import TRAIN_WRITER_BASE
from samples.strokes import Writer

logger = logging.getLogger(__name__)

DRAW_HEIGHT = 36
_SALT = 0x7A1D  # separates these digits' seeds from the real-world set's item seeds
DEFAULT_SYNTH_CACHE = Path.home() / ".cache" / "lenet-synth"


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


def code_fingerprint() -> str:
    """A short hash of the code that decides the digits: stroke model, framing, this module."""
    digest = hashlib.sha256()
    for module in (digit_shapes, distort, strokes, preprocessing):
        digest.update(Path(module.__file__).read_bytes())
    digest.update(Path(__file__).read_bytes())
    digest.update(np.__version__.encode())
    return digest.hexdigest()[:12]


def cached_stroke_digits(
    count: int, seed: int, cache_dir: Path | None = DEFAULT_SYNTH_CACHE
) -> tuple[np.ndarray, np.ndarray]:
    """`stroke_digits(count, seed)`, read from `cache_dir` when a large enough set is there.

    A freshly drawn set is written there (atomically) for the next run; `cache_dir=None` draws
    every time. The arrays are the same either way.
    """
    if count <= 0 or cache_dir is None:
        return stroke_digits(count, seed)
    cache_dir = Path(cache_dir)
    key = code_fingerprint()
    for path in sorted(cache_dir.glob(f"seed{seed}-*-{key}.npy"), key=_cached_count):
        if _cached_count(path) >= count:
            images = np.load(path, mmap_mode="r")[:count]
            return np.array(images, dtype=np.float32), np.arange(count, dtype=np.int64) % 10
    images, labels = stroke_digits(count, seed)
    try:
        cache_dir.mkdir(parents=True, exist_ok=True)
        target = cache_dir / f"seed{seed}-{count}-{key}.npy"
        tmp = target.with_name(f".{target.stem}.{os.getpid()}.npy")
        np.save(tmp, images)
        os.replace(tmp, target)
        for stale in cache_dir.glob("seed*-*.npy"):
            if not stale.name.endswith(f"-{key}.npy"):
                stale.unlink(missing_ok=True)  # an older stroke model's digits
    except OSError as exc:  # a read-only home: drawing each time still works
        logger.warning("cannot cache synthetic digits in %s: %s", cache_dir, exc)
    return images, labels


def _cached_count(path: Path) -> int:
    try:
        return int(path.name.split("-")[1])
    except (IndexError, ValueError):
        return -1

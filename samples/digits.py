"""MNIST test digits as the PNG files a client would upload, with their labels."""

from __future__ import annotations

import io
from dataclasses import dataclass, field

import numpy as np
from PIL import Image


def encode_png(pixels: np.ndarray) -> bytes:
    """PNG bytes of a 2-D uint8 array (grayscale), lossless: what a client uploads."""
    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(pixels, dtype=np.uint8), mode="L").save(buf, "PNG")
    return buf.getvalue()


@dataclass
class LabelledImages:
    """Encoded images with their true labels, where each came from (MNIST test index) and, for
    `samples.mix` items, their kinds."""

    images: list[bytes]
    labels: list[int]
    indices: list[int]
    kinds: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.images)


def as_uploads(images: np.ndarray, labels: np.ndarray, count: int | None = None, *,
               seed: int | None = None) -> LabelledImages:  # fmt: skip
    """`count` of the digits (uint8 `(N, 28, 28)`, e.g. `train.mnist.load_test_digits()`; all
    by default) as PNG uploads with their labels, shuffled by `seed` when given."""
    order = np.arange(len(images))
    if seed is not None:
        order = np.random.default_rng(seed).permutation(len(images))
    order = order[:count] if count is not None else order
    return LabelledImages([encode_png(images[i]) for i in order],
                          [int(labels[i]) for i in order], [int(i) for i in order])  # fmt: skip


def answered_correctly(predictor, samples: LabelledImages, *, limit: int | None = None,
                       chunk: int = 256) -> LabelledImages:  # fmt: skip
    """The samples `predictor` (a `handler.predictor.Predictor`) gets right, in order, at most
    `limit` of them: images a load test can check every answer of."""
    from handler.schemas import Prediction

    kept = LabelledImages([], [], [])
    for start in range(0, len(samples), chunk):
        answers = predictor.predict(samples.images[start : start + chunk])
        for i, answer in enumerate(answers, start):
            if isinstance(answer, Prediction) and answer.digit == samples.labels[i]:
                kept.images.append(samples.images[i])
                kept.labels.append(samples.labels[i])
                kept.indices.append(samples.indices[i])
                kept.kinds.extend(samples.kinds[i : i + 1])  # nothing when it has no kinds
                if limit is not None and len(kept) == limit:
                    return kept
    return kept

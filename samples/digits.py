"""MNIST test digits as the PNG files a client would upload, with their labels."""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
from PIL import Image


def encode_png(pixels: np.ndarray) -> bytes:
    """PNG bytes of a 2-D uint8 array (grayscale), lossless: what a client uploads."""
    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(pixels, dtype=np.uint8), mode="L").save(buf, "PNG")
    return buf.getvalue()


@dataclass
class LabelledImages:
    """Encoded images with their true labels and where each came from (MNIST test index)."""

    images: list[bytes]
    labels: list[int]
    indices: list[int]

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
        stop = start + chunk
        answers = predictor.predict(samples.images[start:stop])
        for image, label, index, answer in zip(samples.images[start:stop],
                                               samples.labels[start:stop],
                                               samples.indices[start:stop], answers,
                                               strict=True):  # fmt: skip
            if isinstance(answer, Prediction) and answer.digit == label:
                kept.images.append(image)
                kept.labels.append(label)
                kept.indices.append(index)
                if limit is not None and len(kept) == limit:
                    return kept
    return kept


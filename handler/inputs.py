"""The torch-free half of the predictor: image bytes -> one stacked model input + per-image errors.

`prepare` is the only loop that turns a list of uploads into model inputs. The predictor calls
it in-process; the batch job's decode workers call it in processes that never import torch (they
start fast and stay small), and the main process hands the result to `Predictor.complete`.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from handler import preprocessing
from handler.normalization import IMAGE_SIZE

logger = logging.getLogger(__name__)


@dataclass
class Prepared:
    """Model inputs for a list of images, in input order.

    `inputs` stacks the good images only; `rows[i]` is image i's row in it, or None when the
    image was unusable, and then `errors[i]` says why (a complete user-facing sentence).
    """

    inputs: np.ndarray = field(
        default_factory=lambda: np.empty((0, 1, IMAGE_SIZE, IMAGE_SIZE), np.float32)
    )
    rows: list[int | None] = field(default_factory=list)
    errors: list[str | None] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.rows)

    @classmethod
    def concat(cls, parts: Sequence[Prepared]) -> Prepared:
        """One `Prepared` holding the images of `parts` in order (rows renumbered)."""
        rows: list[int | None] = []
        offset = 0
        for part in parts:
            rows += [None if r is None else r + offset for r in part.rows]
            offset += len(part.inputs)
        inputs = [p.inputs for p in parts if len(p.inputs)]
        stacked = np.concatenate(inputs) if inputs else cls().inputs
        return cls(stacked, rows, [e for p in parts for e in p.errors])


def describe_failure(exc: BaseException) -> str:
    """The user-facing reason an image could not be used."""
    if isinstance(exc, preprocessing.InvalidImage):
        return str(exc)
    if isinstance(exc, MemoryError):
        return "the image needs more memory to decode than the server has free; send it smaller"
    # A bug or a hostile input that slipped past the decoder must still answer with a 4xx
    # saying what failed, never crash the worker or leak Python internals (the log has them).
    return "cannot decode the image: its data could not be interpreted"


def prepare(images: Sequence[bytes | None], failed: Sequence[str | None] = ()) -> Prepared:
    """Preprocess every image; one bad image never costs its neighbours.

    `failed[i]`, when given and set, is why image i is already known to be unusable (bad base64,
    an empty form field): it is not decoded, and keeps its slot with that error.
    """
    arrays: list[np.ndarray] = []
    rows: list[int | None] = []
    errors: list[str | None] = []
    for i, data in enumerate(images):
        known = failed[i] if i < len(failed) else None
        if known is not None:
            rows.append(None)
            errors.append(known)
            continue
        try:
            arrays.append(preprocessing.preprocess(data))
        except Exception as exc:  # noqa: BLE001 - any failure is that image's error
            if not isinstance(exc, preprocessing.InvalidImage):
                logger.warning("unexpected failure preprocessing an image", exc_info=True)
            rows.append(None)
            errors.append(describe_failure(exc))
            continue
        rows.append(len(arrays) - 1)
        errors.append(None)
    inputs = np.stack(arrays) if arrays else Prepared().inputs
    return Prepared(inputs, rows, errors)

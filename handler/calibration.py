"""Calibrated confidence: temperature scaling and the `uncertain` threshold from the artifact.

The training job fits one temperature T on validation data (MNIST validation and the real-world
set's validation half) and picks the confidence below which an answer is flagged `uncertain`,
for a stated error rate among the confident answers. Both are stored in the model's metadata
(`lenet.json`, embedded in `lenet.pt`):

    "calibration": {"temperature": 1.31, "uncertain_below": 0.87,
                    "target_error_among_confident": 0.005, ...}

Serving divides the logits by T before the softmax: the predicted digit never changes, only how
sure the answer says it is. A model without the key is served as before (T = 1, nothing flagged).
Numpy only, so the handler, the batch job and the training job share it without torch.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

METADATA_KEY = "calibration"


def apply_temperature(logits: np.ndarray, temperature: float) -> np.ndarray:
    """Softmax of `logits / temperature` over the last axis, computed in float64.

    `logits` is `(C,)` or `(N, C)`. `temperature` > 1 softens over-confident scores, < 1
    sharpens them, 1 is the plain softmax. The argmax is the same for every temperature.
    """
    if not (math.isfinite(temperature) and temperature > 0):
        raise ValueError(f"temperature must be a positive finite number, got {temperature!r}")
    z = np.asarray(logits, dtype=np.float64) / temperature
    z = z - z.max(axis=-1, keepdims=True)  # exp never overflows; the result is unchanged
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


@dataclass(frozen=True)
class Calibration:
    """The calibration facts of one artifact, with the identity as the default."""

    temperature: float = 1.0
    uncertain_below: float = 0.0
    target_error_among_confident: float | None = None

    def __post_init__(self) -> None:
        if not (math.isfinite(self.temperature) and self.temperature > 0):
            raise ValueError(f"calibration temperature must be > 0, got {self.temperature!r}")
        if not 0.0 <= self.uncertain_below <= 1.0:
            raise ValueError(f"uncertain_below must be in [0, 1], got {self.uncertain_below!r}")

    @classmethod
    def from_metadata(cls, metadata: dict) -> Calibration:
        """Read `metadata["calibration"]`; the identity when the artifact has none."""
        block = metadata.get(METADATA_KEY) or {}
        return cls(
            temperature=float(block.get("temperature", 1.0)),
            uncertain_below=float(block.get("uncertain_below", 0.0)),
            target_error_among_confident=block.get("target_error_among_confident"),
        )

    def probabilities(self, logits: np.ndarray) -> np.ndarray:
        """Calibrated softmax probabilities of `logits` (`(C,)` or `(N, C)`), float64."""
        return apply_temperature(logits, self.temperature)

    def is_uncertain(self, confidence: float | np.ndarray) -> bool | np.ndarray:
        """True where the calibrated confidence is strictly below `uncertain_below`."""
        flags = np.asarray(confidence) < self.uncertain_below
        return bool(flags) if flags.ndim == 0 else flags

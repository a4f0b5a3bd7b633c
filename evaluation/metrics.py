"""Scores of a set of predictions: accuracy overall and by group, the most common confusions.

Pure numpy on arrays of labels and predicted digits, so the in-process and HTTP paths score the
same way. The confusion matrix is `train.plots.confusion_matrix`; calibration measures (ECE,
reliability, selective answers) live in `train.calibrate`, which the training job uses to fit
the calibration the artifact carries.
"""

from __future__ import annotations

from collections import defaultdict

import numpy as np


def accuracy(labels: np.ndarray, predicted: np.ndarray) -> float:
    """Share of `predicted` equal to `labels` (0.0 for an empty set)."""
    return float((labels == predicted).mean()) if len(labels) else 0.0


def by_group(labels: np.ndarray, predicted: np.ndarray, groups: list[str]) -> dict[str, dict]:
    """`{group: {"n", "correct", "accuracy"}}` for each distinct value in `groups`, sorted."""
    correct = labels == predicted
    tally: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for group, ok in zip(groups, correct, strict=True):
        tally[group][0] += 1
        tally[group][1] += int(ok)
    return {
        group: {"n": n, "correct": c, "accuracy": c / n} for group, (n, c) in sorted(tally.items())
    }


def top_confusions(matrix: np.ndarray, limit: int = 8) -> list[dict]:
    """The most frequent off-diagonal cells as `{"true", "predicted", "count"}`, largest first."""
    off = matrix.copy()
    np.fill_diagonal(off, 0)
    order = np.argsort(off, axis=None)[::-1][:limit]
    cells = [np.unravel_index(i, off.shape) for i in order]
    return [
        {"true": int(t), "predicted": int(p), "count": int(off[t, p])}
        for t, p in cells
        if off[t, p] > 0
    ]

"""The three PNGs a reviewer looks at: training curves, confusion matrix, example predictions.

matplotlib runs with the Agg backend (no display needed); every figure is written atomically.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # headless: must be chosen before pyplot is imported
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from train.export import atomic_path  # noqa: E402
from train.loop import EpochStats  # noqa: E402


def _save(fig, path: Path) -> None:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=120, bbox_inches="tight")
    plt.close(fig)


def training_curves(history: Sequence[EpochStats], best_epoch: int, path: Path) -> None:
    """Loss and accuracy per epoch, train vs validation, with the kept epoch marked."""
    epochs = [h.epoch for h in history]
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(11, 4))
    ax_loss.plot(epochs, [h.train_loss for h in history], "o-", label="train (augmented)")
    ax_loss.plot(epochs, [h.val_loss for h in history], "o-", label="validation")
    ax_loss.set(title="Cross-entropy loss", xlabel="epoch", ylabel="loss")
    ax_acc.plot(epochs, [100 * h.train_accuracy for h in history], "o-", label="train (augmented)")
    ax_acc.plot(epochs, [100 * h.val_accuracy for h in history], "o-", label="validation")
    # Log loss and a clipped accuracy axis: otherwise the warm-up epoch squashes the late,
    # interesting epochs (99.x %) into one flat line.
    ax_loss.set_yscale("log")
    floor = 95.0
    ax_acc.set_ylim(floor, 100.0)
    ax_acc.set(title=f"Accuracy (axis from {floor:.0f} %)", xlabel="epoch", ylabel="accuracy (%)")
    for ax in (ax_loss, ax_acc):
        ax.axvline(best_epoch, color="grey", linestyle="--", label=f"kept (epoch {best_epoch})")
        ax.grid(alpha=0.3)
        ax.legend()
    _save(fig, path)


def confusion_matrix(true: np.ndarray, pred: np.ndarray, n_classes: int = 10) -> np.ndarray:
    """Counts `[true, pred]`."""
    matrix = np.zeros((n_classes, n_classes), dtype=np.int64)
    np.add.at(matrix, (true, pred), 1)
    return matrix


def confusion_matrix_plot(
    true: np.ndarray,
    pred: np.ndarray,
    class_names: Sequence[str],
    path: Path,
    title: str = "MNIST test confusion matrix",
) -> None:
    """Confusion matrix with the count written in every non-empty cell (log colour scale)."""
    matrix = confusion_matrix(true, pred, len(class_names))
    fig, ax = plt.subplots(figsize=(7.5, 6.5))
    # log1p so the few errors stay visible next to ~1,000 correct answers per class.
    image = ax.imshow(np.log1p(matrix), cmap="Blues")
    for (i, j), count in np.ndenumerate(matrix):
        if count:
            dark = np.log1p(count) > 0.6 * np.log1p(matrix.max())
            ax.text(
                j,
                i,
                str(count),
                ha="center",
                va="center",
                fontsize=8,
                color="white" if dark else "black",
            )
    ticks = range(len(class_names))
    ax.set_xticks(ticks, class_names)
    ax.set_yticks(ticks, class_names)
    accuracy = 100 * np.trace(matrix) / matrix.sum()
    ax.set(
        xlabel="predicted",
        ylabel="true",
        title=f"{title} ({accuracy:.2f} % correct)",
    )
    fig.colorbar(image, ax=ax, label="log(1 + count)")
    _save(fig, path)


def reliability_diagram(curves: dict[str, Sequence[dict]], title: str, path: Path) -> None:
    """Accuracy against confidence per bin, one line per curve, with the diagonal and counts.

    `curves` maps a label (e.g. "uncalibrated, ECE 2.1 %") to `train.calibrate.reliability`
    rows; empty bins are skipped. The lower panel shows how many answers fall in each bin.
    """
    fig, (ax, ax_n) = plt.subplots(
        2, 1, figsize=(6.5, 7.5), sharex=True, gridspec_kw={"height_ratios": [3, 1]}
    )
    ax.plot([0, 1], [0, 1], color="grey", linestyle="--", linewidth=1, label="perfect calibration")
    for (label, rows), marker in zip(curves.items(), "os^v", strict=False):
        filled = [r for r in rows if r["n"]]
        ax.plot(
            [r["confidence"] for r in filled],
            [r["accuracy"] for r in filled],
            marker=marker,
            label=label,
        )
        ax_n.plot([r["confidence"] for r in filled], [r["n"] for r in filled], marker=marker)
    ax.set(ylabel="accuracy in bin", title=title, xlim=(0, 1), ylim=(0, 1.02))
    ax.legend(loc="upper left", fontsize=8)
    ax_n.set(xlabel="confidence (bin mean)", ylabel="answers", yscale="log")
    _save(fig, path)


def predictions_grid(
    images: np.ndarray, true: np.ndarray, pred: np.ndarray, path: Path, n: int = 40
) -> None:
    """A grid of test digits titled true/pred: the first misclassified ones, then correct ones.

    Misclassified digits get a red title and frame so they stand out.
    """
    wrong = np.flatnonzero(true != pred)
    right = np.flatnonzero(true == pred)
    chosen = np.concatenate([wrong[: n // 2], right[: n - min(len(wrong), n // 2)]])[:n]
    cols = 10
    rows = int(np.ceil(len(chosen) / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(cols * 1.2, rows * 1.45))
    for ax in np.atleast_1d(axes).ravel():
        ax.axis("off")
    for ax, idx in zip(np.atleast_1d(axes).ravel(), chosen, strict=False):
        is_wrong = true[idx] != pred[idx]
        ax.imshow(images[idx], cmap="gray")
        ax.set_title(
            f"t={true[idx]} p={pred[idx]}", fontsize=8, color="red" if is_wrong else "black"
        )
        if is_wrong:
            ax.axis("on")
            ax.set_xticks([])
            ax.set_yticks([])
            for spine in ax.spines.values():
                spine.set_edgecolor("red")
                spine.set_linewidth(2)
    fig.suptitle(
        f"Test digits (t=true, p=predicted); red = misclassified "
        f"({len(wrong)} of {len(true)} wrong)",
        fontsize=10,
    )
    _save(fig, path)

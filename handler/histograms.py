"""Order statistics (medians, percentiles) of 8-bit images from 256-level histograms, which are
much cheaper than sorting the pixels."""

from __future__ import annotations

import cv2
import numpy as np

SMALL_PIXELS = 64 * 64  # below this many pixels, per-call overhead outweighs per-pixel cost


def histogram(levels: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
    """Counts of the 256 grey levels of uint8 pixels (where `mask` is non-zero).

    calcHist is the faster per pixel; np.bincount has the lower fixed cost, which is what
    counts below about 64x64 pixels.
    """
    if mask is None and levels.size < SMALL_PIXELS:
        return np.bincount(levels.ravel(), minlength=256)
    return cv2.calcHist([levels], [0], mask, [256], [0, 256]).ravel()


def kth(cumulative: np.ndarray, k: float) -> int:
    """The level holding the k-th smallest pixel (0-based) -- np.partition(pixels, k)[k] -- from
    a histogram's cumulative counts."""
    return int(cumulative.searchsorted(k, side="right"))


def border_histogram(levels: np.ndarray) -> np.ndarray:
    """Histogram of the outermost ring of pixels (about 3 % of the size, at least one pixel)."""
    h, w = levels.shape
    k = max(1, min(h, w) // 32)
    strips = (levels[:k], levels[-k:], levels[k:-k, :k], levels[k:-k, -k:])
    return np.bincount(np.concatenate([strip.ravel() for strip in strips]), minlength=256)


def median(hist: np.ndarray) -> int:
    """The (upper) median level of a histogram."""
    cumulative = hist.cumsum()
    return kth(cumulative, cumulative[-1] // 2)
